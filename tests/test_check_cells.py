"""`bptt-ref check` and `bptt_ref.testing` for the gated cells: the protocol per cell, right
clients pass, planted mistakes fail with their wrong keys, and the cells' hints name their
planted cause and stay silent on a control.

The planted clients in ``planted.lstm`` and ``planted.gru`` are hand-written NumPy
forward and backward passes; ``planted.cells`` wraps bptt-ref's own NumPy reference.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from planted import cells, gru, lstm

from bptt_ref import jax_reference
from bptt_ref.cases import make_case
from bptt_ref.cells import CELLS
from bptt_ref.checker.hints import passes, sliced
from bptt_ref.cli import main
from bptt_ref.testing import (
    CheckFailed,
    ProtocolError,
    Report,
    assert_bptt_gradients,
    check_gradients,
)

LSTM_CELL_KEYS = ["W_ih", "W_hh", "b_ih", "b_hh", "h0", "c0", "xs"]
LSTM_WEIGHTS = ["W_ih", "W_hh", "b_ih", "b_hh"]


def report_of(fn: Any, cell: str, examples: int = 40) -> Report:
    result = check_gradients(fn, cell=cell, max_examples=examples)
    assert result.report is not None, f"{fn} passed"
    return result.report


def command(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv, "--save-dir", str(tmp_path)])
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


@pytest.mark.parametrize(
    ("fn", "cell"),
    [
        (lstm.grad, "lstm"),
        (gru.grad, "gru"),
        (cells.lstm, "lstm"),
        (cells.gru, "gru"),
        (cells.gru_reset_before, "gru_reset_before"),
    ],
    ids=["lstm-by-hand", "gru-by-hand", "lstm-ref", "gru-ref", "gru_reset_before-ref"],
)
def test_right_clients_of_each_cell_pass(fn: Any, cell: str) -> None:
    result = check_gradients(fn, cell=cell, max_examples=40)
    assert result.ok, result.report
    assert set(result.worst) == set(result.keys)
    assert ("c0" in result.keys) == (cell == "lstm")


def test_right_client_passes_the_command_which_names_the_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = command(
        tmp_path,
        capsys,
        "planted.gru:grad",
        "--cell",
        "gru",
        "--examples",
        "20",
        "--sizes",
        "small",
    )
    assert code == 0, out + err
    assert "agree with the reference on 20 cases (cell=gru hidden=tanh" in " ".join(out.split())
    assert not list(tmp_path.glob("*.npz"))


# (client, cell, wrong keys on the smallest case, words of its one hint)
MISTAKES = [
    (
        "lstm:no_c_carry",
        "lstm",
        ["c0"],
        "only c0 is wrong while h0 is right: h0 = ∂L/∂a_0 W_hh shows",
    ),
    (
        "lstm:no_c_carry_without_h0",
        "lstm",
        ["c0"],
        "only c0 is wrong, so what it shares with the right keys is right: check ∂L/∂c0 = f ⊙",
    ),
    (
        "lstm:gates_read_ifog",
        "lstm",
        ["W_ih", "W_hh", "b_ih", "b_hh", "U", "b_y", "h0", "c0", "xs"],
        "reads the gate blocks of W_ih, W_hh, b_ih, b_hh in the order i, f, o, g",
    ),
    (
        "lstm:stacked_ifog",
        "lstm",
        LSTM_WEIGHTS,
        "the backward stacks the blocks of ∂L/∂a_t as i, f, o, g; stack them i, f, g, o",
    ),
    (
        "gru:gates_read_zrn",
        "gru",
        ["W_ih", "W_hh", "b_ih", "b_hh", "U", "b_y", "h0", "xs"],
        "reads the gate blocks of W_ih, W_hh, b_ih, b_hh in the order z, r, n",
    ),
    (
        "gru:z_swapped",
        "gru",
        ["W_ih", "W_hh", "b_ih", "b_hh", "U", "b_y", "h0", "xs"],
        "the gradient of the GRU with z and 1 - z swapped, h_t = z ⊙ n + (1 - z) ⊙ h_{t-1}",
    ),
]


def _client(name: str) -> Any:
    module, function = name.split(":")
    return getattr({"lstm": lstm, "gru": gru}[module], function)


@pytest.mark.parametrize(("name", "cell", "wrong", "hint"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_planted_mistake_fails_with_its_keys_and_hint(
    name: str, cell: str, wrong: list[str], hint: str
) -> None:
    report = report_of(_client(name), cell)
    assert report.case.cell == cell
    assert report.wrong_keys == wrong
    (said,) = report.hints
    assert hint in said, said


@pytest.mark.parametrize(("name", "cell", "wrong", "hint"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_planted_mistake_fails_the_command(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    cell: str,
    wrong: list[str],
    hint: str,
) -> None:
    code, out, err = command(
        tmp_path, capsys, f"planted.{name}", "--cell", cell, "--examples", "40"
    )
    assert code == 1, out + err
    assert f"configuration: cell={cell} hidden=tanh" in out
    assert f"wrong keys: {', '.join(wrong)}   (right:" in out, out
    assert hint in " ".join(out.split()), out


def test_stacked_gate_order_is_what_the_hint_says() -> None:
    # The hint's claim, checked against the oracle without the hint's probe: the blocks
    # of the reference's gradient, reordered i, f, o, g, are the client's.
    report = report_of(lstm.stacked_ifog, "lstm")
    case = report.case
    _, expected = jax_reference.loss_and_grad(
        case.params, case.xs, case.targets, cell="lstm", **case.config
    )
    actual = lstm.stacked_ifog(case.params, case.xs, case.targets)
    for k in LSTM_WEIGHTS:
        blocks = np.split(expected[k], 4)
        np.testing.assert_allclose(actual[k], np.concatenate([blocks[i] for i in (0, 1, 3, 2)]))
        assert np.max(np.abs(actual[k] - expected[k])) > 1e-3 * np.max(np.abs(expected[k]))


@pytest.mark.parametrize(
    ("fn", "cell", "wrong"),
    [
        (lstm.no_tanh_prime_c, "lstm", LSTM_CELL_KEYS),
        (cells.gru_b_hh_without_gradient, "gru", ["b_hh"]),
    ],
    ids=["lstm-tanh-prime-of-c-dropped", "gru-b_hh-without-gradient"],
)
def test_a_cell_mistake_of_another_kind_gets_no_cell_hint(
    fn: Any, cell: str, wrong: list[str]
) -> None:
    report = report_of(fn, cell)
    assert report.wrong_keys == wrong
    for hint in report.hints:
        assert "c carry" not in hint
        assert "gate blocks" not in hint
        assert "z and 1 - z" not in hint
        assert "time step" not in hint
    (hint,) = report.hints
    if cell == "lstm":  # h0 and c0 wrong together; U and b_y right at a single step
        assert "every key through the cell is wrong even at a single step" in hint
    else:
        assert hint.startswith("b_hh is zero where the reference is not, while b_ih is right")


def test_rnn_keys_to_an_lstm_check_name_the_cells_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ProtocolError) as raised:
        check_gradients(cells.rnn_keys, cell="lstm", max_examples=5)
    message = str(raised.value)
    assert "returned unknown keys ['V', 'W', 'b_h']" in message
    assert "the keys are W_ih, W_hh, b_ih, b_hh, U, b_y, h0, c0, xs" in message
    assert "for cell 'lstm'" in message
    code, out, err = command(tmp_path, capsys, "planted.cells:rnn_keys", "--cell", "lstm")
    assert code == 2, out + err
    assert err.startswith("bptt-ref check: protocol error: ")
    assert "the keys are W_ih, W_hh, b_ih, b_hh, U, b_y, h0, c0, xs" in err


def test_wrong_shape_is_named_in_the_cells_dims() -> None:
    with pytest.raises(ProtocolError) as raised:
        check_gradients(cells.lstm_W_ih_of_gru, cell="lstm", max_examples=5)
    message = str(raised.value)
    found = re.search(r"Case\(cell=lstm T=\d+ B=\d+ D=(\d+) H=(\d+)", message)
    assert found is not None, message
    D, H = (int(n) for n in found.groups())
    assert f"returned W_ih of shape ({3 * H}, {D})" in message
    assert f"expected (4H, D) = ({4 * H}, {D}), the shape of params['W_ih']" in message


@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_reset_before"])
def test_a_gated_cell_takes_only_tanh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cell: str
) -> None:
    with pytest.raises(ValueError, match=f"for cell '{cell}'; expected one of \\['tanh'\\]"):
        check_gradients(cells.lstm, cell=cell, hidden="relu")
    code, out, err = command(
        tmp_path, capsys, "planted.cells:lstm", "--cell", cell, "--hidden", "relu"
    )
    assert code == 2, out + err
    assert f"unknown hidden activation 'relu' for cell '{cell}'" in err


def test_unknown_cell_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="unknown cell 'elman'"):
        check_gradients(cells.lstm, cell="elman")
    with pytest.raises(SystemExit):
        main(["check", "planted.cells:lstm", "--cell", "elman"])
    assert "invalid choice: 'elman'" in capsys.readouterr().err


def test_reproducer_of_a_cell_holds_the_cell_and_runs(tmp_path: Path) -> None:
    with pytest.raises(CheckFailed) as failed:
        assert_bptt_gradients(lstm.no_c_carry, cell="lstm", max_examples=40, save_dir=tmp_path)
    report = failed.value.report
    with np.load(report.reproducer) as data:
        assert str(data["cell"]) == "lstm"
        params = {k: data[k] for k in ("W_ih", "W_hh", "b_ih", "b_hh", "U", "b_y", "h0", "c0")}
        _, expected = jax_reference.loss_and_grad(
            params, data["xs"], data["targets"], cell="lstm", **report.case.config
        )
        np.testing.assert_array_equal(data["expected_c0"], expected["c0"])
    assert "'W_ih', 'W_hh', 'b_ih', 'b_hh', 'U', 'b_y', 'h0', 'c0'" in report.snippet
    namespace: dict[str, object] = {}
    exec(report.snippet, namespace)  # the snippet runs as printed


def test_sliced_cuts_every_initial_state() -> None:
    case = make_case(
        dims={"T": 3, "B": 3, "D": 2, "H": 2, "O": 2},
        hidden="tanh",
        output="identity",
        loss="mse",
        dtype=np.dtype(np.float64),
        regime="near_critical",
        style="normal",
        seed=5,
        cell="lstm",
    )
    cut = sliced(case, T=2, B=1)
    assert cut.xs.shape == (2, 1, 2)
    assert cut.params["h0"].shape == cut.params["c0"].shape == (1, 2)
    np.testing.assert_array_equal(cut.params["c0"], case.params["c0"][:1])
    keys = CELLS["lstm"].grad_names
    assert passes(lstm.grad, cut, keys, "lstm.grad")
    assert passes(lstm.no_c_carry, cut, keys, "lstm.no_c_carry") is False
