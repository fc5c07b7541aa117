"""`bptt-ref verify` shows each gradient's error against its bound, and a wrong one fails."""

from __future__ import annotations

from typing import Any

import pytest

import bptt_ref
from bptt_ref import GRAD_NAMES, _model, cli

COLUMNS = (*GRAD_NAMES, "cstep")


def verify_table(capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, str]], str]:
    """The exit code, one dict per table row (column name to cell), and the whole output."""
    code = cli.main(["verify", "--sweep", "quick"])
    out = capsys.readouterr().out
    rows = []
    for line in out.splitlines():
        cells = line.split()
        if len(cells) == 2 + len(COLUMNS) + 1 and cells[1] in ("float64", "float32"):
            rows.append(dict(zip(("config", "dtype", *COLUMNS, "ok"), cells, strict=True)))
    return code, rows, out


def w_scaled(params: Any, xs: Any, targets: Any, **config: str) -> Any:
    """The real gradient with ∂L/∂W 0.1% too large."""
    loss, grads = _model.loss_and_grad(params, xs, targets, **config)
    return loss, {**grads, "W": 1.001 * grads["W"]}


def test_table_shows_err_over_bound_and_explains_every_column(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, rows, out = verify_table(capsys)
    assert code == 0, out
    # Every configuration × dtype of the sweep is a row: 9 hidden × 6 heads × 2 dtypes.
    assert len(rows) == len(bptt_ref.HIDDEN_ACTIVATIONS) * len(bptt_ref.VALID_HEADS) * 2
    for row in rows:
        assert row["ok"] == "yes", row
        for k in GRAD_NAMES:
            assert 0 <= float(row[k]) <= 1, row
        if row["dtype"] == "float64":
            assert 0 <= float(row["cstep"]) <= 1, row
        else:
            assert row["cstep"] == "-", row
    assert "largest err/bound per gradient" in out
    text = " ".join(out.split())
    for words in (
        "err = max|numpy - oracle| / scale",
        "bound = rtol * max(1, T/16) + (8 N + 4 eps R) / scale",
        "rtol 5e-11 (float64), 4e-04 (float32)",
        "cstep (float64 only)",
        "divided by its bound 1e-12",
        "ok: yes when every ratio in the row is at most 1",
    ):
        assert words in text, words
    assert max(len(line) for line in out.splitlines()) <= 124


def test_planted_wrong_gradient_shows_a_ratio_above_1_and_no(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bptt_ref, "loss_and_grad", w_scaled)
    code, rows, out = verify_table(capsys)
    assert code == 1, out
    assert len(rows) == len(bptt_ref.HIDDEN_ACTIVATIONS) * len(bptt_ref.VALID_HEADS) * 2
    for row in rows:
        assert float(row["W"]) > 1, row
        assert row["ok"] == "NO", row
        assert all(float(row[k]) <= 1 for k in GRAD_NAMES if k != "W"), row
        # Complex step sees the wrong W along a random direction too.
        assert row["dtype"] == "float32" or float(row["cstep"]) > 1, row
