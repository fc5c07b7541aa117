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
from bptt_ref.cases import REGIMES as REGIMES
from bptt_ref.cases import Case as Case
from bptt_ref.cases import Config as Config
from bptt_ref.cases import Network as Network
from bptt_ref.cases import make_case as make_case
from bptt_ref.cells import CELLS

# The case model (Case, make_case, REGIMES, INPUT_STYLES, Config) lives in the NumPy-only
# bptt_ref.cases; it is re-exported here, where users of the strategies have imported it.
__all__ = [
    "INPUT_STYLES",
    "REGIMES",
    "Case",
    "Config",
    "Network",
    "cases",
    "configurations",
    "make_case",
]


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


def _size(name: str, low: int, high: int) -> st.SearchStrategy[int]:
    if not 0 <= low <= high:
        raise InvalidArgument(f"need 0 <= min_{name} <= max_{name}; got {low} and {high}")
    return st.integers(low, high)


@st.composite
def cases(
    draw: st.DrawFn,
    *,
    cells: Sequence[str] = ("rnn",),
    hidden: Sequence[str] | None = None,
    heads: Sequence[tuple[str, str]] | None = None,
    dtypes: Sequence[Any] = (np.float64, np.float32),
    regimes: Sequence[str] = tuple(REGIMES),
    styles: Sequence[str] = INPUT_STYLES,
    min_T: int = 1,
    max_T: int = 16,
    max_B: int = 4,
    max_D: int = 4,
    max_H: int = 8,
    max_O: int = 4,
    layers: Sequence[int] = (1,),
    bidirectional: Sequence[bool] = (False,),
) -> Case:
    """Test cases over cells, shapes, configurations, dtypes, weight regimes and input styles.

    ``cells`` are names of ``bptt_ref.cells.CELLS`` (default: the vanilla RNN only); a
    gated cell draws only the hidden activations it accepts (``"tanh"``). Every dim but
    T starts at 1; the defaults keep every case in the JAX oracle's smallest compilation
    bucket. ``layers`` and ``bidirectional`` are the ``num_layers`` and ``bidirectional``
    of :mod:`bptt_ref.stack` to draw from (default: the single cell); a choice of one is
    not drawn, so the default draws exactly what it drew before stacks existed.
    """
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
    cell = draw(st.sampled_from(list(cells)))
    accepted = [h for h in (HIDDEN if hidden is None else hidden) if h in CELLS[cell].activations]
    if not accepted:
        raise InvalidArgument(f"hidden={hidden!r} has no activation that cell {cell!r} accepts")
    hidden_name, output, loss = draw(configurations(hidden=accepted, heads=heads))
    allowed = [s for s in styles if not (s == "large" and (output, loss) == ("softmax", "mse"))]
    if not allowed:
        raise InvalidArgument("styles=('large',) cannot be drawn with the softmax + mse head")
    dims = {
        "T": draw(_size("T", min_T, max_T)),
        "B": draw(_size("B", 1, max_B)),
        "D": draw(_size("D", 1, max_D)),
        "H": draw(_size("H", 1, max_H)),
        "O": draw(_size("O", 1, max_O)),
    }
    return make_case(
        dims=dims,
        hidden=hidden_name,
        output=output,
        loss=loss,
        dtype=draw(st.sampled_from([np.dtype(d) for d in dtypes])),
        regime=draw(st.sampled_from(list(regimes))),
        style=draw(st.sampled_from(allowed)),
        seed=draw(st.integers(0, 2**32 - 1)),
        cell=cell,
        num_layers=layers[0] if len(layers) == 1 else draw(st.sampled_from(list(layers))),
        bidirectional=(
            bidirectional[0]
            if len(bidirectional) == 1
            else draw(st.sampled_from(list(bidirectional)))
        ),
    )
