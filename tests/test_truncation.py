"""Truncated BPTT and masked batches against JAX with stop_gradient / jnp.where at the same cuts.

The rnn is checked at full depth; every gated cell has its own property tests (its oracle
runs the cell's own JAX step), and every planted bug must fail for every cell.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

import bptt_ref
from bptt_ref import jax_reference
from bptt_ref.cases import Case
from bptt_ref.cells import CELLS
from bptt_ref.compare import Reference
from bptt_ref.strategies import cases
from bptt_ref.truncation import chunk_starts, window_starts


def _window(case: Case, window: int, noise: bool) -> Reference:
    return jax_reference.truncated_reference(
        case.params,
        case.xs,
        case.targets,
        window=window,
        noise=noise,
        cell=case.cell,
        hidden=case.hidden,
        output=case.output,
        loss=case.loss,
    )


def _chunks(case: Case, k1: int, k2: int, noise: bool) -> Reference:
    return jax_reference.truncated_reference(
        case.params,
        case.xs,
        case.targets,
        chunks=(k1, k2),
        noise=noise,
        cell=case.cell,
        hidden=case.hidden,
        output=case.output,
        loss=case.loss,
    )


def _masked(case: Case, mask: Any, mode: str, noise: bool) -> Reference:
    return jax_reference.masked_reference(
        case.params,
        case.xs,
        case.targets,
        mask,
        mode=mode,
        noise=noise,
        cell=case.cell,
        **case.config,
    )


def _check(
    loss: float, grads: dict[str, Any], case: Case, ref: Callable[[bool], Reference]
) -> None:
    for key, grad in grads.items():
        assert grad.dtype == case.dtype, key
    judged = jax_reference.assert_matches(grads, ref, context=repr(case))
    assert np.isclose(loss, judged.loss, rtol=1e-3 if case.dtype == np.float32 else 1e-9)


def _run(fn: Callable[..., tuple[float, Any]], *args: Any, case: Case, **kw: Any) -> Any:
    """The gradients of ``fn`` on ``case``."""
    return fn(case.params, case.xs, case.targets, *args, **kw, cell=case.cell, **case.config)[1]


GATED = tuple(name for name in CELLS if name != "rnn")
RNN = cases(max_T=12)
GATED_CASES = cases(max_T=10, cells=GATED)


def _window_matches_stop_gradient(case: Case, window: int) -> None:
    loss, grads = bptt_ref.window_loss_and_grad(
        case.params, case.xs, case.targets, window=window, cell=case.cell, **case.config
    )
    _check(loss, grads, case, partial(_window, case, window))


def _chunks_match_stop_gradient(case: Case, k1: int, extra: int) -> None:
    loss, grads = bptt_ref.tbptt_loss_and_grad(
        case.params, case.xs, case.targets, k1=k1, k2=k1 + extra, cell=case.cell, **case.config
    )
    _check(loss, grads, case, partial(_chunks, case, k1, k1 + extra))


test_window_truncation_matches_stop_gradient = settings(max_examples=250)(
    given(RNN, st.integers(0, 14))(_window_matches_stop_gradient)
)
test_gated_window_truncation_matches_stop_gradient = settings(max_examples=150)(
    given(GATED_CASES, st.integers(0, 12))(_window_matches_stop_gradient)
)
test_chunked_tbptt_matches_stop_gradient = settings(max_examples=250)(
    given(RNN, st.integers(1, 6), st.integers(0, 6))(_chunks_match_stop_gradient)
)
test_gated_chunked_tbptt_matches_stop_gradient = settings(max_examples=150)(
    given(GATED_CASES, st.integers(1, 6), st.integers(0, 6))(_chunks_match_stop_gradient)
)


@settings(max_examples=200)
@given(cases(max_T=12, cells=tuple(CELLS)), st.integers(0, 3), st.integers(1, 12))
def test_truncation_at_least_T_is_full_bptt_exactly(case: Case, extra: int, k1: int) -> None:
    T = case.dims["T"]
    run = partial(_run, case=case)
    # Every window reaching step 0 is the same sum: the same terms, bit for bit.
    full = run(bptt_ref.window_loss_and_grad, window=max(T - 1, 0))
    same = [
        run(bptt_ref.window_loss_and_grad, window=T + extra),
        run(bptt_ref.tbptt_loss_and_grad, k1=min(k1, max(T, 1)), k2=max(T + extra, 1)),
        run(bptt_ref.masked_loss_and_grad, np.ones(case.xs.shape[:2], dtype=bool)),
    ]
    for grads in same:
        for key, g in full.items():
            assert np.array_equal(grads[key], g), key
    # ... and that sum is full BPTT: for a gated cell the very same pass, bit for bit (the
    # rnn's truncation runs the note's chain engine instead of its fused step).
    if CELLS[case.cell].fused is None:
        _, plain = bptt_ref.loss_and_grad(
            case.params, case.xs, case.targets, cell=case.cell, **case.config
        )
        for key, g in plain.items():
            assert np.array_equal(full[key], g), key
    jax_reference.assert_matches_oracle(
        full,
        case.params,
        case.xs,
        case.targets,
        context=repr(case),
        cell=case.cell,
        **case.config,
    )


def test_window_of_T_minus_1_already_is_full_and_h0_needs_step_0() -> None:
    # The last loss term reaches step 0 with T - 1 steps back; h0 is step 0's input.
    assert np.array_equal(window_starts(5, 4), np.zeros(5, dtype=np.intp))
    assert np.array_equal(window_starts(5, 3), [0, 0, 0, 0, 1])
    assert np.array_equal(chunk_starts(7, 3, 3), [0, 0, 0, 3, 3, 3, 4])
    assert np.array_equal(chunk_starts(6, 2, 3), [0, 0, 1, 1, 3, 3])


@st.composite
def masks(draw: st.DrawFn, T: int, B: int, *, holes: bool) -> np.ndarray:
    """(T, B) masks: a length per sequence (padding at the end), or arbitrary holes."""
    if holes:
        flat = draw(st.lists(st.booleans(), min_size=T * B, max_size=T * B))
        return np.array(flat, dtype=bool).reshape(T, B)
    lengths = np.array(draw(st.lists(st.integers(0, T), min_size=B, max_size=B)))
    return np.arange(T)[:, None] < lengths[None, :]


def _masks_match_jax(case: Case, mode: str, holes: bool, data: st.DataObject) -> None:
    mask = data.draw(masks(case.dims["T"], case.dims["B"], holes=holes), label="mask")
    loss, grads = bptt_ref.masked_loss_and_grad(
        case.params, case.xs, case.targets, mask, mode=mode, cell=case.cell, **case.config
    )
    _check(loss, grads, case, partial(_masked, case, mask, mode))
    if mode == "freeze" or not holes:
        # A padded input reaches nothing: with the state frozen, or after the last real step.
        assert not grads["xs"][~mask].any()
        assert not _masked(case, mask, mode, False).grads["xs"][~mask].any()


MASK_ARGS = (st.sampled_from(bptt_ref.MASK_MODES), st.booleans(), st.data())
test_masks_match_jax = settings(max_examples=250)(given(RNN, *MASK_ARGS)(_masks_match_jax))
test_gated_masks_match_jax = settings(max_examples=150)(
    given(GATED_CASES, *MASK_ARGS)(_masks_match_jax)
)


@settings(max_examples=200)
@given(cases(max_T=10, cells=tuple(CELLS)), *MASK_ARGS)
def test_padded_positions_contribute_exactly_nothing(
    case: Case, mode: str, holes: bool, data: st.DataObject
) -> None:
    mask = data.draw(masks(case.dims["T"], case.dims["B"], holes=holes), label="mask")
    if mode == "loss" and holes:
        mask = np.cumprod(mask, axis=0).astype(bool)  # inputs after a hole would be read

    def run(xs: Any, targets: Any) -> tuple[float, dict[str, Any]]:
        return bptt_ref.masked_loss_and_grad(
            case.params, xs, targets, mask, mode=mode, cell=case.cell, **case.config
        )

    loss, grads = run(case.xs, case.targets)
    # Change every padded input and target: nothing may move, not even by rounding.
    rng = np.random.default_rng(case.seed)
    xs, targets = case.xs.copy(), case.targets.copy()
    xs[~mask] = rng.standard_normal(xs[~mask].shape)
    targets[~mask] = targets[::-1][~mask]  # stays in the loss's domain
    other_loss, other = run(xs, targets)
    assert other_loss == loss
    for key, g in grads.items():
        assert np.array_equal(other[key], g), key


def _small() -> tuple[dict[str, Any], Any, Any]:
    rng = np.random.default_rng(3)
    sizes: dict[str, Any] = {"batch_size": 2, "input_size": 2, "hidden_size": 3, "output_size": 2}
    params = bptt_ref.random_params(rng, **sizes)
    return params, rng.standard_normal((5, 2, 2)), rng.standard_normal((5, 2, 2))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"window": -1}, ValueError, "window = -1; expected an integer >= 0"),
        ({"window": 1.5}, TypeError, "window has type float"),
        ({"window": True}, TypeError, "window is a bool"),
    ],
)
def test_window_is_validated(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    params, xs, targets = _small()
    with pytest.raises(error, match=message):
        bptt_ref.window_loss_and_grad(params, xs, targets, **kwargs)


@pytest.mark.parametrize(
    ("k1", "k2", "error", "message"),
    [
        (0, 2, ValueError, "k1 = 0; expected an integer >= 1"),
        (3, 2, ValueError, "k2 = 2 < k1 = 3"),
        (2, "3", TypeError, "k2 has type str"),
    ],
)
def test_chunks_are_validated(k1: Any, k2: Any, error: type[Exception], message: str) -> None:
    params, xs, targets = _small()
    with pytest.raises(error, match=message):
        bptt_ref.tbptt_loss_and_grad(params, xs, targets, k1=k1, k2=k2)


def test_mask_and_mode_are_validated() -> None:
    params, xs, targets = _small()
    good = np.ones((5, 2), dtype=bool)
    with pytest.raises(TypeError, match="mask has dtype float64; expected bool"):
        bptt_ref.masked_loss_and_grad(params, xs, targets, good.astype(float))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 5\); expected \(T, B\) = \(5, 2\)"):
        bptt_ref.masked_loss_and_grad(params, xs, targets, good.T)
    with pytest.raises(ValueError, match="unknown mask mode 'hold'"):
        bptt_ref.masked_loss_and_grad(params, xs, targets, good, mode="hold")
    before = {k: v.copy() for k, v in params.items()}
    xs_before, mask = xs.copy(), good.copy()
    mask[3:, 0] = False
    bptt_ref.masked_loss_and_grad(params, xs, targets, mask, mode="freeze")
    bptt_ref.window_loss_and_grad(params, xs, targets, window=1)
    assert all(np.array_equal(before[k], params[k]) for k in params)
    assert np.array_equal(xs, xs_before)


# Test the tester: each planted truncation or mask bug must fail against the oracle.


def _small_cases(cell: str) -> st.SearchStrategy[Case]:
    return cases(min_T=3, max_T=8, dtypes=(np.float64,), cells=(cell,))


def _fails(
    grads: Callable[[Case], dict[str, Any]], ref: Callable[[Case, bool], Reference]
) -> Callable[[Case], bool]:
    def fails(case: Case) -> bool:
        _, verdicts = jax_reference.judge_against(grads(case), partial(ref, case))
        return not all(v.ok for v in verdicts)

    return fails


def _mask_of(case: Case) -> np.ndarray:
    lengths = np.random.default_rng(case.seed).integers(0, case.dims["T"] + 1, case.dims["B"])
    return np.arange(case.dims["T"])[:, None] < lengths[None, :]


def _holey(case: Case) -> np.ndarray:
    """A hole at step 1 of every sequence: there the two mask semantics differ."""
    mask = np.ones(case.xs.shape[:2], dtype=bool)
    mask[1] = False
    return mask


PLANTED = {
    "window one step too long": (
        lambda c: _run(bptt_ref.window_loss_and_grad, case=c, window=2),
        lambda c, noise: _window(c, 1, noise),
    ),
    "window one step too short": (
        lambda c: _run(bptt_ref.window_loss_and_grad, case=c, window=1),
        lambda c, noise: _window(c, 2, noise),
    ),
    "chunk window off by one": (
        lambda c: _run(bptt_ref.tbptt_loss_and_grad, case=c, k1=2, k2=3),
        lambda c, noise: _chunks(c, 2, 2, noise),
    ),
    "chunks not carried across the boundary": (
        lambda c: _run(bptt_ref.tbptt_loss_and_grad, case=c, k1=3, k2=3),
        lambda c, noise: _window(c, 2, noise),
    ),
    "mask applied one step late": (
        lambda c: _run(bptt_ref.masked_loss_and_grad, np.roll(_mask_of(c), 1, axis=0), case=c),
        lambda c, noise: _masked(c, _mask_of(c), "loss", noise),
    ),
    "loss-only mask where the state should freeze": (
        lambda c: _run(bptt_ref.masked_loss_and_grad, _holey(c), case=c, mode="loss"),
        lambda c, noise: _masked(c, _holey(c), "freeze", noise),
    ),
}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name", PLANTED)
def test_planted_truncation_and_mask_bugs_fail(name: str, cell: str) -> None:
    grads, ref = PLANTED[name]
    find(_small_cases(cell), _fails(grads, ref))
