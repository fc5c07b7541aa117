"""The oracle's nonlinearities: exact at saturation, and their textbook peers from ``jax.nn``.

The exact forms are written so that autodiff keeps full relative precision where they
saturate (σ through ``logaddexp``, tanh through σ away from 0), so the oracle stays exact
for vanishing gradients; the textbook forms are what a user of JAX would write, and their
rounding in the judged dtype sets the noise term of the comparison (:mod:`bptt_ref.compare`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from bptt_ref.kinks import CONVENTIONS, SLOPES, side

Fn = Callable[[jax.Array], jax.Array]
"""An elementwise function of one array."""


def sigmoid(x: jax.Array) -> jax.Array:
    """σ(x) = 1 / (1 + e^{-x}), written as ``exp(-logaddexp(-x, 0))``."""
    # jax.nn.sigmoid differentiates to σ(1 - σ), which rounds to 0 (or a multiple of
    # eps) once σ ≈ 1; through logaddexp the derivative is σ(x)·σ(-x), exact to eps.
    return jnp.exp(-jnp.logaddexp(-x, 0.0))


def tanh(x: jax.Array) -> jax.Array:
    """tanh(x), as ``2 σ(2x) - 1`` for |x| ≥ 0.5 and ``jnp.tanh`` below."""
    # jnp.tanh differentiates to (1 + t)(1 - t), which loses all precision as |t| → 1
    # (and expm1's rule, 1 + expm1(u), does the same); through σ it is 4 σ(2x) σ(-2x).
    # Near 0, where 2σ(2x) - 1 would cancel, jnp.tanh and its rule are both exact.
    return jnp.where(jnp.abs(x) < 0.5, jnp.tanh(x), 2 * sigmoid(2 * x) - 1)


def _elu(x: jax.Array) -> jax.Array:
    # jax.nn.elu goes through expm1, whose derivative rule 1 + expm1(x) cancels for
    # x << 0; exp(x) - 1 differentiates to exp(x). The branch test x > 0 is
    # jax.nn.elu's, so the derivative at the kink (1, from the left) is the same.
    neg = jnp.where(x > 0, 0.0, x)
    return jnp.where(x > 0, x, jnp.exp(neg) - 1)


def _gelu(x: jax.Array) -> jax.Array:
    # The tanh approximation x/2 (1 + tanh(u)) equals x σ(2u); the σ form keeps
    # 1 + tanh(u) from cancelling for large negative x. Past |x| = 1e4, σ(2u) is exactly
    # 0 or 1 and x³ would overflow (to a NaN derivative), so x is held there inside u.
    held = jnp.clip(x, -1e4, 1e4)
    return x * sigmoid(2 * math.sqrt(2 / math.pi) * (held + 0.044715 * held**3))


HIDDEN: dict[str, Fn] = {
    "identity": lambda a: a,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "relu": jax.nn.relu,
    "leaky_relu": lambda a: jax.nn.leaky_relu(a, negative_slope=0.01),
    "elu": _elu,
    "softplus": jax.nn.softplus,
    "silu": lambda a: a * sigmoid(a),
    "gelu": _gelu,
}
"""``f_h`` by name, as the oracle writes it. relu and leaky_relu are ``jax.nn``'s, whose
derivatives at the kink we promise (elu keeps jax.nn.elu's branch test); the smooth
saturating ones are written so that their autodiff derivative keeps full relative
precision where they saturate, and the oracle stays exact for vanishing gradients."""

TEXTBOOK_HIDDEN: dict[str, Fn] = {
    **HIDDEN,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "silu": jax.nn.silu,
    "gelu": lambda a: jax.nn.gelu(a, approximate=True),
}
"""``f_h`` as ``jax.nn`` writes it: the *peer* whose rounding error in the judged dtype
sets the noise term of the comparison (see :mod:`bptt_ref.compare`)."""

KINKED: dict[str, Fn] = {
    "relu>=": lambda a: jnp.where(a >= 0, a, 0.0),
    "leaky_relu>": lambda a: jnp.where(a > 0, a, SLOPES["leaky_relu"]["left"] * a),
}
"""The kinked ``f_h`` with the derivative at ``a = 0`` that ``jax.nn``'s does not take
(:mod:`bptt_ref.kinks`): relu with 1 (from above), leaky_relu with 0.01 (from below).
Autodiff of ``where`` takes the derivative of the branch the test picks, so the branch
test alone sets it: one expression evaluated at every step and unit, as a kernel does."""


def branch(hidden: str, kink: str) -> str:
    """The name, in ``HIDDEN`` or ``KINKED``, of the oracle's ``f_h`` under the convention
    ``kink`` (a key of :data:`bptt_ref.kinks.CONVENTIONS`)."""
    sided = side(kink, hidden)
    if sided is None or sided == CONVENTIONS["jax"][hidden]:
        return hidden
    return f"{hidden}{'>=' if sided == 'right' else '>'}"
