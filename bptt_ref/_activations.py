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
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]
"""Real (float32, float64) or, for the complex step, complex128 arrays."""

LEAKY_RELU_SLOPE = 0.01
ELU_ALPHA = 1.0
_GELU_C = float(np.sqrt(2.0 / np.pi))
_GELU_K = 0.044715


@dataclass(frozen=True)
class Activation:
    """An elementwise ``f`` and its derivative ``df(a, f(a))``.

    ``df`` receives the already computed ``f(a)`` too, for derivatives that are cheap
    and accurate in terms of it. Saturating derivatives are written without
    cancellation (``tanh' = 4 σ(2a) σ(-2a)``, not ``1 - tanh²``), so that a vanishing
    gradient keeps its relative precision instead of rounding to a multiple of eps.
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


def logistic_pair(
    a: Array, scale: Array | float = 1.0, out: tuple[Array, Array] | None = None
) -> tuple[Array, Array]:
    """``σ(s a)`` and ``σ(−s a) = 1 − σ(s a)`` from one exponential, with no branch.

    With ``e = exp(−s a)``: ``σ(s a) = 1 / (1 + e)`` and ``σ(−s a) = e σ(s a)``, each to a
    few ulps relative, so neither cancels where the other saturates, and their product is
    the slope ``σ'(s a) = σ(s a) σ(−s a)`` as precisely. ``s`` (``scale``, broadcast
    against ``a``) lets one call cover blocks of different scale: ``σ(2a) σ(−2a) =
    sech²(a) / 4`` is tanh's slope. Where ``−s a`` exceeds ``log`` of the dtype's largest
    value the exponent is held there, so ``e`` stays finite: σ(s a) is then below the
    smallest normal number and its slope is 0 to the dtype's normal range. Analytic in
    complex ``a`` (the cap compares real parts first and is never reached by a complex
    step), so the complex-step check differentiates it.

    Args:
        a: any shape; float32, float64 or complex128.
        scale: ``s``, broadcast against ``a``, in ``a``'s dtype.
        out: ``(value, complement)`` buffers of ``a``'s shape and dtype to write into, so
            that a loop over steps allocates nothing; new arrays when None.

    Returns:
        ``(σ(s a), σ(−s a))``, of ``a``'s shape and dtype.
    """
    value, e = (np.empty_like(a), np.empty_like(a)) if out is None else out
    np.multiply(a, -scale, out=e)
    np.minimum(e, np.floor(np.log(np.finfo(e.dtype).max)), out=e)
    np.exp(e, out=e)
    np.add(e, 1, out=value)
    np.reciprocal(value, out=value)
    e *= value
    return value, e


def softplus(a: Array) -> Array:
    # log(1 + e^a) = max(a, 0) + log1p(e^{-|a|}), branch chosen on Re(a).
    pos = _positive(a)
    return np.where(pos, a, 0) + np.log1p(np.exp(np.where(pos, -a, a)))


def _tanh_prime(a: Array, h: Array, out: Array | None = None) -> Array:
    # sech²(a) = 4 σ(2a) σ(-2a) from one cosh, in place (in ``out`` where given): three
    # passes over a, no cancellation. Where cosh² overflows (|a| > 44 in float32, 355 in
    # float64), sech² is below 1e-38 (1e-308) and 0 is its value to the dtype's normal range.
    with np.errstate(over="ignore"):
        c = np.cosh(a, out=out)
        c *= c
    return np.reciprocal(c, out=c)


def _sigmoid_prime(a: Array, h: Array) -> Array:
    return h * sigmoid(-a)


def _elu(a: Array) -> Array:
    pos = _positive(a)
    return np.where(pos, a, ELU_ALPHA * np.expm1(np.where(pos, 0, a)))


def _elu_prime(a: Array, h: Array) -> Array:
    # alpha e^a, not h + alpha, which cancels for a << 0. At a = 0 the a <= 0 branch
    # gives alpha e^0 = 1, as jax.nn.elu's does.
    pos = _positive(a)
    return np.where(pos, 1, ELU_ALPHA * np.exp(np.where(pos, 0, a)))


_GELU_FLAT = 1e4


def _gelu_clipped(a: Array) -> Array:
    # Beyond |a| = 1e4, σ(2u) is exactly 0 or 1 in both float32 and float64, so holding a
    # there changes nothing but keeps a³ (and a² below) from overflowing in float32.
    flat = np.abs(np.real(a)) > _GELU_FLAT
    return np.where(flat, np.sign(np.real(a)) * _GELU_FLAT, a)


def _gelu_u2(a: Array) -> Array:
    # gelu(a) = a/2 (1 + tanh(u)) = a σ(2u) with u = c (a + k a³)
    return 2 * _GELU_C * (a + _GELU_K * a**3)


def _gelu(a: Array) -> Array:
    return a * sigmoid(_gelu_u2(_gelu_clipped(a)))


def _gelu_prime(a: Array, h: Array) -> Array:
    a_c = _gelu_clipped(a)
    u2 = _gelu_u2(a_c)
    s = sigmoid(u2)
    return s + 2 * a_c * s * sigmoid(-u2) * _GELU_C * (1 + 3 * _GELU_K * a_c * a_c)


def _silu_prime(a: Array, h: Array) -> Array:
    s = sigmoid(a)
    return np.asarray(s * (1 + a * sigmoid(-a)))


HIDDEN: dict[str, Activation] = {
    "identity": Activation(lambda a: a, lambda a, h: np.ones_like(a)),
    "tanh": Activation(np.tanh, _tanh_prime),
    "sigmoid": Activation(sigmoid, _sigmoid_prime),
    # Kinks follow jax.nn: relu'(0) = 0, leaky_relu'(0) = 1 (see README).
    "relu": Activation(
        lambda a: np.where(_positive(a), a, 0), lambda a, h: _positive(a).astype(a.dtype)
    ),
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
    return np.asarray(e / np.sum(e, axis=-1, keepdims=True))


def logsumexp(z: Array) -> Array:
    """``log Σ_o exp(z_o)`` over the last axis, without overflow."""
    m = np.max(np.real(z), axis=-1, keepdims=True)
    return np.asarray(m + np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True)))[..., 0]


@dataclass(frozen=True)
class OutputActivation:
    """``ŷ = f(z)`` and its vector-Jacobian product ``vjp(z, ŷ, g) = (∂ŷ/∂z)ᵀ g``."""

    f: Callable[[Array], Array]
    vjp: Callable[[Array, Array, Array], Array]


def _softmax_vjp(z: Array, p: Array, g: Array) -> Array:
    # J = diag(p) - p pᵀ, so Jᵀg = p ⊙ (g - <g, p>) without forming J.
    return np.asarray(p * (g - np.sum(g * p, axis=-1, keepdims=True)))


OUTPUT: dict[str, OutputActivation] = {
    "identity": OutputActivation(lambda z: z, lambda z, y, g: g),
    "tanh": OutputActivation(np.tanh, lambda z, y, g: g * _tanh_prime(z, y)),
    "sigmoid": OutputActivation(sigmoid, lambda z, y, g: g * _sigmoid_prime(z, y)),
    "softmax": OutputActivation(softmax, _softmax_vjp),
}
"""Output nonlinearities ``f_y`` by name."""
