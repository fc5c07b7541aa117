r"""Truncated BPTT and masks for variable-length batches.

Truncation keeps the forward pass and the loss :math:`L = \sum_t L_t` unchanged and cuts
how far back each loss term's gradient flows. Both kinds below are one rule: loss term t
has a *window* of steps ``s_t … t`` (``s_t <= t``), and its gradient is the gradient of
``L_t`` in which

- every step k in the window (``a_k = x_k Vᵀ + h_{k-1} Wᵀ + b_h``) is differentiated,
  so ``x_k`` and the parameters used there receive their share;
- the state entering the window, ``h_{s_t - 1}``, is a constant (``stop_gradient``),
  except that for ``s_t = 0`` it is ``h0`` itself, which then receives its gradient.

In the note's sum that keeps the summands ``k = s_t … t``:

.. math::
    \Bigl(\frac{dL_t}{dW}\Bigr)_{\mathrm{trunc}}
    = \frac{\partial L_t}{\partial h_t}\sum_{k=s_t}^{t}
      \Bigl(\prod_{i=k+1}^{t} \frac{\partial h_i}{\partial h_{i-1}}\Bigr)
      \frac{\partial h_k}{\partial W},

and the same for V, b_h and ``dL_t/dx_k`` (zero for k < s_t); ``dL_t/dh0`` is kept only
when ``s_t = 0``; U and b_y need no recurrence and are never truncated. When every
``s_t = 0`` this is full BPTT.

The rule is the same for every cell: the gated cells' window starts from their whole state
(``h_{s_t - 1}`` and, for the LSTM, ``c_{s_t - 1}``) held constant, and every parameter of
the cell plays W's part above; the note's Jacobian forms stay the vanilla RNN's.

Masks (``mask`` (T, B), True where step t of sequence b is real) come in two semantics,
described at :func:`masked_loss_and_grad`.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bptt_ref._activations import HIDDEN
from bptt_ref._losses import loss_grad_logits, loss_sum
from bptt_ref._model import head_backward, run_gated
from bptt_ref._rnn import _run
from bptt_ref._validate import check_inputs
from bptt_ref.cells import Cell
from bptt_ref.config import Config, Model, model_of
from bptt_ref.note_form import Grads, _assemble, _chain_cotangents, _forward

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "MASK_MODES",
    "chunk_starts",
    "masked_loss_and_grad",
    "tbptt_loss_and_grad",
    "window_loss_and_grad",
    "window_starts",
]

MASK_MODES: tuple[str, ...] = ("loss", "freeze")
"""The mask semantics of :func:`masked_loss_and_grad`."""


def _count(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; bools and floats are refused, not rounded."""
    if isinstance(value, bool):
        raise TypeError(f"{name} is a bool ({value}); expected an integer >= {minimum}")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} has type {type(value).__name__}; expected an integer >= {minimum}"
        ) from None
    if n < minimum:
        raise ValueError(f"{name} = {n}; expected an integer >= {minimum}")
    return n


def window_starts(T: int, window: int) -> NDArray[np.intp]:
    """First step of each loss term's window for a per-output window: ``s_t = max(0, t - window)``.

    Loss term t back-propagates through at most ``window`` steps: its gradient reaches
    ``a_k`` for ``t - window <= k <= t``, which is ``window`` Jacobians
    ``∂h_i/∂h_{i-1}`` deep. Returns shape (T,).
    """
    T = _count("T", T, 0)
    window = _count("window", window, 0)
    return np.maximum(np.arange(T) - window, 0)


def chunk_starts(T: int, k1: int, k2: int) -> NDArray[np.intp]:
    """First step of each loss term's window for chunked TBPTT(k1, k2). Returns shape (T,).

    The sequence is cut into chunks of ``k1`` loss steps, ``[c·k1, (c+1)·k1)``, the last one
    possibly shorter. At the end ``e_c = min((c+1)·k1, T) - 1`` of each chunk, the losses of
    that chunk are back-propagated through the last ``k2`` steps, ``e_c - k2 + 1 … e_c``:
    ``s_t = max(0, e_c - k2 + 1)`` for every t in chunk c. ``k2 >= k1`` is required, so
    that every loss term is inside its own window. A short last chunk (T not a multiple
    of k1) is back-propagated from the sequence's end like any other, so its window
    still spans k2 steps: with T = 7, TBPTT(3, 3) has windows 0…2, 3…5 and 4…6.
    """
    T = _count("T", T, 0)
    k1 = _count("k1", k1, 1)
    k2 = _count("k2", k2, 1)
    if k2 < k1:
        raise ValueError(
            f"k2 = {k2} < k1 = {k1}; expected k2 >= k1 (with k2 < k1 the first k1 - k2 "
            "losses of each chunk would lie outside the window they are back-propagated in)"
        )
    t = np.arange(T)
    # The last chunk may be short: it is back-propagated from the sequence's end, so
    # its window still spans k2 steps, reaching further into the chunk before it.
    ends = np.minimum((t // k1 + 1) * k1, T) - 1
    starts: NDArray[np.intp] = np.maximum(ends - k2 + 1, 0)
    return starts


def _gated_truncated(
    cell: Cell,
    p: Mapping[str, NDArray[np.floating]],
    x: NDArray[np.floating],
    y: NDArray[np.floating],
    output: str,
    loss: str,
    starts: NDArray[np.intp],
) -> tuple[float, Grads]:
    """The truncation rule for a cell with a ``backward``, on checked inputs.

    The loss terms that share a window start s (a run of consecutive t for both kinds of
    truncation) are back-propagated together: the cell runs again from its state at step
    s - 1, taken from the full forward pass as a constant (its own ``h0``, ``c0`` for
    s = 0), over steps s … e, the last of those terms, with the head's ``∂L_t/∂h_t`` for
    those terms only. Windows overlap, so the cost is O(T·(window + 1)) steps.
    """
    fw = cell.forward(p, x, None, "tanh")
    value, dh, head = head_backward(p, fw.h, y, output, loss)
    # The state leaving step t, per initial-state key: h_t for "h0", c_t for "c0".
    leaving = {k: getattr(fw, k.removesuffix("0")) for k in cell.states}
    own = {k: np.zeros_like(p[k]) for k in cell.params}
    own["xs"] = np.zeros_like(x)
    for s in np.unique(starts):
        terms = np.flatnonzero(starts == s)
        e = int(terms[-1]) + 1
        entering = {k: seq[s - 1] for k, seq in leaving.items()} if s > 0 else {}
        window_p = {**p, **entering}
        window_dh = np.zeros_like(dh[s:e])
        window_dh[terms - s] = dh[terms]
        assert cell.backward is not None
        window = cell.backward(
            window_p, x[s:e], cell.forward(window_p, x[s:e], None, "tanh"), window_dh, None
        )
        for k in cell.params:
            if k not in entering:
                own[k] += window[k]
        own["xs"][s:e] += window["xs"]
    grads = {**own, **head}
    return value, {k: grads[k] for k in cell.grad_names}


def _truncated(
    params: Mapping[str, Any], xs: Any, targets: Any, starts: Any, model: Model
) -> tuple[float, Grads]:
    """``(L, grads)`` under the truncation rule, ``starts(T)`` giving each term's s_t."""
    cell, _, output, loss = model
    if cell.fused is not None:
        fp = _forward(params, xs, targets, model)
        s = starts(fp.xs.shape[0])
        u, h0 = _chain_cotangents(fp.top, fp.slope, fp.params["W"], s)
        return fp.total, _assemble(fp.params, fp.xs, fp.states, fp.g, u, h0)
    p, x, y = check_inputs(params, xs, targets, loss=loss, cell=cell)
    assert y is not None
    return _gated_truncated(cell, p, x, y, output, loss, starts(x.shape[0]))


def window_loss_and_grad(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    window: int,
    **config: Unpack[Config],
) -> tuple[float, Grads]:
    r"""``L`` and its gradient with each loss term back-propagated at most ``window`` steps.

    The module's truncation rule with ``s_t = max(0, t - window)``:

    .. math::
        \frac{dL}{dW} = \sum_t \frac{\partial L_t}{\partial h_t}
            \sum_{k=\max(0,\,t-\mathrm{window})}^{t}
            \Bigl(\prod_{i=k+1}^{t} \frac{\partial h_i}{\partial h_{i-1}}\Bigr)
            \frac{\partial h_k}{\partial W}

    (likewise V, b_h, xs; ``h0`` gets ``∂L_t/∂h0`` from the terms with t <= window; U and
    b_y are exact). ``window = 0`` keeps only the immediate term; any ``window >= T - 1``
    is full BPTT, equal to :func:`bptt_ref.loss_and_grad`. Cost O(T·min(T, window+1)·B·H²).

    For a gated cell the same sum runs over its parameters ``W_ih, W_hh, b_ih, b_hh``,
    with ``∂h_i/∂h_{i-1}`` the Jacobian of its whole state (``(h, c)`` for the LSTM), and
    ``c0`` is kept with ``h0``.

    Args:
        params: the cell's parameters (``CELLS[cell].names``); for the RNN ``U`` (O, H),
            ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``b_y`` (O,), ``h0`` (B, H).
        xs: inputs (T, B, D); targets: (T, B, O).
        window: how many steps back each loss term's gradient flows, an integer >= 0.
        config: ``cell``, ``hidden``, ``output``, ``loss``, as for
            :func:`bptt_ref.loss_and_grad`.

    Returns:
        ``(L, grads)`` as :func:`bptt_ref.loss_and_grad`: the full loss and the truncated
        gradients, each of its input's shape and dtype.

    Raises:
        ValueError, TypeError: as ``loss_and_grad``, and for a ``window`` that is not an
            integer >= 0.
    """
    window = _count("window", window, 0)
    starts = partial(window_starts, window=window)
    return _truncated(params, xs, targets, starts, model_of(config))


def tbptt_loss_and_grad(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    k1: int,
    k2: int,
    **config: Unpack[Config],
) -> tuple[float, Grads]:
    r"""Chunked TBPTT(k1, k2) in the Williams–Peng sense: the sum of its chunk gradients.

    The forward pass runs over the whole sequence once, the hidden state carried across
    chunks. Every ``k1`` steps (and at the end of the sequence) the losses of the last
    ``k1`` steps are back-propagated through the last ``k2`` steps; the state entering
    those ``k2`` steps is a constant. With chunk c covering loss steps
    ``[c·k1, min((c+1)·k1, T))`` and ending at ``e_c``, this returns

    .. math::
        \sum_c \frac{d}{d\theta}\Bigl(\sum_{t \in \mathrm{chunk}\ c} L_t\Bigr)
            \Big|_{h_{e_c - k2}\ \mathrm{constant}},

    the module's truncation rule with ``s_t = max(0, e_c - k2 + 1)``
    (:func:`chunk_starts`). That is what TBPTT(k1, k2) applies if the parameters are
    held fixed between chunks: the sum of its updates' gradients, not a sequence of
    updates. TBPTT(k, k) is the common "detach the state every k steps"; ``h0`` receives
    the gradient of the first chunk only when its window reaches step 0; any
    ``k2 >= T`` is full BPTT, equal to :func:`bptt_ref.loss_and_grad`.

    Args:
        params, xs, targets, config: as :func:`window_loss_and_grad`.
        k1: loss steps per chunk, an integer >= 1.
        k2: steps back-propagated per chunk, an integer >= k1.

    Returns:
        ``(L, grads)`` as :func:`bptt_ref.loss_and_grad`, gradients truncated.

    Raises:
        ValueError, TypeError: as ``loss_and_grad``, and for k1, k2 that are not
            integers with 1 <= k1 <= k2.
    """
    k1 = _count("k1", k1, 1)
    k2 = _count("k2", k2, 1)
    starts = partial(chunk_starts, k1=k1, k2=k2)
    return _truncated(params, xs, targets, starts, model_of(config))


def _check_mask(mask: Any, T: int, B: int) -> NDArray[np.bool_]:
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        raise TypeError(f"mask has dtype {arr.dtype}; expected bool (True where a step is real)")
    if arr.shape != (T, B):
        raise ValueError(f"mask has shape {arr.shape}; expected (T, B) = {(T, B)} from xs")
    return arr


def masked_loss_and_grad(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    mask: Any,
    *,
    mode: str = "loss",
    **config: Unpack[Config],
) -> tuple[float, Grads]:
    r"""The masked loss of a variable-length batch and its gradient.

    ``m_{t,b}`` = ``mask[t, b]`` is True where step t of sequence b is real. In both modes

    .. math::
        L = \sum_{t,b} m_{t,b}\,\mathrm{loss}(\hat y_{t,b}, y_{t,b}),

    so the targets of padded positions never matter. The modes differ in the state:

    - ``mode="loss"``: the recurrence runs through padded steps as usual
      (``h_t = f_h(a_t)``); only the loss is masked. Then ``g_t = m_t ⊙ ∂loss/∂z_t`` and
      the δ recurrence is unchanged. Padded inputs still feed later real steps; with
      padding at the end only (the usual layout) they cannot, and ``dL/dx`` is 0 there.
    - ``mode="freeze"``: on a padded step the state is held,
      ``h_{t,b} = h_{t-1,b}`` where ``m_{t,b}`` is False, so padding anywhere is
      invisible to the real steps. Backwards, a held step passes the cotangent through
      unchanged and differentiates nothing:

      .. math::
          \delta_t = m_t \odot c_t \odot f_h'(a_t),\qquad
          c_{t-1} = \delta_t W + (1 - m_t) \odot c_t + g_{t-1} U,

      so ``dL/dx_{t,b} = 0`` exactly, and no parameter receives anything from a padded
      step. A gated cell holds its whole state (the LSTM's ``c`` with ``h``) and its
      backward pass carries both cotangents through a held step unchanged.

    Args:
        params: the cell's parameters (``CELLS[cell].names``); for the RNN ``U`` (O, H),
            ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``b_y`` (O,), ``h0`` (B, H).
        xs: inputs (T, B, D); targets: (T, B, O), finite everywhere (also where padded).
        mask: bool array of shape (T, B).
        mode: ``"loss"`` or ``"freeze"`` (see ``MASK_MODES``).
        config: ``cell``, ``hidden``, ``output``, ``loss``, as for
            :func:`bptt_ref.loss_and_grad`.

    Returns:
        ``(L, grads)`` as :func:`bptt_ref.loss_and_grad`. With an all-True mask both modes
        equal ``loss_and_grad``.

    Raises:
        ValueError, TypeError: as ``loss_and_grad``, for a mask that is not a (T, B) bool
            array, and for an unknown mode.
    """
    if mode not in MASK_MODES:
        raise ValueError(f"unknown mask mode {mode!r}; expected one of {list(MASK_MODES)}")
    spec, hidden, output, loss = model_of(config)
    p, x, y = check_inputs(params, xs, targets, loss=loss, cell=spec)
    assert y is not None
    T, B, _ = x.shape
    m = _check_mask(mask, T, B)
    live = m if mode == "freeze" else None
    if spec.fused is None:
        return run_gated(spec, p, x, y, output, loss, step_mask=m, live=live)
    run = _run(p, x, hidden, output, live)
    states, a, z, y_hat = run.states, run.a, run.z, run.y_hat
    g = loss_grad_logits(output, loss, z, y_hat, y) * m[:, :, None]
    slope = HIDDEN[hidden].df(a, states[1:])
    total = float(loss_sum(loss, z[m], y_hat[m], y[m]))
    u, h0 = _chain_cotangents(g @ p["U"], slope, p["W"], live=live)
    return total, _assemble(p, x, states, g, u, h0)
