"""bptt-ref: reference backprop-through-time gradients for recurrent cells, in NumPy.

The public namespace depends on NumPy only. The JAX oracle lives in
:mod:`bptt_ref.jax_reference` (extra ``bptt-ref[jax]``), the Hypothesis strategies in
:mod:`bptt_ref.strategies` (extra ``bptt-ref[hypothesis]``); neither is imported here.
"""

from bptt_ref._activations import HIDDEN as _HIDDEN
from bptt_ref._activations import OUTPUT as _OUTPUT
from bptt_ref._losses import LOSS_OUTPUTS as _LOSS_OUTPUTS
from bptt_ref._losses import VALID_HEADS as VALID_HEADS
from bptt_ref._model import Trace as Trace
from bptt_ref._model import forward as forward
from bptt_ref._model import loss_and_grad as loss_and_grad
from bptt_ref._model import random_params as random_params
from bptt_ref.cells import CELLS as _CELLS
from bptt_ref.config import Config as Config
from bptt_ref.note_form import StepJacobians as StepJacobians
from bptt_ref.note_form import chains_grads as chains_grads
from bptt_ref.note_form import jacobian_product_norms as jacobian_product_norms
from bptt_ref.note_form import lag_contributions as lag_contributions
from bptt_ref.note_form import literal_grads as literal_grads
from bptt_ref.note_form import step_jacobians as step_jacobians
from bptt_ref.note_form import vectorized_grads as vectorized_grads
from bptt_ref.truncation import MASK_MODES as MASK_MODES
from bptt_ref.truncation import masked_loss_and_grad as masked_loss_and_grad
from bptt_ref.truncation import tbptt_loss_and_grad as tbptt_loss_and_grad
from bptt_ref.truncation import window_loss_and_grad as window_loss_and_grad

__version__ = "0.1.0"

HIDDEN_ACTIVATIONS: tuple[str, ...] = tuple(_HIDDEN)
"""Names accepted for the hidden nonlinearity ``f_h``."""
OUTPUT_ACTIVATIONS: tuple[str, ...] = tuple(_OUTPUT)
"""Names accepted for the output nonlinearity ``f_y``."""
LOSSES: tuple[str, ...] = tuple(_LOSS_OUTPUTS)
"""Names accepted for the loss."""
PARAM_NAMES: tuple[str, ...] = _CELLS["rnn"].names
"""The vanilla RNN's parameter names, as in the seed note (plus the initial state ``h0``)."""
GRAD_NAMES: tuple[str, ...] = _CELLS["rnn"].grad_names
"""The keys of the vanilla RNN's gradient dictionary: every parameter and the inputs."""
CELL_NAMES: tuple[str, ...] = tuple(_CELLS)
"""Names accepted for the ``cell`` argument (``bptt_ref.cells.CELLS`` describes each)."""

__all__ = [
    "CELL_NAMES",
    "GRAD_NAMES",
    "HIDDEN_ACTIVATIONS",
    "LOSSES",
    "MASK_MODES",
    "OUTPUT_ACTIVATIONS",
    "PARAM_NAMES",
    "VALID_HEADS",
    "Config",
    "StepJacobians",
    "Trace",
    "__version__",
    "chains_grads",
    "forward",
    "jacobian_product_norms",
    "lag_contributions",
    "literal_grads",
    "loss_and_grad",
    "masked_loss_and_grad",
    "random_params",
    "step_jacobians",
    "tbptt_loss_and_grad",
    "vectorized_grads",
    "window_loss_and_grad",
]
