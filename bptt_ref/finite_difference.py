"""The JAX-free oracle: directional derivatives of the loss by differencing the forward pass.

Both methods give ``⟨∇L, u⟩`` for a direction ``u`` over every parameter and the
inputs, using nothing but the NumPy forward pass, so they check the hand-written
backward pass against its own forward pass (the adjoint or "dot-product" test):

- ``central``: the fourth-order central stencil
  ``(8 (L(θ + εu) - L(θ - εu)) - (L(θ + 2εu) - L(θ - 2εu))) / 12ε`` in float64, which
  cancels the ε² term of ``(L(θ + εu) - L(θ - εu)) / 2ε``: truncation O(ε⁴), rounding
  O(eps·|L|/ε).
- ``complex``: ``Im L(θ + i·h·u) / h`` with h = 1e-20; no subtraction, so it is exact
  to rounding. It needs every function on the path to be analytic, which the forward
  pass is: each nonlinearity picks its branch on the real part, so even at a kink
  (a = 0 exactly) it returns the one-sided derivative of the branch taken, the same
  convention as ``jax.nn`` (relu'(0) = 0, leaky_relu'(0) = 1, elu'(0) = 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from bptt_ref._rnn import loss_value
from bptt_ref._validate import GRAD_NAMES, PARAM_NAMES, check_inputs, check_names

__all__ = ["Estimate", "directional_derivative", "directional_estimate", "random_direction"]

CENTRAL_STEP = 3e-4
"""ε for the central stencil: near eps^(1/5), where O(ε⁴) truncation meets O(eps/ε) rounding."""
COMPLEX_STEP = 1e-20


def random_direction(
    rng: np.random.Generator, params: Mapping[str, Any], xs: Any
) -> dict[str, NDArray[np.float64]]:
    """A standard normal direction with one array per key of ``GRAD_NAMES``, float64."""
    shapes = {**{k: np.shape(params[k]) for k in PARAM_NAMES}, "xs": np.shape(xs)}
    return {k: rng.standard_normal(shapes[k]) for k in GRAD_NAMES}


class Estimate(NamedTuple):
    """A directional derivative and the estimated size of its truncation error."""

    value: float
    truncation: float


def directional_derivative(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    direction: Mapping[str, Any],
    *,
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
    method: Literal["central", "complex"] = "complex",
) -> float:
    """``⟨∇L(θ), u⟩`` by differencing the forward pass: :func:`directional_estimate`'s value."""
    return directional_estimate(
        params, xs, targets, direction, hidden=hidden, output=output, loss=loss, method=method
    ).value


def directional_estimate(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    direction: Mapping[str, Any],
    *,
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
    method: Literal["central", "complex"] = "complex",
) -> Estimate:
    """``⟨∇L(θ), u⟩`` by differencing the forward pass, in float64 (or complex128), with
    an estimate of its truncation error: 0 for the complex step (exact to rounding), and
    for central differences the Richardson estimate from the same stencil at 2ε.

    Args:
        params: ``U`` (O, H), ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``b_y`` (O,),
            ``h0`` (B, H); xs: (T, B, D); targets: (T, B, O).
        direction: ``u``, one array per key ``U, V, W, b_h, b_y, h0, xs``, each of its
            input's shape.
        method: ``"central"`` differences or ``"complex"`` step (see module docstring).
    """
    check_names(hidden, output, loss)
    p, x, y = check_inputs(params, xs, targets, loss=loss)
    assert y is not None
    theta = {**p, "xs": x}
    missing = sorted(set(GRAD_NAMES) - set(direction))
    if missing:
        raise ValueError(f"direction is missing keys {missing}; expected {', '.join(GRAD_NAMES)}")
    u = {k: np.asarray(direction[k], dtype=np.float64) for k in GRAD_NAMES}
    for k in GRAD_NAMES:
        if u[k].shape != theta[k].shape:
            raise ValueError(f"direction[{k!r}] has shape {u[k].shape}; expected {theta[k].shape}")

    def at(step: complex, dtype: type[np.inexact[Any]]) -> Any:
        moved = {k: theta[k].astype(dtype) + step * u[k] for k in GRAD_NAMES}
        xs_moved = moved.pop("xs")
        return loss_value(moved, xs_moved, y.astype(np.float64), hidden, output, loss)

    if method == "complex":
        return Estimate(float(np.imag(at(1j * COMPLEX_STEP, np.complex128)) / COMPLEX_STEP), 0.0)
    if method == "central":
        gaps = {
            n: at(n * CENTRAL_STEP, np.float64) - at(-n * CENTRAL_STEP, np.float64)
            for n in (1, 2, 4)
        }
        fine = (8 * gaps[1] - gaps[2]) / (12 * CENTRAL_STEP)
        coarse = (8 * gaps[2] - gaps[4]) / (24 * CENTRAL_STEP)
        # The stencil's error is c·ε⁴ + O(ε⁶): doubling ε multiplies it by 16, so
        # |D(ε) - D(2ε)| / 15 estimates the error of D(ε) (Richardson).
        return Estimate(float(fine), float(abs(fine - coarse) / 15))
    raise ValueError(f"unknown method {method!r}; expected 'central' or 'complex'")
