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
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from bptt_ref import stack
from bptt_ref._validate import check_inputs
from bptt_ref.config import Config, model_of

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Estimate", "directional_derivative", "directional_estimate", "random_direction"]

CENTRAL_STEP = 3e-4
"""ε for the central stencil: near eps^(1/5), where O(ε⁴) truncation meets O(eps/ε) rounding."""
COMPLEX_STEP = 1e-20


def random_direction(
    rng: np.random.Generator, params: Mapping[str, Any], xs: Any
) -> dict[str, NDArray[np.float64]]:
    """A standard normal direction, float64, with one array per key of ``params`` and ``xs``.

    Each array has the shape of what it moves; the keys are drawn in the order of ``params``.
    """
    shapes = {**{k: np.shape(v) for k, v in params.items()}, "xs": np.shape(xs)}
    return {k: rng.standard_normal(s) for k, s in shapes.items()}


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
    method: Literal["central", "complex"] = "complex",
    num_layers: int = 1,
    bidirectional: bool = False,
    **config: Unpack[Config],
) -> float:
    """``⟨∇L(θ), u⟩`` by differencing the forward pass: :func:`directional_estimate`'s value."""
    return directional_estimate(
        params,
        xs,
        targets,
        direction,
        method=method,
        num_layers=num_layers,
        bidirectional=bidirectional,
        **config,
    ).value


def directional_estimate(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    direction: Mapping[str, Any],
    *,
    method: Literal["central", "complex"] = "complex",
    num_layers: int = 1,
    bidirectional: bool = False,
    **config: Unpack[Config],
) -> Estimate:
    """``⟨∇L(θ), u⟩`` by differencing the forward pass, in float64 (or complex128), with
    an estimate of its truncation error: 0 for the complex step (exact to rounding), and
    for central differences the Richardson estimate from the same stencil at 2ε.

    Args:
        params: the parameters of ``cell`` (for the RNN ``U`` (O, H), ``V`` (H, D), ``W``
            (H, H), ``b_h`` (H,), ``b_y`` (O,), ``h0`` (B, H)); xs: (T, B, D); targets:
            (T, B, O).
        direction: ``u``, one array per key of ``CELLS[cell].grad_names`` (the parameters
            and ``xs``), each of its input's shape.
        method: ``"central"`` differences or ``"complex"`` step (see module docstring).
        config: the model's ``cell``, ``hidden``, ``output``, ``loss``, as for
            :func:`bptt_ref.loss_and_grad`.
        num_layers, bidirectional: a stacked network (:mod:`bptt_ref.stack`), whose
            parameters and direction keys are :func:`bptt_ref.stack.names`; by default
            the single cell.
    """
    spec, hidden, output, loss = model_of(config)
    network = stack.configure(spec, num_layers, bidirectional)
    if network.single:
        p, x, y = check_inputs(params, xs, targets, loss=loss, cell=spec)
    else:
        p, x, y = stack.check_inputs(network, params, xs, targets, loss)
    assert y is not None
    theta = {**p, "xs": x}
    keys = (*stack.names(spec, num_layers=num_layers, bidirectional=bidirectional), "xs")
    missing = sorted(set(keys) - set(direction))
    if missing:
        raise ValueError(f"direction is missing keys {missing}; expected {', '.join(keys)}")
    u = {k: np.asarray(direction[k], dtype=np.float64) for k in keys}
    for k in keys:
        if u[k].shape != theta[k].shape:
            raise ValueError(f"direction[{k!r}] has shape {u[k].shape}; expected {theta[k].shape}")

    def at(step: complex, dtype: type[np.inexact[Any]]) -> Any:
        moved = {k: theta[k].astype(dtype) + step * u[k] for k in keys}
        xs_moved = moved.pop("xs")
        return stack.loss_value(
            network, moved, xs_moved, y.astype(np.float64), hidden, output, loss
        )

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
