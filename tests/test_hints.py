"""The hints of a failure report point at the planted cause, and only at it."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from planted import batched, clipping

from bptt_ref import jax_reference
from bptt_ref.checker.hints import dW_with_h_t
from bptt_ref.strategies import make_case
from bptt_ref.testing import Report, check_gradients


def report_of(fn: batched.GradFn, dtype: Any = np.float64) -> Report:
    result = check_gradients(fn, dtype=dtype, max_examples=60)
    assert result.report is not None
    return result.report


def names_no_state_twice(hints: list[str]) -> None:
    # The initial state is h0; h_0 would read as the first computed state, h_{-1} is unused.
    for hint in hints:
        assert not re.search(r"h_0\b|h_\{-1\}|h_\{0\}", hint), hint


def test_dW_with_h_t_is_what_pairing_delta_with_h_t_gives() -> None:
    case = make_case(
        dims={"T": 5, "B": 3, "D": 2, "H": 4, "O": 2},
        hidden="tanh",
        output="identity",
        loss="mse",
        dtype=np.dtype(np.float64),
        regime="near_critical",
        style="normal",
        seed=3,
    )
    probe = dW_with_h_t(case)
    # The planted client pairs δ_t with h_t, written by hand without the probe's trick.
    planted = batched.h_t_in_dW(case.params, case.xs, case.targets)["W"]
    np.testing.assert_allclose(probe, planted, rtol=1e-12, atol=1e-14)
    _, expected = jax_reference.loss_and_grad(case.params, case.xs, case.targets, **case.config)
    assert np.max(np.abs(probe - expected["W"])) > 1e-3 * np.max(np.abs(expected["W"]))


def test_h_t_in_dW_is_named_as_such() -> None:
    report = report_of(batched.h_t_in_dW)
    assert report.wrong_keys == ["W"]
    (hint,) = report.hints
    assert hint.startswith("only W is wrong, and it equals Σ_t δ_tᵀ h_t on this case")
    assert "needs h_{t-1}, the state step t starts from (h0 at t = 0)" in hint
    names_no_state_twice(report.hints)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_clipped_gradients_are_named_as_clipped(dtype: type) -> None:
    report = report_of(clipping.clipped_at_5, dtype=dtype)
    (hint,) = report.hints
    assert "the gradients look clipped, as np.clip(dθ, -5, 5) does" in hint
    assert "check ∂L/∂" not in hint
    # What the hint claims is what the report's case shows.
    case = report.case
    _, expected = jax_reference.loss_and_grad(case.params, case.xs, case.targets, **case.config)
    actual = clipping.clipped_at_5(case.params, case.xs, case.targets)
    for k in report.wrong_keys:
        off = ~np.isclose(actual[k], expected[k], rtol=1e-3, atol=0)
        assert off.any()
        np.testing.assert_array_equal(np.abs(actual[k][off]), 5)
        assert np.all(np.abs(expected[k][off]) > 5)


def test_a_wrong_W_of_another_kind_gets_neither_hint() -> None:
    report = report_of(clipping.W_scaled)
    assert report.wrong_keys == ["W"]
    (hint,) = report.hints
    assert "clipped" not in hint
    assert "equals Σ_t δ_tᵀ h_t" not in hint
    assert "h_{t-1} the state step t starts from (h0 at t = 0), not h_t = f_h(a_t)" in hint
    names_no_state_twice(report.hints)


def test_one_entry_too_small_by_a_factor_is_not_called_clipped() -> None:
    # b_y of shape (1,) halved at B = 2 is, like a clip, smaller than the reference with
    # its sign and the largest entry returned; only its value, not a chosen threshold,
    # tells the two apart.
    report = report_of(batched.b_y_mean_over_batch)
    assert report.wrong_keys == ["b_y"]
    (hint,) = report.hints
    assert "clipped" not in hint
    assert "b_y averaged over batch rows" in hint
