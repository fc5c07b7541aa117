r"""Stacked and bidirectional networks of any cell, with PyTorch's semantics.

``num_layers = L`` layers, each running ``dirs`` directions (2 when ``bidirectional``),
as ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` with ``num_layers=L, bidirectional=...`` and no
dropout (there is none here: an oracle is deterministic). With :math:`x^{(0)}_t = x_t`:

.. math::
    \overrightarrow{h}^{(k)}_t = \mathrm{cell}(x^{(k)}_t, \overrightarrow{h}^{(k)}_{t-1}),
    \quad t = 0 \dots T-1,\qquad
    \overleftarrow{h}^{(k)}_t = \mathrm{cell}(x^{(k)}_t, \overleftarrow{h}^{(k)}_{t+1}),
    \quad t = T-1 \dots 0,

    x^{(k+1)}_t = [\overrightarrow{h}^{(k)}_t,\ \overleftarrow{h}^{(k)}_t]\ (B, dirs·H),
    \qquad z_t = x^{(L)}_t U^\top + b_y,\quad \hat y_t = f_y(z_t).

The reverse direction is the cell run on the time-reversed sequence, so its final state
sits at output step 0. The initial states start the forward direction at t = 0 and the
reverse one at t = T−1.

Parameter names (:func:`names`) map one to one onto PyTorch's ``state_dict``: the cell's
weight ``W`` of layer k is ``W_l{k}`` and of its reverse direction ``W_l{k}_reverse``
(PyTorch's ``weight_ih_l{k}`` ↔ ``W_ih_l{k}``, ``weight_hh_l{k}_reverse`` ↔
``W_hh_l{k}_reverse``, ``bias_ih`` ↔ ``b_ih``, ``bias_hh`` ↔ ``b_hh``; the rnn's ``V``,
``W``, ``b_h``, whose ``b_h`` is PyTorch's ``bias_ih + bias_hh``). Layer k > 0 reads
``dirs·H`` inputs, so its input-side weight has ``dirs·H`` columns, the forward
direction's in the first H. The initial states ``h0`` (and ``c0``) are
(L·dirs, B, H), row ``k·dirs + d`` for layer k and direction d (0 forward, 1 reverse), as
PyTorch's ``h_0``; the head's ``U`` is (O, dirs·H). With ``num_layers=1`` and
``bidirectional=False`` the network is the single cell of :func:`bptt_ref.loss_and_grad`,
with its names and shapes (``h0`` (B, H)), and every function here returns exactly what
that function returns.

The backward pass runs the head once, then the layers from the top down; each layer's
``∂L/∂x^{(k)}`` is the cotangent of the layer below's outputs, split between its two
directions by column, and each direction is the cell's own backward pass (the reverse one
on time-reversed arrays). docs/derivation.md §11 derives it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from bptt_ref import _model
from bptt_ref._activations import Array
from bptt_ref._losses import loss_sum
from bptt_ref._validate import (
    _as_float_array,
    _check_finite,
    _check_target_domain,
    check_names,
)
from bptt_ref.cells import DATA, Cell, CellPass, cell_named, dim_size

STATE_ROWS = "L·dirs"
"""The named dim of the initial states' first axis: one row per layer and direction."""


class Stack(NamedTuple):
    """One network: its cell, ``num_layers`` (L ≥ 1) and whether it is bidirectional."""

    cell: Cell
    num_layers: int
    bidirectional: bool

    @property
    def dirs(self) -> int:
        """The number of directions: 2 when bidirectional, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def single(self) -> bool:
        """Whether this is the single cell of :func:`bptt_ref.loss_and_grad`."""
        return self.num_layers == 1 and not self.bidirectional

    @property
    def weights(self) -> tuple[str, ...]:
        """The cell's own per-layer parameters (its states excluded), in its order."""
        return tuple(k for k in self.cell.names if k in self.cell.params and k not in self.states)

    @property
    def states(self) -> tuple[str, ...]:
        """The cell's initial states, e.g. ``("h0", "c0")``."""
        return self.cell.states

    def key(self, weight: str, layer: int, direction: int) -> str:
        """The name of ``weight`` of ``layer`` in ``direction``: ``W_ih_l1_reverse``."""
        return f"{weight}_l{layer}{'_reverse' if direction else ''}"

    def units(self) -> list[tuple[int, int]]:
        """Every (layer, direction), bottom layer first, forward before reverse."""
        return [(k, d) for k in range(self.num_layers) for d in range(self.dirs)]

    @property
    def names(self) -> tuple[str, ...]:
        """Every parameter key, as :func:`names` lists them."""
        if self.single:
            return self.cell.names
        return tuple(k for k in self.shapes() if k not in DATA)

    def shapes(self) -> dict[str, tuple[str, ...]]:
        """Every parameter and data array in named dims, in the order of :func:`names`."""
        if self.single:
            return self.cell.shapes
        wide = "2H" if self.bidirectional else "H"
        out: dict[str, tuple[str, ...]] = {}
        for k, d in self.units():
            for w in self.weights:
                spec = self.cell.params[w]
                out[self.key(w, k, d)] = tuple(wide if k and e == "D" else e for e in spec)
        out["U"] = ("O", wide)
        out["b_y"] = ("O",)
        out.update(dict.fromkeys(self.states, (STATE_ROWS, "B", "H")))
        return {**out, **DATA}


def configure(cell: str | Cell, num_layers: Any, bidirectional: Any) -> Stack:
    """The :class:`Stack`, checked.

    Raises:
        ValueError: for an unknown cell or ``num_layers`` < 1.
        TypeError: if ``num_layers`` is not an int or ``bidirectional`` not a bool.
    """
    spec = cell_named(cell)
    if isinstance(num_layers, bool) or not isinstance(num_layers, int | np.integer):
        raise TypeError(f"num_layers is {num_layers!r}; expected an int >= 1")
    if num_layers < 1:
        raise ValueError(f"num_layers is {num_layers}; expected an int >= 1")
    if not isinstance(bidirectional, bool | np.bool_):
        raise TypeError(f"bidirectional is {bidirectional!r}; expected True or False")
    return Stack(spec, int(num_layers), bool(bidirectional))


def names(
    cell: str | Cell = "rnn", *, num_layers: int = 1, bidirectional: bool = False
) -> tuple[str, ...]:
    """Every parameter key of the network, in the order gradients list them (``xs`` not
    included): layer by layer, forward direction before reverse, each in the cell's order
    (``W_ih_l0, W_hh_l0, b_ih_l0, b_hh_l0, W_ih_l0_reverse, …``), then ``U``, ``b_y`` and
    the initial states. The single cell's :attr:`~bptt_ref.cells.Cell.names` for L = 1
    and ``bidirectional=False``."""
    return configure(cell, num_layers, bidirectional).names


def _size(entry: str, dims: Mapping[str, int]) -> int:
    return dims[entry] if entry in dims else dim_size(entry, dims)


def check_inputs(
    config: Stack,
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    loss: str | None,
) -> tuple[dict[str, NDArray[np.floating]], NDArray[np.floating], NDArray[np.floating] | None]:
    """``(params, xs, targets)`` of a stacked network (``config`` not single) as C-contiguous
    arrays, every key, dtype, shape and value checked as :func:`bptt_ref.loss_and_grad`
    checks a single cell's (``targets`` may be ``None``; ``loss`` names the loss whose
    target domain applies). Arrays already C-contiguous are returned as they are.

    H is read off the layer-0 forward ``hidden_from`` weight, O off ``targets`` (or ``U``
    without targets); T, B, D off ``xs``.
    """
    shapes = config.shapes()
    keys = config.names
    what = (
        f"cell {config.cell.name!r} with num_layers={config.num_layers}, "
        f"bidirectional={config.bidirectional}"
    )
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping with keys {', '.join(keys)} for {what}")
    missing = [k for k in keys if k not in params]
    extra = sorted(str(k) for k in params if k not in keys)
    if missing or extra:
        listed = " and ".join(
            f"{label} keys {ks}"
            for label, ks in (("missing", missing), ("unexpected", extra))
            if ks
        )
        raise ValueError(f"params has {listed}; expected exactly {', '.join(keys)} for {what}")
    arrays = {k: _as_float_array(k, params[k]) for k in keys}
    arrays["xs"] = _as_float_array("xs", xs)
    if targets is not None:
        arrays["targets"] = _as_float_array("targets", targets)
    dtype = arrays["xs"].dtype
    for name, arr in arrays.items():
        if arr.dtype != dtype:
            raise TypeError(
                f"{name} has dtype {arr.dtype} but xs has {dtype}; "
                "expected all arrays to share one dtype"
            )
        if arr.ndim != len(shapes[name]):
            raise ValueError(
                f"{name} has shape {arr.shape}; expected {len(shapes[name])} dim(s) "
                f"({', '.join(shapes[name])}) for {what}"
            )
    hidden_from = config.key(config.cell.hidden_from, 0, 0)
    dims = dict(zip("TBD", arrays["xs"].shape, strict=True))
    dims["H"] = arrays[hidden_from].shape[shapes[hidden_from].index("H")]
    dims["O"] = arrays["targets"].shape[-1] if targets is not None else arrays["U"].shape[0]
    dims[STATE_ROWS] = config.num_layers * config.dirs
    source = {"T": "xs", "B": "xs", "D": "xs", "H": hidden_from, "O": "targets"}
    if targets is None:
        source["O"] = "U"
    for dim in "DHO":
        if dims[dim] < 1:
            raise ValueError(f"{source[dim]} gives {dim} = {dims[dim]}; expected {dim} >= 1")
    for name, arr in arrays.items():
        expected = tuple(_size(e, dims) for e in shapes[name])
        if arr.shape != expected:
            origin = ", ".join(
                sorted({f"{e[-1]} from {source[e[-1]]}" for e in shapes[name] if e[-1] in source})
            )
            rows = f"L·dirs = {dims[STATE_ROWS]}" if STATE_ROWS in shapes[name] else ""
            why = ", ".join(x for x in (origin, rows) if x)
            raise ValueError(
                f"{name} has shape {arr.shape}; expected ({', '.join(shapes[name])}) = "
                f"{expected} ({why}) for {what}"
            )
    for name, arr in arrays.items():
        _check_finite(name, arr)
    if targets is not None:
        _check_target_domain(loss, arrays["targets"])
    x = arrays.pop("xs")
    return arrays, x, arrays.pop("targets", None)


def _unit_params(
    config: Stack, p: Mapping[str, Array], layer: int, direction: int
) -> dict[str, Array]:
    """The cell's own parameters for one (layer, direction), under the cell's names."""
    row = layer * config.dirs + direction
    own = {w: p[config.key(w, layer, direction)] for w in config.weights}
    return {**own, **{s: p[s][row] for s in config.states}}


def _reversed(a: Array) -> Array:
    """``a`` (T, …) in reverse time order, C-contiguous (the cells' products want it)."""
    return np.ascontiguousarray(a[::-1])


class _Run(NamedTuple):
    """The forward pass: each layer's input (T, B, D or dirs·H), each unit's cell pass,
    and the top layer's output (T, B, dirs·H)."""

    inputs: list[Array]
    passes: dict[tuple[int, int], CellPass]
    top: Array


def _run(config: Stack, p: Mapping[str, Array], x: Array, hidden: str) -> _Run:
    inputs, passes = [], {}
    for k in range(config.num_layers):
        inputs.append(x)
        outputs = []
        for d in range(config.dirs):
            seq = _reversed(x) if d else x
            fw = config.cell.forward(_unit_params(config, p, k, d), seq, None, hidden)
            passes[k, d] = fw
            outputs.append(fw.h[::-1] if d else fw.h)
        x = np.concatenate(outputs, axis=-1) if config.bidirectional else outputs[0]
    return _Run(inputs, passes, x)


def _backward(config: Stack, p: Mapping[str, Array], run: _Run, d_top: Array) -> dict[str, Array]:
    """Every cell parameter's gradient and ``xs``'s, from ``d_top = ∂L/∂x^{(L)}``."""
    assert config.cell.backward is not None
    H = p[config.states[0]].shape[-1]
    grads: dict[str, Array] = {s: np.zeros_like(p[s]) for s in config.states}
    d_out = d_top
    for k in range(config.num_layers - 1, -1, -1):
        x = run.inputs[k]
        d_in = np.zeros_like(x)
        for d in range(config.dirs):
            own = _unit_params(config, p, k, d)
            dh = d_out[:, :, d * H : (d + 1) * H]
            seq, dh = (_reversed(x), _reversed(dh)) if d else (x, np.ascontiguousarray(dh))
            g = config.cell.backward(own, seq, run.passes[k, d], dh, None)
            for w in config.weights:
                grads[config.key(w, k, d)] = g[w]
            for s in config.states:
                grads[s][k * config.dirs + d] = g[s]
            d_in += g["xs"][::-1] if d else g["xs"]
        d_out = d_in
    grads["xs"] = d_out
    return grads


def loss_and_grad(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    cell: str | Cell = "rnn",
    num_layers: int = 1,
    bidirectional: bool = False,
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
) -> tuple[float, dict[str, NDArray[np.floating]]]:
    r"""The loss of the stacked network and its gradient for every parameter and ``xs``.

    :math:`L = \sum_t \sum_b \mathrm{loss}(\hat y_{t,b}, y_{t,b})` for the network of the
    module docstring. With :math:`g_t = \partial L/\partial z_t`, the top layer's output
    cotangent is :math:`\bar x^{(L)}_t = g_t U` (B, dirs·H); for k = L−1 … 0 its columns
    ``[0, H)`` and ``[H, 2H)`` are the direct cotangents ``dh`` of the forward and reverse
    directions of layer k, each direction's cell backward pass adds its recurrence (the
    reverse one runs on the time-reversed sequence and its result is reversed back), and
    :math:`\bar x^{(k)}_t = \sum_d \partial L/\partial x^{(k)}_t|_d` feeds layer k−1;
    :math:`\bar x^{(0)}` is ``∂L/∂xs``. There is no dropout between layers.

    Args:
        params: every key of :func:`names` (``cell``, ``num_layers``, ``bidirectional``):
            per layer k and direction, the cell's weights with the input dim D for k = 0
            and dirs·H above (e.g. LSTM ``W_ih_l1_reverse`` (4H, dirs·H)); ``U``
            (O, dirs·H), ``b_y`` (O,); ``h0`` (and ``c0``) (L·dirs, B, H). For L = 1 and
            ``bidirectional=False``, the single cell's keys and shapes.
        xs: (T, B, D); targets: (T, B, O).
        cell: a key of ``bptt_ref.cells.CELLS``; num_layers: L ≥ 1; bidirectional: bool.
        hidden, output, loss: as for :func:`bptt_ref.loss_and_grad`.

    Returns:
        ``(L, grads)``, ``grads`` keyed by :func:`names` and ``"xs"``, each of its input's
        shape and dtype. T = 0 or B = 0 is an empty sum: ``L = 0``, zero gradients.

    Raises:
        ValueError, TypeError: for unknown names, wrong keys, shapes (named in dims T, B,
            D, H, O, L·dirs) or dtypes, and non-finite values; inputs are never modified.
    """
    config = configure(cell, num_layers, bidirectional)
    if config.single:
        return _model.loss_and_grad(
            params, xs, targets, cell=config.cell, hidden=hidden, output=output, loss=loss
        )
    check_names(hidden, output, loss, cell=config.cell)
    p, x, y = check_inputs(config, params, xs, targets, loss)
    assert y is not None
    run = _run(config, p, x, hidden)
    value, d_top, head = _model.head_backward(p, run.top, y, output, loss)
    grads = {**_backward(config, p, run, d_top), **head}
    return value, {k: grads[k] for k in (*config.names, "xs")}


def forward(
    params: Mapping[str, Any],
    xs: Any,
    *,
    cell: str | Cell = "rnn",
    num_layers: int = 1,
    bidirectional: bool = False,
    hidden: str = "tanh",
    output: str = "identity",
) -> _model.Trace:
    """Run the stacked network forward: a :class:`bptt_ref.Trace` whose ``h`` is the top
    layer's per-step output (T, B, dirs·H), ``z`` and ``y_hat`` (T, B, O), and ``a``
    ``None`` (the single cell's trace for L = 1 and ``bidirectional=False``).

    Arguments as for :func:`loss_and_grad`, without targets.
    """
    config = configure(cell, num_layers, bidirectional)
    if config.single:
        return _model.forward(params, xs, cell=config.cell, hidden=hidden, output=output)
    check_names(hidden, output, cell=config.cell)
    p, x, _ = check_inputs(config, params, xs, None, None)
    top = _run(config, p, x, hidden).top
    z, y_hat = _model._head(p, top, output)
    return _model.Trace(a=None, h=top, z=z, y_hat=y_hat)


def loss_value(
    config: Stack,
    params: Mapping[str, Array],
    xs: Array,
    targets: Array,
    hidden: str,
    output: str,
    loss: str,
) -> Array:
    """``L`` without input checks, as a 0-d array; accepts complex inputs (complex step)."""
    if config.single:
        return _model.loss_value(params, xs, targets, config.cell, hidden, output, loss)
    top = _run(config, params, xs, hidden).top
    z, y_hat = _model._head(params, top, output)
    return loss_sum(loss, z, y_hat, targets)


def random_params(
    rng: np.random.Generator,
    *,
    batch_size: int,
    input_size: int,
    hidden_size: int,
    output_size: int,
    cell: str | Cell = "rnn",
    num_layers: int = 1,
    bidirectional: bool = False,
    spectral_radius: float = 0.9,
    dtype: Any = np.float64,
) -> dict[str, NDArray[np.floating]]:
    """Random parameters of the network, keyed by :func:`names`.

    Each (layer, direction) in the order of :func:`names` is drawn as
    :func:`bptt_ref.random_params` draws the single cell (input size D for layer 0, dirs·H
    above), its states going to row ``k·dirs + d`` of ``h0`` (``c0``); then the head,
    ``U`` (O, dirs·H) ~ N(0, 1/(dirs·H)) and ``b_y`` (O,) ~ N(0, 0.1²). For L = 1 and
    ``bidirectional=False``, exactly :func:`bptt_ref.random_params`.
    """
    config = configure(cell, num_layers, bidirectional)
    common = {"batch_size": batch_size, "hidden_size": hidden_size}
    if config.single:
        return _model.random_params(
            rng,
            input_size=input_size,
            output_size=output_size,
            spectral_radius=spectral_radius,
            dtype=dtype,
            cell=config.cell,
            **common,
        )
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"dtype is {np.dtype(dtype)}; expected float32 or float64")
    width = config.dirs * hidden_size
    out: dict[str, Array] = {}
    states: dict[str, list[Array]] = {s: [] for s in config.states}
    for k, d in config.units():
        unit = config.cell.init(
            rng,
            input_size=input_size if k == 0 else width,
            output_size=1,
            spectral_radius=spectral_radius,
            **common,
        )
        out.update({config.key(w, k, d): unit[w] for w in config.weights})
        for s in config.states:
            states[s].append(unit[s])
    out["U"] = rng.standard_normal((output_size, width)) / np.sqrt(width)
    out["b_y"] = 0.1 * rng.standard_normal(output_size)
    out.update({s: np.stack(rows) for s, rows in states.items()})
    return {k: out[k].astype(dtype) for k in config.names}
