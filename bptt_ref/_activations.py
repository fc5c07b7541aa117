"""Hidden and output nonlinearities with their hand-written derivatives.

Every function is elementwise (softmax: over the last axis) and written so that it
also accepts complex arrays: branches are chosen on the real part and each branch is
an analytic formula. That lets the complex-step check in
:mod:`bptt_ref.finite_difference` differentiate the very same forward pass, and keeps
the real case overflow-free, because ``exp`` only ever sees a non-positive real part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.inexact]

LEAKY_RELU_SLOPE = 0.01
ELU_ALPHA = 1.0
_GELU_C = float(np.sqrt(2.0 / np.pi))
_GELU_K = 0.044715


@dataclass(frozen=True)
class Activation:
    """An elementwise ``f`` and its derivative ``df(a, f(a))``.

    ``df`` receives the already computed ``f(a)`` too, because several derivatives
    (tanh, sigmoid) are cheapest and most accurate written in terms of it.
    """

    f: Callable[[Array], Array]
    df: Callable[[Array, Array], Array]


def _positive(a: Array) -> NDArray[np.bool_]:
    return np.real(a) > 0


def sigmoid(a: Array) -> Array:
    # exp(-|a|) never overflows; the two branches are the same analytic function.
    pos = _positive(a)
    e = np.exp(np.where(pos, -a, a))
    return np.where(pos, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(a: Array) -> Array:
    # log(1 + e^a) = max(a, 0) + log1p(e^{-|a|}), branch chosen on Re(a).
    pos = _positive(a)
    return np.where(pos, a, 0) + np.log1p(np.exp(np.where(pos, -a, a)))


def _elu(a: Array) -> Array:
    pos = _positive(a)
    return np.where(pos, a, ELU_ALPHA * np.expm1(np.where(pos, 0, a)))


def _elu_prime(a: Array, h: Array) -> Array:
    # At a = 0 the a <= 0 branch gives alpha * e^0 = 1, as jax.nn.elu's does.
    return np.where(_positive(a), 1, h + ELU_ALPHA)


def _gelu_inner(a: Array) -> Array:
    return np.tanh(_GELU_C * (a + _GELU_K * a**3))


def _gelu(a: Array) -> Array:
    return 0.5 * a * (1 + _gelu_inner(a))


def _gelu_prime(a: Array, h: Array) -> Array:
    t = _gelu_inner(a)
    return 0.5 * (1 + t) + 0.5 * a * (1 - t * t) * _GELU_C * (1 + 3 * _GELU_K * a * a)


def _silu_prime(a: Array, h: Array) -> Array:
    s = sigmoid(a)
    return s * (1 + a * (1 - s))


HIDDEN: dict[str, Activation] = {
    "identity": Activation(lambda a: a, lambda a, h: np.ones_like(a)),
    "tanh": Activation(np.tanh, lambda a, h: 1 - h * h),
    "sigmoid": Activation(sigmoid, lambda a, h: h * (1 - h)),
    # Kinks follow jax.nn: relu'(0) = 0, leaky_relu'(0) = 1 (see README).
    "relu": Activation(lambda a: np.where(_positive(a), a, 0), lambda a, h: _positive(a).astype(a.dtype)),
    "leaky_relu": Activation(
        lambda a: np.where(np.real(a) >= 0, a, LEAKY_RELU_SLOPE * a),
        lambda a, h: np.where(np.real(a) >= 0, 1, LEAKY_RELU_SLOPE).astype(a.dtype),
    ),
    "elu": Activation(_elu, _elu_prime),
    "softplus": Activation(softplus, lambda a, h: sigmoid(a)),
    "silu": Activation(lambda a: a * sigmoid(a), _silu_prime),
    "gelu": Activation(_gelu, _gelu_prime),
}
"""Hidden nonlinearities ``f_h`` by name."""


def softmax(z: Array) -> Array:
    """Softmax over the last axis, shifted by the largest real part for stability."""
    e = np.exp(z - np.max(np.real(z), axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def logsumexp(z: Array) -> Array:
    """``log Σ_o exp(z_o)`` over the last axis, without overflow."""
    m = np.max(np.real(z), axis=-1, keepdims=True)
    return (m + np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True)))[..., 0]


@dataclass(frozen=True)
class OutputActivation:
    """``ŷ = f(z)`` and its vector-Jacobian product ``vjp(ŷ, g) = (∂ŷ/∂z)ᵀ g``."""

    f: Callable[[Array], Array]
    vjp: Callable[[Array, Array], Array]


def _softmax_vjp(p: Array, g: Array) -> Array:
    # J = diag(p) - p pᵀ, so Jᵀg = p ⊙ (g - <g, p>) without forming J.
    return p * (g - np.sum(g * p, axis=-1, keepdims=True))


OUTPUT: dict[str, OutputActivation] = {
    "identity": OutputActivation(lambda z: z, lambda y, g: g),
    "tanh": OutputActivation(np.tanh, lambda y, g: g * (1 - y * y)),
    "sigmoid": OutputActivation(sigmoid, lambda y, g: g * y * (1 - y)),
    "softmax": OutputActivation(softmax, _softmax_vjp),
}
"""Output nonlinearities ``f_y`` by name."""
