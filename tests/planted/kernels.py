"""The bugs of real kernels, planted in bptt-ref's own right gradients, for every cell.

Each factory takes a cell name and returns a gradient function of the checker's protocol
that is right except for one fault of a blocked kernel: a tile, chunk or vector tail
left out past its boundary, a call that never returns, an update written into the
inputs, or a result that changes from call to call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

import bptt_ref
from bptt_ref.cells import CELLS

Array = NDArray[Any]
GradFn = Callable[[dict[str, Array], Array, Array], dict[str, Array]]

TILE, CHUNK, LANES = 32, 64, 8
"""The hidden-unit tile, the chunk of time steps and the batch vector width of the bugs."""


def right(cell: str) -> GradFn:
    """The right gradient of every key, from bptt-ref's NumPy reference."""

    def fn(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
        return dict(bptt_ref.loss_and_grad(params, xs, targets, cell=cell)[1])

    return fn


def _full(n: int, width: int) -> int:
    """How many of n rows full blocks of ``width`` cover, once there are more than one."""
    return n - n % width if n > width else n


def last_tile_lost(cell: str) -> GradFn:
    """∂L/∂W_hh (the rnn's W) loses the columns of the last partial tile of 32 hidden
    units: the tile loop runs ``range(0, H - H % 32, 32)`` once H exceeds one tile."""
    recurrent = CELLS[cell].roles[1]

    def fn(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
        grads = right(cell)(params, xs, targets)
        grads[recurrent][:, _full(params["h0"].shape[1], TILE) :] = 0.0
        return grads

    return fn


def last_chunk_lost(cell: str) -> GradFn:
    """∂L/∂xs of the steps past the last full chunk of 64 is never written back: the
    grid of chunks is ``T // 64`` once T exceeds one chunk."""

    def fn(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
        grads = right(cell)(params, xs, targets)
        grads["xs"][_full(xs.shape[0], CHUNK) :] = 0.0
        return grads

    return fn


def batch_tail_lost(cell: str) -> GradFn:
    """∂L/∂b_ih (the rnn's b_h) sums the batch in vectors of 8 lanes and drops the tail
    rows once B exceeds one vector. Batch rows are independent, so the bias gradient of
    the full vectors alone is that of the case cut to those rows."""
    bias = CELLS[cell].roles[2]

    def fn(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
        grads = right(cell)(params, xs, targets)
        rows = _full(xs.shape[1], LANES)
        states = {k: params[k][:rows] for k in CELLS[cell].states}
        cut = right(cell)({**params, **states}, xs[:, :rows], targets[:, :rows])
        grads[bias] = cut[bias]
        return grads

    return fn


def hangs_past_a_chunk(cell: str) -> GradFn:
    """Right, but waits forever (a device synchronisation that never completes) once T
    exceeds one chunk of 64 steps."""

    def fn(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
        if xs.shape[0] > CHUNK:
            threading.Event().wait()
        return right(cell)(params, xs, targets)

    return fn


def updates_in_place(cell: str) -> GradFn:
    """Right gradients, then an SGD step written into the parameters it was given."""

    def fn(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
        grads = right(cell)(params, xs, targets)
        params["U"] -= 0.1 * grads["U"]
        return grads

    return fn


def scales_xs_in_place(cell: str) -> GradFn:
    """Right gradients, computed after normalising ``xs`` in place by its first entry's
    scale only where a batch row has more than one input (D > 1)."""

    def fn(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
        grads = right(cell)(params, xs, targets)
        if xs.shape[2] > 1:
            xs[..., 1] *= 2.0
        return grads

    return fn


def racy(cell: str) -> GradFn:
    """The first call on any inputs is right; a later call on the same inputs loses one
    batch row's contribution to the bias gradient, as a race that only loses when the
    data is already warm in the caches can. One call per case never sees it."""
    bias = CELLS[cell].roles[2]
    seen: set[bytes] = set()

    def fn(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
        grads = right(cell)(params, xs, targets)
        inputs = b"".join(a.tobytes() for a in (*params.values(), xs, targets))
        if inputs in seen:
            states = {k: params[k][:1] for k in CELLS[cell].states}
            grads[bias] -= right(cell)({**params, **states}, xs[:, :1], targets[:, :1])[bias]
        seen.add(inputs)
        return grads

    return fn


def atomic_order(cell: str) -> GradFn:
    """Right to rounding, with the rounding of a sum whose order changes every call (atomic
    adds on a GPU): each gradient entry is off by a random few units in the last place."""
    rng = np.random.default_rng(0)

    def fn(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
        grads = right(cell)(params, xs, targets)
        eps = np.finfo(np.float64).eps
        return {k: g * (1 + 4 * eps * rng.standard_normal(g.shape)) for k, g in grads.items()}

    return fn


# Module-level clients for the command line (`bptt-ref check kernels.py:NAME --cell CELL`).
rnn_last_tile_lost = last_tile_lost("rnn")
rnn_last_chunk_lost = last_chunk_lost("rnn")
rnn_batch_tail_lost = batch_tail_lost("rnn")
rnn_hangs_past_a_chunk = hangs_past_a_chunk("rnn")
rnn_updates_in_place = updates_in_place("rnn")
rnn_racy = racy("rnn")
rnn_right = right("rnn")
lstm_last_tile_lost = last_tile_lost("lstm")
gru_last_chunk_lost = last_chunk_lost("gru")
gru_reset_before_batch_tail_lost = batch_tail_lost("gru_reset_before")
