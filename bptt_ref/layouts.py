r"""The frameworks' layouts of each cell's arrays, and lossless conversions to and from them.

bptt-ref's canonical layout is PyTorch's (:mod:`bptt_ref.cells`): ``W_ih`` (G·H, D),
``W_hh`` (G·H, H), ``b_ih``, ``b_hh`` (G·H,) used as ``x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ +
b_hh``, gate blocks of H rows stacked in the cell's order (LSTM i, f, g, o; GRU r, z, n),
initial states ``h0`` (and ``c0``) (B, H), the head ``U`` (O, H), ``b_y`` (O,), and data
``xs`` (T, B, D), ``targets`` (T, B, O), time-major. A :class:`Layout` names the same
numbers as a framework holds them:

========  ===================================================================================
torch     ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` ``state_dict`` names: ``weight_ih_l0`` (G·H, D),
          ``weight_hh_l0`` (G·H, H), ``bias_ih_l0``, ``bias_hh_l0`` (G·H,); gates as canonical;
          ``h_0``, ``c_0`` (1, B, H) (``num_layers · num_directions`` = 1); the head an
          ``nn.Linear`` ``fc.weight`` (O, H), ``fc.bias`` (O,); time-major. Stacked and
          bidirectional networks: the whole ``state_dict`` (:func:`torch_network_layout`).
keras     ``kernel`` (D, G·H), ``recurrent_kernel`` (H, G·H) used as ``x W`` and ``h W``;
          LSTM gates i, f, c, o (c is the candidate g), one ``bias`` (4H,); GRU gates z, r, h
          (h is the candidate n), ``reset_after=True`` (``gru``): ``bias`` (2, 3H) = [input
          bias; recurrent bias], ``reset_after=False`` (``gru_reset_before``): one ``bias``
          (3H,); SimpleRNN (``rnn``): ``bias`` (H,); ``h0``, ``c0`` (B, H) (the
          ``initial_state`` list [h, c]); the head a ``Dense``: ``dense/kernel`` (H, O),
          ``dense/bias`` (O,); batch-major ``xs`` (B, T, D), ``targets`` (B, T, O).
onnx      the ``LSTM`` / ``GRU`` / ``RNN`` operators: ``W`` (1, G·H, D), ``R`` (1, G·H, H),
          ``B`` (1, 2·G·H) = [Wb, Rb], the leading axis being ``num_directions`` = 1; LSTM
          gates i, o, f, c; GRU z, r, h with ``linear_before_reset=1`` (``gru``) or ``0``
          (``gru_reset_before``); ``initial_h``, ``initial_c`` (1, B, H); the operators
          have no output head, so it keeps the names ``U``, ``b_y``; time-major X. The
          LSTM's peepholes ``P`` are left out: the canonical cell has none (P = 0).
          One bidirectional layer is one operator (:func:`onnx_network_layout`).
flax      ``OptimizedLSTMCell`` / ``LSTMCell``, ``GRUCell``, ``SimpleCell`` parameter trees
          as nested dicts: LSTM ``{"cell": {"ii": {"kernel"}, "if", "ig", "io", "hi": {"kernel",
          "bias"}, "hf", "hg", "ho"}}``, each kernel (D, H) or (H, H) used as ``x K``, only the
          hidden side biased; GRU ``ir``, ``iz``, ``in`` (kernel, bias), ``hr``, ``hz``
          (kernel), ``hn`` (kernel, bias), only the reset-after cell (``gru``); SimpleCell
          ``i`` (kernel, bias), ``h`` (kernel); the carry ``{"carry": (c, h)}`` for the LSTM
          and ``{"carry": h}`` otherwise; the head a ``Dense`` ``{"head": {"kernel" (H, O),
          "bias"}}``; batch-major data (``nn.RNN``'s default). Flat keys are the paths
          joined by ``/`` (``cell/hi/kernel``, ``carry/0``), as reports name them.
cs231n    ``Wx`` (D, G·H), ``Wh`` (H, G·H), ``b`` (G·H,) used as ``x Wx + h Wh + b``; LSTM
          gates i, f, o, g; ``h0`` (N, H) and ``c0`` (N, H) (cs231n's ``lstm_forward`` starts
          from c = 0; ``c0`` is kept so that the cell is the canonical one); the head the
          captioning model's ``W_vocab`` (H, O), ``b_vocab`` (O,); batch-major data
          (N, T, D). It has no GRU.
tf1       LSTM only: TensorFlow 1's ``LSTMCell``: ``kernel`` (D+H, 4H) used as ``[x, h] K``
          (rows 0 … D−1 the input side), ``bias`` (4H,), gates i, j, f, o (j the candidate
          g), ``forget_bias`` = 1.0 added to f at run time (:func:`tf1_lstm`); the state
          tuple's ``c0``, ``h0`` (B, H); the head a ``tf.layers.dense``: ``dense/kernel``
          (H, O), ``dense/bias`` (O,); batch-major data (``dynamic_rnn``'s default).
karpathy  LSTM only: Karpathy's lstm.py: one ``WLSTM`` (1 + D + H, 4H) used as
          ``[1, x, h] W`` (row 0 the bias), gates i, f, o, g; ``c0``, ``h0`` (B, H); it has
          no output head, so it keeps ``U``, ``b_y``; time-major X (T, B, D).
========  ===================================================================================

**Fused and split biases.** Where a layout keeps one bias where the canonical cell adds
two at the same place (Keras' LSTM and reset-before GRU, Flax's LSTM and its GRU's r and
z gates, CS231n, TF1, Karpathy's row 0), layout → canonical puts it all in the bias of
the side the framework biases (``b_ih``; ``b_hh`` for Flax's LSTM, which biases the
hidden side) and sets the other to −0.0, and canonical → layout sums ``b_ih + b_hh``
(−0.0 is the one number whose addition is
the identity to the bit, so layout → canonical → layout is). Both biases then enter
only as their sum, so the fused bias's gradient equals each of theirs: canonical →
layout takes ``∂L/∂b_ih``, layout → canonical gives it to both. Where a layout keeps two
biases where the canonical cell has one (the rnn's ``b_h`` in PyTorch's and ONNX's
``bias_ih`` + ``bias_hh``, ``Wb`` + ``Rb``), layout → canonical sums them and canonical
→ layout puts ``b_h`` in the input-side one and −0.0 in the other; both get ``∂L/∂b_h``.
TF1's ``forget_bias`` (a constant c added to the f gate at run time, not an array)
is the one exception to −0.0: layout → canonical puts c in ``b_hh``'s f block, so that
the canonical cell is TF1's, and canonical → layout sums ``b_ih + (b_hh − c)``, the
difference written −0.0 where it is zero, so that layout → canonical → layout is the
identity to the bit; the gradient is as for any fused bias.
A fused bias can only stand for two biases that enter as a sum: the reset-after GRU's
candidate ``n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn))`` has ``∂L/∂b_hn = Σ r ⊙
∂L/∂a_n`` but ``∂L/∂b_in = Σ ∂L/∂a_n``, so no layout here fuses them (Keras keeps (2, 3H)
with ``reset_after=True``, Flax biases ``hn`` apart from ``in``), and
:class:`Layout` refuses a fused piece there.

**Gradients.** A layout's gradient is ∂L/∂(its arrays) for the model it expresses, so
every rearrangement (a gate permutation, a transpose, a leading axis, a split into per-gate
kernels, batch-major ``xs``) converts a gradient exactly like its parameter; the biases
follow the rules above.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bptt_ref.cells import CELLS, dim_size

__all__ = [
    "LAYOUTS",
    "CellLayout",
    "Entry",
    "Layout",
    "Piece",
    "layout_named",
    "onnx_network_layout",
    "stackable",
    "tf1_lstm",
    "torch_cell_layout",
    "torch_network_layout",
    "torch_suffix",
]

Array = NDArray[Any]

_SUMMED = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z"), "gru_reset_before": ("r", "z", "n")}
"""The gates whose two biases enter only as their sum b_ih + b_hh, per gated cell."""


@dataclass(frozen=True)
class Piece:
    """One run of rows of a layout array, stacked along its first axis before the transpose.

    Attributes:
        key: the canonical array the rows come from (``None``: a layout-only bias that
            the canonical cell folds into ``into``).
        gate: the gate block (H rows: gate k is rows k·H … (k+1)·H − 1), or ``None`` for
            the whole array.
        also: a second canonical bias whose same block is summed into these rows.
        into: with ``key=None``, the canonical bias (same ``gate``) these rows add into.
        offset: with ``also``, a constant the framework adds to these rows at run time
            (TF1's ``forget_bias``): canonical → layout sums ``key + (also − offset)``,
            layout → canonical sets ``also`` to ``offset``.
    """

    key: str | None
    gate: str | None = None
    also: str | None = None
    into: str | None = None
    offset: float = 0.0

    @property
    def source(self) -> str:
        """The canonical array whose gradient these rows hold."""
        source = self.key or self.into
        assert source is not None
        return source


@dataclass(frozen=True)
class Entry:
    """One array of a layout: its name, its shape in named dims, how it is assembled.

    The array is ``concatenate(pieces, axis=0)``, then its axes permuted by ``axes``
    (``(1, 0)``: a transposed kernel; ``(1, 0, 2)``: batch-major data), then reshaped to
    ``shape`` (a literal ``"1"`` is ONNX's direction axis or PyTorch's layer axis; a sum
    ``"1+D+H"`` is a joined axis). With ``columns``, ``pieces`` fall into consecutive
    groups of those sizes, each concatenated along axis 0 and the groups joined side by
    side along axis 1 (a group of 1-D pieces is one column) before the transpose: TF1's
    kernel ``[W_ihᵀ; W_hhᵀ]``, Karpathy's ``[b; W_ihᵀ; W_hhᵀ]``.
    """

    name: str
    shape: tuple[str, ...]
    pieces: tuple[Piece, ...]
    axes: tuple[int, ...] | None = None
    columns: tuple[int, ...] = ()

    def groups(self) -> list[tuple[Piece, ...]]:
        """The pieces by column group (one group without ``columns``)."""
        if not self.columns:
            return [self.pieces]
        ends = np.cumsum(self.columns)
        return [self.pieces[end - n : end] for n, end in zip(self.columns, ends, strict=True)]


@dataclass(frozen=True)
class CellLayout:
    """One cell in one layout.

    Attributes:
        entries: every array, the initial states and the head included, in the order
            messages list them; ``xs`` last (the data every gradient also answers for).
        gates: the framework's order of the gate blocks, in its own letters (Keras'
            ``("i", "f", "c", "o")``); empty for the rnn.
        convention: the framework's class and options this is, in words.
    """

    entries: tuple[Entry, ...]
    gates: tuple[str, ...]
    convention: str

    @property
    def names(self) -> tuple[str, ...]:
        """The parameter names (flat keys), ``xs`` excluded."""
        return tuple(e.name for e in self.entries if e.name != "xs")

    @property
    def grad_names(self) -> tuple[str, ...]:
        """The keys of a gradient: every parameter and ``xs``."""
        return tuple(e.name for e in self.entries)

    def entry(self, name: str) -> Entry:
        """The :class:`Entry` called ``name``."""
        return next(e for e in self.entries if e.name == name)


def shape_text(shape: tuple[str, ...]) -> str:
    """A named shape as a tuple prints: ``"(D, 4H)"``, ``"(H,)"``."""
    return f"({shape[0]},)" if len(shape) == 1 else f"({', '.join(shape)})"


@dataclass(frozen=True)
class Layout:
    """A framework's names, shapes, gate orders and data orientation, per cell.

    Attributes:
        name: the ``layout`` argument (``"torch"``, ``"keras"``, ...).
        cells: the cells it can express, by canonical cell name.
        nested: whether the framework holds a tree (Flax): ``nest`` turns flat ``/``
            paths into nested dicts (a level of keys ``"0"``, ``"1"``, … into a tuple).
        stacks: ``stacks(cell, num_layers, bidirectional)``, the cell's layout in a
            stacked or bidirectional network, for a layout that can express one
            (:meth:`stacked`); ``None`` where it cannot, ``single_only`` saying why.
        num_layers, bidirectional: the network ``cells`` describe (:mod:`bptt_ref.stack`):
            1 and ``False``, a single cell, unless made by :meth:`stacked`.
    """

    name: str
    cells: Mapping[str, CellLayout]
    nested: bool = False
    stacks: Callable[[str, int, bool], CellLayout] | None = None
    single_only: str = ""
    num_layers: int = 1
    bidirectional: bool = False

    def __post_init__(self) -> None:
        for cell, own in self.cells.items():
            for entry in own.entries:
                for piece in entry.pieces:
                    if piece.also is not None and piece.gate not in _SUMMED.get(cell, ()):
                        raise ValueError(
                            f"layout {self.name!r}, cell {cell!r}: {entry.name} fuses "
                            f"{piece.key} and {piece.also} at gate {piece.gate}, where they do "
                            "not enter as a sum"
                        )

    def of(self, cell: str) -> CellLayout:
        """The :class:`CellLayout` of ``cell``.

        Raises:
            ValueError: the layout cannot express ``cell``, naming those it can.
        """
        try:
            return self.cells[cell]
        except KeyError:
            raise ValueError(
                f"layout {self.name!r} cannot express cell {cell!r}; it expresses "
                f"{', '.join(self.cells)}"
            ) from None

    def stacked(self, num_layers: int, bidirectional: bool) -> Layout:
        """This layout of the network with ``num_layers`` layers, ``bidirectional`` or not
        (:mod:`bptt_ref.stack`): its conversions map the framework's names onto the
        stack's (``weight_hh_l1_reverse`` ↔ ``W_hh_l1_reverse``). For 1 and ``False``,
        the single-cell layout.

        Raises:
            ValueError: a layout that cannot express a stack, saying why; an invalid
                ``num_layers``.
            TypeError: as :func:`bptt_ref.stack.configure`.
        """
        from bptt_ref import stack

        network = stack.configure(next(iter(self.cells)), num_layers, bidirectional)
        if self.stacks is None and not network.single:
            raise ValueError(
                f"layout {self.name!r} cannot express a stacked or bidirectional network "
                f"(num_layers={network.num_layers}, bidirectional={network.bidirectional}): "
                f"{self.single_only}. Layouts that can: {', '.join(stackable())} (onnx one "
                "bidirectional layer only); or check the stack in bptt-ref's own names (no "
                "layout)"
            )
        if self.stacks is None or (network.num_layers, network.bidirectional) == (
            self.num_layers,
            self.bidirectional,
        ):
            return self
        return replace(
            self,
            cells={
                c: self.stacks(c, network.num_layers, network.bidirectional) for c in self.cells
            },
            num_layers=network.num_layers,
            bidirectional=network.bidirectional,
        )

    def expresses(self, num_layers: int, bidirectional: bool) -> bool:
        """Whether :meth:`stacked` can give this network (torch: any; onnx: one layer)."""
        try:
            self.stacked(num_layers, bidirectional)
        except ValueError:
            return False
        return True

    def canonical_shapes(self, cell: str) -> dict[str, tuple[str, ...]]:
        """The canonical arrays this layout converts to, in named dims: the cell's
        (:attr:`bptt_ref.cells.Cell.shapes`), or the stack's (:mod:`bptt_ref.stack`),
        whose initial states have ``num_layers · dirs`` rows, written out as a number."""
        from bptt_ref import stack

        network = stack.configure(cell, self.num_layers, self.bidirectional)
        if network.single:
            return dict(CELLS[cell].shapes)
        rows = str(network.num_layers * network.dirs)
        return {
            k: tuple(rows if e == stack.STATE_ROWS else e for e in v)
            for k, v in network.shapes().items()
        }

    # -- shapes ---------------------------------------------------------------------------

    def dims(self, cell: str, arrays: Mapping[str, Any]) -> dict[str, int]:
        """T, B, D, H, O read off ``arrays`` (flat layout keys), checking every shape.

        Raises:
            ValueError: an array whose shape disagrees with its named shape, naming the
                array, its shape and what was expected.
        """
        own = self.of(cell)
        return _read_dims({e.name: e.shape for e in own.entries}, arrays, f"{self.name} {cell}")

    def shape_text(self, cell: str, key: str) -> str:
        """The named shape of ``key``, as a tuple prints: ``"(D, 4H)"``."""
        return shape_text(self.of(cell).entry(key).shape)

    def shapes(self, cell: str, dims: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
        """Every array's concrete shape at ``dims``."""
        return {e.name: _shape(e.shape, dims) for e in self.of(cell).entries}

    def data(self, cell: str, array: Any) -> Array:
        """``xs`` or ``targets`` (T, B, ·) → the layout's orientation, and back: batch-major
        layouts swap the first two axes, which is its own inverse. A new array."""
        axes = self.of(cell).entry("xs").axes
        return np.array(np.asarray(array).transpose(axes) if axes is not None else array)

    # -- conversions ----------------------------------------------------------------------

    def to_layout(self, cell: str, params: Mapping[str, Any]) -> dict[str, Array]:
        """Canonical parameters (and optionally ``xs``) → this layout's flat dict.

        Every entry all of whose canonical sources are in ``params`` is returned, as a
        new array of the input's dtype; fused biases are summed (module docstring).

        Raises:
            ValueError: an array of the wrong shape for ``cell``.
        """
        return self._assemble(cell, params, gradient=False)

    def grads_to_layout(self, cell: str, grads: Mapping[str, Any]) -> dict[str, Array]:
        """Canonical gradients → this layout's, like :meth:`to_layout` but a fused bias
        takes ``∂L/∂b_ih`` (equal to ``∂L/∂b_hh`` where they enter as a sum) and a split
        one ``∂L/∂b_h`` in both of its arrays."""
        return self._assemble(cell, grads, gradient=True)

    def from_layout(self, cell: str, arrays: Mapping[str, Any]) -> dict[str, Array]:
        """This layout's flat dict → canonical parameters (and ``xs`` if given).

        Every canonical array whose rows are all in ``arrays`` is returned; a fused bias
        goes to ``b_ih`` with ``b_hh = −0.0``, a split one is summed (module docstring).

        Raises:
            ValueError: an array of the wrong shape (see :meth:`dims`).
        """
        return self._disassemble(cell, arrays, gradient=False)

    def grads_from_layout(self, cell: str, grads: Mapping[str, Any]) -> dict[str, Array]:
        """This layout's gradients → canonical, like :meth:`from_layout` but a fused
        bias's gradient goes to both canonical biases and a split one's input-side
        gradient is ``∂L/∂b_h``."""
        return self._disassemble(cell, grads, gradient=True)

    def _assemble(
        self, cell: str, arrays: Mapping[str, Any], *, gradient: bool
    ) -> dict[str, Array]:
        spec = CELLS[cell]
        dims = _read_dims(self.canonical_shapes(cell), arrays, f"canonical {cell}")
        out = {}
        for entry in self.of(cell).entries:
            sources = {p.source for p in entry.pieces}
            if not gradient:
                sources |= {p.also for p in entry.pieces if p.also is not None}
            if not sources <= set(arrays):
                continue
            joined = []
            for group in entry.groups():
                segments = []
                for p in group:
                    block = np.asarray(arrays[p.source])[_rows(spec.gate_names, p.gate, dims)]
                    if p.key is None and not gradient:
                        # A split bias: its value is the additive identity, to the bit.
                        block = np.full_like(block, -0.0)
                    elif p.also is not None and not gradient:
                        other = np.asarray(arrays[p.also])[_rows(spec.gate_names, p.gate, dims)]
                        if p.offset:
                            # also − offset is +0.0 when also holds the offset; −0.0 keeps
                            # the sum the identity on key, −0.0 included.
                            other = other - p.offset
                            other = np.where(other == 0, np.asarray(-0.0, other.dtype), other)
                        block = block + other
                    segments.append(block)
                column = np.concatenate(segments, axis=0)
                joined.append(column[:, None] if entry.columns and column.ndim == 1 else column)
            value = joined[0] if len(joined) == 1 else np.concatenate(joined, axis=1)
            if entry.axes is not None:
                value = value.transpose(entry.axes)
            out[entry.name] = value.reshape(_shape(entry.shape, dims))
        return out

    def _disassemble(
        self, cell: str, arrays: Mapping[str, Any], *, gradient: bool
    ) -> dict[str, Array]:
        spec = CELLS[cell]
        dims = self.dims(cell, arrays)
        # Only the arrays whose dims are all known: without xs there is no T.
        shapes = {
            k: _shape(v, dims)
            for k, v in self.canonical_shapes(cell).items()
            if all(d.isdigit() or d[-1] in dims for d in v)
        }
        blocks: dict[str, dict[str | None, Array]] = {}
        split: list[tuple[Piece, Array]] = []
        for entry in self.of(cell).entries:
            if entry.name not in arrays:
                continue
            groups = entry.groups()
            rows = [
                [shapes[p.source][0] // (spec.gates if p.gate else 1) for p in g] for g in groups
            ]
            trailing = [shapes[g[0].source][1:] for g in groups]
            widths = [t[0] if t else 1 for t in trailing]
            stacked = (sum(rows[0]), *((sum(widths),) if entry.columns else trailing[0]))
            value = np.asarray(arrays[entry.name])
            if entry.axes is None:
                value = value.reshape(stacked)
            else:
                value = value.reshape(tuple(stacked[i] for i in entry.axes))
                value = value.transpose(np.argsort(entry.axes))
            sides = np.split(value, np.cumsum(widths)[:-1], axis=1) if entry.columns else [value]
            for group, group_rows, tail, part in zip(groups, rows, trailing, sides, strict=True):
                if entry.columns and not tail:
                    part = part[:, 0]
                cuts = np.split(part, np.cumsum(group_rows)[:-1])
                for p, segment in zip(group, cuts, strict=True):
                    if p.key is None:
                        split.append((p, segment))
                        continue
                    blocks.setdefault(p.key, {})[p.gate] = segment
                    if p.also is not None:
                        blocks.setdefault(p.also, {})[p.gate] = (
                            segment if gradient else np.full_like(segment, p.offset or -0.0)
                        )
        out = {}
        for key, parts in blocks.items():
            order: tuple[str | None, ...] = spec.gate_names if None not in parts else (None,)
            if all(g in parts for g in order):
                out[key] = np.concatenate([parts[g] for g in order], axis=0)
        if not gradient:
            for p, segment in split:
                if p.source in out:
                    at = _rows(spec.gate_names, p.gate, dims)
                    out[p.source][at] = out[p.source][at] + segment
        return out

    def nest(self, flat: Mapping[str, Any]) -> Any:
        """Flat ``/`` keys → the framework's tree (Flax); other layouts: a dict copy."""
        if not self.nested:
            return dict(flat)
        tree: dict[str, Any] = {}
        for path, value in flat.items():
            *heads, last = path.split("/")
            level = tree
            for head in heads:
                level = level.setdefault(head, {})
            level[last] = value
        return _tuples(tree)

    def flatten(self, tree: Any) -> dict[str, Any]:
        """The framework's tree → flat ``/`` keys (the inverse of :meth:`nest`).

        Raises:
            TypeError: ``tree`` is not a mapping (for Flax: of mappings, tuples and arrays).
        """
        if not isinstance(tree, Mapping):
            raise TypeError(f"expected a mapping of arrays; got a {type(tree).__name__}")
        if not self.nested:
            return dict(tree)
        flat: dict[str, Any] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, Mapping):
                items = [(str(k), v) for k, v in node.items()]
            elif isinstance(node, (tuple, list)):
                items = [(str(i), v) for i, v in enumerate(node)]
            else:
                flat[prefix] = node
                return
            for k, v in items:
                walk(f"{prefix}/{k}" if prefix else k, v)

        walk("", tree)
        return flat


def _tuples(node: Any) -> Any:
    """A nested dict with each level keyed ``"0"``, ``"1"``, … turned into a tuple."""
    if not isinstance(node, dict):
        return node
    node = {k: _tuples(v) for k, v in node.items()}
    if node and sorted(node) == [str(i) for i in range(len(node))]:
        return tuple(node[str(i)] for i in range(len(node)))
    return node


def _rows(order: tuple[str, ...], gate: str | None, dims: Mapping[str, int]) -> slice:
    """The rows of gate block ``gate`` (all rows for ``None``)."""
    if gate is None:
        return slice(None)
    k, H = order.index(gate), dims["H"]
    return slice(k * H, (k + 1) * H)


def _shape(spec: tuple[str, ...], dims: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(sum(_size(part, dims) for part in s.split("+")) for s in spec)


def _size(entry: str, dims: Mapping[str, int]) -> int:
    return int(entry) if entry.isdigit() else dim_size(entry, dims)


def _read_dims(
    specs: Mapping[str, tuple[str, ...]], arrays: Mapping[str, Any], what: str
) -> dict[str, int]:
    """The named dims read off those of ``arrays`` that ``specs`` names, every shape checked."""
    dims: dict[str, int] = {}
    for key, spec in specs.items():
        if key in arrays:
            shape = np.shape(arrays[key])
            for s, size in zip(spec, shape, strict=False):
                if not s.isdigit() and "+" not in s:
                    factor = int(s[:-1]) if s[:-1] else 1
                    dims.setdefault(s[-1], size // factor)
    # A joined axis (1+D+H) gives the one dim no other axis gave (D without xs).
    for key, spec in specs.items():
        if key in arrays:
            for s, size in zip(spec, np.shape(arrays[key]), strict=False):
                unknown = [part for part in s.split("+") if not part.isdigit() and part not in dims]
                if "+" in s and len(unknown) == 1 and len(unknown[0]) == 1:
                    known = sum(_size(part, dims) for part in s.split("+") if part != unknown[0])
                    dims[unknown[0]] = size - known
    for key, spec in specs.items():
        if key in arrays:
            shape = np.shape(arrays[key])
            expected = _shape(spec, dims) if len(shape) == len(spec) else None
            if shape != expected:
                named = ", ".join(f"{k}={v}" for k, v in dims.items())
                raise ValueError(
                    f"{what}: {key} has shape {shape}; expected {shape_text(spec)}"
                    + (f" = {expected} (from {named})" if expected is not None else "")
                )
    return dims


# -- the layouts ---------------------------------------------------------------------------


def _gated(key: str, gates: tuple[str, ...], also: str | None = None) -> tuple[Piece, ...]:
    return tuple(Piece(key, g, also) for g in gates)


_XS_TIME = Entry("xs", ("T", "B", "D"), (Piece("xs"),))
_XS_BATCH = Entry("xs", ("B", "T", "D"), (Piece("xs"),), (1, 0, 2))
_T = (1, 0)


def torch_suffix(layer: int = 0, reverse: bool = False) -> str:
    """PyTorch's ``state_dict`` suffix of layer ``layer`` and one direction: ``_l0``,
    ``_l1_reverse``. Its initial states stack every (layer, direction) along axis 0 at
    index ``layer · num_directions + direction``."""
    return f"_l{layer}" + ("_reverse" if reverse else "")


def torch_cell_layout(cell: str, suffix: str = torch_suffix()) -> CellLayout:
    """``cell`` as one (layer, direction) of ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``: its
    ``state_dict`` keys end in ``suffix`` (:func:`torch_suffix`); the initial states are
    the (1, B, H) slice of PyTorch's (num_layers · num_directions, B, H)."""
    return _torch(cell, _torch_weights(cell, suffix, "", "D"), "1", "H")


def torch_network_layout(cell: str, num_layers: int = 1, bidirectional: bool = False) -> CellLayout:
    """``cell`` in ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU(num_layers=L, bidirectional=...)``
    with an ``nn.Linear`` head: the whole ``state_dict``, layer by layer, forward before
    reverse (``weight_ih_l0``, …, ``bias_hh_l0_reverse``, ``weight_ih_l1``, …), each
    holding the stack's array of the same suffix (``weight_hh_l1_reverse`` is
    ``W_hh_l1_reverse``, :mod:`bptt_ref.stack`); layer k > 0's ``weight_ih`` is
    (G·H, dirs·H); ``h_0``, ``c_0`` (L·dirs, B, H), row ``k·dirs + d``; ``fc.weight``
    (O, dirs·H). For L = 1 and one direction, :func:`torch_cell_layout`."""
    from bptt_ref import stack

    network = stack.configure(cell, num_layers, bidirectional)
    if network.single:
        return torch_cell_layout(cell)
    wide = f"{network.dirs}H" if network.bidirectional else "H"
    weights = tuple(
        entry
        for k, d in network.units()
        for entry in _torch_weights(
            cell, torch_suffix(k, bool(d)), torch_suffix(k, bool(d)), "D" if k == 0 else wide
        )
    )
    return _torch(cell, weights, str(network.num_layers * network.dirs), wide)


def _torch_weights(cell: str, suffix: str, key_suffix: str, inputs: str) -> tuple[Entry, ...]:
    """One (layer, direction)'s four ``state_dict`` arrays, named with ``suffix``, holding
    the canonical arrays named with ``key_suffix``, reading ``inputs`` columns."""
    spec = CELLS[cell]
    rows = f"{spec.gates}H" if spec.gates > 1 else "H"
    w_ih, w_hh, b_ih = (k + key_suffix for k in spec.roles[:3])
    b_hh = None if spec.roles[3] is None else spec.roles[3] + key_suffix
    order = spec.gate_names
    bias_hh = (Piece(None, into=b_ih),) if b_hh is None else _gated(b_hh, order) or (Piece(b_hh),)
    return (
        Entry(f"weight_ih{suffix}", (rows, inputs), _gated(w_ih, order) or (Piece(w_ih),)),
        Entry(f"weight_hh{suffix}", (rows, "H"), _gated(w_hh, order) or (Piece(w_hh),)),
        Entry(f"bias_ih{suffix}", (rows,), _gated(b_ih, order) or (Piece(b_ih),)),
        Entry(f"bias_hh{suffix}", (rows,), bias_hh),
    )


def _torch(cell: str, weights: tuple[Entry, ...], state_rows: str, wide: str) -> CellLayout:
    """The torch :class:`CellLayout` of ``weights``, the initial states with
    ``state_rows`` rows, and the head reading ``wide`` columns."""
    spec = CELLS[cell]
    states = {"h0": "h_0", "c0": "c_0"}
    return CellLayout(
        entries=(
            *weights,
            *(Entry(states[k], (state_rows, "B", "H"), (Piece(k),)) for k in spec.states),
            Entry("fc.weight", ("O", wide), (Piece("U"),)),
            Entry("fc.bias", ("O",), (Piece("b_y"),)),
            _XS_TIME,
        ),
        gates=spec.gate_names,
        convention={
            "rnn": "torch.nn.RNN (bias_hh and bias_ih sum to b_h)",
            "lstm": "torch.nn.LSTM",
            "gru": "torch.nn.GRU",
        }.get(cell, ""),
    )


def _keras(cell: str) -> CellLayout:
    spec = CELLS[cell]
    gates = {"lstm": ("i", "f", "g", "o"), "gru": ("z", "r", "n")}.get(cell, ("z", "r", "n"))
    if cell == "rnn":
        weights: tuple[Entry, ...] = (
            Entry("kernel", ("D", "H"), (Piece("V"),), _T),
            Entry("recurrent_kernel", ("H", "H"), (Piece("W"),), _T),
            Entry("bias", ("H",), (Piece("b_h"),)),
        )
    else:
        G = f"{spec.gates}H"
        fused = cell != "gru"
        bias = (
            Entry("bias", (G,), _gated("b_ih", gates, also="b_hh"))
            if fused
            else Entry("bias", ("2", G), (*_gated("b_ih", gates), *_gated("b_hh", gates)))
        )
        weights = (
            Entry("kernel", ("D", G), _gated("W_ih", gates), _T),
            Entry("recurrent_kernel", ("H", G), _gated("W_hh", gates), _T),
            bias,
        )
    return CellLayout(
        entries=(
            *weights,
            *(Entry(k, ("B", "H"), (Piece(k),)) for k in spec.states),
            Entry("dense/kernel", ("H", "O"), (Piece("U"),), _T),
            Entry("dense/bias", ("O",), (Piece("b_y"),)),
            _XS_BATCH,
        ),
        gates={"lstm": ("i", "f", "c", "o"), "rnn": ()}.get(cell, ("z", "r", "h")),
        convention={
            "rnn": "keras.layers.SimpleRNN",
            "lstm": "keras.layers.LSTM",
            "gru": "keras.layers.GRU(reset_after=True)",
            "gru_reset_before": "keras.layers.GRU(reset_after=False)",
        }[cell],
    )


def _onnx(cell: str, suffixes: tuple[str, ...] = ("",)) -> CellLayout:
    """One ONNX operator over the directions whose canonical keys end in ``suffixes``:
    ``("",)`` the single cell, ``("_l0", "_l0_reverse")`` a bidirectional layer."""
    spec = CELLS[cell]
    gates = {"lstm": ("i", "o", "f", "g"), "rnn": ()}.get(cell, ("z", "r", "n"))
    G = f"{spec.gates}H" if spec.gates > 1 else "H"
    dirs = str(len(suffixes))
    states = {"h0": "initial_h", "c0": "initial_c"}
    W: list[Piece] = []
    R: list[Piece] = []
    B: list[Piece] = []
    for suffix in suffixes:
        w_ih, w_hh, b_ih = (k + suffix for k in spec.roles[:3])
        b_hh = None if spec.roles[3] is None else spec.roles[3] + suffix
        recurrent_bias = (Piece(None, into=b_ih),) if b_hh is None else _gated(b_hh, gates)
        W += _gated(w_ih, gates) or (Piece(w_ih),)
        R += _gated(w_hh, gates) or (Piece(w_hh),)
        B += (*(_gated(b_ih, gates) or (Piece(b_ih),)), *recurrent_bias)
    return CellLayout(
        entries=(
            Entry("W", (dirs, G, "D"), tuple(W)),
            Entry("R", (dirs, G, "H"), tuple(R)),
            Entry("B", (dirs, f"{2 * spec.gates}H"), tuple(B)),
            *(Entry(states[k], (dirs, "B", "H"), (Piece(k),)) for k in spec.states),
            Entry("U", ("O", f"{dirs}H" if len(suffixes) > 1 else "H"), (Piece("U"),)),
            Entry("b_y", ("O",), (Piece("b_y"),)),
            _XS_TIME,
        ),
        gates={"lstm": ("i", "o", "f", "c"), "rnn": ()}.get(cell, ("z", "r", "h")),
        convention={
            "rnn": "ONNX RNN (B = [Wb, Rb], summing to b_h)",
            "lstm": "ONNX LSTM without peepholes",
            "gru": "ONNX GRU(linear_before_reset=1)",
            "gru_reset_before": "ONNX GRU(linear_before_reset=0)",
        }[cell]
        + (', direction="bidirectional"' if len(suffixes) > 1 else ""),
    )


def onnx_network_layout(cell: str, num_layers: int = 1, bidirectional: bool = False) -> CellLayout:
    """``cell`` as one ONNX operator with ``direction="bidirectional"``: ``W`` (2, G·H,
    D), ``R`` (2, G·H, H), ``B`` (2, 2·G·H), ``initial_h`` (and ``initial_c``) (2, B, H),
    index 0 the forward direction (the stack's ``_l0``) and 1 the reverse
    (``_l0_reverse``); the head ``U`` (O, 2H) reads ``Y`` (T, 2, B, H) with its two
    directions side by side, [forward, reverse], as :mod:`bptt_ref.stack` does. For one
    layer and one direction, the single cell.

    Raises:
        ValueError: ``num_layers`` > 1: an ONNX operator is one layer.
    """
    from bptt_ref import stack

    network = stack.configure(cell, num_layers, bidirectional)
    if network.single:
        return _onnx(cell)
    if network.num_layers > 1:
        raise ValueError(
            f"layout 'onnx' cannot express num_layers={network.num_layers}: an ONNX "
            "RNN, LSTM or GRU operator is one layer "
            '(direction="bidirectional" at most), and a stack is several operators whose '
            "tensor names the graph chooses, with a reshape of Y (T, dirs, B, H) between "
            "them. Check it in layout torch, or in bptt-ref's own names (no layout)"
        )
    return _onnx(cell, (torch_suffix(0), torch_suffix(0, reverse=True)))


def _flax(cell: str) -> CellLayout:
    spec = CELLS[cell]
    states: tuple[Entry, ...]
    if cell == "lstm":
        kernels = tuple(
            Entry(f"cell/{side}{g}/kernel", (dim, "H"), (Piece(key, g),), _T)
            for side, key, dim in (("i", "W_ih", "D"), ("h", "W_hh", "H"))
            for g in spec.gate_names
        )
        biases = tuple(
            Entry(f"cell/h{g}/bias", ("H",), (Piece("b_hh", g, also="b_ih"),))
            for g in spec.gate_names
        )
        states = (
            Entry("carry/0", ("B", "H"), (Piece("c0"),)),
            Entry("carry/1", ("B", "H"), (Piece("h0"),)),
        )
        convention = "flax.linen.OptimizedLSTMCell (and LSTMCell), carry (c, h)"
    elif cell == "gru":
        kernels = tuple(
            Entry(f"cell/{side}{g}/kernel", (dim, "H"), (Piece(key, g),), _T)
            for side, key, dim in (("i", "W_ih", "D"), ("h", "W_hh", "H"))
            for g in spec.gate_names
        )
        biases = (
            Entry("cell/ir/bias", ("H",), (Piece("b_ih", "r", also="b_hh"),)),
            Entry("cell/iz/bias", ("H",), (Piece("b_ih", "z", also="b_hh"),)),
            Entry("cell/in/bias", ("H",), (Piece("b_ih", "n"),)),
            Entry("cell/hn/bias", ("H",), (Piece("b_hh", "n"),)),
        )
        states = (Entry("carry", ("B", "H"), (Piece("h0"),)),)
        convention = "flax.linen.GRUCell"
    else:
        kernels = (
            Entry("cell/i/kernel", ("D", "H"), (Piece("V"),), _T),
            Entry("cell/h/kernel", ("H", "H"), (Piece("W"),), _T),
        )
        biases = (Entry("cell/i/bias", ("H",), (Piece("b_h"),)),)
        states = (Entry("carry", ("B", "H"), (Piece("h0"),)),)
        convention = "flax.linen.SimpleCell"
    return CellLayout(
        entries=(
            *kernels,
            *biases,
            *states,
            Entry("head/kernel", ("H", "O"), (Piece("U"),), _T),
            Entry("head/bias", ("O",), (Piece("b_y"),)),
            _XS_BATCH,
        ),
        gates=spec.gate_names,
        convention=convention,
    )


def _cs231n(cell: str) -> CellLayout:
    spec = CELLS[cell]
    gates = ("i", "f", "o", "g") if cell == "lstm" else ()
    G = "4H" if cell == "lstm" else "H"
    w_ih, w_hh, b_ih, b_hh = spec.roles
    return CellLayout(
        entries=(
            Entry("Wx", ("D", G), _gated(w_ih, gates) or (Piece(w_ih),), _T),
            Entry("Wh", ("H", G), _gated(w_hh, gates) or (Piece(w_hh),), _T),
            Entry("b", (G,), _gated(b_ih, gates, also=b_hh) or (Piece(b_ih),)),
            *(Entry(k, ("B", "H"), (Piece(k),)) for k in spec.states),
            Entry("W_vocab", ("H", "O"), (Piece("U"),), _T),
            Entry("b_vocab", ("O",), (Piece("b_y"),)),
            _XS_BATCH,
        ),
        gates=gates,
        convention="cs231n " + ("lstm_forward (c0 = 0 there)" if cell == "lstm" else "rnn_forward"),
    )


def tf1_lstm(forget_bias: float = 1.0) -> CellLayout:
    """The LSTM as TensorFlow 1's ``tf.compat.v1.nn.rnn_cell.LSTMCell(forget_bias=...)``
    (no peepholes, no projection) holds it, run by ``dynamic_rnn`` (batch-major):
    ``kernel`` (D+H, 4H) used as ``[x, h] K``, ``bias`` (4H,), gates i, j, f, o (j the
    candidate), ``c = σ(f + forget_bias) ⊙ c + σ(i) ⊙ tanh(j)``. ``forget_bias`` is no
    array: layout → canonical gives ``b_ih = bias`` and ``b_hh`` = ``forget_bias`` on the
    f block and −0.0 elsewhere; canonical → layout gives ``bias = b_ih + (b_hh −
    forget_bias·[f block])`` (module docstring); every gradient of ``bias`` is
    ``∂L/∂b_ih`` (= ``∂L/∂b_hh``)."""
    gates = ("i", "g", "f", "o")
    bias = tuple(
        Piece("b_ih", g, also="b_hh", offset=forget_bias if g == "f" else 0.0) for g in gates
    )
    return CellLayout(
        entries=(
            Entry(
                "kernel",
                ("D+H", "4H"),
                (*_gated("W_ih", gates), *_gated("W_hh", gates)),
                _T,
                columns=(4, 4),
            ),
            Entry("bias", ("4H",), bias),
            Entry("c0", ("B", "H"), (Piece("c0"),)),
            Entry("h0", ("B", "H"), (Piece("h0"),)),
            Entry("dense/kernel", ("H", "O"), (Piece("U"),), _T),
            Entry("dense/bias", ("O",), (Piece("b_y"),)),
            _XS_BATCH,
        ),
        gates=("i", "j", "f", "o"),
        convention=f"tf.compat.v1.nn.rnn_cell.LSTMCell(forget_bias={forget_bias:g})",
    )


def _karpathy() -> CellLayout:
    gates = ("i", "f", "o", "g")
    return CellLayout(
        entries=(
            Entry(
                "WLSTM",
                ("1+D+H", "4H"),
                (
                    *_gated("b_ih", gates, also="b_hh"),
                    *_gated("W_ih", gates),
                    *_gated("W_hh", gates),
                ),
                _T,
                columns=(4, 4, 4),
            ),
            Entry("c0", ("B", "H"), (Piece("c0"),)),
            Entry("h0", ("B", "H"), (Piece("h0"),)),
            Entry("U", ("O", "H"), (Piece("U"),)),
            Entry("b_y", ("O",), (Piece("b_y"),)),
            _XS_TIME,
        ),
        gates=gates,
        convention="Karpathy's lstm.py LSTM.forward(X, WLSTM, c0, h0)",
    )


LAYOUTS: dict[str, Layout] = {
    "torch": Layout(
        "torch",
        {c: torch_cell_layout(c) for c in ("rnn", "lstm", "gru")},
        stacks=torch_network_layout,
    ),
    "keras": Layout(
        "keras",
        {c: _keras(c) for c in CELLS},
        single_only="Keras stacks layers as separate LSTM/GRU layers (return_sequences=True) "
        "and runs both directions in a keras.layers.Bidirectional wrapper, whose names "
        "(forward_lstm/, backward_lstm/, lstm_1/, ...) the user's model chooses, so no fixed "
        "set of keys names a stack",
    ),
    "onnx": Layout("onnx", {c: _onnx(c) for c in CELLS}, stacks=onnx_network_layout),
    "flax": Layout(
        "flax",
        {c: _flax(c) for c in ("rnn", "lstm", "gru")},
        nested=True,
        single_only="Flax stacks separate nn.RNN modules and runs both directions in "
        "nn.Bidirectional, under tree paths the user's module names, so no fixed tree "
        "names a stack",
    ),
    "cs231n": Layout(
        "cs231n",
        {c: _cs231n(c) for c in ("rnn", "lstm")},
        single_only="cs231n's rnn_forward and lstm_forward are one layer, one direction",
    ),
    "tf1": Layout(
        "tf1",
        {"lstm": tf1_lstm()},
        single_only="TensorFlow 1 stacks cells in MultiRNNCell and runs directions with "
        "bidirectional_dynamic_rnn, under variable scopes (multi_rnn_cell/cell_0/...) the "
        "user's graph chooses",
    ),
    "karpathy": Layout(
        "karpathy",
        {"lstm": _karpathy()},
        single_only="Karpathy's lstm.py is one layer, one direction",
    ),
}
"""Every layout by name; ``"canonical"`` (:func:`layout_named`) is bptt-ref's own."""


def stackable() -> tuple[str, ...]:
    """The names of the layouts that can express a stacked or bidirectional network."""
    return tuple(n for n, lay in LAYOUTS.items() if lay.stacks is not None)


def layout_named(name: str, *, num_layers: int = 1, bidirectional: bool = False) -> Layout:
    """The :class:`Layout` called ``name``, of the network with ``num_layers`` layers,
    ``bidirectional`` or not (:meth:`Layout.stacked`; by default a single cell).

    Raises:
        ValueError: an unknown name, listing the known ones; a layout that cannot
            express the network, saying why.
    """
    try:
        found = LAYOUTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown layout {name!r}; expected one of {list(LAYOUTS)}") from None
    return found.stacked(num_layers, bidirectional)
