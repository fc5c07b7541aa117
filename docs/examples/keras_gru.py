"""A Keras user's GRU gradient, written by hand in NumPy against ``keras.layers.GRU``'s names.

``params`` holds a ``GRU(H, reset_after=True)`` cell's weights, its initial state and a
``Dense(O)`` head, as ``bptt-ref check --layout keras`` hands them over: ``kernel``
(D, 3H), ``recurrent_kernel`` (H, 3H), ``bias`` (2, 3H) = [input bias; recurrent bias],
``h0`` (B, H), ``dense/kernel`` (H, O), ``dense/bias`` (O,); ``xs`` (B, T, D) and
``targets`` (B, T, O) batch-major; L = Σ_t Σ_b ½‖dense(h_t) − y_t‖². Keras stacks the
gates z, r, h and computes ``h_t = z ⊙ h_{t−1} + (1 − z) ⊙ h̃``. ``grad`` reads them so;
``grad_torch_order`` reads PyTorch's r, z, n, the mistake of code carried over from
``nn.GRU``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]


def _sigmoid(a: Array) -> Array:
    out: Array = 0.5 * (1 + np.tanh(0.5 * a))
    return out


def _gru(params: dict[str, Array], xs: Array, targets: Array, order: str) -> dict[str, Array]:
    K, R, bias = params["kernel"], params["recurrent_kernel"], params["bias"]
    Wy, by = params["dense/kernel"], params["dense/bias"]
    h = params["h0"]
    H = h.shape[1]
    z_, r_, n_ = (slice(order.index(g) * H, (order.index(g) + 1) * H) for g in "zrn")
    tape = []
    for t in range(xs.shape[1]):
        x = xs[:, t]
        mx, mh = x @ K + bias[0], h @ R + bias[1]
        z, r = _sigmoid(mx[:, z_] + mh[:, z_]), _sigmoid(mx[:, r_] + mh[:, r_])
        n = np.tanh(mx[:, n_] + r * mh[:, n_])
        h_new = z * h + (1 - z) * n
        tape.append((x, h, z, r, n, mh[:, n_], h_new))
        h = h_new

    grads = {k: np.zeros_like(v) for k, v in params.items()}
    gxs = np.zeros_like(xs)
    dh_next = np.zeros_like(h)
    for t in reversed(range(len(tape))):
        x, h_prev, z, r, n, hn, h = tape[t]
        dy = h @ Wy + by - targets[:, t]
        grads["dense/kernel"] += h.T @ dy
        grads["dense/bias"] += dy.sum(axis=0)
        dh = dy @ Wy.T + dh_next
        da_n = dh * (1 - z) * (1 - n**2)
        da_z = dh * (h_prev - n) * z * (1 - z)
        da_r = da_n * hn * r * (1 - r)
        dmx, dmh = np.empty((x.shape[0], 3 * H)), np.empty((x.shape[0], 3 * H))
        dmx[:, z_], dmx[:, r_], dmx[:, n_] = da_z, da_r, da_n
        dmh[:, z_], dmh[:, r_], dmh[:, n_] = da_z, da_r, da_n * r
        grads["kernel"] += x.T @ dmx
        grads["recurrent_kernel"] += h_prev.T @ dmh
        grads["bias"] += np.stack([dmx.sum(axis=0), dmh.sum(axis=0)])
        gxs[:, t] = dmx @ K.T
        dh_next = dh * z + dmh @ R.T
    grads["h0"] = dh_next
    return {**grads, "xs": gxs}


def grad(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    return _gru(params, xs, targets, order="zrn")


def grad_torch_order(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    return _gru(params, xs, targets, order="rzn")
