"""`bptt-ref verify` shows per cell each gradient's error against its bound; a wrong one fails."""

from __future__ import annotations

from typing import Any

import pytest

import bptt_ref
from bptt_ref import _model, cli
from bptt_ref.cells import CELLS

# What the layouts make the gradient columns of each cell's table.
COLUMNS = {
    "rnn": ("U", "V", "W", "b_h", "b_y", "h0", "xs"),
    "lstm": ("W_ih", "W_hh", "b_ih", "b_hh", "U", "b_y", "h0", "c0", "xs"),
    "gru": ("W_ih", "W_hh", "b_ih", "b_hh", "U", "b_y", "h0", "xs"),
    "gru_reset_before": ("W_ih", "W_hh", "b_ih", "b_hh", "U", "b_y", "h0", "xs"),
}


def verify_table(
    capsys: pytest.CaptureFixture[str], *cells: str
) -> tuple[int, dict[str, list[dict[str, str]]], str]:
    """The exit code, per cell one dict per table row (column name to cell), and the output."""
    code = cli.main(["verify", "--sweep", "quick", *(f"--cell={c}" for c in cells)])
    out = capsys.readouterr().out
    tables: dict[str, list[dict[str, str]]] = {}
    cell = None
    for line in out.splitlines():
        words = line.split()
        if words and words[0].endswith(":") and "largest err/bound per gradient" in line:
            cell = words[0][:-1]
            tables[cell] = []
        elif cell is not None and len(words) > 1 and words[1] in ("float64", "float32"):
            names = ("config", "dtype", *COLUMNS[cell], "cstep", "ok")
            tables[cell].append(dict(zip(names, words, strict=True)))
    return code, tables, out


def rows_expected(cell: str) -> int:
    """Every configuration × dtype of the sweep is a row: activations × heads × 2 dtypes."""
    return len(CELLS[cell].activations) * len(bptt_ref.VALID_HEADS) * 2


def scaled(key: str, only: str) -> Any:
    """The real ``loss_and_grad`` with ∂L/∂``key`` 0.1% too large for cell ``only``."""

    def loss_and_grad(*args: Any, cell: str = "rnn", **config: Any) -> Any:
        loss, grads = _model.loss_and_grad(*args, cell=cell, **config)
        return loss, {**grads, key: 1.001 * grads[key]} if cell == only else grads

    return loss_and_grad


def test_every_cell_has_a_table_that_shows_err_over_bound_and_explains_every_column(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, tables, out = verify_table(capsys)
    assert code == 0, out
    assert list(tables) == list(COLUMNS) == list(bptt_ref.CELL_NAMES)
    for cell, rows in tables.items():
        assert len(rows) == rows_expected(cell), cell
        for row in rows:
            assert row["ok"] == "yes", row
            for k in COLUMNS[cell]:
                assert 0 <= float(row[k]) <= 1, row
            if row["dtype"] == "float64":
                assert 0 <= float(row["cstep"]) <= 1, row
            else:
                assert row["cstep"] == "-", row
    assert {r["config"].split("/")[0] for c in COLUMNS if c != "rnn" for r in tables[c]} == {"tanh"}
    text = " ".join(out.split())
    for words in (
        "One table per cell",
        "rnn: U V W b_h b_y h0 xs; lstm: W_ih W_hh b_ih b_hh U b_y h0 c0 xs; gru: W_ih W_hh "
        "b_ih b_hh U b_y h0 xs; gru_reset_before: W_ih W_hh b_ih b_hh U b_y h0 xs",
        "err = max|numpy - oracle| / scale",
        "bound = rtol * max(1, T/16) + (8 N + 4 eps R) / scale",
        "rtol 5e-11 (float64), 4e-04 (float32)",
        "cstep (float64 only)",
        "divided by its bound 1e-12",
        "ok: yes when every ratio in the row is at most 1",
        "cells rnn, lstm, gru, gru_reset_before): all agree",
    ):
        assert words in text, words
    assert max(len(line) for line in out.splitlines()) <= 124


def test_planted_wrong_rnn_gradient_shows_a_ratio_above_1_and_no(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bptt_ref, "loss_and_grad", scaled("W", only="rnn"))
    code, tables, out = verify_table(capsys, "rnn")
    assert code == 1, out
    assert list(tables) == ["rnn"]
    assert len(tables["rnn"]) == rows_expected("rnn")
    for row in tables["rnn"]:
        assert float(row["W"]) > 1, row
        assert row["ok"] == "NO", row
        assert all(float(row[k]) <= 1 for k in COLUMNS["rnn"] if k != "W"), row
        # Complex step sees the wrong W along a random direction too.
        assert row["dtype"] == "float32" or float(row["cstep"]) > 1, row


def test_planted_wrong_lstm_gradient_fails_that_cells_rows_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bptt_ref, "loss_and_grad", scaled("W_hh", only="lstm"))
    code, tables, out = verify_table(capsys)
    assert code == 1, out
    assert list(tables) == list(bptt_ref.CELL_NAMES)
    for row in tables["lstm"]:
        assert float(row["W_hh"]) > 1, row
        assert row["ok"] == "NO", row
        assert all(float(row[k]) <= 1 for k in COLUMNS["lstm"] if k != "W_hh"), row
        assert row["dtype"] == "float32" or float(row["cstep"]) > 1, row
    # The control within the run: every other cell, through the same patched function, passes.
    for cell in set(COLUMNS) - {"lstm"}:
        assert len(tables[cell]) == rows_expected(cell)
        assert all(row["ok"] == "yes" for row in tables[cell]), tables[cell]
    fails = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert fails
    assert all(line.startswith("FAIL Case(cell=lstm ") for line in fails), fails
    assert "largest err/bound: " in out
    assert ", W_hh of lstm tanh/" in out
