"""Hypothesis strategies for RNN gradient test cases (extra ``bptt-ref[hypothesis]``).

Cases are drawn as a few small integers and labels (shape, configuration, dtype,
weight regime, input style and an RNG seed) from which
:func:`bptt_ref.cases.make_case` generates the arrays with NumPy. That keeps drawing
cheap, so a property can check hundreds of cases a second, and keeps shrinking
meaningful: Hypothesis shrinks T, B, D, H, O, the seed and the labels towards the
simplest failing case.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from bptt_ref._activations import HIDDEN
from bptt_ref._losses import VALID_HEADS
from bptt_ref.cases import INPUT_STYLES as INPUT_STYLES
from bptt_ref.cases import KERNEL_STEPS as KERNEL_STEPS
from bptt_ref.cases import KERNEL_WIDTHS as KERNEL_WIDTHS
from bptt_ref.cases import REGIMES as REGIMES
from bptt_ref.cases import SMALL_DIMS as SMALL_DIMS
from bptt_ref.cases import Case as Case
from bptt_ref.cases import Config as Config
from bptt_ref.cases import Network as Network
from bptt_ref.cases import boundary_sizes as boundary_sizes
from bptt_ref.cases import make_case as make_case
from bptt_ref.cases import size_plan as size_plan
from bptt_ref.cells import CELLS

# The case model (Case, make_case, REGIMES, INPUT_STYLES, Config, the sizes) lives in the NumPy-only
# bptt_ref.cases; it is re-exported here, where users of the strategies have imported it.
__all__ = [
    "INPUT_STYLES",
    "KERNEL_STEPS",
    "KERNEL_WIDTHS",
    "REGIMES",
    "SMALL_DIMS",
    "Case",
    "Config",
    "Network",
    "boundary_sizes",
    "cases",
    "configurations",
    "dims",
    "make_case",
    "size_plan",
]

Sizes = str | Sequence[int]
"""``"small"``, ``"kernel"`` or the edges (tile, vector, chunk widths) to cross."""


def configurations(
    *, hidden: Sequence[str] | None = None, heads: Sequence[tuple[str, str]] | None = None
) -> st.SearchStrategy[tuple[str, str, str]]:
    """Valid ``(hidden, output, loss)`` triples, optionally restricted."""
    hidden = tuple(HIDDEN) if hidden is None else tuple(hidden)
    heads = VALID_HEADS if heads is None else tuple(heads)
    for name in hidden:
        if name not in HIDDEN:
            raise InvalidArgument(f"hidden={name!r} is not one of {sorted(HIDDEN)}")
    for head in heads:
        if head not in VALID_HEADS:
            raise InvalidArgument(f"head {head!r} is not one of {list(VALID_HEADS)}")
    return st.sampled_from([(h, o, lo) for h, (o, lo) in itertools.product(hidden, heads)])


def dims(
    *,
    sizes: Sizes = "small",
    min_T: int = 1,
    max_T: int | None = None,
    max_B: int | None = None,
    max_D: int | None = None,
    max_H: int | None = None,
    max_O: int | None = None,
) -> st.SearchStrategy[dict[str, int]]:
    """Sizes ``{"T", "B", "D", "H", "O"}`` of a case, small or on a kernel's boundaries.

    ``sizes="small"``: every dim uniform in [1, max] (T in [min_T, max_T]); an unset max
    is the small default, ``SMALL_DIMS`` (T 16, B 4, D 4, H 8, O 4).

    ``sizes="kernel"`` or a list of edges: every dim small as above (each max capped by
    ``SMALL_DIMS``), and in most draws *one* dim on a boundary instead, a size of
    :func:`bptt_ref.cases.boundary_sizes` of the edges (``"kernel"``: T around
    ``KERNEL_STEPS`` 64, 128, 256; B, D, H, O around ``KERNEL_WIDTHS`` 8 … 128; a list:
    those edges for every dim) up to its max; an unset max is then the largest boundary
    size. One dim at a time keeps each case as cheap as its one large dim, and
    Hypothesis shrinks a boundary size towards the smallest one that still fails: the
    boundary the bug lives past.
    """

    def built() -> st.SearchStrategy[dict[str, int]]:
        bounds = {"T": max_T, "B": max_B, "D": max_D, "H": max_H, "O": max_O}
        try:
            small, boundary = size_plan(sizes, bounds, min_T)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        each = {d: st.integers(low, high) for d, (low, high) in small.items()}
        stressed_dim = st.sampled_from([None, *(d for d, b in boundary.items() if b)])
        on_boundary = {d: st.sampled_from(b) for d, b in boundary.items() if b}

        @st.composite
        def drawn(draw: st.DrawFn) -> dict[str, int]:
            shape = {d: draw(s) for d, s in each.items()}
            stressed = draw(stressed_dim)
            if stressed is not None:
                shape[stressed] = draw(on_boundary[stressed])
            return shape

        return drawn()

    # Built at the first draw, as Hypothesis builds its own strategies, so that a bad
    # bound is an InvalidArgument of the test that draws; built once, since making and
    # validating the same strategies again at every draw cost about a third of drawing
    # a case.
    return st.deferred(built)


def cases(
    *,
    cells: Sequence[str] = ("rnn",),
    hidden: Sequence[str] | None = None,
    heads: Sequence[tuple[str, str]] | None = None,
    dtypes: Sequence[Any] = (np.float64, np.float32),
    regimes: Sequence[str] = tuple(REGIMES),
    styles: Sequence[str] = INPUT_STYLES,
    sizes: Sizes = "small",
    min_T: int = 1,
    max_T: int | None = None,
    max_B: int | None = None,
    max_D: int | None = None,
    max_H: int | None = None,
    max_O: int | None = None,
    layers: Sequence[int] = (1,),
    bidirectional: Sequence[bool] = (False,),
) -> st.SearchStrategy[Case]:
    """Test cases over cells, shapes, configurations, dtypes, weight regimes and input styles.

    ``cells`` are names of ``bptt_ref.cells.CELLS`` (default: the vanilla RNN only); a
    gated cell draws only the hidden activations it accepts (``"tanh"``). The shapes
    come from :func:`dims` with ``sizes`` and the bounds: by default small, every dim
    from 1 (T from ``min_T``) to 16, 4, 4, 8, 4 (T, B, D, H, O), all in the JAX oracle's
    smallest compilation bucket; ``sizes="kernel"`` adds cases on tile, vector and chunk
    boundaries. ``layers`` and ``bidirectional`` are the ``num_layers`` and
    ``bidirectional`` of :mod:`bptt_ref.stack` to draw from (default: the single cell); a
    choice of one is not drawn, so the default draws exactly what it drew before stacks
    existed.
    """

    def built() -> st.SearchStrategy[Case]:
        for n in layers:
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise InvalidArgument(f"layers={list(layers)!r}; expected ints >= 1")
        if not layers or not bidirectional:
            raise InvalidArgument("layers and bidirectional need at least one choice each")
        for name in regimes:
            if name not in REGIMES:
                raise InvalidArgument(f"regime {name!r} is not one of {sorted(REGIMES)}")
        for name in styles:
            if name not in INPUT_STYLES:
                raise InvalidArgument(f"style {name!r} is not one of {list(INPUT_STYLES)}")
        for name in cells:
            if name not in CELLS:
                raise InvalidArgument(f"cell {name!r} is not one of {list(CELLS)}")
        for name in hidden or ():
            if name not in HIDDEN:
                raise InvalidArgument(f"hidden={name!r} is not one of {sorted(HIDDEN)}")
        cell_of = st.sampled_from(list(cells))
        accepted = {
            c: [h for h in (HIDDEN if hidden is None else hidden) if h in CELLS[c].activations]
            for c in cells
        }
        configuration = {c: configurations(hidden=h, heads=heads) for c, h in accepted.items() if h}
        style_of = {
            tuple(head): st.sampled_from(allowed)
            for head in (VALID_HEADS if heads is None else heads)
            if (allowed := [s for s in styles if not (s == "large" and head == ("softmax", "mse"))])
        }
        shape = dims(
            sizes=sizes,
            min_T=min_T,
            max_T=max_T,
            max_B=max_B,
            max_D=max_D,
            max_H=max_H,
            max_O=max_O,
        )
        dtype_of = st.sampled_from([np.dtype(d) for d in dtypes])
        regime_of = st.sampled_from(list(regimes))
        seed_of = st.integers(0, 2**32 - 1)
        layers_of = st.sampled_from(list(layers))
        bidirectional_of = st.sampled_from(list(bidirectional))

        @st.composite
        def drawn(draw: st.DrawFn) -> Case:
            cell = draw(cell_of)
            if cell not in configuration:
                raise InvalidArgument(
                    f"hidden={hidden!r} has no activation that cell {cell!r} accepts"
                )
            hidden_name, output, loss = draw(configuration[cell])
            if (output, loss) not in style_of:
                raise InvalidArgument(
                    "styles=('large',) cannot be drawn with the softmax + mse head"
                )
            dtype = draw(dtype_of)
            regime = draw(regime_of)
            style = draw(style_of[output, loss])
            seed = draw(seed_of)
            return make_case(
                # Drawn last: Hypothesis's generator varies the last choices of a case
                # most, so the shapes vary from case to case instead of repeating.
                dims=draw(shape),
                hidden=hidden_name,
                output=output,
                loss=loss,
                dtype=dtype,
                regime=regime,
                style=style,
                seed=seed,
                cell=cell,
                num_layers=layers[0] if len(layers) == 1 else draw(layers_of),
                bidirectional=(
                    bidirectional[0] if len(bidirectional) == 1 else draw(bidirectional_of)
                ),
            )

        return drawn()

    # Built once, at the first draw (see dims).
    return st.deferred(built)
