"""A right tanh / identity / mse gradient in the other common style: one example at a
time, column vectors, in float64 whatever the inputs' dtype (a float32 check accepts
float64 results)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]


def grad(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    U, V, W, b_h, b_y = p["U"], p["V"], p["W"], p["b_h"][:, None], p["b_y"][:, None]
    T, B, _ = xs.shape
    out = {k: np.zeros_like(v) for k, v in p.items()}
    out["xs"] = np.zeros(xs.shape)
    for b in range(B):
        h = [p["h0"][b][:, None]]
        for t in range(T):
            x = xs[t, b].astype(np.float64)[:, None]
            h.append(np.tanh(V @ x + W @ h[t] + b_h))
        dh_next = np.zeros_like(h[0])
        for t in reversed(range(T)):
            dz = U @ h[t + 1] + b_y - targets[t, b].astype(np.float64)[:, None]
            out["U"] += dz @ h[t + 1].T
            out["b_y"] += dz[:, 0]
            da = (U.T @ dz + dh_next) * (1 - h[t + 1] ** 2)
            out["W"] += da @ h[t].T
            out["V"] += da @ xs[t, b].astype(np.float64)[None, :]
            out["b_h"] += da[:, 0]
            out["xs"][t, b] = (V.T @ da)[:, 0]
            dh_next = W.T @ da
        out["h0"][b] = dh_next[:, 0]
    return out
