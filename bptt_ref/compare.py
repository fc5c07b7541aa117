"""How a gradient is judged against the reference: one tolerance table, one measure.

For each key k (a parameter θ_k, or the inputs ``xs``) with reference gradient e_k and
gradient under test a_k, the error and its bound are

    err_k   = max_i |a_k[i] - e_k[i]| / scale_k
    scale_k = max( max_i |e_k[i]|,  eps · |L| / max_i |θ_k[i]|,  eps · R_k,  tiny / rtol )
    bound_k = rtol · max(1, T / 16) + (NOISE_FACTOR · N_k + ROUNDING_FACTOR · eps · R_k) / scale_k

and the key passes when err_k <= bound_k.

- ``max |e_k|`` is the gradient's own scale, so exploding gradients are judged
  relative to their size.
- ``eps · |L| / max |θ_k|`` (eps of the judged dtype) is the size below which a
  gradient is numerically zero: moving θ_k by its whole size would move L by less
  than L's own rounding.
- ``tiny / rtol`` (tiny the smallest normal float64, 2.2e-308) makes the tolerance at
  least tiny: XLA on CPU flushes subnormal results to zero, so an oracle entry of 0 can
  stand for anything below tiny (a gelu′ of -1e-309 at a pre-activation near -38 is
  0 in the oracle and exact in NumPy; ``tests/test_note_form.py`` found it).
- ``N_k`` is the noise of a correct peer on this very case: the gap between the
  oracle and the same loss written with ``jax.nn``'s textbook functions and
  differentiated in the judged dtype (``Reference.noise``). It is of order eps where
  the problem is well conditioned, and grows exactly where no correct implementation
  can do better: ``1 - tanh²`` of a saturated unit, softmax with squared error on
  logits in the hundreds, float32 recurrences that amplify rounding.
- ``R_k`` is the gradient's *magnitude*: the largest entry of the same sums with every
  factor replaced by its absolute value, from the oracle's own states and cotangents
  (``Reference.rounding``). ``eps · R_k`` is what any correct implementation's rounding
  is made of: a sum of T·B terms that cancel, or a saturating derivative known only to
  eps absolutely. It catches what one peer can miss by rounding luckier than a second
  implementation. For every cell, with ``c_ih`` and ``c_hh`` the cotangents of each
  step's input-side product ``x_t W_ihᵀ + b_ih`` and hidden-side product
  ``h_{t-1} W_hhᵀ + b_hh`` (T, B, G·H) and ``g_t = ∂L/∂z_t``:

  ======== ===================================================================
  U        Σ_t |g_t|ᵀ |h_t|
  b_y      Σ_t Σ_b |g_t|
  W_ih     Σ_t |c_ih,t|ᵀ |x_t|
  W_hh     Σ_t |c_hh,t|ᵀ |h_{t-1}|  (reset-before GRU: its n block reads r ⊙ h_{t-1},
           and |h_{t-1}| ≥ |r ⊙ h_{t-1}| stands in for it)
  b_ih     Σ_t Σ_b |c_ih,t|
  b_hh     Σ_t Σ_b |c_hh,t|
  xs       |c_ih,t| |W_ih|
  h0       |c_hh,0| |W_hh| + |∂L/∂h0 along the paths that bypass W_hh| (GRU: z ⊙ h0;
           rnn and LSTM: none)
  c0       |∂L/∂c0| (LSTM; c0 meets no product)
  ======== ===================================================================

  Each is at least the gradient it bounds, entry by entry (the rnn's where |f_h'| ≤ 1,
  see below). The rnn plays W_ih, W_hh,
  b_ih with V, W, b_h (one bias), and its cotangents are ∂L/∂h_t: the products' with
  ``f_h'`` replaced by 1, the model it had before the gated cells (for W:
  Σ_t |∂L/∂h_t|ᵀ |h_{t-1}|); the gated cells keep their gates' exact derivatives.
- ``rtol`` is per dtype, in ``TOLERANCES``, each value with the measurement behind it;
  it grows linearly with T beyond 16 steps, because rounding accumulates along the
  recurrence (docs/tolerances.md: the largest float64 err was 9e-14 for T < 10, 7.6e-13
  for T < 100 and 4.8e-11 for T up to 1000).

N_k and R_k only ever widen a bound; they are computed only when a key fails without
them (:func:`judge_against`), which cannot change a verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Tolerance:
    """A relative bound and the measurement it rests on."""

    rtol: float
    reason: str


# Measured by docs/tolerance_study.py (docs/tolerances.md): 1 500 random cases with T
# from 1 to 1 000, every configuration, regime and input style, in both dtypes.
TOLERANCES: dict[np.dtype[Any], Tolerance] = {
    np.dtype(np.float64): Tolerance(
        rtol=5e-11,
        reason=(
            "exact method against exact method in the same precision: over 10 500 gradients "
            "err less the noise and magnitude terms was at most 2.4e-12 (20x below)"
        ),
    ),
    np.dtype(np.float32): Tolerance(
        rtol=4e-4,
        reason=(
            "a float32 result against the float64 oracle: over 10 178 gradients err less the "
            "noise and magnitude terms was at most 9.5e-6 (40x below); catches a planted 1.001"
        ),
    ),
}
"""The one place gradient tolerances live, keyed by the dtype of the result under test."""

STEPS_PER_RTOL = 16
"""Up to this many time steps the bound is ``rtol``; beyond, ``rtol · T / 16``."""

ROUNDING_FACTOR = 4.0
"""How many times eps · R_k an implementation may stray beyond rtol: the rounding of a sum
of n terms is at most n·eps times its magnitude and typically √n·eps; 4 covers the two
false positives it was introduced for (docs/tolerances.md) with the largest err/bound
0.62 in float64 and 0.13 in float32 over the study."""

NOISE_FACTOR = 8.0
"""How many times the peer's noise N_k an implementation may stray beyond rtol: the peer
and a second correct implementation round independently, so their gaps differ by a few
times (with 4 the float32 residual over 201 000 gradients was 1.1e-4, with 8 3.9e-5)."""

DIRECTIONAL_TOLERANCES: dict[str, Tolerance] = {
    "complex": Tolerance(
        rtol=1e-12,
        reason=(
            "complex step has no subtraction: over 10 834 float64 cases (every activation, "
            "output, loss, regime and style but exact relu/leaky_relu kinks) the largest error "
            "was 3.9e-14"
        ),
    ),
    "central": Tolerance(
        rtol=1e-6,
        reason=(
            "the fourth-order stencil with step 3e-4 on smooth activations in contracting and "
            "near-critical regimes: over 3 968 float64 cases the largest error was 3.1e-8; "
            "checks add twice the stencil's Richardson estimate of its own truncation error, "
            "which the ci profile found off by 4.3e-4 (4.2e-6 relative), estimated 4.3e-4, "
            "on a correct gradient"
        ),
    ),
}
"""Bounds for ``directional_error`` against each finite-difference method."""


@dataclass(frozen=True)
class Reference:
    """The oracle's answer for one case, with what is needed to judge against it.

    Attributes:
        loss: the reference loss L.
        grads: reference gradients (float64) for every parameter of the cell (rnn:
            ``V, W, b_h, h0``), the head's ``U, b_y``, and ``xs``.
        noise: per key, max |peer - oracle| for a textbook peer run in ``dtype``, or
            ``None`` where it was not computed (then taken as 0: the strictest bound).
        input_scale: per key, max |θ_k| of the array the gradient is taken against.
        dtype: the dtype of the result to be judged (selects rtol and eps).
        rounding: per key, the magnitude R_k, or ``None`` (then 0) where not computed.
        steps: T, the number of time steps (the relative bound grows with it).
    """

    loss: float
    grads: dict[str, NDArray[np.float64]]
    noise: dict[str, float] | None
    input_scale: dict[str, float]
    dtype: np.dtype[Any]
    rounding: dict[str, float] | None = None
    steps: int = 1


@dataclass(frozen=True)
class KeyComparison:
    """The verdict on one gradient key."""

    key: str
    err: float
    bound: float
    max_abs: float
    index: tuple[int, ...]
    actual: float
    expected: float

    @property
    def ok(self) -> bool:
        """Whether ``err <= bound`` (NaN fails)."""
        return bool(self.err <= self.bound)

    def __str__(self) -> str:
        where = f"at {self.index}: actual {self.actual:.6g}, expected {self.expected:.6g}"
        verdict = "<=" if self.ok else ">"
        return (
            f"{self.key}: err {self.err:.3g} {verdict} bound {self.bound:.3g}; "
            f"max abs error {self.max_abs:.3g} {where}"
        )


def tolerance_for(dtype: Any) -> float:
    """The ``rtol`` for results of ``dtype`` (float32 or float64)."""
    try:
        return TOLERANCES[np.dtype(dtype)].rtol
    except KeyError:
        raise TypeError(
            f"no tolerance for dtype {np.dtype(dtype)}; expected float32 or float64"
        ) from None


_FLUSHED = float(np.finfo(np.float64).tiny)
"""Below this, the oracle's float64 results may be flushed to zero (XLA on CPU)."""


def scale_and_bound(reference: Reference, key: str) -> tuple[float, float]:
    """``(scale_k, bound_k)`` of the measure above for one key of ``reference``.

    A gradient passes when ``max_i |a_k[i] - e_k[i]| <= bound_k · scale_k``: that
    product is the absolute tolerance for this key on this case.
    """
    rtol = tolerance_for(reference.dtype) * max(1.0, reference.steps / STEPS_PER_RTOL)
    eps = float(np.finfo(reference.dtype).eps)
    size = reference.input_scale[key]
    magnitude = 0.0 if reference.rounding is None else reference.rounding[key]
    scale = max(
        float(np.max(np.abs(reference.grads[key]), initial=0.0)),
        eps * abs(reference.loss) / size if size > 0 else 0.0,
        eps * magnitude,
        _FLUSHED / rtol,
    )
    noise = 0.0 if reference.noise is None else reference.noise[key]
    widening = NOISE_FACTOR * noise + ROUNDING_FACTOR * eps * magnitude
    return scale, rtol + (widening / scale if scale > 0 else 0.0)


def compare_gradients(
    actual: Mapping[str, Any], reference: Reference, *, keys: Iterable[str] | None = None
) -> list[KeyComparison]:
    """Judge ``actual[k]`` against ``reference.grads[k]`` for each key, by the measure above.

    ``keys`` defaults to every key of the reference. A key whose array has the wrong
    shape or a non-finite value gets ``err = inf``.
    """
    expected = reference.grads
    keys = list(expected if keys is None else keys)
    out = []
    for k in keys:
        a = np.asarray(actual[k], dtype=np.float64)
        e = expected[k]
        scale, bound = scale_and_bound(reference, k)
        if a.shape != e.shape:
            out.append(KeyComparison(k, np.inf, bound, np.inf, (), np.nan, np.nan))
            continue
        if a.size == 0:
            out.append(KeyComparison(k, 0.0, bound, 0.0, (), 0.0, 0.0))
            continue
        diff = np.abs(a - e)
        bad = ~np.isfinite(diff)
        flat = int(np.argmax(bad)) if bad.any() else int(np.argmax(diff))
        max_abs = float(diff.flat[flat])
        if bad.any():
            err = np.inf
        elif max_abs == 0.0:
            err = 0.0
        else:
            err = max_abs / scale if scale > 0 else np.inf
        index = tuple(int(i) for i in np.unravel_index(flat, a.shape))
        out.append(
            KeyComparison(k, err, bound, max_abs, index, float(a.flat[flat]), float(e.flat[flat]))
        )
    return out


def directional_error(
    grads: Mapping[str, Any], direction: Mapping[str, Any], numeric: float
) -> float:
    """``|⟨g, u⟩ - numeric| / Σ_i |g_i u_i|`` over every key of ``direction``.

    The denominator is the size of the terms the inner product sums, so cancellation
    in ⟨g, u⟩ does not inflate the error; it is 0 only when every term is 0.
    """
    terms = [
        np.asarray(grads[k], dtype=np.float64) * np.asarray(u, dtype=np.float64)
        for k, u in direction.items()
    ]
    analytic = float(sum(np.sum(t) for t in terms))
    magnitude = float(sum(np.sum(np.abs(t)) for t in terms))
    gap = abs(analytic - numeric)
    if not np.isfinite(gap):
        return float("inf")
    if gap == 0.0:
        return 0.0
    return gap / magnitude if magnitude > 0 else float("inf")


def peer_gap(peer: NDArray[np.float64], oracle: NDArray[np.float64]) -> float:
    """The noise N_k of one key: ``max |peer - oracle|`` over the entries where it is finite."""
    # Where the textbook peer overflows in the judged dtype (and the oracle does not),
    # it says nothing about rounding: such entries add no noise, the strict choice.
    gap = np.abs(peer - oracle)
    return float(np.max(gap[np.isfinite(gap)], initial=0.0))


def judge_against(
    actual: Mapping[str, Any],
    make_reference: Callable[[bool], Reference],
    *,
    keys: Iterable[str] | None = None,
) -> tuple[Reference, list[KeyComparison]]:
    """Judge ``actual`` against any reference: ``make_reference(noise)`` builds it, with or
    without the peer's noise (e.g. ``partial(truncated_reference, params, xs, targets,
    window=3)`` called as ``noise=...``); the noise is computed only when a key fails
    without it, which cannot change a verdict."""
    keys = None if keys is None else list(keys)
    ref = make_reference(False)
    verdicts = compare_gradients(actual, ref, keys=keys)
    if all(v.ok for v in verdicts):
        return ref, verdicts
    ref = make_reference(True)
    return ref, compare_gradients(actual, ref, keys=keys)


def assert_matches(
    actual: Mapping[str, Any],
    make_reference: Callable[[bool], Reference],
    *,
    context: str,
    keys: Iterable[str] | None = None,
) -> Reference:
    """:func:`judge_against`, raising ``AssertionError`` naming every failing key."""
    __tracebackhide__ = True
    ref, verdicts = judge_against(actual, make_reference, keys=keys)
    failed = [v for v in verdicts if not v.ok]
    if failed:
        lines = "\n".join(f"  {v}" for v in failed)
        raise AssertionError(f"gradients disagree with the oracle for {context}:\n{lines}")
    return ref
