"""`bptt-ref check --layout` and `testing.check_gradients(layout=)`: a kernel is judged in
its framework's arrays, its report names them, and each convention mix-up is hinted with
both conventions named (planted kernels in ``planted.layout_kernels``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from planted import layout_kernels as kernels

from bptt_ref.cli import main
from bptt_ref.testing import (
    CheckFailed,
    ProtocolError,
    Report,
    assert_bptt_gradients,
    check_gradients,
)

EXAMPLES = 20


def report_of(fn: Any, cell: str, layout: str) -> Report:
    result = check_gradients(fn, cell=cell, layout=layout, max_examples=EXAMPLES)
    assert result.report is not None, f"{fn} passed"
    return result.report


@pytest.mark.parametrize(
    ("fn", "cell", "layout"),
    [
        (kernels.onnx_lstm, "lstm", "onnx"),
        (kernels.keras_gru, "gru", "keras"),
        (kernels.onnx_gru_reset_before, "gru_reset_before", "onnx"),
        (kernels.flax_lstm_tree, "lstm", "flax"),
        (kernels.tf1_lstm, "lstm", "tf1"),
        (kernels.karpathy_lstm, "lstm", "karpathy"),
    ],
    ids=[
        "onnx-lstm",
        "keras-gru",
        "onnx-gru-linear_before_reset-0",
        "flax-lstm-tree",
        "tf1-lstm",
        "karpathy-lstm",
    ],
)
def test_a_right_kernel_passes_in_its_own_layout(fn: Any, cell: str, layout: str) -> None:
    assert_bptt_gradients(fn, cell=cell, layout=layout, max_examples=EXAMPLES)


MIXUPS = [
    (
        kernels.onnx_lstm_in_torch_names,
        "lstm",
        "torch",
        "reads the gate blocks of weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0 in the "
        "order i, o, f, g (the order of onnx): layout torch (torch.nn.LSTM) stacks them "
        "i, f, g, o (the order of torch, keras)",
    ),
    (
        kernels.torch_gru_in_keras_names,
        "gru",
        "keras",
        "reads the gate blocks of kernel, recurrent_kernel, bias in the order r, z, n (the "
        "order of torch): layout keras (keras.layers.GRU(reset_after=True)) stacks them "
        "z, r, n (the order of keras, onnx)",
    ),
    (
        kernels.keras_gru_z_swapped,
        "gru",
        "keras",
        "z and 1 - z swapped, h_t = z ⊙ n + (1 - z) ⊙ h_{t-1} (the convention of Chung et al. "
        "2014)",
    ),
    (
        kernels.onnx_gru_reset_before,
        "gru",
        "onnx",
        "the GRU with the reset before the recurrent product, (r ⊙ h_{t-1}) W_hnᵀ + b_hn (Cho "
        "et al. 2014, Keras reset_after=False, ONNX linear_before_reset=0): cell gru places "
        "it after",
    ),
    (
        kernels.keras_rnn_transposed,
        "rnn",
        "keras",
        "uses each H×H gate block of recurrent_kernel transposed: this layout holds "
        "recurrent_kernel (H, H) used as h K; PyTorch and ONNX store",
    ),
]


@pytest.mark.parametrize(
    ("fn", "cell", "layout", "hint"),
    MIXUPS,
    ids=["onnx-order-as-torch", "r-z-swapped", "z-1-z", "reset-side", "transposed-kernel"],
)
def test_a_convention_mixup_is_named_in_the_layouts_keys(
    fn: Any, cell: str, layout: str, hint: str
) -> None:
    report = report_of(fn, cell, layout)
    assert report.layout == layout
    (said,) = report.hints
    assert hint in said, said
    assert report.wrong_keys
    assert all(k in report.keys for k in report.wrong_keys)
    assert f"layout={layout}" in str(report)


def test_the_reports_name_the_users_keys_and_indices() -> None:
    report = report_of(kernels.torch_gru_in_keras_names, "gru", "keras")
    assert "recurrent_kernel" in report.wrong_keys
    assert "W_hh" not in str(report).split("hints")[0]
    text = str(report)
    assert "recurrent_kernel[" in text
    with pytest.raises(CheckFailed, match=r"recurrent_kernel\["):
        assert_bptt_gradients(
            kernels.torch_gru_in_keras_names, cell="gru", layout="keras", max_examples=EXAMPLES
        )


def test_the_command_checks_in_a_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = main(
        [
            "check",
            "planted.layout_kernels:onnx_lstm",
            "--cell",
            "lstm",
            "--layout",
            "onnx",
            "--examples",
            str(EXAMPLES),
            "--save-dir",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert ok == 0, out
    assert "layout=onnx" in out
    assert "W, R, B" in out
    bad = main(
        [
            "check",
            "planted.layout_kernels:onnx_lstm_in_torch_names",
            "--cell",
            "lstm",
            "--layout",
            "torch",
            "--examples",
            str(EXAMPLES),
            "--save-dir",
            str(tmp_path),
        ]
    )
    out = " ".join(capsys.readouterr().out.split())
    assert bad == 1
    assert "weight_hh_l0[" in out
    assert "(the order of onnx)" in out


def test_a_layout_that_cannot_express_the_cell_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        ["check", "planted.layout_kernels:keras_gru", "--cell", "gru", "--layout", "cs231n"]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "layout 'cs231n' cannot express cell 'gru'" in err


def test_a_canonical_key_in_a_layout_check_is_a_protocol_error() -> None:
    def canonical_names(params: Any, xs: Any, targets: Any) -> dict[str, Any]:
        return {"W_hh": params["recurrent_kernel"]}

    with pytest.raises(ProtocolError, match=r"unknown keys \['W_hh'\].*keys are kernel, recurrent"):
        check_gradients(canonical_names, cell="gru", layout="keras", max_examples=1)


def test_a_wrongly_shaped_layout_array_names_its_named_shape() -> None:
    def transposed(params: Any, xs: Any, targets: Any) -> dict[str, Any]:
        return {"recurrent_kernel": params["recurrent_kernel"].T.copy()}

    with pytest.raises(ProtocolError, match=r"recurrent_kernel of shape .*expected \(H, 3H\) = "):
        check_gradients(transposed, cell="gru", layout="keras", max_examples=1)


def test_a_split_bias_is_judged_on_its_own() -> None:
    # nn.RNN's two biases both get ∂L/∂b_h; the canonical view reads only bias_ih_l0, so
    # it sees a right gradient and offers no hint rather than a wrong one.
    report = report_of(kernels.torch_rnn_bias_hh_without_gradient, "rnn", "torch")
    assert report.wrong_keys == ["bias_hh_l0"]
    assert report.hints == []


# -- stacked and bidirectional networks in PyTorch's names -----------------------------

STACK = {"cell": "lstm", "layout": "torch", "num_layers": 2, "bidirectional": True}


def test_a_right_stacked_kernel_passes_in_torch_names() -> None:
    assert_bptt_gradients(kernels.torch_lstm_stack, max_examples=EXAMPLES, **STACK)  # type: ignore[arg-type]
    # One layer, both directions: the same kernel, PyTorch's l0 and l0_reverse.
    assert_bptt_gradients(
        kernels.torch_lstm_stack,
        cell="lstm",
        layout="torch",
        bidirectional=True,
        max_examples=EXAMPLES,
    )


@pytest.mark.parametrize(
    "fn",
    [
        kernels.torch_lstm_stack_directions_states_swapped,
        kernels.torch_lstm_stack_reads_layer_0_reverse,
    ],
    ids=["h_0-directions-swapped", "layer-1-reads-layer-0-reverse"],
)
def test_a_stacked_mixup_is_named_in_torch_keys(fn: Any) -> None:
    result = check_gradients(fn, max_examples=EXAMPLES, **STACK)  # type: ignore[arg-type]
    report = result.report
    assert report is not None, f"{fn} passed"
    assert report.layout == "torch"
    assert report.wrong_keys
    torch_keys = {
        f"{w}_l{k}{s}"
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        for k in (0, 1)
        for s in ("", "_reverse")
    } | {"h_0", "c_0", "fc.weight", "fc.bias", "xs"}
    assert set(report.wrong_keys) <= torch_keys
    assert set(report.keys) == torch_keys
    # The reproducer below the verdicts loads the case's canonical inputs by their names.
    text = str(report).split("reproducer:")[0]
    assert any(f"{k}[" in text for k in report.wrong_keys), text
    assert not any(k in text for k in ("W_hh_l", "W_ih_l", "b_ih_l", "b_hh_l")), text
    assert "layout = layout_named('torch', num_layers=2, bidirectional=True)" in report.snippet


def test_the_command_checks_a_stack_in_torch_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--cell", "lstm", "--layout", "torch", "--layers", "2", "--bidirectional"]
    common += ["--examples", str(EXAMPLES), "--save-dir", str(tmp_path)]
    ok = main(["check", "planted.layout_kernels:torch_lstm_stack", *common])
    out = " ".join(capsys.readouterr().out.split())
    assert ok == 0, out
    assert "layout=torch" in out
    assert "weight_hh_l1_reverse" in out
    bad = main(["check", "planted.layout_kernels:torch_lstm_stack_reads_layer_0_reverse", *common])
    out = " ".join(capsys.readouterr().out.split())
    assert bad == 1, out
    assert "weight_hh_l1[" in out or "weight_hh_l0_reverse[" in out, out


def test_a_bidirectional_onnx_operator_is_checked_in_its_names() -> None:
    assert_bptt_gradients(
        kernels.onnx_lstm_bidirectional,
        cell="lstm",
        layout="onnx",
        bidirectional=True,
        max_examples=EXAMPLES,
    )
    result = check_gradients(
        kernels.onnx_lstm_bidirectional_directions_swapped,
        cell="lstm",
        layout="onnx",
        bidirectional=True,
        max_examples=EXAMPLES,
    )
    assert result.report is not None
    assert set(result.report.wrong_keys) <= {
        "W", "R", "B", "initial_h", "initial_c", "U", "b_y", "xs"
    }  # fmt: skip
    assert "W[" in str(result.report) or "R[" in str(result.report)


def test_onnx_refuses_two_layers_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            *("check", "planted.layout_kernels:onnx_lstm_bidirectional", "--cell", "lstm"),
            *("--layers", "2", "--bidirectional", "--layout", "onnx"),
        ]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "layout 'onnx' cannot express num_layers=2: an ONNX RNN, LSTM or GRU operator" in err


@pytest.mark.parametrize("layout", ["keras", "flax", "cs231n", "tf1", "karpathy"])
def test_a_layout_without_stacks_is_a_usage_error_saying_why(
    layout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            *("check", "planted.layout_kernels:torch_lstm_stack", "--cell", "lstm"),
            *("--layers", "2", "--layout", layout),
        ]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert f"layout '{layout}' cannot express a stacked or bidirectional network" in err
    assert "Layouts that can: torch, onnx (onnx one bidirectional layer only)" in err


# -- TF1's LSTMCell and Karpathy's lstm.py --------------------------------------------


def test_a_tf1_kernel_without_the_forget_bias_fails_on_its_bias() -> None:
    report = report_of(kernels.tf1_lstm_without_forget_bias, "lstm", "tf1")
    assert report.layout == "tf1"
    assert set(report.wrong_keys) <= {
        "kernel",
        "bias",
        "c0",
        "h0",
        "dense/kernel",
        "dense/bias",
        "xs",
    }
    assert "bias[" in str(report).split("reproducer:")[0] or "kernel[" in str(report)


def test_a_keras_order_kernel_in_tf1_names_fails_in_tf1_keys() -> None:
    # Not a pure permutation of the canonical cell (the forget_bias stays on TF1's third
    # block, which this kernel reads as g), so no gate-order hint is asserted here.
    report = report_of(kernels.tf1_lstm_in_keras_order, "lstm", "tf1")
    assert {"kernel", "bias"} <= set(report.wrong_keys)
    assert "kernel[" in str(report)


def test_a_torch_order_kernel_in_karpathy_names_is_hinted() -> None:
    report = report_of(kernels.karpathy_lstm_in_torch_order, "lstm", "karpathy")
    assert "WLSTM" in report.wrong_keys
    (said,) = report.hints
    assert "reads the gate blocks of WLSTM in the order i, f, g, o (the order of torch" in said
    assert "layout karpathy (Karpathy's lstm.py LSTM.forward(X, WLSTM, c0, h0)) stacks" in said
    assert "i, f, o, g (the order of cs231n, karpathy)" in said, said
