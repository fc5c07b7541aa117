"""An LSTM's BPTT written by hand in NumPy, as a user writes it, and the bugs people plant in it.

For tanh / identity / mse in the PyTorch layout: ``W_ih`` (4H, D), ``W_hh`` (4H, H),
``b_ih`` and ``b_hh`` (4H,) stacked in the gate order i, f, g, o; ``h0``, ``c0`` (B, H).
``grad`` is right; every other public name is one realistic bug, planted by ``_bptt``'s
arguments at the line where it is usually made.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]
NAMES = ("W_ih", "W_hh", "b_ih", "b_hh", "h0", "c0", "U", "b_y")


def _sigmoid(a: Array) -> Array:
    s: Array = 1 / (1 + np.exp(-a))
    return s


def _bptt(
    params: dict[str, Array], xs: Array, targets: Array, *, order: str = "ifgo", bug: str = ""
) -> dict[str, Array]:
    """``order``: the gate each block of the weights is read as (Karpathy's lstm.py: "ifog")."""
    W_ih, W_hh, b_ih, b_hh, h0, c0, U, b_y = (params[k] for k in NAMES)
    T = xs.shape[0]
    H = h0.shape[1]
    block = {gate: slice(j * H, (j + 1) * H) for j, gate in enumerate(order)}
    hs, cs, gates = [h0], [c0], []
    for t in range(T):
        a = xs[t] @ W_ih.T + b_ih + hs[t] @ W_hh.T + b_hh
        i, f = _sigmoid(a[:, block["i"]]), _sigmoid(a[:, block["f"]])
        g, o = np.tanh(a[:, block["g"]]), _sigmoid(a[:, block["o"]])
        cs.append(f * cs[t] + i * g)
        hs.append(o * np.tanh(cs[t + 1]))
        gates.append((i, f, g, o))

    grads = {k: np.zeros_like(v) for k, v in params.items()}
    grads["xs"] = np.zeros_like(xs)
    dh_next, dc_next = np.zeros_like(h0), np.zeros_like(c0)
    for t in reversed(range(T)):
        i, f, g, o = gates[t]
        dz = hs[t + 1] @ U.T + b_y - targets[t]
        grads["U"] += dz.T @ hs[t + 1]
        grads["b_y"] += dz.sum(axis=0)
        dh = dz @ U + dh_next
        tanh_c = np.tanh(cs[t + 1])
        # ∂h_t/∂c_t = o ⊙ tanh'(c_t); the bug keeps o alone.
        dc = dh * o * (1 if bug == "no_tanh_prime_c" else 1 - tanh_c**2) + dc_next
        da = np.empty((dh.shape[0], 4 * H), dtype=dh.dtype)
        da[:, block["i"]] = dc * g * i * (1 - i)
        da[:, block["f"]] = dc * cs[t] * f * (1 - f)
        da[:, block["g"]] = dc * i * (1 - g**2)
        da[:, block["o"]] = dh * tanh_c * o * (1 - o)
        if bug == "stacked_ifog":  # the gradient's blocks written i, f, o, g
            stacked = np.concatenate([da[:, block[gate]] for gate in "ifog"], axis=1)
        else:
            stacked = da
        grads["W_ih"] += stacked.T @ xs[t]
        grads["W_hh"] += stacked.T @ hs[t]
        grads["b_ih"] += stacked.sum(axis=0)
        grads["b_hh"] += stacked.sum(axis=0)
        grads["xs"][t] = da @ W_ih
        dh_next = da @ W_hh
        if bug != "no_c_carry":  # the forget gate's carry of ∂L/∂c_t into c_{t-1}
            dc_next = dc * f
    grads["h0"], grads["c0"] = dh_next, dc_next
    return grads


def grad(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    return _bptt(params, xs, targets)


def no_c_carry(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """The forget gate without the c_{t-1} carry: ``dc_prev = dc * f`` left out."""
    return _bptt(params, xs, targets, bug="no_c_carry")


def no_c_carry_without_h0(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """:func:`no_c_carry`, returning every key but h0."""
    out = no_c_carry(params, xs, targets)
    del out["h0"]
    return out


def no_tanh_prime_c(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """``tanh(c_t)``'s derivative dropped from ∂h_t/∂c_t: h0 and c0 wrong together."""
    return _bptt(params, xs, targets, bug="no_tanh_prime_c")


def gates_read_ifog(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """Karpathy's lstm.py layout (i, f, o, g) on weights stacked i, f, g, o."""
    return _bptt(params, xs, targets, order="ifog")


def stacked_ifog(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """The forward reads i, f, g, o; the backward writes the weights' gradient i, f, o, g."""
    return _bptt(params, xs, targets, bug="stacked_ifog")
