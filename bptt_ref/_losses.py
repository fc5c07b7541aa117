"""Per-element losses and their gradient with respect to the logits ``z``.

``cross_entropy`` (with ``softmax``) and ``binary_cross_entropy`` (with ``sigmoid``)
are written in terms of the logits, never of ``log ŷ``, so that logits of magnitude
1e4 give a finite loss and gradient without floating-point warnings.
"""

from __future__ import annotations

import numpy as np

from bptt_ref._activations import OUTPUT, Array, logsumexp, softplus

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


def loss_sum(loss: str, z: Array, y_hat: Array, targets: Array) -> Array:
    """``Σ_{t,b} loss(ŷ_{t,b}, target_{t,b})`` as a 0-d array of the inputs' dtype.

    ``z``, ``y_hat``, ``targets``: (T, B, O).
    """
    if loss == "mse":
        r = y_hat - targets
        return np.asarray(0.5 * np.sum(r * r))
    if loss == "cross_entropy":
        # -Σ_o y_o log softmax(z)_o = Σ_o y_o (logsumexp(z) - z_o)
        return np.asarray(np.sum(np.sum(targets, axis=-1) * logsumexp(z)) - np.sum(targets * z))
    if loss == "binary_cross_entropy":
        # -y log σ(z) - (1 - y) log(1 - σ(z)) = softplus(z) - y z
        return np.asarray(np.sum(softplus(z) - targets * z))
    raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSS_OUTPUTS)}")


def loss_grad_logits(output: str, loss: str, z: Array, y_hat: Array, targets: Array) -> Array:
    """``∂L/∂z`` for ``ŷ = f_y(z)``, shape (T, B, O).

    mse: ``(∂ŷ/∂z)ᵀ (ŷ - y)``; cross_entropy after softmax: ``ŷ Σ_o y_o - y``;
    binary_cross_entropy after sigmoid: ``ŷ - y``.
    """
    if loss == "mse":
        return OUTPUT[output].vjp(z, y_hat, y_hat - targets)
    if loss == "cross_entropy":
        return np.asarray(y_hat * np.sum(targets, axis=-1, keepdims=True) - targets)
    if loss == "binary_cross_entropy":
        return y_hat - targets
    raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSS_OUTPUTS)}")
