"""Masks and truncation of every cell against independent NumPy statements, without JAX.

Two identities that need no oracle, each run through the public API only:

- a batch padded at the end is the sum of its sequences run alone at their own lengths
  (both mask modes: after a sequence's last real step nothing feeds its loss);
- TBPTT(k, k) is the sum of its chunks run as separate sequences, each starting from the
  full pass's state at the chunk's start as a constant (only the first chunk reaches
  ``h0`` and ``c0``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bptt_ref
from bptt_ref.cases import Case
from bptt_ref.cells import CELLS
from bptt_ref.strategies import cases

EVERY = tuple(CELLS)
# Float64: the identities hold to rounding, and float64 rounding is far below this.
RTOL = 1e-10


def _close(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, want in expected.items():
        scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-300)
        err = float(np.max(np.abs(actual[key] - want), initial=0.0))
        assert err <= RTOL * scale, f"{key}: max err {err:.3g} against scale {scale:.3g}"


def _alone(case: Case, b: int, length: int) -> dict[str, Any]:
    """Sequence b run by itself over its first ``length`` steps."""
    states = {k: case.params[k][b : b + 1] for k in CELLS[case.cell].states}
    params = {**case.params, **states}
    xs, targets = case.xs[:length, b : b + 1], case.targets[:length, b : b + 1]
    return bptt_ref.loss_and_grad(params, xs, targets, cell=case.cell, **case.config)[1]


@settings(max_examples=120, deadline=None)
@given(
    cases(max_T=8, cells=EVERY, dtypes=(np.float64,)),
    st.sampled_from(bptt_ref.MASK_MODES),
    st.data(),
)
def test_end_padded_batch_is_the_sum_of_its_sequences(
    case: Case, mode: str, data: st.DataObject
) -> None:
    T, B = case.dims["T"], case.dims["B"]
    lengths = data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B), label="lengths")
    mask = np.arange(T)[:, None] < np.array(lengths)[None, :]
    _, grads = bptt_ref.masked_loss_and_grad(
        case.params, case.xs, case.targets, mask, mode=mode, cell=case.cell, **case.config
    )
    spec = CELLS[case.cell]
    expected = {k: np.zeros_like(case.params[k]) for k in spec.names if k not in spec.states}
    expected.update({k: np.zeros_like(case.params[k]) for k in spec.states})
    expected["xs"] = np.zeros_like(case.xs)
    for b, n in enumerate(lengths):
        alone = _alone(case, b, n)
        for k in spec.names:
            if k in spec.states:
                expected[k][b] = alone[k][0]
            else:
                expected[k] += alone[k]
        expected["xs"][:n, b] = alone["xs"][:, 0]
    _close(grads, expected)


def _chunked(case: Case, k: int) -> dict[str, Any]:
    """TBPTT(k, k) as separate runs, one per chunk, from the full pass's states."""
    spec = CELLS[case.cell]
    trace = bptt_ref.forward(case.params, case.xs, cell=case.cell, hidden=case.hidden)
    T = case.dims["T"]
    total = {key: np.zeros_like(value) for key, value in case.params.items()}
    total["xs"] = np.zeros_like(case.xs)
    entering = {key: case.params[key] for key in spec.states}
    for start in range(0, T, k):
        stop = min(start + k, T)
        params = {**case.params, **entering}
        xs, targets = case.xs[start:stop], case.targets[start:stop]
        _, grads = bptt_ref.loss_and_grad(params, xs, targets, cell=case.cell, **case.config)
        for key in total:
            if key == "xs":
                total[key][start:stop] = grads[key]
            elif key not in spec.states or start == 0:
                total[key] += grads[key]
        # The state chunk c leaves is what chunk c + 1 starts from: the full pass's.
        entering = _leaving(case, params, xs)
        assert np.allclose(entering["h0"], trace.h[stop - 1], rtol=RTOL, atol=0)
    return total


def _leaving(case: Case, params: dict[str, Any], xs: Any) -> dict[str, Any]:
    """The states after running ``xs`` from ``params``' initial states."""
    fw = CELLS[case.cell].forward(params, xs, None, case.hidden)
    return {key: getattr(fw, key.removesuffix("0"))[-1] for key in CELLS[case.cell].states}


@settings(max_examples=120, deadline=None)
@given(cases(max_T=10, cells=EVERY, dtypes=(np.float64,)), st.integers(1, 4))
def test_tbptt_k_k_is_the_sum_of_separate_chunks(case: Case, k: int) -> None:
    # Whole chunks only: a short last chunk is back-propagated through k steps from the
    # sequence's end, reaching into the chunk before it.
    T = case.dims["T"] // k * k
    case = dataclasses.replace(case, xs=case.xs[:T], targets=case.targets[:T])
    _, grads = bptt_ref.tbptt_loss_and_grad(
        case.params, case.xs, case.targets, k1=k, k2=k, cell=case.cell, **case.config
    )
    _close(grads, _chunked(case, k))


@pytest.mark.parametrize("cell", EVERY)
def test_a_tbptt_that_never_detaches_fails_the_identity(cell: str) -> None:
    # Test the tester: a TBPTT(2, 2) that forgets to detach the carried state is full
    # BPTT; the identity above must refuse it.
    rng = np.random.default_rng(0)
    sizes = {"batch_size": 2, "input_size": 3, "hidden_size": 4, "output_size": 2}
    params = bptt_ref.random_params(rng, cell=cell, **sizes)
    xs, targets = rng.standard_normal((6, 2, 3)), rng.standard_normal((6, 2, 2))
    case = Case(params, xs, targets, "tanh", "identity", "mse", "near_critical", "normal", 0, cell)
    _, never_detached = bptt_ref.loss_and_grad(params, xs, targets, cell=cell)
    with pytest.raises(AssertionError, match="max err"):
        _close(never_detached, _chunked(case, 2))


def test_a_padded_step_that_reaches_the_loss_fails_the_identity() -> None:
    # Test the tester: the unmasked gradient of an end-padded batch is not the sum of
    # its sequences.
    rng = np.random.default_rng(1)
    sizes = {"batch_size": 2, "input_size": 3, "hidden_size": 4, "output_size": 2}
    for cell in EVERY:
        params = bptt_ref.random_params(rng, cell=cell, **sizes)
        xs, targets = rng.standard_normal((5, 2, 3)), rng.standard_normal((5, 2, 2))
        case = Case(
            params, xs, targets, "tanh", "identity", "mse", "near_critical", "normal", 0, cell
        )
        _, unmasked = bptt_ref.loss_and_grad(params, xs, targets, cell=cell)
        expected = {k: v for k, v in _alone(case, 0, 5).items() if k in ("U", "b_y")}
        with pytest.raises(AssertionError, match="max err"):
            _close(unmasked, {k: expected[k] + _alone(case, 1, 3)[k] for k in expected})
