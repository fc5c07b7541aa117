"""Check someone else's BPTT gradient against the oracle (extras ``bptt-ref[jax,hypothesis]``).

The protocol: the function under test is a Python callable

    fn(params: Mapping[str, ndarray], xs: ndarray, targets: ndarray) -> Mapping[str, ndarray]

for one cell (``cell="rnn"`` by default; ``bptt_ref.cells.CELLS`` lists them). It
receives ``params`` with the cell's parameters, ``CELLS[cell].names``, and ``xs``
(T, B, D), ``targets`` (T, B, O), all of one dtype (the ``dtype`` of the check):

- ``rnn``: ``U`` (O, H), ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``b_y`` (O,),
  ``h0`` (B, H), for ``a_t = x_t Vᵀ + h_{t-1} Wᵀ + b_h``, ``h_t = f_h(a_t)``;
- ``lstm``: ``W_ih`` (4H, D), ``W_hh`` (4H, H), ``b_ih`` (4H,), ``b_hh`` (4H,),
  ``h0`` (B, H), ``c0`` (B, H), ``U``, ``b_y``, gates i, f, g, o stacked in that order;
- ``gru`` and ``gru_reset_before``: ``W_ih`` (3H, D), ``W_hh`` (3H, H), ``b_ih`` (3H,),
  ``b_hh`` (3H,), ``h0`` (B, H), ``U``, ``b_y``, gates r, z, n stacked in that order;

each cell's equations are ``CELLS[cell].equations``. It returns the gradient of

    L = Σ_t Σ_b loss(ŷ_{t,b}, target_{t,b})     (a sum, not a mean)

for the output head ``z_t = h_t Uᵀ + b_y``, ``ŷ_t = f_y(z_t)``, t = 0 … T-1, for any
non-empty subset of ``CELLS[cell].grad_names`` (the parameters and ``xs``), each array
with the shape of what it differentiates against. h_{t-1} is the state step t starts
from: ``h0`` for t = 0 (h_0 is the state step 0 computes). The keys returned on the
first case are the keys checked, and every later case must return the same keys.
``f_h``, ``f_y`` and the loss are told to the checker, not to ``fn`` (a gated cell's
``f_h`` is ``tanh``).

Dtypes: with ``dtype=float64`` every returned array must be float64; with
``dtype=float32`` it may be float32 or float64, and is judged with the float32 bound
of :mod:`bptt_ref.compare` either way (a float64 computation from float32 inputs is
welcome; it is simply more accurate than it needs to be).

Arrays: ``fn`` receives NumPy arrays and may return anything NumPy reads through
``__array__`` (NumPy arrays, torch CPU tensors, JAX arrays) or ``__dlpack__`` (any
array-API library; a device array where its library can copy it to the host). A
float32 JAX array where float64 is expected gets a message saying how to turn on JAX's
64-bit mode.

Besides the gradients, the check fails when ``fn`` does not return within ``timeout``
seconds, writes into an array it was given, or answers one case differently on two
calls by more than the tolerance (``repeat``); and by default it tries every dim at the
boundaries of the tile, vector and chunk widths kernels use (``sizes``).

Each case is judged by :func:`bptt_ref.jax_reference.judge`, the tolerance model of
:mod:`bptt_ref.compare` and nothing else. A failure is shrunk by Hypothesis to the
smallest case; the :class:`Report` names the wrong keys with their errors, saves the
case as an ``.npz`` reproducer, and adds hints where the evidence is clear.

Layouts: with ``layout="torch"`` (or ``"keras"``, ``"onnx"``, ``"flax"``, ``"cs231n"``,
and for the LSTM ``"tf1"``, ``"karpathy"``;
:mod:`bptt_ref.layouts` states each), ``fn`` receives the parameters under that
framework's names and shapes (``weight_ih_l0`` (4H, D), ``recurrent_kernel`` (H, 4H), a
Flax tree, ...), ``xs`` and ``targets`` in its batch axis (batch-major (B, T, ·) for
Keras, Flax and CS231n), and returns gradients under the same keys, ``xs`` included. Each
returned entry is judged with the tolerance of the canonical entry it holds, the report
names the framework's keys and indices (``recurrent_kernel[3, 17]``), and a mix-up of
two frameworks' conventions (a gate order, r and z, the GRU's reset side, a transposed
recurrent kernel, z and 1 − z) is hinted with both named. With ``num_layers`` > 1 or
``bidirectional=True``, ``layout="torch"`` is ``nn.LSTM``'s whole ``state_dict``
(``weight_hh_l1_reverse``, ``h_0`` (L·dirs, B, H), ``fc.weight`` (O, dirs·H)), and
``layout="onnx"`` with one bidirectional layer is one operator with
``direction="bidirectional"`` (``W`` (2, G·H, D)); the other layouts cannot name a stack
and refuse one, saying why.

Kinks: at an exact ``a = 0`` of relu or leaky_relu the derivative is a convention
(:mod:`bptt_ref.kinks`). By default a gradient is right under either one-sided derivative,
taken at every kink of a case alike; ``kink="jax"`` (relu'(0) = 0, leaky_relu'(0) = 1),
``"torch"`` (0 and 0.01), ``"left"`` or ``"right"`` pins one, and a failure that another
convention would pass is hinted with the convention ``fn`` follows.

The checker lives in :mod:`bptt_ref.checker` (protocol, search, hints, report); this
module is its public namespace.
"""

from bptt_ref.checker.protocol import GradFn as GradFn
from bptt_ref.checker.protocol import ProtocolError as ProtocolError
from bptt_ref.checker.report import CheckFailed as CheckFailed
from bptt_ref.checker.report import CheckResult as CheckResult
from bptt_ref.checker.report import Report as Report
from bptt_ref.checker.search import assert_bptt_gradients as assert_bptt_gradients
from bptt_ref.checker.search import check_gradients as check_gradients

__all__ = [
    "CheckFailed",
    "CheckResult",
    "GradFn",
    "ProtocolError",
    "Report",
    "assert_bptt_gradients",
    "check_gradients",
]
