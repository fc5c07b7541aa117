"""A GRU's BPTT written by hand in NumPy (reset after the product, as PyTorch), and two bugs.

For tanh / identity / mse: ``W_ih`` (3H, D), ``W_hh`` (3H, H), ``b_ih`` and ``b_hh``
(3H,) stacked r, z, n; ``h0`` (B, H). ``grad`` is right, ``z_swapped`` writes
h_t = z ⊙ n + (1 − z) ⊙ h_{t-1}, the other convention of the papers, forward and backward,
and ``gates_read_zrn`` reads the weights' blocks in Keras's order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]
NAMES = ("W_ih", "W_hh", "b_ih", "b_hh", "h0", "U", "b_y")


def _sigmoid(a: Array) -> Array:
    s: Array = 1 / (1 + np.exp(-a))
    return s


def _bptt(
    params: dict[str, Array], xs: Array, targets: Array, *, order: str = "rzn", swap: bool = False
) -> dict[str, Array]:
    """``order``: the gate each block of the weights is read as (Keras stacks z, r, n)."""
    W_ih, W_hh, b_ih, b_hh, h0, U, b_y = (params[k] for k in NAMES)
    T = xs.shape[0]
    H = h0.shape[1]
    r_, z_, n_ = (slice(order.index(gate) * H, (order.index(gate) + 1) * H) for gate in "rzn")
    hs, steps = [h0], []
    for t in range(T):
        gx = xs[t] @ W_ih.T + b_ih
        gh = hs[t] @ W_hh.T + b_hh
        r = _sigmoid(gx[:, r_] + gh[:, r_])
        z = _sigmoid(gx[:, z_] + gh[:, z_])
        n = np.tanh(gx[:, n_] + r * gh[:, n_])
        keep = 1 - z if swap else z  # the share of h_{t-1} in h_t
        hs.append((1 - keep) * n + keep * hs[t])
        steps.append((r, z, n, gh[:, n_]))

    grads = {k: np.zeros_like(v) for k, v in params.items()}
    grads["xs"] = np.zeros_like(xs)
    dh_next = np.zeros_like(h0)
    for t in reversed(range(T)):
        r, z, n, hn = steps[t]
        dz_out = hs[t + 1] @ U.T + b_y - targets[t]
        grads["U"] += dz_out.T @ hs[t + 1]
        grads["b_y"] += dz_out.sum(axis=0)
        dh = dz_out @ U + dh_next
        keep = 1 - z if swap else z
        dn = dh * (1 - keep)
        dkeep = dh * (hs[t] - n)
        da_n = dn * (1 - n**2)
        da_z = (-dkeep if swap else dkeep) * z * (1 - z)
        da_r = da_n * hn * r * (1 - r)
        by_gate = {"r": (da_r, da_r), "z": (da_z, da_z), "n": (da_n, da_n * r)}
        input_side = np.concatenate([by_gate[gate][0] for gate in order], axis=1)
        hidden_side = np.concatenate([by_gate[gate][1] for gate in order], axis=1)
        grads["W_ih"] += input_side.T @ xs[t]
        grads["b_ih"] += input_side.sum(axis=0)
        grads["W_hh"] += hidden_side.T @ hs[t]
        grads["b_hh"] += hidden_side.sum(axis=0)
        grads["xs"][t] = input_side @ W_ih
        dh_next = dh * keep + hidden_side @ W_hh
    grads["h0"] = dh_next
    return grads


def grad(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    return _bptt(params, xs, targets)


def z_swapped(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    return _bptt(params, xs, targets, swap=True)


def gates_read_zrn(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """Keras's gate order (z, r, n) on weights stacked r, z, n."""
    return _bptt(params, xs, targets, order="zrn")
