"""The model every cell shares: a recurrent cell, then the output head and the loss.

For t = 0 … T−1 the cell maps ``(x_t, h_{t-1})`` to ``h_t`` (its equations:
``bptt_ref.cells.CELLS[cell].equations``), starting from ``h0`` (and ``c0`` for the
LSTM); the head is ``z_t = h_t Uᵀ + b_y``, ``ŷ_t = f_y(z_t)``, and the loss
``L = Σ_t Σ_b loss(ŷ_{t,b}, y_{t,b})``. Its gradient runs the head backwards once over all
T·B rows and hands the cell ``∂L/∂h_t = g_t U`` to run the recurrence backwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from bptt_ref._activations import OUTPUT, Array
from bptt_ref._losses import loss_grad_logits, loss_sum
from bptt_ref._rnn import _BLOCK_BYTES
from bptt_ref._validate import check_inputs, check_names
from bptt_ref.cells import Cell, cell_named
from bptt_ref.config import Config, model_of

if TYPE_CHECKING:
    from typing_extensions import Unpack


class Trace(NamedTuple):
    """Everything the forward pass computes, time-major.

    Attributes:
        a: the RNN's pre-activations ``a_t = x_t Vᵀ + h_{t-1} Wᵀ + b_h``, shape
            (T, B, H); ``None`` for the gated cells, whose passes keep their gates'
            partial derivatives instead.
        h: hidden states h_t, shape (T, B, H): ``h[t]`` is the state step t computes,
            so ``h[0]`` is h_0 and the initial ``h0`` is not included.
        z: logits ``z_t = h_t Uᵀ + b_y``, shape (T, B, O).
        y_hat: outputs ``ŷ_t = f_y(z_t)``, shape (T, B, O).
    """

    a: Array | None
    h: Array
    z: Array
    y_hat: Array


def _head(params: Mapping[str, Array], h: Array, output: str) -> tuple[Array, Array]:
    """``(z, ŷ)``: ``z_t = h_t Uᵀ + b_y`` (T, B, O) and ``ŷ_t = f_y(z_t)``, for h (T, B, H)."""
    T, B, H = h.shape
    U = params["U"]
    z = (h.reshape(T * B, H) @ U.T).reshape(T, B, U.shape[0])
    z += params["b_y"]
    return z, OUTPUT[output].f(z)


def forward(
    params: Mapping[str, Any],
    xs: Any,
    *,
    cell: str | Cell = "rnn",
    hidden: str = "tanh",
    output: str = "identity",
) -> Trace:
    r"""Run the model forward and return its :class:`Trace`.

    .. math::
        h_t = \mathrm{cell}(x_t, h_{t-1}),\quad
        z_t = h_t U^\top + b_y,\quad \hat y_t = f_y(z_t),\qquad t = 0 \dots T-1

    where :math:`h_{t-1}` is the state step t starts from: the parameter ``h0`` for
    t = 0, then the state the step before computed. (``h0`` is never called
    :math:`h_0`: that is the state step 0 computes.) For ``cell="rnn"`` the cell is
    ``a_t = x_t V^\top + h_{t-1} W^\top + b_h``, ``h_t = f_h(a_t)``; the others are in
    ``bptt_ref.cells.CELLS``.

    Args:
        params: the cell's parameters (``CELLS[cell].names``): for the RNN ``U`` (O, H),
            ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``b_y`` (O,) and ``h0`` (B, H).
        xs: inputs, shape (T, B, D).
        cell: ``"rnn"`` (default) or another key of ``CELLS``.
        hidden: name of ``f_h`` (see ``HIDDEN_ACTIVATIONS``; gated cells take ``"tanh"``).
        output: name of ``f_y`` (see ``OUTPUT_ACTIVATIONS``).

    Returns:
        The trace ``(a, h, z, y_hat)`` with shapes (T, B, H) (``None`` for gated cells),
        (T, B, H), (T, B, O), (T, B, O), in the inputs' dtype.
    """
    spec = cell_named(cell)
    check_names(hidden, output, cell=spec)
    p, x, _ = check_inputs(params, xs, cell=spec)
    fw = spec.forward(p, x, None, hidden)
    z, y_hat = _head(p, fw.h, output)
    return Trace(a=getattr(fw, "a", None), h=fw.h, z=z, y_hat=y_hat)


def loss_value(
    params: Mapping[str, Array],
    xs: Array,
    targets: Array,
    cell: Cell,
    hidden: str,
    output: str,
    loss: str,
) -> Array:
    """``L`` without input checks, as a 0-d array; also accepts complex inputs."""
    fw = cell.forward(params, xs, None, hidden)
    z, y_hat = _head(params, fw.h, output)
    return loss_sum(loss, z, y_hat, targets)


def head_logits(
    params: Mapping[str, Array],
    h: Array,
    targets: Array,
    output: str,
    loss: str,
    step_mask: NDArray[np.bool_] | None = None,
) -> tuple[float, Array, dict[str, Array]]:
    r"""The loss, ``g_t = ∂L/∂z_t`` and the head's own gradients.

    With ``g_t`` (T, B, O) masked to ``m_{t,b} g_{t,b}`` by a (T, B) ``step_mask`` (whose
    rows then count in L only where True):

    .. math::
        \partial L/\partial U = \sum_t g_t^\top h_t,\quad
        \partial L/\partial b_y = \sum_{t,b} g_{t,b}.

    Returns ``(L, g, {"U", "b_y"})``; ``∂L/∂h_t`` from the head is ``g_t U``
    (:func:`head_backward`, or :class:`HeadCotangent` a block of steps at a time).
    """
    T, B, H = h.shape
    z, y_hat = _head(params, h, output)
    if step_mask is None:
        value = float(loss_sum(loss, z, y_hat, targets))
        g = loss_grad_logits(output, loss, z, y_hat, targets)
    else:
        m = step_mask
        value = float(loss_sum(loss, z[m], y_hat[m], targets[m]))
        g = loss_grad_logits(output, loss, z, y_hat, targets) * m[:, :, None]
    # z and ŷ (T·B·O each) are dead once g exists: freed before ∂L/∂h is made, they would
    # otherwise sit on top of the cell's pass at the gradient's peak memory.
    del z, y_hat
    rows_g = g.reshape(T * B, params["U"].shape[0])
    return value, g, {"U": rows_g.T @ h.reshape(T * B, H), "b_y": rows_g.sum(axis=0)}


def head_backward(
    params: Mapping[str, Array],
    h: Array,
    targets: Array,
    output: str,
    loss: str,
    step_mask: NDArray[np.bool_] | None = None,
) -> tuple[float, Array, dict[str, Array]]:
    r"""The loss, ``∂L/∂h_t = g_t U`` from the head for every step, and the head's gradients.

    :func:`head_logits` followed by the product; returns ``(L, dh, {"U", "b_y"})`` with
    dh of shape (T, B, H), for callers that slice it (truncation windows, stacked layers).
    """
    value, g, grads = head_logits(params, h, targets, output, loss, step_mask)
    return value, g @ params["U"], grads


# HeadCotangent makes ∂L/∂h in blocks of at most T / _HEAD_BLOCKS steps (and at most
# _BLOCK_BYTES): a buffer small beside the pass when T·B·H is small (B = 1), cache-sized
# when it is large, and few NumPy calls per sequence.
_HEAD_BLOCKS = 8


class HeadCotangent:
    """The head's ``∂L/∂h_t = g_t U`` (B, H) for step t as ``dh[t]``, a block of steps at a time.

    A cell's backward pass reads ``dh[t]`` once per step, newest first: holding ``g``
    (T, B, O) and one block (τ, B, H) in place of every step's (T, B, H) keeps that array
    off the gradient's peak memory. Each block is NumPy's stacked product, one (B, O) @
    (O, H) product per step as ``g @ U`` makes them, so every ``dh[t]`` equals ``(g @ U)[t]``
    bit for bit. The row returned is a view of the block buffer, overwritten when a step
    of another block is asked for.

    Args:
        g: (T, B, O), ``∂L/∂z_t`` (:func:`head_logits`).
        U: (O, H), the head's weights, of ``g``'s dtype.
    """

    def __init__(self, g: Array, U: Array) -> None:
        T, B, _ = g.shape
        H = U.shape[1]
        self._g, self._U = g, U
        by_bytes = _BLOCK_BYTES // max(1, B * H * g.dtype.itemsize)
        self._steps = max(1, min(-(-T // _HEAD_BLOCKS), by_bytes))
        self._block = np.empty((min(T, self._steps), B, H), g.dtype)
        self._start = -1

    def __getitem__(self, t: int) -> Array:
        start = t - t % self._steps
        if start != self._start:
            stop = min(start + self._steps, self._g.shape[0])
            np.matmul(self._g[start:stop], self._U, out=self._block[: stop - start])
            self._start = start
        row: Array = self._block[t - start]
        return row


def run_gated(
    cell: Cell,
    p: Mapping[str, Array],
    x: Array,
    y: Array,
    output: str,
    loss: str,
    *,
    step_mask: NDArray[np.bool_] | None = None,
    live: NDArray[np.bool_] | None = None,
) -> tuple[float, dict[str, NDArray[np.floating]]]:
    """``(L, grads)`` for checked inputs of a cell without a fused path: forward, head, back.

    The cell's backward pass reads the head's ∂L/∂h_t from a :class:`HeadCotangent`, so
    beside the pass only ``g`` (T, B, O) and one block of ∂L/∂h are held, never all T
    steps of it (docs/derivation.md, the gated cells' memory).
    """
    assert cell.backward is not None
    fw = cell.forward(p, x, live, "tanh")
    value, g, head = head_logits(p, fw.h, y, output, loss, step_mask)
    grads = {**cell.backward(p, x, fw, HeadCotangent(g, p["U"]), live), **head}
    return value, {k: grads[k] for k in cell.grad_names}


def loss_and_grad(
    params: Mapping[str, Any], xs: Any, targets: Any, **config: Unpack[Config]
) -> tuple[float, dict[str, NDArray[np.floating]]]:
    r"""The loss and its gradient with respect to every parameter and the inputs.

    Computes :math:`L = \sum_t \sum_b \mathrm{loss}(\hat y_{t,b}, y_{t,b})` for the model
    of :func:`forward` and its gradient by reverse accumulation (BPTT). With
    :math:`g_t = \partial L/\partial z_t` (T, B, O) the head gives
    :math:`\partial L/\partial U = \sum_t g_t^\top h_t`,
    :math:`\partial L/\partial b_y = \sum_{t,b} g_{t,b}` and
    :math:`\partial L/\partial h_t = g_t U + (\text{what } h_t \text{ feeds at } t+1)`;
    the cell's backward pass runs that recurrence (for the RNN, with
    :math:`\delta_t = \partial L/\partial a_t`):

    .. math::
        \delta_t = \bigl(g_t U + \delta_{t+1} W\bigr) \odot f_h'(a_t),\quad \delta_T = 0,

        \partial L/\partial W = \sum_t \delta_t^\top h_{t-1},\quad
        \partial L/\partial V = \sum_t \delta_t^\top x_t,\quad
        \partial L/\partial b_h = \sum_{t,b} \delta_{t,b},\quad
        \partial L/\partial \mathrm{h0} = \delta_0 W,\quad
        \partial L/\partial x_t = \delta_t V,

    with :math:`h_{t-1}` the state entering step t (``h0`` at t = 0). The gated cells'
    recurrences are in docs/derivation.md.

    Args:
        params: the cell's parameters (``CELLS[cell].names``); for the RNN ``U`` (O, H),
            ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``b_y`` (O,) and ``h0`` (B, H).
        xs: inputs, shape (T, B, D).
        targets: shape (T, B, O); probability rows for ``cross_entropy``, values in
            [0, 1] for ``binary_cross_entropy``.
        config: the keywords of :class:`bptt_ref.Config`: ``cell`` (default ``"rnn"``, or
            another key of ``CELLS``), ``hidden``, the name of ``f_h`` (default
            ``"tanh"``), ``output``, the name of ``f_y`` (default ``"identity"``), and
            ``loss`` (default ``"mse"``; ``VALID_HEADS`` lists the valid output/loss pairs).

    Returns:
        ``(L, grads)``: ``L`` as a Python float and ``grads`` with a key for every
        parameter and ``xs`` (``CELLS[cell].grad_names``), each of its input's shape and
        dtype. T = 0 or B = 0 is an empty sum: ``L = 0`` and every gradient is zero.

    Raises:
        ValueError, TypeError: for unknown keywords or names, invalid combinations, wrong keys,
            shapes or dtypes, and non-finite values; the inputs are never modified.
    """
    model = model_of(config)
    p, x, y = check_inputs(params, xs, targets, loss=model.loss, cell=model.cell)
    assert y is not None
    if model.cell.fused is not None:
        return model.cell.fused(p, x, y, model.hidden, model.output, model.loss)
    return run_gated(model.cell, p, x, y, model.output, model.loss)


def random_params(
    rng: np.random.Generator,
    *,
    batch_size: int,
    input_size: int,
    hidden_size: int,
    output_size: int,
    spectral_radius: float = 0.9,
    dtype: Any = np.float64,
    cell: str | Cell = "rnn",
) -> dict[str, NDArray[np.floating]]:
    """Random parameters of ``cell`` with its recurrent weights at a given spectral radius.

    For the RNN: ``U`` (O, H) ~ N(0, 1/H), ``V`` (H, D) ~ N(0, 1/D), ``W`` (H, H)
    Gaussian scaled so that max |eig(W)| = ``spectral_radius`` (below 1 contracts, above 1
    can explode), ``b_h`` (H,), ``b_y`` (O,) ~ N(0, 0.1²) and ``h0`` (B, H) ~ N(0, 0.5²).
    Gated cells scale each gate's block of ``W_hh`` (H, H) to ``spectral_radius``.
    """
    spec = cell_named(cell)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"dtype is {np.dtype(dtype)}; expected float32 or float64")
    params = spec.init(
        rng,
        batch_size=batch_size,
        input_size=input_size,
        hidden_size=hidden_size,
        output_size=output_size,
        spectral_radius=spectral_radius,
    )
    return {k: params[k].astype(dtype) for k in spec.names}
