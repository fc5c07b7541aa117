"""The recurrent cells bptt-ref knows, each described once (:class:`Cell`).

``CELLS`` maps the ``cell`` argument of every public function to its description.
Adding a cell is one math module (its :class:`Cell` with forward and backward passes),
one JAX oracle step, its tests, and one line here.
"""

from bptt_ref.cells import gru, lstm, rnn
from bptt_ref.cells._spec import DATA as DATA
from bptt_ref.cells._spec import HEAD_PARAMS as HEAD_PARAMS
from bptt_ref.cells._spec import Cell as Cell
from bptt_ref.cells._spec import CellPass as CellPass
from bptt_ref.cells._spec import dim_size as dim_size
from bptt_ref.cells._spec import shape_of as shape_of

CELLS: dict[str, Cell] = {
    cell.name: cell for cell in (rnn.CELL, lstm.CELL, gru.CELL, gru.CELL_RESET_BEFORE)
}
"""Every cell by name."""

__all__ = ["CELLS", "DATA", "HEAD_PARAMS", "Cell", "CellPass", "cell_named", "dim_size", "shape_of"]


def cell_named(cell: "str | Cell") -> Cell:
    """The :class:`Cell` called ``cell`` (a :class:`Cell` is returned as it is).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if isinstance(cell, Cell):
        return cell
    try:
        return CELLS[cell]
    except (KeyError, TypeError):
        raise ValueError(f"unknown cell {cell!r}; expected one of {list(CELLS)}") from None
