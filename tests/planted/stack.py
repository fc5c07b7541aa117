"""Clients of stacked and bidirectional networks (``bptt-ref check --layers N --bidirectional``):
a right one from bptt-ref's own NumPy network, a realistic bug, and one that returns the single
cell's keys."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bptt_ref import stack

Array = NDArray[Any]


def lstm_2_bidirectional(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """The right gradient of a 2-layer bidirectional LSTM."""
    return dict(
        stack.loss_and_grad(params, xs, targets, cell="lstm", num_layers=2, bidirectional=True)[1]
    )


def gru_reverse_h0_rows_swapped(
    params: dict[str, Array], xs: Array, targets: Array
) -> dict[str, Array]:
    """A 2-layer bidirectional GRU that reads h0 as (direction, layer): rows 1 and 2 swapped,
    PyTorch's layer·dirs + direction taken for direction·L + layer."""
    swapped = {**params, "h0": params["h0"][[0, 2, 1, 3]]}
    grads = stack.loss_and_grad(swapped, xs, targets, cell="gru", num_layers=2, bidirectional=True)
    out = dict(grads[1])
    out["h0"] = out["h0"][[0, 2, 1, 3]]
    return out


def single_cell_keys(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """The single LSTM's keys, whatever the parameters: written for one layer."""
    return {k: np.zeros(1) for k in ("W_ih", "W_hh", "b_ih", "b_hh")}
