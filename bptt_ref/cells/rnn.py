"""The vanilla RNN of the seed note as a :class:`~bptt_ref.cells.Cell`.

Its math lives in :mod:`bptt_ref._rnn`, which fuses the output head into the reverse
pass (one ``[δ_{t+1}, g_t] @ [W; U]`` product per step); its truncation and masks are
in :mod:`bptt_ref.truncation` and its sum-of-Jacobians forms in :mod:`bptt_ref.note_form`.
Its ``forward`` and ``backward`` are the recurrence alone, for callers that bring their own
head (the layers of :mod:`bptt_ref.stack`).
"""

from __future__ import annotations

from bptt_ref import _rnn
from bptt_ref._activations import HIDDEN
from bptt_ref.cells._spec import Cell

CELL = Cell(
    name="rnn",
    equations="a_t = x_t Vᵀ + h_{t-1} Wᵀ + b_h\nh_t = f_h(a_t)",
    params={"V": ("H", "D"), "W": ("H", "H"), "b_h": ("H",), "h0": ("B", "H")},
    names=("U", "V", "W", "b_h", "b_y", "h0"),
    states=("h0",),
    hidden_from="W",
    roles=("V", "W", "b_h", None),
    activations=tuple(HIDDEN),
    init=_rnn.init,
    forward=_rnn.forward,
    backward=_rnn.backward,
    fused=_rnn.fused_loss_and_grad,
)
"""The vanilla RNN: ``a_t = x_t Vᵀ + h_{t-1} Wᵀ + b_h``, ``h_t = f_h(a_t)``."""
