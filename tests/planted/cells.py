"""Right gradients of every gated cell from bptt-ref's own NumPy reference, and a client
that returns the vanilla RNN's keys to a check of another cell."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

import bptt_ref

Array = NDArray[Any]


def _reference(cell: str) -> Any:
    def fn(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
        return dict(bptt_ref.loss_and_grad(params, xs, targets, cell=cell)[1])

    return fn


lstm = _reference("lstm")
gru = _reference("gru")
gru_reset_before = _reference("gru_reset_before")


def rnn_keys(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """The rnn's keys, whatever the parameters: written for the vanilla RNN."""
    return {k: np.zeros(1) for k in bptt_ref.GRAD_NAMES}


def lstm_W_ih_of_gru(params: dict[str, Array], xs: Array, targets: Array) -> dict[str, Array]:
    """A GRU's (3H, D) ∂L/∂W_ih handed to an LSTM check: the last gate block left out."""
    W_ih = lstm(params, xs, targets)["W_ih"]
    return {"W_ih": W_ih[: 3 * params["h0"].shape[1]]}


def gru_b_hh_without_gradient(
    params: dict[str, Array], xs: Array, targets: Array
) -> dict[str, Array]:
    """Only one of the two biases gets a gradient; b_hh's stays at its zero init."""
    out = gru(params, xs, targets)
    return {**out, "b_hh": np.zeros_like(out["b_hh"])}
