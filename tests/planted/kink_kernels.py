"""Hand-written rnn BPTT for relu and leaky_relu (identity output, mse) that differ only in
the derivative they take at exactly ``a = 0``, each the way some real code writes it.

``_bptt``'s ``at_zero(t)`` is that derivative at step t; everywhere else ``f_h'`` is 1 for
``a > 0`` and the negative slope for ``a < 0``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]

LEAKY = 0.01


def _forward(p: dict[str, Array], h0: Array, xs: Array, slope: float) -> tuple[Array, Array]:
    """One layer: its states h0, h_0 … h_{T-1} (T + 1, B, H) and pre-activations (T, B, H)."""
    hs, pre = [h0], []
    for x in xs:
        a = x @ p["V"].T + hs[-1] @ p["W"].T + p["b_h"]
        pre.append(a)
        hs.append(np.where(a > 0, a, slope * a))
    return np.stack(hs), np.stack(pre)


def _backward(
    p: dict[str, Array],
    xs: Array,
    hs: Array,
    pre: Array,
    dh: Array,
    slope: float,
    at_zero: Callable[[int], float],
) -> dict[str, Array]:
    """One layer's gradients from ``dh`` (T, B, H), the direct ∂L/∂h_t, with ``xs``'s."""
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    grads["xs"] = np.zeros_like(xs)
    carried = np.zeros_like(hs[0])
    for t in reversed(range(xs.shape[0])):
        a = pre[t]
        slope_t = np.where(a > 0, 1.0, slope)
        slope_t[a == 0] = at_zero(t)
        delta = (dh[t] + carried) * slope_t
        grads["V"] += delta.T @ xs[t]
        grads["W"] += delta.T @ hs[t]
        grads["b_h"] += delta.sum(axis=0)
        grads["xs"][t] = delta @ p["V"]
        carried = delta @ p["W"]
    grads["h0"] = carried
    return grads


def _bptt(
    params: dict[str, Array],
    xs: Array,
    targets: Array,
    *,
    slope: float,
    at_zero: Callable[[int], float],
    layers: int = 1,
) -> dict[str, Array]:
    """A stack of ``layers`` unidirectional layers (one: the single cell's keys)."""
    U, b_y = params["U"], params["b_y"]
    own = [
        {w: params[w if layers == 1 else f"{w}_l{k}"] for w in ("V", "W", "b_h")}
        for k in range(layers)
    ]
    h0 = [params["h0"]] if layers == 1 else list(params["h0"])
    inputs, runs = [], []
    x = xs
    for k in range(layers):
        inputs.append(x)
        runs.append(_forward(own[k], h0[k], x, slope))
        x = runs[-1][0][1:]
    g = x @ U.T + b_y - targets
    grads: dict[str, Array] = {
        "U": np.einsum("tbo,tbh->oh", g, x),
        "b_y": g.sum(axis=(0, 1)),
    }
    dh = g @ U
    starts: list[Array] = []
    for k in reversed(range(layers)):
        layer = _backward(own[k], inputs[k], *runs[k], dh, slope, at_zero)
        for w in ("V", "W", "b_h"):
            grads[w if layers == 1 else f"{w}_l{k}"] = layer[w]
        starts.insert(0, layer["h0"])
        dh = layer["xs"]
    grads["h0"] = starts[0] if layers == 1 else np.stack(starts)
    grads["xs"] = dh
    return grads


def leaky_relu_torch(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """leaky_relu as PyTorch differentiates it, ``where(a > 0, 1, 0.01)``: 0.01 at 0."""
    return _bptt(params, xs, targets, slope=LEAKY, at_zero=lambda t: LEAKY)


def leaky_relu_jax(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """leaky_relu as ``jax.nn`` differentiates it, ``where(a >= 0, 1, 0.01)``: 1 at 0."""
    return _bptt(params, xs, targets, slope=LEAKY, at_zero=lambda t: 1.0)


def relu_ge(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """relu with its derivative written ``a >= 0``: 1 at 0 (the derivative from above)."""
    return _bptt(params, xs, targets, slope=0.0, at_zero=lambda t: 1.0)


def relu_gt(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """relu with its derivative written ``a > 0``: 0 at 0 (JAX's and PyTorch's)."""
    return _bptt(params, xs, targets, slope=0.0, at_zero=lambda t: 0.0)


def relu_mixed(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """relu whose derivative test is ``a >= 0`` at even steps and ``a > 0`` at odd ones:
    each kink takes one of its one-sided derivatives, but no one convention holds."""
    return _bptt(params, xs, targets, slope=0.0, at_zero=lambda t: 1.0 if t % 2 == 0 else 0.0)


def relu_half(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """relu with the derivative 0.5 at 0: neither one-sided derivative."""
    return _bptt(params, xs, targets, slope=0.0, at_zero=lambda t: 0.5)


def relu_ge_stack(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """:func:`relu_ge` in each layer of a two-layer stack (``num_layers=2``)."""
    return _bptt(params, xs, targets, slope=0.0, at_zero=lambda t: 1.0, layers=2)
