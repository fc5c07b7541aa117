"""Derivatives at a kink: the conventions frameworks follow at ``a = 0``, and whether a case
meets one (NumPy only).

Two hidden nonlinearities ``f_h`` have a kink at ``a = 0`` whose one-sided derivatives
differ (:data:`SLOPES`): relu (0 from below, 1 from above) and leaky_relu (0.01 from
below, 1 from above). Every other option has none: identity, tanh, sigmoid, softplus,
silu and gelu are smooth, and elu (α = 1) has the same slope, α e⁰ = 1, from both sides
(its kink is in the second derivative). The output nonlinearities (identity, tanh,
sigmoid, softmax) and the losses are smooth, and the gated cells' σ and tanh are fixed,
so only the rnn's ``f_h`` meets a kink, in a single cell or in every layer of a stack.

At exactly ``a = 0`` the derivative is a convention (:data:`CONVENTIONS`): ``jax``
(``jax.nn``: relu'(0) = 0, leaky_relu'(0) = 1, the convention of ``loss_and_grad``),
``torch`` (PyTorch, and TensorFlow: relu'(0) = 0, leaky_relu'(0) = 0.01), ``left`` (the
derivative from below at every kink: ``a > 0`` picks the positive branch) and ``right``
(from above: ``a >= 0``, as hand-written code often has it). A kernel evaluates one
branch test everywhere, so a convention holds at every kink of a case at once: through the
recurrence the kinks at several steps and units combine, and the gradient under one
convention is a single, definite array (:mod:`bptt_ref.checker.protocol` judges against it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bptt_ref import _rnn, stack
from bptt_ref._activations import LEAKY_RELU_SLOPE

SIDES: tuple[str, ...] = ("left", "right")
"""The one-sided derivatives at a kink: from below (``left``) and from above (``right``)."""

SLOPES: dict[str, dict[str, float]] = {
    "relu": {"left": 0.0, "right": 1.0},
    "leaky_relu": {"left": LEAKY_RELU_SLOPE, "right": 1.0},
}
"""Each ``f_h`` with a kink at ``a = 0``: its derivative there from each side."""

CONVENTIONS: dict[str, dict[str, str]] = {
    "jax": {"relu": "left", "leaky_relu": "right"},
    "torch": {"relu": "left", "leaky_relu": "left"},
    **{side: dict.fromkeys(SLOPES, side) for side in SIDES},
}
"""Each convention's side at each kink: ``f'(0)`` is ``SLOPES[f][CONVENTIONS[c][f]]``."""

_NAMES = {
    "jax": "JAX's convention",
    "torch": "PyTorch's convention",
    "left": "the derivative from below",
    "right": "the derivative from above",
}


def side(convention: str, hidden: str) -> str | None:
    """The side ``convention`` takes at the kink of ``hidden``; ``None`` where it has none.

    Raises:
        ValueError: ``convention`` is not a key of :data:`CONVENTIONS`.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"kink is {convention!r}; expected one of {', '.join(CONVENTIONS)}")
    return CONVENTIONS[convention].get(hidden)


def other_side(hidden: str) -> str:
    """The side JAX's convention does not take at the kink of ``hidden`` (``SLOPES``' key):
    with JAX's, the two one-sided derivatives a default check accepts."""
    return "right" if CONVENTIONS["jax"][hidden] == "left" else "left"


def describe(convention: str, hidden: str) -> str:
    """``convention`` at the kink of ``hidden`` in words: "PyTorch's convention at the kink
    (leaky_relu'(0) = 0.01)"."""
    sided = side(convention, hidden)
    assert sided is not None
    return f"{_NAMES[convention]} at the kink ({hidden}'(0) = {SLOPES[hidden][sided]:g})"


def at_kink(
    params: Mapping[str, Any],
    xs: Any,
    hidden: str,
    *,
    cell: str = "rnn",
    num_layers: int = 1,
    bidirectional: bool = False,
) -> bool:
    """Whether some pre-activation ``a_t`` (T, B, H) of a kinked ``f_h`` is exactly 0.

    Runs the float64 forward pass of :mod:`bptt_ref._rnn` (each layer's, in a stack) on
    ``params`` and ``xs`` (T, B, D) converted to float64 exactly. An exact zero there is a
    sum of exact zeros (the "kink" input style zeroes a unit's rows), which any order of
    summation computes alike; ``False`` for a cell or ``f_h`` without a kink.
    """
    if cell != "rnn" or hidden not in SLOPES:
        return False
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    x = np.asarray(xs, dtype=np.float64)
    network = stack.configure(cell, num_layers, bidirectional)
    if network.single:
        passes: list[Any] = [_rnn.forward(p, x, None, hidden)]
    else:
        passes = list(stack._run(network, p, x, hidden).passes.values())
    return any(bool(np.any(fw.a == 0)) for fw in passes)
