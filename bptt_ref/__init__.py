"""bptt-ref: reference backprop-through-time gradients for a vanilla RNN, in NumPy.

The public namespace depends on NumPy only. The JAX oracle lives in
:mod:`bptt_ref.jax_reference` (extra ``bptt-ref[jax]``), the Hypothesis strategies in
:mod:`bptt_ref.strategies` (extra ``bptt-ref[test]``); neither is imported here.
"""

from bptt_ref._activations import HIDDEN as _HIDDEN
from bptt_ref._activations import OUTPUT as _OUTPUT
from bptt_ref._losses import LOSS_OUTPUTS as _LOSS_OUTPUTS
from bptt_ref._losses import VALID_HEADS as VALID_HEADS
from bptt_ref._rnn import Trace as Trace
from bptt_ref._rnn import forward as forward
from bptt_ref._rnn import loss_and_grad as loss_and_grad
from bptt_ref._rnn import random_params as random_params
from bptt_ref._validate import GRAD_NAMES as GRAD_NAMES
from bptt_ref._validate import PARAM_NAMES as PARAM_NAMES

__version__ = "0.1.0"

HIDDEN_ACTIVATIONS: tuple[str, ...] = tuple(_HIDDEN)
"""Names accepted for the hidden nonlinearity ``f_h``."""
OUTPUT_ACTIVATIONS: tuple[str, ...] = tuple(_OUTPUT)
"""Names accepted for the output nonlinearity ``f_y``."""
LOSSES: tuple[str, ...] = tuple(_LOSS_OUTPUTS)
"""Names accepted for the loss."""

__all__ = [
    "GRAD_NAMES",
    "HIDDEN_ACTIVATIONS",
    "LOSSES",
    "OUTPUT_ACTIVATIONS",
    "PARAM_NAMES",
    "VALID_HEADS",
    "Trace",
    "__version__",
    "forward",
    "loss_and_grad",
    "random_params",
]
