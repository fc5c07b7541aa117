"""`bptt_ref.testing.assert_bptt_gradients` inside pytest: its verdicts, report and hints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from planted import batched, column_loop, protocol

from bptt_ref import GRAD_NAMES, jax_reference
from bptt_ref.testing import CheckFailed, ProtocolError, assert_bptt_gradients, check_gradients


@pytest.mark.parametrize("fn", [batched.grad, column_loop.grad], ids=["batched", "column_loop"])
def test_right_gradients_pass(fn: batched.GradFn) -> None:
    assert_bptt_gradients(fn, max_examples=60)


def test_subset_of_keys_is_what_is_checked() -> None:
    result = check_gradients(protocol.only_W_and_b_h, max_examples=20)
    assert result.ok
    assert result.keys == ("W", "b_h")
    assert set(result.worst) == {"W", "b_h"}


@pytest.mark.parametrize(
    ("fn", "factor", "dims"),
    [
        (batched.mean_over_time, "= 1/T (T=2, B=1)", (2, 1)),
        (batched.mean_over_batch, "= 1/B (T=1, B=2)", (1, 2)),
    ],
    ids=["time", "batch"],
)
def test_mean_instead_of_sum_is_named_as_such(
    tmp_path: Path, fn: batched.GradFn, factor: str, dims: tuple[int, int]
) -> None:
    with pytest.raises(CheckFailed) as failed:
        assert_bptt_gradients(fn, max_examples=40, save_dir=tmp_path)
    report = failed.value.report
    assert report.wrong_keys == list(GRAD_NAMES)
    assert (report.case.dims["T"], report.case.dims["B"]) == dims
    (hint,) = report.hints
    assert factor in hint
    assert "mean" in hint
    assert "is a sum" in hint
    # Every key really is the reference times that factor on the shrunk case.
    case = report.case
    _, expected = jax_reference.loss_and_grad(case.params, case.xs, case.targets, **case.config)
    actual = fn(case.params, case.xs, case.targets)
    for k in GRAD_NAMES:
        np.testing.assert_allclose(actual[k], 0.5 * expected[k], rtol=1e-9, atol=1e-300)


def test_reproducer_reloads_the_case_and_its_reference(tmp_path: Path) -> None:
    with pytest.raises(CheckFailed) as failed:
        assert_bptt_gradients(batched.h_t_in_dW, max_examples=40, save_dir=tmp_path)
    report = failed.value.report
    assert report.reproducer.parent == tmp_path
    with np.load(report.reproducer) as data:
        params = {k: data[k] for k in ("U", "V", "W", "b_h", "b_y", "h0")}
        case = report.case
        np.testing.assert_array_equal(data["xs"], case.xs)
        _, expected = jax_reference.loss_and_grad(
            params, data["xs"], data["targets"], **case.config
        )
        np.testing.assert_array_equal(data["expected_W"], expected["W"])
    assert "from planted.batched import h_t_in_dW" in report.snippet
    namespace: dict[str, object] = {}
    exec(report.snippet, namespace)  # the snippet runs as printed


def test_exception_in_fn_is_a_failure_with_its_traceback() -> None:
    with pytest.raises(CheckFailed) as failed:
        assert_bptt_gradients(protocol.raises_beyond_T3, max_examples=40)
    report = failed.value.report
    assert report.case.dims["T"] == 4
    assert report.error is not None
    assert "IndexError: buffer of 3 steps" in report.error
    assert report.verdicts == []


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (protocol.unknown_key, "unknown keys ['dW']"),
        (protocol.b_h_as_row, "b_h of shape (1, "),
        (protocol.float32_result, "dtype float32"),
        (protocol.two_arguments, "three positional parameters"),
    ],
    ids=["key", "shape", "dtype", "signature"],
)
def test_protocol_errors_are_not_gradient_failures(fn: batched.GradFn, message: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        assert_bptt_gradients(fn, max_examples=10)
    assert message in str(raised.value)
    assert not isinstance(raised.value, AssertionError)


def test_float32_result_is_accepted_for_float32_inputs() -> None:
    assert_bptt_gradients(column_loop.grad, dtype=np.float32, max_examples=40)


def test_invalid_configuration_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot follow output"):
        check_gradients(batched.grad, output="identity", loss="cross_entropy")


def _poisoned(*keys: str) -> batched.GradFn:
    """The right gradient with NaN in every entry of ``keys``."""

    def fn(params: dict[str, Any], xs: Any, targets: Any) -> dict[str, Any]:
        out = batched.grad(params, xs, targets)
        return {k: np.full_like(v, np.nan) if k in keys else v for k, v in out.items()}

    return fn


@pytest.mark.parametrize(
    ("keys", "words"),
    [(("W",), "W contains NaN or inf"), (("V", "W"), "V, W contain NaN or inf")],
    ids=["one", "two"],
)
def test_nonfinite_keys_are_named_in_agreeing_words(keys: tuple[str, ...], words: str) -> None:
    result = check_gradients(_poisoned(*keys), max_examples=5)
    assert result.report is not None
    assert result.report.wrong_keys == list(keys)
    assert any(hint.startswith(words) for hint in result.report.hints), result.report.hints
