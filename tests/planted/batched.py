"""Batched BPTT in the inputs' dtype, as a textbook writes it, and the bugs people plant in it.

``grad`` is right for tanh / identity / mse; ``grad_softmax_ce`` for tanh / softmax /
cross_entropy and ``grad_sigmoid_bce`` for sigmoid / sigmoid / binary_cross_entropy.
Every other public name is one realistic bug, planted by ``_bptt``'s ``bug`` argument at
the line where it is usually made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]
GradFn = Callable[[dict[str, Array], Array, Array], dict[str, Array]]


def _sigmoid(a: Array) -> Array:
    s: Array = 1 / (1 + np.exp(-a))
    return s


def _softmax(z: Array) -> Array:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    p: Array = e / e.sum(axis=-1, keepdims=True)
    return p


def _bptt(
    params: dict[str, Array], xs: Array, targets: Array, *, hidden: str, head: str, bug: str
) -> dict[str, Array]:
    U, V, W, b_h, b_y, h0 = (params[k] for k in ("U", "V", "W", "b_h", "b_y", "h0"))
    T, B, _ = xs.shape
    f = np.tanh if hidden == "tanh" else _sigmoid
    hs = [h0]
    for t in range(T):
        hs.append(f(xs[t] @ V.T + hs[t] @ W.T + b_h))

    grads = {k: np.zeros_like(v) for k, v in params.items()}
    grads["xs"] = np.zeros_like(xs)
    dh_next = np.zeros_like(h0)
    da = np.zeros_like(h0)
    first = 1 if bug == "first_step_skipped" else 0
    for t in reversed(range(first, T)):
        z = hs[t + 1] @ U.T + b_y
        y = targets[t]
        if head == "identity/mse":
            g = 2 * (z - y) if bug == "mse_without_half" else z - y
        elif head == "softmax/cross_entropy":
            g = _softmax(z) - y
        else:
            g = z - y if bug == "bce_on_logits" else _sigmoid(z) - y
        if bug == "mean_over_time":
            g = g / T
        if bug == "mean_over_batch":
            g = g / B
        grads["U"] += g.T @ hs[t + 1]
        grads["b_y"] += g.mean(axis=0) if bug == "b_y_mean_over_batch" else g.sum(axis=0)
        h = hs[t + 1]
        if hidden == "tanh":
            slope = 1 - h**2
        else:
            slope = h * (h - 1) if bug == "sigmoid_prime_sign" else h * (1 - h)
        da = (g @ U + dh_next) * (1 if bug == "no_tanh_prime" else slope)
        grads["W"] += da.T @ (hs[t + 1] if bug == "h_t_in_dW" else hs[t])
        grads["V"] += da.T @ xs[t]
        grads["b_h"] += da.sum(axis=0)
        grads["xs"][t] = da @ V
        dh_next = da @ (W.T if bug == "transposed_W_backward" else W)
        if bug == "truncated_after_3" and t % 3 == 0 and t > 0:
            dh_next = np.zeros_like(dh_next)  # the state is detached every 3 steps
    grads["h0"] = da if bug == "dh0_without_W" else dh_next
    return grads


def _variant(bug: str, hidden: str = "tanh", head: str = "identity/mse") -> GradFn:
    def fn(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
        return _bptt(params, xs, targets, hidden=hidden, head=head, bug=bug)

    return fn


grad = _variant("")
grad_softmax_ce = _variant("", head="softmax/cross_entropy")
grad_sigmoid_bce = _variant("", hidden="sigmoid", head="sigmoid/binary_cross_entropy")

mean_over_time = _variant("mean_over_time")
mean_over_batch = _variant("mean_over_batch")
mse_without_half = _variant("mse_without_half")
no_tanh_prime = _variant("no_tanh_prime")
h_t_in_dW = _variant("h_t_in_dW")
first_step_skipped = _variant("first_step_skipped")
truncated_after_3 = _variant("truncated_after_3")
transposed_W_backward = _variant("transposed_W_backward")
b_y_mean_over_batch = _variant("b_y_mean_over_batch")
dh0_without_W = _variant("dh0_without_W")
sigmoid_prime_sign = _variant("sigmoid_prime_sign", hidden="sigmoid")
bce_on_logits = _variant("bce_on_logits", hidden="sigmoid", head="sigmoid/binary_cross_entropy")
