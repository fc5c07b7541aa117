"""Gradient functions that break the protocol in one way each (and one that keeps it
with a subset of the keys)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from planted.batched import grad

Array = NDArray[Any]


def only_W_and_b_h(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    full = grad(params, xs, targets)
    return {"W": full["W"], "b_h": full["b_h"]}


def unknown_key(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    return {"dW": grad(params, xs, targets)["W"]}


def not_a_mapping(params: dict[str, Array], xs: Array, targets: Array) -> list[Array]:
    return list(grad(params, xs, targets).values())


def b_h_as_row(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    return {"b_h": grad(params, xs, targets)["b_h"][None, :]}


def float32_result(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    return {k: v.astype(np.float32) for k, v in grad(params, xs, targets).items()}


def h0_only_for_short(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    full = grad(params, xs, targets)
    return full if xs.shape[0] <= 2 else {k: v for k, v in full.items() if k != "h0"}


def raises_beyond_T3(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    if xs.shape[0] > 3:
        raise IndexError("buffer of 3 steps")
    return grad(params, xs, targets)


def two_arguments(params: dict[str, Array], xs: Array) -> dict[str, Array]:
    return {}
