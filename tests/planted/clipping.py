"""Right gradients spoiled the way training scripts spoil them: clipped, as min-char-rnn does."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from planted.batched import grad

Array = NDArray[Any]


def clipped_at_5(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    # min-char-rnn: np.clip(dparam, -5, 5, out=dparam) against exploding gradients.
    return {k: np.clip(v, -5, 5) for k, v in grad(params, xs, targets).items()}


def W_scaled(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """Only ∂L/∂W wrong, by 1%: neither clipped nor built from h_t."""
    full = grad(params, xs, targets)
    return {**full, "W": 1.01 * full["W"]}
