"""bptt_ref.layouts: lossless both ways, and right against each framework's own equations.

Each layout's forward pass is written below in JAX directly in that layout (its names,
shapes, gate order, orientation and batch axis, from the framework's documented
equations), independently of the converters; its autodiff gradient must equal the
NumPy reference's canonical gradient converted to the layout, for every cell the layout
expresses and both dtypes. A converter planted wrong fails the same comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

import bptt_ref
from bptt_ref import stack
from bptt_ref.cells import CELLS
from bptt_ref.compare import tolerance_for
from bptt_ref.layouts import LAYOUTS, Layout, Piece, torch_cell_layout, torch_suffix

jax = pytest.importorskip("jax")
jnp = jax.numpy

DIMS = {"T": 4, "B": 2, "D": 3, "H": 5, "O": 2}
PAIRS = [(name, cell) for name, layout in LAYOUTS.items() for cell in layout.cells]
IDS = [f"{n}-{c}" for n, c in PAIRS]


def canonical_case(cell: str, dtype: Any, seed: int = 0) -> tuple[dict[str, Any], Any, Any]:
    rng = np.random.default_rng(seed)
    B, D, H, O, T = (DIMS[k] for k in "BDHOT")
    params = bptt_ref.random_params(
        rng,
        batch_size=B,
        input_size=D,
        hidden_size=H,
        output_size=O,
        spectral_radius=1.0,
        cell=cell,
    )
    cast = {k: v.astype(dtype) for k, v in params.items()}
    return (
        cast,
        rng.standard_normal((T, B, D)).astype(dtype),
        rng.standard_normal((T, B, O)).astype(dtype),
    )


def random_layout_arrays(layout: Layout, cell: str, dtype: Any, seed: int = 1) -> dict[str, Any]:
    """Every array of the layout drawn at random, split biases included."""
    rng = np.random.default_rng(seed)
    shapes = layout.shapes(cell, DIMS)
    return {k: (0.5 * rng.standard_normal(s)).astype(dtype) for k, s in shapes.items() if k != "xs"}


def bitwise_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype
        and a[k].shape == b[k].shape
        and a[k].tobytes() == np.ascontiguousarray(b[k]).tobytes()
        for k in a
    )


def _has(layout: Layout, cell: str, what: str) -> bool:
    return any(getattr(p, what) is not None for e in layout.of(cell).entries for p in e.pieces)


# -- lossless ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("name", "cell"), PAIRS, ids=IDS)
def test_round_trips_are_the_identity_to_the_bit(name: str, cell: str, dtype: Any) -> None:
    layout = LAYOUTS[name]
    params, xs, targets = canonical_case(cell, dtype)
    canonical = {**params, "xs": xs}
    arrays = {**random_layout_arrays(layout, cell, dtype), "xs": layout.data(cell, xs)}
    fused, split = (
        _has(layout, cell, "also"),
        _has(layout, cell, "key") and _has(layout, cell, "into"),
    )
    # One fused bias: layout → canonical → layout is the identity; canonical →
    # layout → canonical only where no two canonical biases were summed.
    if not split:
        assert bitwise_equal(layout.to_layout(cell, layout.from_layout(cell, arrays)), arrays)
    if not fused:
        assert bitwise_equal(layout.from_layout(cell, layout.to_layout(cell, canonical)), canonical)
    # Gradients: any arrays where the conversion is a rearrangement; true gradients
    # (whose two summed biases have equal gradients) where it is not.
    _, grads = bptt_ref.loss_and_grad(params, xs, targets, cell=cell)
    grads = dict(grads)
    there = layout.grads_to_layout(cell, grads)
    assert bitwise_equal(layout.grads_from_layout(cell, there), grads)
    assert bitwise_equal(layout.grads_to_layout(cell, layout.grads_from_layout(cell, there)), there)
    if not split:
        assert bitwise_equal(
            layout.grads_to_layout(cell, layout.grads_from_layout(cell, arrays)), arrays
        )
    if not fused:
        assert bitwise_equal(
            layout.grads_from_layout(cell, layout.grads_to_layout(cell, canonical)), canonical
        )


@pytest.mark.parametrize(("name", "cell"), PAIRS, ids=IDS)
def test_conversions_leave_inputs_alone_and_share_no_memory(name: str, cell: str) -> None:
    layout = LAYOUTS[name]
    params, xs, _ = canonical_case(cell, np.float64)
    canonical = {**params, "xs": xs}
    before = {k: v.copy() for k, v in canonical.items()}
    there = layout.to_layout(cell, canonical)
    back = layout.from_layout(cell, there)
    for v in there.values():
        v[...] = np.nan
    assert bitwise_equal(canonical, before)
    assert all(np.all(np.isfinite(v)) for v in back.values())


def test_torch_names_each_layer_and_direction() -> None:
    own = torch_cell_layout("lstm", torch_suffix(layer=1, reverse=True))
    assert own.names[:4] == (
        "weight_ih_l1_reverse",
        "weight_hh_l1_reverse",
        "bias_ih_l1_reverse",
        "bias_hh_l1_reverse",
    )
    assert LAYOUTS["torch"].of("lstm").names[:2] == ("weight_ih_l0", "weight_hh_l0")


def test_unknown_layouts_cells_and_shapes_are_named() -> None:
    with pytest.raises(
        ValueError, match="layout 'cs231n' cannot express cell 'gru'; it expresses rnn, lstm"
    ):
        LAYOUTS["cs231n"].of("gru")
    with pytest.raises(ValueError, match="unknown layout 'caffe'"):
        bptt_ref.layouts.layout_named("caffe")
    arrays = random_layout_arrays(LAYOUTS["keras"], "lstm", np.float64)
    arrays["recurrent_kernel"] = arrays["recurrent_kernel"].T
    with pytest.raises(
        ValueError, match=r"recurrent_kernel has shape \(20, 5\); expected \(H, 4H\)"
    ):
        LAYOUTS["keras"].from_layout("lstm", arrays)


def test_a_fused_bias_where_the_two_do_not_sum_is_refused() -> None:
    # The reset-after GRU's n gate: ∂L/∂b_hn = Σ r ⊙ ∂L/∂a_n differs from ∂L/∂b_in.
    keras = LAYOUTS["keras"].cells["gru"]
    entries = tuple(
        replace(e, shape=("3H",), pieces=tuple(Piece("b_ih", g, also="b_hh") for g in "zrn"))
        if e.name == "bias"
        else e
        for e in keras.entries
    )
    with pytest.raises(
        ValueError, match="fuses b_ih and b_hh at gate n, where they do not enter as a sum"
    ):
        Layout("bad", {"gru": replace(keras, entries=entries)})


# -- each layout's own equations in JAX -----------------------------------------------


def sigmoid(a: Any) -> Any:
    return jax.nn.sigmoid(a)


def _row(b: Any) -> Any:
    return b[None, :]


def _scan(step: Callable[[Any, Any], Any], state: Any, xs_time_major: Any) -> Any:
    hs = []
    for t in range(xs_time_major.shape[0]):
        state, h = step(state, xs_time_major[t])
        hs.append(h)
    return jnp.stack(hs)


def _mse(z: Any, targets: Any) -> Any:
    return 0.5 * jnp.sum((z - targets) ** 2)


def torch_loss(cell: str, p: dict[str, Any], xs: Any, targets: Any) -> Any:
    c0 = p["c_0"][0] if cell == "lstm" else None
    hs = torch_steps(cell, p, "_l0", p["h_0"][0], c0, xs)
    return _mse(hs @ p["fc.weight"].T + p["fc.bias"][None, None, :], targets)


def torch_steps(cell: str, p: dict[str, Any], suffix: str, h: Any, c: Any, xs: Any) -> Any:
    """The per-step h (T, B, H) of the weights ending in ``suffix``, from h and c."""
    Wi, Wh, bi, bh = (p[f"{k}{suffix}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def step(state: Any, x: Any) -> Any:
        h, c = state
        gi, gh = x @ Wi.T + _row(bi), h @ Wh.T + _row(bh)
        if cell == "rnn":  # nn.RNN: h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)
            h = jnp.tanh(gi + gh)
        elif cell == "lstm":  # nn.LSTM: i, f, g, o
            i, f, g, o = jnp.split(gi + gh, 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * jnp.tanh(g)
            h = sigmoid(o) * jnp.tanh(c)
        else:  # nn.GRU: r, z, n, n = tanh(i_n + r ⊙ h_n)
            ir, iz, in_ = jnp.split(gi, 3, axis=1)
            hr, hz, hn = jnp.split(gh, 3, axis=1)
            r, z = sigmoid(ir + hr), sigmoid(iz + hz)
            n = jnp.tanh(in_ + r * hn)
            h = (1 - z) * n + z * h
        return (h, c), h

    return _scan(step, (h, c), xs)


def keras_loss(cell: str, p: dict[str, Any], xs: Any, targets: Any) -> Any:
    K, R, bias = p["kernel"], p["recurrent_kernel"], p["bias"]
    H = R.shape[0]

    def step(state: Any, x: Any) -> Any:
        h, c = state
        if cell == "rnn":  # SimpleRNN: tanh(x K + h R + b)
            h = jnp.tanh(x @ K + h @ R + _row(bias))
        elif cell == "lstm":  # LSTM: z = x K + h R + b, split i, f, c, o
            i, f, g, o = jnp.split(x @ K + h @ R + _row(bias), 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * jnp.tanh(g)
            h = sigmoid(o) * jnp.tanh(c)
        elif cell == "gru":  # GRU(reset_after=True): z, r, h; bias = [input; recurrent]
            xz, xr, xh = jnp.split(x @ K + _row(bias[0]), 3, axis=1)
            rz, rr, rh = jnp.split(h @ R + _row(bias[1]), 3, axis=1)
            z, r = sigmoid(xz + rz), sigmoid(xr + rr)
            hh = jnp.tanh(xh + r * rh)
            h = z * h + (1 - z) * hh
        else:  # GRU(reset_after=False): hh = tanh(x_h + (r ⊙ h) R_h), one bias on x
            xz, xr, xh = jnp.split(x @ K + _row(bias), 3, axis=1)
            rz, rr = jnp.split(h @ R[:, : 2 * H], 2, axis=1)
            z, r = sigmoid(xz + rz), sigmoid(xr + rr)
            hh = jnp.tanh(xh + (r * h) @ R[:, 2 * H :])
            h = z * h + (1 - z) * hh
        return (h, c), h

    c0 = p["c0"] if cell == "lstm" else None
    hs = _scan(step, (p["h0"], c0), jnp.swapaxes(xs, 0, 1))
    return _mse(
        jnp.swapaxes(hs, 0, 1) @ p["dense/kernel"] + p["dense/bias"][None, None, :], targets
    )


def onnx_loss(cell: str, p: dict[str, Any], xs: Any, targets: Any) -> Any:
    c0 = p["initial_c"][0] if cell == "lstm" else None
    hs = onnx_steps(cell, p, 0, p["initial_h"][0], c0, xs)
    return _mse(hs @ p["U"].T + p["b_y"][None, None, :], targets)


def onnx_steps(cell: str, p: dict[str, Any], direction: int, h: Any, c: Any, xs: Any) -> Any:
    """The per-step H (T, B, H) of direction ``direction`` of W, R, B, from h and c."""
    W, R, B = p["W"][direction], p["R"][direction], p["B"][direction]
    Wb, Rb = jnp.split(B, 2)

    def step(state: Any, x: Any) -> Any:
        h, c = state
        if cell == "rnn":  # Ht = tanh(Xt Wᵀ + Ht-1 Rᵀ + Wb + Rb)
            h = jnp.tanh(x @ W.T + h @ R.T + _row(Wb + Rb))
        elif cell == "lstm":  # iofc, no peepholes
            i, o, f, g = jnp.split(x @ W.T + h @ R.T + _row(Wb + Rb), 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * jnp.tanh(g)
            h = sigmoid(o) * jnp.tanh(c)
        else:  # zrh
            Wz, Wr, Wh = jnp.split(W, 3)
            Rz, Rr, Rh = jnp.split(R, 3)
            Wbz, Wbr, Wbh = jnp.split(Wb, 3)
            Rbz, Rbr, Rbh = jnp.split(Rb, 3)
            z = sigmoid(x @ Wz.T + h @ Rz.T + _row(Wbz + Rbz))
            r = sigmoid(x @ Wr.T + h @ Rr.T + _row(Wbr + Rbr))
            if cell == "gru":  # linear_before_reset = 1
                hh = jnp.tanh(x @ Wh.T + r * (h @ Rh.T + _row(Rbh)) + _row(Wbh))
            else:  # linear_before_reset = 0
                hh = jnp.tanh(x @ Wh.T + (r * h) @ Rh.T + _row(Rbh) + _row(Wbh))
            h = (1 - z) * hh + z * h
        return (h, c), h

    return _scan(step, (h, c), xs)


def flax_loss(cell: str, tree: dict[str, Any], xs: Any, targets: Any) -> Any:
    q = tree["cell"]

    def dense(name: str, v: Any) -> Any:
        out = v @ q[name]["kernel"]
        return out + _row(q[name]["bias"]) if "bias" in q[name] else out

    def step(state: Any, x: Any) -> Any:
        c, h = state
        if cell == "rnn":  # SimpleCell: tanh(W_i x + b_i + W_h h)
            h = jnp.tanh(dense("i", x) + dense("h", h))
        elif cell == "lstm":  # ii.. unbiased, hi.. biased, carry (c, h)
            i = sigmoid(dense("ii", x) + dense("hi", h))
            f = sigmoid(dense("if", x) + dense("hf", h))
            g = jnp.tanh(dense("ig", x) + dense("hg", h))
            o = sigmoid(dense("io", x) + dense("ho", h))
            c = f * c + i * g
            h = o * jnp.tanh(c)
        else:  # GRUCell: input side biased, hn biased
            r = sigmoid(dense("ir", x) + dense("hr", h))
            z = sigmoid(dense("iz", x) + dense("hz", h))
            n = jnp.tanh(dense("in", x) + r * dense("hn", h))
            h = (1 - z) * n + z * h
        return (c, h), h

    carry = tree["carry"] if cell == "lstm" else (None, tree["carry"])
    hs = _scan(step, carry, jnp.swapaxes(xs, 0, 1))
    head = tree["head"]
    return _mse(jnp.swapaxes(hs, 0, 1) @ head["kernel"] + head["bias"][None, None, :], targets)


def cs231n_loss(cell: str, p: dict[str, Any], xs: Any, targets: Any) -> Any:
    def step(state: Any, x: Any) -> Any:
        h, c = state
        a = x @ p["Wx"] + h @ p["Wh"] + _row(p["b"])
        if cell == "rnn":  # rnn_step_forward
            h = jnp.tanh(a)
        else:  # lstm_step_forward: ai, af, ao, ag
            i, f, o, g = jnp.split(a, 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * jnp.tanh(g)
            h = sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    c0 = p["c0"] if cell == "lstm" else None
    hs = _scan(step, (p["h0"], c0), jnp.swapaxes(xs, 0, 1))
    return _mse(jnp.swapaxes(hs, 0, 1) @ p["W_vocab"] + p["b_vocab"][None, None, :], targets)


def tf1_loss(cell: str, p: dict[str, Any], xs: Any, targets: Any) -> Any:
    # tf.compat.v1.nn.rnn_cell.LSTMCell.call: lstm_matrix = [inputs, m_prev] kernel + bias;
    # i, j, f, o = split(lstm_matrix, 4); c = σ(f + forget_bias) c_prev + σ(i) tanh(j);
    # m = σ(o) tanh(c). dynamic_rnn is batch-major; the head a tf.layers.dense.
    def step(state: Any, x: Any) -> Any:
        c, h = state
        lstm_matrix = jnp.concatenate([x, h], axis=1) @ p["kernel"] + _row(p["bias"])
        i, j, f, o = jnp.split(lstm_matrix, 4, axis=1)
        c = sigmoid(f + 1.0) * c + sigmoid(i) * jnp.tanh(j)
        h = sigmoid(o) * jnp.tanh(c)
        return (c, h), h

    hs = _scan(step, (p["c0"], p["h0"]), jnp.swapaxes(xs, 0, 1))
    return _mse(
        jnp.swapaxes(hs, 0, 1) @ p["dense/kernel"] + p["dense/bias"][None, None, :], targets
    )


def karpathy_loss(cell: str, p: dict[str, Any], xs: Any, targets: Any) -> Any:
    # lstm.py LSTM.forward: Hin = [1, X[t], prevh]; IFOG = Hin.dot(WLSTM); sigmoid on the
    # first 3d columns (i, f, o), tanh on the last d (g); C = i g + f C_prev; Hout = o tanh(C).
    W = p["WLSTM"]
    d = W.shape[1] // 4

    def step(state: Any, x: Any) -> Any:
        c, h = state
        Hin = jnp.concatenate([jnp.ones((x.shape[0], 1), x.dtype), x, h], axis=1)
        IFOG = Hin @ W
        i, f, o = (sigmoid(IFOG[:, k * d : (k + 1) * d]) for k in range(3))
        g = jnp.tanh(IFOG[:, 3 * d :])
        c = i * g + f * c
        h = o * jnp.tanh(c)
        return (c, h), h

    hs = _scan(step, (p["c0"], p["h0"]), xs)
    return _mse(hs @ p["U"].T + p["b_y"][None, None, :], targets)


LOSSES = {
    "torch": torch_loss,
    "tf1": tf1_loss,
    "karpathy": karpathy_loss,
    "keras": keras_loss,
    "onnx": onnx_loss,
    "flax": flax_loss,
    "cs231n": cs231n_loss,
}


def agree_with_framework(layout: Layout, cell: str, dtype: Any) -> None:
    """The framework's JAX gradient at random layout arrays against the reference's,
    converted both ways; and the layout's loss at converted canonical parameters."""
    params, xs, targets = canonical_case(cell, dtype)
    arrays = random_layout_arrays(layout, cell, dtype)
    lxs, ltargets = layout.data(cell, xs), layout.data(cell, targets)
    rtol = tolerance_for(dtype)
    with jax.enable_x64(True):

        def loss(flat: dict[str, Any], x: Any) -> Any:
            return LOSSES[layout.name](cell, layout.nest(flat), x, ltargets.astype(np.float64))

        wide = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in arrays.items()}
        L, (g_flat, g_xs) = jax.value_and_grad(loss, argnums=(0, 1))(
            wide, jnp.asarray(lxs, dtype=jnp.float64)
        )
        framework = {**{k: np.asarray(v) for k, v in g_flat.items()}, "xs": np.asarray(g_xs)}
        canonical = layout.from_layout(cell, {**arrays, "xs": lxs})
        xs_c = canonical.pop("xs")
        ours_L, ours = bptt_ref.loss_and_grad(canonical, xs_c, targets, cell=cell)
        there = layout.grads_to_layout(cell, ours)
        back = layout.grads_from_layout(cell, framework)
        # The model at converted canonical parameters, in the framework's equations.
        at_params = layout.to_layout(cell, {k: v.astype(np.float64) for k, v in params.items()})
        L_params = loss(at_params, jnp.asarray(lxs, dtype=jnp.float64))
    L_ours, _ = bptt_ref.loss_and_grad(
        {k: v.astype(np.float64) for k, v in params.items()},
        xs.astype(np.float64),
        targets.astype(np.float64),
        cell=cell,
    )
    assert float(L_params) == pytest.approx(L_ours, rel=1e-12)
    assert float(L) == pytest.approx(ours_L, rel=10 * rtol)
    assert sorted(there) == sorted(framework)
    for k in framework:
        size = np.max(np.abs(framework[k]))
        np.testing.assert_allclose(
            there[k], framework[k], rtol=0, atol=rtol * size, err_msg=f"{layout.name} {cell} {k}"
        )
    for k in ours:
        size = np.max(np.abs(ours[k]))
        np.testing.assert_allclose(
            back[k], ours[k], rtol=0, atol=rtol * size, err_msg=f"{layout.name} {cell} {k} back"
        )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("name", "cell"), PAIRS, ids=IDS)
def test_each_layout_agrees_with_its_framework_equations(name: str, cell: str, dtype: Any) -> None:
    agree_with_framework(LAYOUTS[name], cell, dtype)


def _with_gates(layout: Layout, cell: str, gates: str) -> Layout:
    """``layout`` with ``cell``'s stacked gate pieces put in the order ``gates``."""
    own = layout.cells[cell]

    def reorder(pieces: tuple[Piece, ...]) -> tuple[Piece, ...]:
        if len(pieces) != len(gates) or any(p.gate is None for p in pieces):
            return pieces
        return tuple(replace(p, gate=g) for p, g in zip(pieces, gates, strict=True))

    entries = tuple(replace(e, pieces=reorder(e.pieces)) for e in own.entries)
    return Layout(layout.name, {**layout.cells, cell: replace(own, entries=entries)}, layout.nested)


def _bias_row_last() -> Layout:
    """Karpathy's layout with the bias as WLSTM's last row instead of row 0."""
    own = LAYOUTS["karpathy"].cells["lstm"]
    (wlstm, *rest) = own.entries
    bias, w_ih, w_hh = (wlstm.pieces[k : k + 4] for k in (0, 4, 8))
    moved = replace(wlstm, shape=("D+H+1", "4H"), pieces=(*w_ih, *w_hh, *bias))
    return Layout("karpathy", {"lstm": replace(own, entries=(moved, *rest))})


class _GradientLikeParameter(Layout):
    """A planted converter that converts a fused bias's gradient like the bias (a sum)."""

    def grads_to_layout(self, cell: str, grads: Any) -> Any:
        return self.to_layout(cell, grads)


@pytest.mark.parametrize(
    ("planted", "cell"),
    [
        pytest.param(
            lambda: _with_gates(LAYOUTS["onnx"], "lstm", "ifgo"), "lstm", id="onnx-lstm-torch-order"
        ),
        pytest.param(
            lambda: _with_gates(LAYOUTS["keras"], "gru", "rzn"), "gru", id="keras-gru-r-z-swapped"
        ),
        pytest.param(
            lambda: _GradientLikeParameter("keras", LAYOUTS["keras"].cells),
            "lstm",
            id="keras-lstm-bias-gradient-summed",
        ),
        pytest.param(
            lambda: Layout("tf1", {"lstm": bptt_ref.layouts.tf1_lstm(forget_bias=0.0)}),
            "lstm",
            id="tf1-forget-bias-left-out",
        ),
        pytest.param(lambda: _bias_row_last(), "lstm", id="karpathy-bias-as-last-row"),
    ],
)
def test_a_planted_wrong_converter_fails_the_comparison(
    planted: Callable[[], Layout], cell: str
) -> None:
    with pytest.raises(AssertionError):
        agree_with_framework(planted(), cell, np.float64)


@pytest.mark.parametrize(("name", "cell"), PAIRS, ids=IDS)
def test_parameters_convert_without_the_data(name: str, cell: str) -> None:
    # A gradient need not include xs, and parameters never do: T is then unknown.
    layout = LAYOUTS[name]
    arrays = random_layout_arrays(layout, cell, np.float64)
    names = set(CELLS[cell].names)
    assert set(layout.from_layout(cell, arrays)) == names
    assert set(layout.grads_from_layout(cell, arrays)) == names
    params, _, _ = canonical_case(cell, np.float64)
    assert set(layout.to_layout(cell, params)) == set(layout.of(cell).names)


# -- PyTorch's stacked and bidirectional networks -------------------------------------

STACKS = [
    (cell, L, bi) for cell in LAYOUTS["torch"].cells for L in (1, 2, 3) for bi in (False, True)
]
STACK_IDS = [f"{c}-L{L}-{'bi' if bi else 'uni'}" for c, L, bi in STACKS]


def stack_case(
    cell: str, num_layers: int, bidirectional: bool, dtype: Any, seed: int = 0
) -> tuple[dict[str, Any], Any, Any]:
    rng = np.random.default_rng(seed)
    B, D, H, O, T = (DIMS[k] for k in "BDHOT")
    params = stack.random_params(
        rng,
        batch_size=B,
        input_size=D,
        hidden_size=H,
        output_size=O,
        spectral_radius=1.0,
        cell=cell,
        num_layers=num_layers,
        bidirectional=bidirectional,
    )
    return (
        {k: v.astype(dtype) for k, v in params.items()},
        rng.standard_normal((T, B, D)).astype(dtype),
        rng.standard_normal((T, B, O)).astype(dtype),
    )


def test_torch_names_a_stack_as_its_state_dict() -> None:
    # nn.LSTM(3, 5, num_layers=2, bidirectional=True).state_dict(), keys and shapes,
    # written out from PyTorch's documentation, then the states and an nn.Linear head.
    torch = LAYOUTS["torch"].stacked(2, True)
    H, D = DIMS["H"], DIMS["D"]
    expected: dict[str, tuple[int, ...]] = {}
    for layer in (0, 1):
        for suffix in ("", "_reverse"):
            s = f"_l{layer}{suffix}"
            expected |= {
                f"weight_ih{s}": (4 * H, D if layer == 0 else 2 * H),
                f"weight_hh{s}": (4 * H, H),
                f"bias_ih{s}": (4 * H,),
                f"bias_hh{s}": (4 * H,),
            }
    expected |= {
        "h_0": (4, DIMS["B"], H),
        "c_0": (4, DIMS["B"], H),
        "fc.weight": (DIMS["O"], 2 * H),
        "fc.bias": (DIMS["O"],),
        "xs": (DIMS["T"], DIMS["B"], D),
    }
    assert torch.shapes("lstm", DIMS) == expected
    assert list(torch.shapes("lstm", DIMS)) == list(expected)
    assert torch.of("lstm").names == tuple(expected)[:-1]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("cell", "num_layers", "bidirectional"), STACKS, ids=STACK_IDS)
def test_stacked_round_trips_are_the_identity_to_the_bit(
    cell: str, num_layers: int, bidirectional: bool, dtype: Any
) -> None:
    layout = bptt_ref.layouts.layout_named(
        "torch", num_layers=num_layers, bidirectional=bidirectional
    )
    params, xs, targets = stack_case(cell, num_layers, bidirectional, dtype)
    canonical = {**params, "xs": xs}
    arrays = {**random_layout_arrays(layout, cell, dtype), "xs": xs}
    assert set(arrays) == set(layout.of(cell).grad_names)
    # The rnn's b_h is split into bias_ih + bias_hh (module docstring): canonical →
    # layout → canonical is the identity, layout → canonical → layout is not.
    if cell != "rnn":
        assert bitwise_equal(layout.to_layout(cell, layout.from_layout(cell, arrays)), arrays)
    assert bitwise_equal(layout.from_layout(cell, layout.to_layout(cell, canonical)), canonical)
    _, grads = stack.loss_and_grad(
        params, xs, targets, cell=cell, num_layers=num_layers, bidirectional=bidirectional
    )
    grads = dict(grads)
    there = layout.grads_to_layout(cell, grads)
    assert sorted(there) == sorted(layout.of(cell).grad_names)
    assert bitwise_equal(layout.grads_from_layout(cell, there), grads)
    assert bitwise_equal(layout.grads_to_layout(cell, layout.grads_from_layout(cell, there)), there)
    if cell != "rnn":
        assert bitwise_equal(
            layout.grads_to_layout(cell, layout.grads_from_layout(cell, arrays)), arrays
        )


def torch_stack_loss(
    cell: str, p: dict[str, Any], xs: Any, targets: Any, num_layers: int, dirs: int
) -> Any:
    """nn.RNN / nn.LSTM / nn.GRU(num_layers, bidirectional) + nn.Linear, from PyTorch's
    documentation: layer k > 0 reads layer k − 1's per-step [h_fwd, h_bwd]; the reverse
    direction reads the sequence backwards and its outputs are put back in time order;
    the initial states are h_0[k·dirs + d] (and c_0)."""
    x = xs
    for k in range(num_layers):
        outs = []
        for d in range(dirs):
            row = k * dirs + d
            c0 = p["c_0"][row] if cell == "lstm" else None
            seq = x[::-1] if d else x
            hs = torch_steps(cell, p, f"_l{k}" + ("_reverse" if d else ""), p["h_0"][row], c0, seq)
            outs.append(hs[::-1] if d else hs)
        x = jnp.concatenate(outs, axis=-1)
    return _mse(x @ p["fc.weight"].T + p["fc.bias"][None, None, :], targets)


def agree_with_torch_stack(layout: Layout, cell: str, dtype: Any) -> None:
    """:func:`torch_stack_loss`'s JAX gradient at random torch arrays against the NumPy
    stack's converted both ways, and its loss at converted canonical parameters."""
    L, bi = layout.num_layers, layout.bidirectional
    params, xs, targets = stack_case(cell, L, bi, dtype)
    arrays = random_layout_arrays(layout, cell, dtype)
    rtol = tolerance_for(dtype)
    with jax.enable_x64(True):

        def loss(flat: dict[str, Any], x: Any) -> Any:
            return torch_stack_loss(cell, flat, x, targets.astype(np.float64), L, 2 if bi else 1)

        wide = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in arrays.items()}
        value, (g_flat, g_xs) = jax.value_and_grad(loss, argnums=(0, 1))(
            wide, jnp.asarray(xs, dtype=jnp.float64)
        )
        framework = {**{k: np.asarray(v) for k, v in g_flat.items()}, "xs": np.asarray(g_xs)}
        canonical = layout.from_layout(cell, arrays)
        ours_L, ours = stack.loss_and_grad(
            canonical, xs, targets, cell=cell, num_layers=L, bidirectional=bi
        )
        there = layout.grads_to_layout(cell, ours)
        back = layout.grads_from_layout(cell, framework)
        at_params = layout.to_layout(cell, {k: v.astype(np.float64) for k, v in params.items()})
        L_params = loss(at_params, jnp.asarray(xs, dtype=jnp.float64))
    L_ours, _ = stack.loss_and_grad(
        {k: v.astype(np.float64) for k, v in params.items()},
        xs.astype(np.float64),
        targets.astype(np.float64),
        cell=cell,
        num_layers=L,
        bidirectional=bi,
    )
    assert float(L_params) == pytest.approx(L_ours, rel=1e-12)
    assert float(value) == pytest.approx(ours_L, rel=10 * rtol)
    assert sorted(there) == sorted(framework)
    for k in framework:
        size = np.max(np.abs(framework[k]))
        np.testing.assert_allclose(
            there[k], framework[k], rtol=0, atol=rtol * size, err_msg=f"torch {cell} {k}"
        )
    for k in ours:
        size = np.max(np.abs(ours[k]))
        np.testing.assert_allclose(
            back[k], ours[k], rtol=0, atol=rtol * size, err_msg=f"torch {cell} {k} back"
        )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("cell", "num_layers", "bidirectional"), STACKS, ids=STACK_IDS)
def test_stacked_torch_layout_agrees_with_pytorch_equations(
    cell: str, num_layers: int, bidirectional: bool, dtype: Any
) -> None:
    layout = LAYOUTS["torch"].stacked(num_layers, bidirectional)
    agree_with_torch_stack(layout, cell, dtype)


def _renamed(layout: Layout, cell: str, swap: dict[str, str]) -> Layout:
    """``layout`` with the canonical sources of its pieces renamed by ``swap``."""
    own = layout.cells[cell]
    entries = tuple(
        replace(
            e,
            pieces=tuple(
                replace(p, key=swap.get(p.key, p.key) if p.key else None) for p in e.pieces
            ),
        )
        for e in own.entries
    )
    return replace(layout, cells={**layout.cells, cell: replace(own, entries=entries)})


@pytest.mark.parametrize(
    "swap",
    [
        {"W_hh_l1": "W_hh_l1_reverse", "W_hh_l1_reverse": "W_hh_l1"},
        {"W_ih_l0_reverse": "W_ih_l0", "W_ih_l0": "W_ih_l0_reverse"},
    ],
    ids=["directions-swapped-in-layer-1", "directions-swapped-in-layer-0"],
)
def test_a_planted_wrong_stacked_converter_fails_the_comparison(swap: dict[str, str]) -> None:
    planted = _renamed(LAYOUTS["torch"].stacked(2, True), "lstm", swap)
    with pytest.raises(AssertionError):
        agree_with_torch_stack(planted, "lstm", np.float64)


def test_layouts_without_a_stack_say_why_and_name_those_with_one() -> None:
    for name in ("keras", "flax", "cs231n", "tf1", "karpathy"):
        with pytest.raises(ValueError, match=f"layout '{name}' cannot express a stacked") as info:
            bptt_ref.layouts.layout_named(name, num_layers=2)
        assert "Layouts that can: torch, onnx" in str(info.value)
        assert LAYOUTS[name].stacked(1, False) is LAYOUTS[name]
    assert "Bidirectional" in LAYOUTS["keras"].single_only
    assert bptt_ref.layouts.stackable() == ("torch", "onnx")


# -- ONNX's bidirectional operator ------------------------------------------------------


def onnx_bidirectional_loss(cell: str, p: dict[str, Any], xs: Any, targets: Any) -> Any:
    """One operator with direction="bidirectional" (ONNX spec): index 0 of W, R, B,
    initial_h/c runs forward, index 1 runs over the reversed sequence and its outputs
    are put back in time order; Y (T, 2, B, H); the head reads [Y[:, 0], Y[:, 1]]."""
    Y = []
    for d in (0, 1):
        c0 = p["initial_c"][d] if cell == "lstm" else None
        seq = xs[::-1] if d else xs
        hs = onnx_steps(cell, p, d, p["initial_h"][d], c0, seq)
        Y.append(hs[::-1] if d else hs)
    return _mse(jnp.concatenate(Y, axis=-1) @ p["U"].T + p["b_y"][None, None, :], targets)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", list(LAYOUTS["onnx"].cells))
def test_onnx_bidirectional_round_trips_and_agrees_with_the_spec(cell: str, dtype: Any) -> None:
    layout = bptt_ref.layouts.layout_named("onnx", bidirectional=True)
    assert layout.shapes(cell, DIMS)["W"][0] == 2
    agree_with_onnx_bidirectional(layout, cell, dtype)


def test_a_planted_direction_swap_in_onnx_fails_the_comparison() -> None:
    swap = {"W_hh_l0": "W_hh_l0_reverse", "W_hh_l0_reverse": "W_hh_l0"}
    planted = _renamed(bptt_ref.layouts.layout_named("onnx", bidirectional=True), "gru", swap)
    with pytest.raises(AssertionError):
        agree_with_onnx_bidirectional(planted, "gru", np.float64)


def agree_with_onnx_bidirectional(layout: Layout, cell: str, dtype: Any) -> None:
    """Round trips, and the spec's JAX gradient against the NumPy stack's converted."""
    params, xs, targets = stack_case(cell, 1, True, dtype)
    canonical = {**params, "xs": xs}
    arrays = {**random_layout_arrays(layout, cell, dtype), "xs": xs}
    if cell != "rnn":
        assert bitwise_equal(layout.to_layout(cell, layout.from_layout(cell, arrays)), arrays)
    assert bitwise_equal(layout.from_layout(cell, layout.to_layout(cell, canonical)), canonical)
    _, grads = stack.loss_and_grad(params, xs, targets, cell=cell, bidirectional=True)
    there = layout.grads_to_layout(cell, dict(grads))
    assert bitwise_equal(layout.grads_from_layout(cell, there), dict(grads))
    rtol = tolerance_for(dtype)
    with jax.enable_x64(True):

        def loss(flat: dict[str, Any], x: Any) -> Any:
            return onnx_bidirectional_loss(cell, flat, x, targets.astype(np.float64))

        wide = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in arrays.items() if k != "xs"}
        g_flat, g_xs = jax.grad(loss, argnums=(0, 1))(wide, jnp.asarray(xs, dtype=jnp.float64))
        framework = {**{k: np.asarray(v) for k, v in g_flat.items()}, "xs": np.asarray(g_xs)}
        at = layout.from_layout(cell, arrays)
        _, ours = stack.loss_and_grad(
            at, at.pop("xs"), targets, cell=cell, num_layers=1, bidirectional=True
        )
    converted = layout.grads_to_layout(cell, ours)
    assert sorted(converted) == sorted(framework)
    for k, g in framework.items():
        size = np.max(np.abs(g))
        np.testing.assert_allclose(converted[k], g, rtol=0, atol=rtol * size, err_msg=k)


def test_onnx_refuses_more_than_one_layer() -> None:
    with pytest.raises(ValueError, match="an ONNX RNN, LSTM or GRU operator is one layer"):
        bptt_ref.layouts.layout_named("onnx", num_layers=2, bidirectional=True)
