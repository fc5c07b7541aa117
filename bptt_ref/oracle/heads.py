"""The shared output head: ``z_t = h_t Uᵀ + b_y``, ``ŷ_t = f_y(z_t)`` and the per-row losses.

Every cell feeds the same heads. ``HEADS`` is exact where the head saturates (a confident
correct softmax prediction keeps its tiny loss and gradient); ``TEXTBOOK_HEADS`` is the
textbook peer (``jnp.tanh``, ``jax.nn.sigmoid``, the softmax rule ``p ⊙ (dz - ⟨dz, p⟩)``,
``log_softmax``) whose rounding in the judged dtype sets the noise term.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from bptt_ref.oracle.activations import Fn, sigmoid, tanh

Head = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
"""``head(z, y, valid)``: logits z (B, O), targets y (B, O), valid outputs (B, O) bool →
the per-row loss (B,) summed over the valid outputs."""


@jax.custom_jvp
def _softmax_rule(z: jax.Array, weight: jax.Array) -> jax.Array:
    return jax.nn.softmax(z, where=weight > 0)


@_softmax_rule.defjvp
def _softmax_rule_jvp(primals: Any, tangents: Any) -> Any:
    # The textbook rule J dz = p ⊙ (dz - <dz, p>), rounded in its own way, unlike the
    # oracle's autodiff through exp and the division. The mask has no tangent.
    (z, weight), (dz, _) = primals, tangents
    p = _softmax_rule(z, weight)
    return p, p * (dz - jnp.sum(dz * p, axis=-1, keepdims=True))


def _exact_cross_entropy(z: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
    # -log p_i = softplus(logsumexp_{m≠i} z_m - z_i): autodiff gives -(1 - p_i) as
    # σ(·), never as p_i - 1, so a confident correct prediction keeps its tiny loss and
    # gradient. A large finite fill (not -inf) keeps the derivative finite in a row
    # with no other valid output, where the loss is 0.
    size = z.shape[-1]
    others = ~jnp.eye(size, dtype=bool)[None, :, :] & valid[:, None, :]
    rest = jax.nn.logsumexp(jnp.where(others, z[:, None, :], -1e300), axis=-1)
    return jnp.sum(jnp.where(valid, y * jax.nn.softplus(rest - z), 0.0), axis=-1)


def _log_softmax_cross_entropy(z: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
    return -jnp.sum(jnp.where(valid, y * jax.nn.log_softmax(z, where=valid), 0.0), axis=-1)


def _heads(
    tanh: Fn,
    sigmoid: Fn,
    softmax: Callable[[jax.Array, jax.Array], jax.Array],
    cross_entropy: Head,
) -> dict[tuple[str, str], Head]:
    def mse(f: Callable[[jax.Array, jax.Array], jax.Array]) -> Head:
        def head(z: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
            return 0.5 * jnp.sum(jnp.where(valid, (f(z, valid) - y) ** 2, 0.0), axis=-1)

        return head

    def binary_cross_entropy(z: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
        nll = y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z)
        return -jnp.sum(jnp.where(valid, nll, 0.0), axis=-1)

    return {
        ("identity", "mse"): mse(lambda z, valid: z),
        ("tanh", "mse"): mse(lambda z, valid: tanh(z)),
        ("sigmoid", "mse"): mse(lambda z, valid: sigmoid(z)),
        ("softmax", "mse"): mse(softmax),
        ("softmax", "cross_entropy"): cross_entropy,
        ("sigmoid", "binary_cross_entropy"): binary_cross_entropy,
    }


HEADS = _heads(tanh, sigmoid, lambda z, valid: jax.nn.softmax(z, where=valid), _exact_cross_entropy)
"""Per-row loss ``loss(f_y(z), y)`` summed over the valid outputs, by (output, loss)."""
TEXTBOOK_HEADS = _heads(
    jnp.tanh,
    jax.nn.sigmoid,
    lambda z, valid: _softmax_rule(z, valid.astype(z.dtype)),
    _log_softmax_cross_entropy,
)
"""The heads of the textbook peer."""
