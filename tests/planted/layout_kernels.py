"""Kernels written for a framework's layout, right and mixed up, for ``--layout`` checks.

The LSTM and GRU ones are the hand-written NumPy BPTT of :mod:`planted.lstm` and
:mod:`planted.gru` (which read the weights' gate blocks in any order), renamed and
reshaped by hand to the framework's arrays, so they do not lean on bptt_ref.layouts.
Each mixed-up kernel is a right kernel of one convention handed the arrays of another.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

import bptt_ref
import bptt_ref.stack
from planted import gru, lstm

Array = NDArray[Any]


def _onnx_lstm(params: dict[str, Array], xs: Array, targets: Array, names: dict[str, str]) -> Any:
    """ONNX's LSTM (gates i, o, f, c; W (1, 4H, D), R (1, 4H, H), B (1, 8H), initial
    states (1, B, H)) under the keys ``names`` gives for W, R, B, initial_h, initial_c."""
    H = params[names["initial_h"]].shape[-1]
    B = params[names["B"]][0]
    canonical = {
        "W_ih": params[names["W"]][0],
        "W_hh": params[names["R"]][0],
        "b_ih": B[: 4 * H],
        "b_hh": B[4 * H :],
        "h0": params[names["initial_h"]][0],
        "c0": params[names["initial_c"]][0],
        "U": params[names["U"]],
        "b_y": params[names["b_y"]],
    }
    g = lstm._bptt(canonical, xs, targets, order="iofg")
    return {
        names["W"]: g["W_ih"][None],
        names["R"]: g["W_hh"][None],
        names["B"]: np.concatenate([g["b_ih"], g["b_hh"]])[None],
        names["initial_h"]: g["h0"][None],
        names["initial_c"]: g["c0"][None],
        names["U"]: g["U"],
        names["b_y"]: g["b_y"],
        "xs": g["xs"],
    }


_ONNX = {k: k for k in ("W", "R", "B", "initial_h", "initial_c", "U", "b_y")}
_TORCH = {
    "W": "weight_ih_l0",
    "R": "weight_hh_l0",
    "initial_h": "h_0",
    "initial_c": "c_0",
    "U": "fc.weight",
    "b_y": "fc.bias",
}


def onnx_lstm(params: dict[str, Array], xs: Array, targets: Array) -> Any:
    """A right ONNX LSTM kernel (check it with ``--layout onnx``)."""
    return _onnx_lstm(params, xs, targets, _ONNX)


def onnx_lstm_in_torch_names(params: dict[str, Array], xs: Array, targets: Array) -> Any:
    """The ONNX kernel ported to PyTorch's state_dict by renaming alone: it still reads the
    gate blocks i, o, f, c, where ``nn.LSTM`` stacks i, f, g, o."""
    fused = {**params, "B": np.concatenate([params["bias_ih_l0"], params["bias_hh_l0"]])[None]}
    fused = {k: v[None] if k in ("weight_ih_l0", "weight_hh_l0") else v for k, v in fused.items()}
    out = _onnx_lstm(fused, xs, targets, {**_TORCH, "B": "B"})
    H = params["h_0"].shape[-1]
    bias = out.pop("B")[0]
    out["weight_ih_l0"], out["weight_hh_l0"] = out["weight_ih_l0"][0], out["weight_hh_l0"][0]
    return {**out, "bias_ih_l0": bias[: 4 * H], "bias_hh_l0": bias[4 * H :]}


def _keras_gru(
    params: dict[str, Array], xs: Array, targets: Array, *, order: str, swap: bool = False
) -> dict[str, Array]:
    """Keras' GRU(reset_after=True) arrays, batch-major data, gate blocks read in ``order``."""
    canonical = {
        "W_ih": params["kernel"].T,
        "W_hh": params["recurrent_kernel"].T,
        "b_ih": params["bias"][0],
        "b_hh": params["bias"][1],
        "h0": params["h0"],
        "U": params["dense/kernel"].T,
        "b_y": params["dense/bias"],
    }
    g = gru._bptt(canonical, xs.swapaxes(0, 1), targets.swapaxes(0, 1), order=order, swap=swap)
    return {
        "kernel": g["W_ih"].T,
        "recurrent_kernel": g["W_hh"].T,
        "bias": np.stack([g["b_ih"], g["b_hh"]]),
        "h0": g["h0"],
        "dense/kernel": g["U"].T,
        "dense/bias": g["b_y"],
        "xs": g["xs"].swapaxes(0, 1),
    }


def keras_gru(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """A right Keras GRU kernel (gates z, r, h)."""
    return _keras_gru(params, xs, targets, order="zrn")


def torch_gru_in_keras_names(params: dict[str, Array], xs: Array, targets: Array) -> Any:
    """PyTorch's gate order r, z, n on Keras' arrays, stacked z, r, h: r and z swapped."""
    return _keras_gru(params, xs, targets, order="rzn")


def keras_gru_z_swapped(params: dict[str, Array], xs: Array, targets: Array) -> Any:
    """Keras' arrays, h_t = z ⊙ n + (1 − z) ⊙ h_{t−1}: z and 1 − z exchanged."""
    return _keras_gru(params, xs, targets, order="zrn", swap=True)


def keras_rnn_transposed(params: dict[str, Array], xs: Array, targets: Array) -> Any:
    """A Keras SimpleRNN kernel (x K + h R + b) that uses h Rᵀ, PyTorch's habit."""
    canonical = {
        "V": params["kernel"].T,
        "W": params["recurrent_kernel"],
        "b_h": params["bias"],
        "h0": params["h0"],
        "U": params["dense/kernel"].T,
        "b_y": params["dense/bias"],
    }
    _, g = bptt_ref.loss_and_grad(canonical, xs.swapaxes(0, 1), targets.swapaxes(0, 1))
    return {
        "kernel": g["V"].T,
        "recurrent_kernel": g["W"],
        "bias": g["b_h"],
        "h0": g["h0"],
        "dense/kernel": g["U"].T,
        "dense/bias": g["b_y"],
        "xs": g["xs"].swapaxes(0, 1),
    }


def onnx_gru_reset_before(params: dict[str, Array], xs: Array, targets: Array) -> Any:
    """ONNX's GRU with linear_before_reset=0 (reset before the product): gates z, r, h
    reordered by hand to bptt-ref's r, z, n, then bptt-ref's reset-before GRU."""
    H = params["initial_h"].shape[-1]

    def rzn(a: Array) -> Array:  # z, r, n blocks → r, z, n
        return np.concatenate([a[H : 2 * H], a[:H], a[2 * H :]])

    B = params["B"][0]
    canonical = {
        "W_ih": rzn(params["W"][0]),
        "W_hh": rzn(params["R"][0]),
        "b_ih": rzn(B[: 3 * H]),
        "b_hh": rzn(B[3 * H :]),
        "h0": params["initial_h"][0],
        "U": params["U"],
        "b_y": params["b_y"],
    }
    _, g = bptt_ref.loss_and_grad(canonical, xs, targets, cell="gru_reset_before")
    return {
        "W": rzn(g["W_ih"])[None],
        "R": rzn(g["W_hh"])[None],
        "B": np.concatenate([rzn(g["b_ih"]), rzn(g["b_hh"])])[None],
        "initial_h": g["h0"][None],
        "U": g["U"],
        "b_y": g["b_y"],
        "xs": g["xs"],
    }


def flax_lstm_tree(tree: dict[str, Any], xs: Array, targets: Array) -> Any:
    """Flax's OptimizedLSTMCell tree in, the gradient tree out (through bptt-ref's own
    reference and converters: this client tests the plumbing of trees, not the math)."""
    from bptt_ref.layouts import LAYOUTS

    flax = LAYOUTS["flax"]
    assert isinstance(tree["carry"], tuple), "the carry is the tuple (c, h)"
    assert tree["cell"]["hi"]["bias"].shape == (tree["carry"][1].shape[1],)
    assert "bias" not in tree["cell"]["ii"], "only the hidden side is biased"
    flat = flax.flatten(tree)
    canonical = flax.from_layout("lstm", {**flat, "xs": xs})
    data = canonical.pop("xs")
    _, grads = bptt_ref.loss_and_grad(canonical, data, flax.data("lstm", targets), cell="lstm")
    return flax.nest(flax.grads_to_layout("lstm", grads))


def torch_rnn_bias_hh_without_gradient(
    params: dict[str, Array], xs: Array, targets: Array
) -> dict[str, Array]:
    """``nn.RNN``'s arrays (renamed by hand); ``bias_hh_l0``'s gradient left at zero,
    though it adds into the same pre-activation as ``bias_ih_l0``."""
    canonical = {
        "V": params["weight_ih_l0"],
        "W": params["weight_hh_l0"],
        "b_h": params["bias_ih_l0"] + params["bias_hh_l0"],
        "h0": params["h_0"][0],
        "U": params["fc.weight"],
        "b_y": params["fc.bias"],
    }
    _, g = bptt_ref.loss_and_grad(canonical, xs, targets)
    return {
        "weight_ih_l0": g["V"],
        "weight_hh_l0": g["W"],
        "bias_ih_l0": g["b_h"],
        "bias_hh_l0": np.zeros_like(g["b_h"]),
        "h_0": g["h0"][None],
        "fc.weight": g["U"],
        "fc.bias": g["b_y"],
    }


def _torch_stack_names(params: dict[str, Array]) -> dict[str, str]:
    """PyTorch's state_dict keys (and h_0, c_0, fc.*) present in ``params`` → bptt-ref's
    stack names, renamed by hand: ``weight_ih_l1_reverse`` → ``W_ih_l1_reverse``."""
    fixed = {"h_0": "h0", "c_0": "c0", "fc.weight": "U", "fc.bias": "b_y"}
    prefixes = {"weight_ih": "W_ih", "weight_hh": "W_hh", "bias_ih": "b_ih", "bias_hh": "b_hh"}
    names = {}
    for key in params:
        head, _, suffix = key.partition("_l")
        names[key] = fixed[key] if key in fixed else f"{prefixes[head]}_l{suffix}"
    return names


def _torch_stack(
    params: dict[str, Array], xs: Array, targets: Array, *, cell: str, edit: Any = None
) -> dict[str, Array]:
    """bptt-ref's NumPy stack (:mod:`bptt_ref.stack`, checked against the JAX oracle on its
    own) called on PyTorch's arrays renamed by hand; ``edit(ours)`` plants a mix-up in
    the arrays it reads and returns how to map the gradients back."""
    names = _torch_stack_names(params)
    ours = {names[k]: v for k, v in params.items()}
    num_layers = 1 + max(int(k.split("_l")[1].split("_")[0]) for k in params if "_l" in k)
    bidirectional = any(k.endswith("_reverse") for k in params)
    back = edit(ours) if edit is not None else (lambda g: g)
    _, grads = bptt_ref.stack.loss_and_grad(
        ours, xs, targets, cell=cell, num_layers=num_layers, bidirectional=bidirectional
    )
    grads = back(dict(grads))
    return {**{k: grads[v] for k, v in names.items()}, "xs": grads["xs"]}


def torch_lstm_stack(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """A right kernel of ``nn.LSTM(num_layers=L, bidirectional=...)`` + ``nn.Linear`` in
    PyTorch's names (check it with ``--layout torch --layers L [--bidirectional]``)."""
    return _torch_stack(params, xs, targets, cell="lstm")


def _swap_layer_1_directions_states(ours: dict[str, Array]) -> Any:
    rows = [0, 1, 3, 2]
    ours["h0"], ours["c0"] = ours["h0"][rows], ours["c0"][rows]

    def back(g: dict[str, Array]) -> dict[str, Array]:
        return {**g, "h0": g["h0"][rows], "c0": g["c0"][rows]}

    return back


def torch_lstm_stack_directions_states_swapped(
    params: dict[str, Array], xs: Array, targets: Array
) -> dict[str, Array]:
    """A 2-layer bidirectional LSTM kernel that starts layer 1's forward direction from
    the reverse direction's rows of h_0 and c_0 and vice versa (rows 2 and 3 swapped)."""
    return _torch_stack(params, xs, targets, cell="lstm", edit=_swap_layer_1_directions_states)


def _layer_1_reads_layer_0_reverse(ours: dict[str, Array]) -> Any:
    ours["W_hh_l1"] = ours["W_hh_l0_reverse"]
    return lambda g: g


def torch_lstm_stack_reads_layer_0_reverse(
    params: dict[str, Array], xs: Array, targets: Array
) -> dict[str, Array]:
    """A 2-layer bidirectional LSTM kernel whose layer 1 forward direction multiplies by
    ``weight_hh_l0_reverse`` where PyTorch reads ``weight_hh_l1`` (an indexing slip)."""
    return _torch_stack(params, xs, targets, cell="lstm", edit=_layer_1_reads_layer_0_reverse)


def _tf1_lstm(
    params: dict[str, Array], xs: Array, targets: Array, *, order: str, forget_bias: float
) -> dict[str, Array]:
    """TensorFlow 1's LSTMCell (kernel (D+H, 4H) used as [x, h] K, bias (4H,), a constant
    ``forget_bias`` added to the f block) with its gate blocks read in ``order``."""
    K, H = params["kernel"], params["h0"].shape[-1]
    D = K.shape[0] - H
    constant = np.zeros(4 * H)
    f = order.index("f")
    constant[f * H : (f + 1) * H] = forget_bias
    canonical = {
        "W_ih": K[:D].T,
        "W_hh": K[D:].T,
        "b_ih": params["bias"],
        "b_hh": constant.astype(K.dtype),
        "h0": params["h0"],
        "c0": params["c0"],
        "U": params["dense/kernel"].T,
        "b_y": params["dense/bias"],
    }
    g = lstm._bptt(canonical, xs.swapaxes(0, 1), targets.swapaxes(0, 1), order=order)
    return {
        "kernel": np.concatenate([g["W_ih"].T, g["W_hh"].T]),
        "bias": g["b_ih"],
        "c0": g["c0"],
        "h0": g["h0"],
        "dense/kernel": g["U"].T,
        "dense/bias": g["b_y"],
        "xs": g["xs"].swapaxes(0, 1),
    }


def tf1_lstm(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """A right TF1 LSTMCell kernel: gates i, j, f, o, forget_bias 1.0 (``--layout tf1``)."""
    return _tf1_lstm(params, xs, targets, order="igfo", forget_bias=1.0)


def tf1_lstm_without_forget_bias(
    params: dict[str, Array], xs: Array, targets: Array
) -> dict[str, Array]:
    """A TF1 kernel that leaves out the forget_bias LSTMCell adds at run time."""
    return _tf1_lstm(params, xs, targets, order="igfo", forget_bias=0.0)


def tf1_lstm_in_keras_order(
    params: dict[str, Array], xs: Array, targets: Array
) -> dict[str, Array]:
    """A Keras LSTM kernel (gates i, f, c, o) handed TF1's kernel and bias."""
    return _tf1_lstm(params, xs, targets, order="ifgo", forget_bias=1.0)


def karpathy_lstm(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """A right kernel for Karpathy's lstm.py: WLSTM (1+D+H, 4H) used as [1, x, h] W,
    gates i, f, o, g (``--layout karpathy``)."""
    return _karpathy_lstm(params, xs, targets, order="ifog")


def karpathy_lstm_in_torch_order(
    params: dict[str, Array], xs: Array, targets: Array
) -> dict[str, Array]:
    """A kernel that reads WLSTM's gate columns in PyTorch's order i, f, g, o."""
    return _karpathy_lstm(params, xs, targets, order="ifgo")


def _karpathy_lstm(
    params: dict[str, Array], xs: Array, targets: Array, *, order: str
) -> dict[str, Array]:
    W, H = params["WLSTM"], params["h0"].shape[-1]
    D = W.shape[0] - 1 - H
    canonical = {
        "W_ih": W[1 : 1 + D].T,
        "W_hh": W[1 + D :].T,
        "b_ih": W[0],
        "b_hh": np.zeros_like(W[0]),
        "h0": params["h0"],
        "c0": params["c0"],
        "U": params["U"],
        "b_y": params["b_y"],
    }
    g = lstm._bptt(canonical, xs, targets, order=order)
    return {
        "WLSTM": np.concatenate([g["b_ih"][None], g["W_ih"].T, g["W_hh"].T]),
        "c0": g["c0"],
        "h0": g["h0"],
        "U": g["U"],
        "b_y": g["b_y"],
        "xs": g["xs"],
    }


def onnx_lstm_bidirectional(
    params: dict[str, Array], xs: Array, targets: Array
) -> dict[str, Array]:
    """A right kernel of one ONNX LSTM operator with direction="bidirectional" (W (2, 4H,
    D), gates i, o, f, c; index 0 forward, 1 reverse) and a head U (O, 2H) reading
    [Y[:, 0], Y[:, 1]]: bptt-ref's NumPy stack on the arrays renamed and permuted by hand."""
    H = params["initial_h"].shape[-1]
    # Canonical block j (i, f, g, o) is ONNX block perm[j] (i, o, f, c).
    perm = np.concatenate([np.arange(k * H, (k + 1) * H) for k in (0, 2, 3, 1)])
    ours: dict[str, Array] = {"U": params["U"], "b_y": params["b_y"]}
    ours |= {"h0": params["initial_h"], "c0": params["initial_c"]}
    for d, suffix in enumerate(("_l0", "_l0_reverse")):
        Wb, Rb = np.split(params["B"][d], 2)
        ours |= {
            f"W_ih{suffix}": params["W"][d][perm],
            f"W_hh{suffix}": params["R"][d][perm],
            f"b_ih{suffix}": Wb[perm],
            f"b_hh{suffix}": Rb[perm],
        }
    _, g = bptt_ref.stack.loss_and_grad(
        ours, xs, targets, cell="lstm", num_layers=1, bidirectional=True
    )
    back = np.argsort(perm)
    return {
        "W": np.stack([g[f"W_ih{s}"][back] for s in ("_l0", "_l0_reverse")]),
        "R": np.stack([g[f"W_hh{s}"][back] for s in ("_l0", "_l0_reverse")]),
        "B": np.stack(
            [
                np.concatenate([g[f"b_ih{s}"][back], g[f"b_hh{s}"][back]])
                for s in ("_l0", "_l0_reverse")
            ]
        ),
        "initial_h": g["h0"],
        "initial_c": g["c0"],
        "U": g["U"],
        "b_y": g["b_y"],
        "xs": g["xs"],
    }


def onnx_lstm_bidirectional_directions_swapped(
    params: dict[str, Array], xs: Array, targets: Array
) -> dict[str, Array]:
    """The bidirectional ONNX kernel reading index 1 of W, R, B, initial_h, initial_c as
    the forward direction and index 0 as the reverse."""
    per_direction = ("W", "R", "B", "initial_h", "initial_c")
    swapped = {k: v[::-1].copy() if k in per_direction else v for k, v in params.items()}
    out = onnx_lstm_bidirectional(swapped, xs, targets)
    return {k: v[::-1].copy() if k in per_direction else v for k, v in out.items()}
