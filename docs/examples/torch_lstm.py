"""A PyTorch user's LSTM gradient, written by hand in NumPy against ``nn.LSTM``'s names.

``params`` is an ``nn.LSTM(D, H)`` ``state_dict`` plus the initial states and an
``nn.Linear(H, O)`` head, as ``bptt-ref check --layout torch`` hands them over:
``weight_ih_l0`` (4H, D), ``weight_hh_l0`` (4H, H), ``bias_ih_l0``, ``bias_hh_l0`` (4H,),
``h_0``, ``c_0`` (1, B, H), ``fc.weight`` (O, H), ``fc.bias`` (O,); ``xs`` (T, B, D) and
``targets`` (T, B, O) time-major; L = Σ_t Σ_b ½‖fc(h_t) − y_t‖². ``grad`` reads the gate
blocks i, f, g, o as PyTorch stacks them; ``grad_ported_from_onnx`` is the same code with
ONNX's order i, o, f, c left in, the mistake of a port that renamed W, R, B only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]


def _sigmoid(a: Array) -> Array:
    out: Array = 0.5 * (1 + np.tanh(0.5 * a))
    return out


def _lstm(params: dict[str, Array], xs: Array, targets: Array, order: str) -> dict[str, Array]:
    Wi, Wh = params["weight_ih_l0"], params["weight_hh_l0"]
    b = params["bias_ih_l0"] + params["bias_hh_l0"]
    U, by = params["fc.weight"], params["fc.bias"]
    h, c = params["h_0"][0], params["c_0"][0]
    H = h.shape[1]
    block = {g: slice(k * H, (k + 1) * H) for k, g in enumerate(order)}
    tape = []
    for x in xs:
        a = x @ Wi.T + h @ Wh.T + b
        i, f = _sigmoid(a[:, block["i"]]), _sigmoid(a[:, block["f"]])
        g, o = np.tanh(a[:, block["g"]]), _sigmoid(a[:, block["o"]])
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)
        tape.append((x, h, c, i, f, g, o, c_new, h_new))
        h, c = h_new, c_new

    grads = {k: np.zeros_like(v) for k, v in params.items()}
    gxs = np.zeros_like(xs)
    dh_next, dc_next = np.zeros_like(h), np.zeros_like(c)
    for t in reversed(range(len(tape))):
        x, h_prev, c_prev, i, f, g, o, c, h = tape[t]
        dz = h @ U.T + by - targets[t]
        grads["fc.weight"] += dz.T @ h
        grads["fc.bias"] += dz.sum(axis=0)
        dh = dz @ U + dh_next
        tc = np.tanh(c)
        dc = dh * o * (1 - tc**2) + dc_next
        da = np.empty((x.shape[0], 4 * H))
        da[:, block["i"]] = dc * g * i * (1 - i)
        da[:, block["f"]] = dc * c_prev * f * (1 - f)
        da[:, block["g"]] = dc * i * (1 - g**2)
        da[:, block["o"]] = dh * tc * o * (1 - o)
        grads["weight_ih_l0"] += da.T @ x
        grads["weight_hh_l0"] += da.T @ h_prev
        grads["bias_ih_l0"] += da.sum(axis=0)
        gxs[t] = da @ Wi
        dh_next, dc_next = da @ Wh, dc * f
    grads["bias_hh_l0"] = grads["bias_ih_l0"].copy()
    grads["h_0"], grads["c_0"] = dh_next[None], dc_next[None]
    return {**grads, "xs": gxs}


def grad(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    return _lstm(params, xs, targets, order="ifgo")


def grad_ported_from_onnx(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    return _lstm(params, xs, targets, order="iofg")
