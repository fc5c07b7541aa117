"""Per-element losses and their gradient with respect to the logits ``z``.

``cross_entropy`` (with ``softmax``) and ``binary_cross_entropy`` (with ``sigmoid``)
are written in terms of the logits, never of ``log ŷ``, so that logits of magnitude
1e4 give a finite loss and gradient without floating-point warnings. They are also
written without cancellation, so that a confident, correct prediction keeps its
(tiny) loss and gradient to full relative precision: ``1 - p_i`` is the sum of the
other probabilities, never a subtraction from 1.
"""

from __future__ import annotations

import numpy as np

from bptt_ref._activations import OUTPUT, Array, logsumexp, sigmoid, softplus

LOSS_OUTPUTS: dict[str, tuple[str, ...]] = {
    "mse": ("identity", "tanh", "sigmoid", "softmax"),
    "cross_entropy": ("softmax",),
    "binary_cross_entropy": ("sigmoid",),
}
"""For each loss, the output nonlinearities it may follow."""

VALID_HEADS: tuple[tuple[str, str], ...] = tuple(
    (output, loss) for loss, outputs in LOSS_OUTPUTS.items() for output in outputs
)
"""Every valid ``(output, loss)`` pair."""


def _others(v: Array) -> Array:
    """``Σ_{m≠i} v_m`` along the last axis, from prefix and suffix sums (no subtraction)."""
    zero = np.zeros_like(v[..., :1])
    before = np.concatenate([zero, np.cumsum(v[..., :-1], axis=-1)], axis=-1)
    after = np.concatenate([np.cumsum(v[..., :0:-1], axis=-1)[..., ::-1], zero], axis=-1)
    return np.asarray(before + after)


def _neg_log_softmax(z: Array) -> Array:
    """``-log softmax(z)_i`` over the last axis, exact also where ``p_i`` is near 1."""
    e = np.exp(z - np.max(np.real(z), axis=-1, keepdims=True))
    likely = np.real(e / np.sum(e, axis=-1, keepdims=True)) > 0.5
    # Where p_i > 1/2, -log p_i = log1p(Σ_{m≠i} e_m / e_i) is a small number computed
    # directly; elsewhere lse(z) - z_i is large and its subtraction harmless.
    ratio = _others(e) / np.where(likely, e, 1)
    return np.where(likely, np.log1p(np.where(likely, ratio, 0)), logsumexp(z)[..., None] - z)


def loss_sum(loss: str, z: Array, y_hat: Array, targets: Array) -> Array:
    """``Σ_{t,b} loss(ŷ_{t,b}, target_{t,b})`` as a 0-d array of the inputs' dtype.

    ``z``, ``y_hat``, ``targets``: (T, B, O).
    """
    if loss == "mse":
        r = y_hat - targets
        return np.asarray(0.5 * np.sum(r * r))
    if loss == "cross_entropy":
        return np.asarray(np.sum(targets * _neg_log_softmax(z)))
    if loss == "binary_cross_entropy":
        # -y log σ(z) - (1 - y) log(1 - σ(z)) = y softplus(-z) + (1 - y) softplus(z)
        return np.asarray(np.sum(targets * softplus(-z) + (1 - targets) * softplus(z)))
    raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSS_OUTPUTS)}")


def loss_grad_logits(output: str, loss: str, z: Array, y_hat: Array, targets: Array) -> Array:
    """``∂L/∂z`` for ``ŷ = f_y(z)``, shape (T, B, O).

    mse: ``(∂ŷ/∂z)ᵀ (ŷ - y)``; cross_entropy after softmax: ``ŷ Σ_o y_o - y``, computed
    as ``ŷ_i Σ_{m≠i} y_m - y_i Σ_{m≠i} ŷ_m``; binary_cross_entropy after sigmoid:
    ``ŷ - y``, computed as ``(1 - y) σ(z) - y σ(-z)``. Each form is a difference of two
    non-negative terms that cancel only where the true gradient itself is small
    relative to them.
    """
    if loss == "mse":
        return OUTPUT[output].vjp(z, y_hat, y_hat - targets)
    if loss == "cross_entropy":
        return np.asarray(y_hat * _others(targets) - targets * _others(y_hat))
    if loss == "binary_cross_entropy":
        return np.asarray((1 - targets) * y_hat - targets * sigmoid(-z))
    raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSS_OUTPUTS)}")
