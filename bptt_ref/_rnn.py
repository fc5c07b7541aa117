"""The vanilla RNN of the seed note: forward pass, loss, and reverse-accumulation BPTT.

The public entry points (:func:`bptt_ref.loss_and_grad`, :func:`bptt_ref.forward`,
:func:`bptt_ref.random_params`) check their inputs and reach this module through
:data:`bptt_ref.cells.CELLS` ``["rnn"]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from bptt_ref._activations import HIDDEN, OUTPUT, Array
from bptt_ref._losses import loss_grad_logits, loss_sum


class _Pass(NamedTuple):
    """The forward pass as :func:`loss_and_grad` lays it out in memory.

    ``states`` (T + 1, B, H) holds ``states[0] = h0`` and ``states[t + 1] = h_t``, so that
    ``states[:-1]`` is the h_{t-1} sequence the weight gradient needs, as a view.
    ``joint`` (T + 1, B, H + O) holds ``a_t`` in ``joint[t, :, :H]`` and ``z_t`` in
    ``joint[t + 1, :, H:]``: the backward pass overwrites ``a_t`` with ``f_h'(a_t)`` and then
    with ``δ_t``, and ``z_t`` with ``g_t``, so that ``joint[t + 1]`` is ``[δ_{t+1}, g_t]`` and
    each step of the δ recurrence is one matrix product.
    """

    states: Array
    joint: Array
    y_hat: Array

    @property
    def a(self) -> Array:
        """Pre-activations, shape (T, B, H), a view of ``joint``."""
        return _views(self.joint, self.states.shape[-1])[0]

    @property
    def z(self) -> Array:
        """Logits, shape (T, B, O), a view of ``joint``."""
        return _views(self.joint, self.states.shape[-1])[1]

    @property
    def h(self) -> Array:
        """Hidden states h_t, shape (T, B, H), a view of ``states``."""
        return self.states[1:]


def _views(joint: Array, H: int) -> tuple[Array, Array]:
    return joint[:-1, :, :H], joint[1:, :, H:]


# NumPy iterates a strided or broadcast operand (the views of ``_Pass.joint``, a bias)
# through per-operand buffers of np.getbufsize() elements, allocated whole even for a
# smaller array and copied in and out. At the default 8192 they made ``a += b_h`` 3.7×
# slower than on a contiguous array (float32, T = 100, B = 32, H = 128) and were
# 3·T·B·H·itemsize of memory at B = 1, H = 64. The results did not change by a bit
# (432 configurations, buffers of 16, 1024 and 8192 elements).
_UFUNC_BUFFER = 1024


# A with-block in the functions, not a decorator: mutmut leaves decorated functions unmutated.
@contextmanager
def _small_ufunc_buffers() -> Iterator[None]:
    with np.errstate():  # restores the caller's buffer size on exit
        np.setbufsize(_UFUNC_BUFFER)
        yield


def _run(
    params: Mapping[str, Array],
    xs: Array,
    hidden: str,
    output: str,
    live: NDArray[np.bool_] | None = None,
) -> _Pass:
    """Forward pass without checks.

    With ``live`` (T, B), a row that is not live at step t holds its state,
    ``h_t = h_{t-1}`` (the "freeze" mask of :mod:`bptt_ref.truncation`).
    """
    with _small_ufunc_buffers():
        U, b_y = params["U"], params["b_y"]
        T, B, _ = xs.shape
        H, O = params["W"].shape[0], U.shape[0]
        dtype = np.result_type(xs, *params.values())
        states = np.empty((T + 1, B, H), dtype)
        joint = np.empty((T + 1, B, H + O), dtype)
        a, z = _views(joint, H)
        _recur(params, xs, hidden, live, states, a)
        np.matmul(states[1:].reshape(T * B, H), U.T, out=z.reshape(T * B, O))
        z += b_y
        return _Pass(states, joint, OUTPUT[output].f(z))


def _recur(
    params: Mapping[str, Array],
    xs: Array,
    hidden: str,
    live: NDArray[np.bool_] | None,
    states: Array,
    a: Array,
) -> None:
    """Fill ``a`` (T, B, H) with a_t and ``states`` (T + 1, B, H) with h0, h_0 … h_{T−1}."""
    V, W, b_h, h0 = (params[k] for k in ("V", "W", "b_h", "h0"))
    T, B, D = xs.shape
    H = W.shape[0]
    f = HIDDEN[hidden].f
    # Only the recurrent product is sequential: project all T·B inputs in one product.
    # a and z are strided views whose (T, B) dims merge, so these reshapes are views too.
    np.matmul(xs.reshape(T * B, D), V.T, out=a.reshape(T * B, H))
    a += b_h
    states[0] = h0
    # OpenBLAS multiplies by a contiguous Wᵀ faster than by the transposed view of W
    # (float32, B = 32, H = 128: 0.9 against 1.6 ms for 100 steps).
    W_T = np.ascontiguousarray(W.T)
    # A ufunc (tanh) writes h_t in place; the other activations return a new array.
    f_into = f if isinstance(f, np.ufunc) else lambda a_t, out: np.copyto(out, f(a_t))
    if live is None:
        for a_t, h_prev, h_t in zip(a, states[:-1], states[1:], strict=True):
            a_t += h_prev @ W_T
            f_into(a_t, out=h_t)
    else:
        for a_t, h_prev, h_t, keep in zip(a, states[:-1], states[1:], live, strict=True):
            a_t += h_prev @ W_T
            h_t[...] = np.where(keep[:, None], f(a_t), h_prev)


class RecurrentPass(NamedTuple):
    """The RNN's forward pass without the head, for :func:`backward`.

    ``states`` (T + 1, B, H) holds ``h0`` and h_0 … h_{T−1}; ``a`` (T, B, H) the
    pre-activations a_t; ``hidden`` the name of ``f_h`` they went through.
    """

    states: Array
    a: Array
    hidden: str

    @property
    def h(self) -> Array:
        """Hidden states h_t, shape (T, B, H), a view of ``states``."""
        return self.states[1:]


def forward(
    params: Mapping[str, Array], xs: Array, live: NDArray[np.bool_] | None, hidden: str
) -> RecurrentPass:
    """The recurrence alone, without checks: ``a_t = x_t Vᵀ + h_{t-1} Wᵀ + b_h``,
    ``h_t = f_h(a_t)`` for ``params`` ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``h0``
    (B, H) and ``xs`` (T, B, D); ``live`` (T, B) holds a row's state where False."""
    with _small_ufunc_buffers():
        T, B, _ = xs.shape
        H = params["W"].shape[0]
        dtype = np.result_type(xs, *(params[k] for k in ("V", "W", "b_h", "h0")))
        states = np.empty((T + 1, B, H), dtype)
        a = np.empty((T, B, H), dtype)
        _recur(params, xs, hidden, live, states, a)
        return RecurrentPass(states, a, hidden)


def backward(
    params: Mapping[str, Array],
    xs: Array,
    fw: RecurrentPass,
    dh: Array,
    live: NDArray[np.bool_] | None = None,
) -> dict[str, Array]:
    r"""The gradient for every parameter of the recurrence and ``xs``, given ``dh`` (T, B, H).

    ``dh`` is the direct cotangent ∂L/∂h_t of whatever reads h_t (a head, a layer above);
    with :math:`ar h_t = dh_t + \delta_{t+1} W` (:math:`\delta_T = 0`):

    .. math::
        \delta_t = ar h_t \odot f_h'(a_t),\quad
        \partial L/\partial \mathrm{h0} = \delta_0 W,

    and ``V``, ``W``, ``b_h``, ``xs`` as in :func:`fused_loss_and_grad`. Where row b is
    held at step t (``live[t, b]`` False), δ_{t,b} = 0 and ar h passes to step t−1
    unchanged. Does not modify ``fw``.
    """
    with _small_ufunc_buffers():
        T, B, _ = xs.shape
        H = fw.states.shape[-1]
        W = params["W"]
        delta = np.empty_like(fw.a)
        delta[...] = HIDDEN[fw.hidden].df(fw.a, fw.h)
        h_bar = np.zeros((B, H), fw.a.dtype)
        for t in reversed(range(T)):
            h_bar = h_bar + dh[t]
            delta[t] *= h_bar
            through = delta[t] @ W
            if live is not None:
                held = ~live[t]
                delta[t][held] = 0
                through[held] = h_bar[held]
            h_bar = through
        return {**_recurrence_grads(delta, fw.states, xs, params["V"]), "h0": h_bar}


def _recurrence_grads(delta: Array, states: Array, x: Array, V: Array) -> dict[str, Array]:
    """``V``, ``W``, ``b_h``, ``xs`` from δ (T, B, H): each one product over all T·B rows."""
    T, B, D = x.shape
    H = states.shape[-1]
    rows_h = delta.reshape(T * B, H)
    return {
        "V": rows_h.T @ x.reshape(T * B, D),
        "W": rows_h.T @ states[:-1].reshape(T * B, H),
        "b_h": rows_h.sum(axis=0),
        "xs": (rows_h @ V).reshape(T, B, D),
    }


def fused_loss_and_grad(
    p: Mapping[str, Array], x: Array, y: Array, hidden: str, output: str, loss: str
) -> tuple[float, dict[str, NDArray[np.floating]]]:
    r"""The loss and its gradient for checked inputs (see :func:`bptt_ref.loss_and_grad`).

    Computes :math:`L = \sum_t \sum_b \mathrm{loss}(\hat y_{t,b}, y_{t,b})` and its gradient
    by reverse accumulation (BPTT), O(T·B·H²):

    .. math::
        g_t = \partial L/\partial z_t,\qquad
        \delta_t = \partial L/\partial a_t
                 = \bigl(g_t U + \delta_{t+1} W\bigr) \odot f_h'(a_t),\quad \delta_T = 0,

        \partial L/\partial U = \sum_t g_t^\top h_t,\quad
        \partial L/\partial W = \sum_t \delta_t^\top h_{t-1},\quad
        \partial L/\partial V = \sum_t \delta_t^\top x_t,

        \partial L/\partial b_y = \sum_{t,b} g_{t,b},\quad
        \partial L/\partial b_h = \sum_{t,b} \delta_{t,b},\quad
        \partial L/\partial \mathrm{h0} = \delta_0 W,\quad
        \partial L/\partial x_t = \delta_t V.

    Here :math:`g_t` (T, B, O) and :math:`\delta_t` (T, B, H) are row-stacked over the
    batch, and :math:`h_{t-1}` is ``h0`` (B, H) for t = 0. The loop over t holds only the
    recurrence for :math:`\delta_t`; every sum over t is one matrix product over all T·B
    rows.

    Args:
        p: ``U`` (O, H), ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``b_y`` (O,), ``h0`` (B, H).
        x: inputs (T, B, D); y: targets (T, B, O).
        hidden, output, loss: the names of ``f_h``, ``f_y`` and the loss.
    """
    fw = _run(p, x, hidden, output)
    value = float(loss_sum(loss, fw.z, fw.y_hat, y))
    return value, _backward(fw, p, x, y, hidden, output, loss)


# f_h'(a) is computed in blocks of time steps of about this size, in place of a: one block
# for small problems (few NumPy calls), cache-sized temporaries for large ones.
_BLOCK_BYTES = 1 << 20


def _backward(
    fw: _Pass,
    p: Mapping[str, Array],
    x: Array,
    y: Array,
    hidden: str,
    output: str,
    loss: str,
) -> dict[str, NDArray[np.floating]]:
    """The gradients of :func:`loss_and_grad` from its forward pass; overwrites ``fw.joint``."""
    with _small_ufunc_buffers():
        U, V, W = p["U"], p["V"], p["W"]
        T, B, _ = x.shape
        H, O = W.shape[0], U.shape[0]
        states, joint = fw.states, fw.joint
        g = fw.z
        g[...] = loss_grad_logits(output, loss, fw.z, fw.y_hat, y)
        # f_h'(a_t) for every step needs no recurrence; it takes a's place, and then δ takes its.
        delta = fw.a
        df = HIDDEN[hidden].df
        block = max(1, _BLOCK_BYTES // max(1, B * H * joint.itemsize))
        for start in range(0, T, block):
            steps = slice(start, start + block)
            delta[steps] = df(delta[steps], states[1:][steps])
        joint[-1, :, :H] = 0
        # [δ_{t+1}, g_t] @ [W; U] = δ_{t+1} W + g_t U
        WU = np.concatenate([W, U])
        for t in range(T - 1, -1, -1):
            delta[t] *= joint[t + 1] @ WU
        del WU  # H·(H + O) that would otherwise outlive the loop, at small T·B a lot

        rows_g = g.reshape(T * B, O)
        own = _recurrence_grads(delta, states, x, V)
        return {
            "U": rows_g.T @ states[1:].reshape(T * B, H),
            "V": own["V"],
            "W": own["W"],
            "b_h": own["b_h"],
            "b_y": rows_g.sum(axis=0),
            "h0": delta[0] @ W if T > 0 else np.zeros_like(p["h0"]),
            "xs": own["xs"],
        }


def init(
    rng: np.random.Generator,
    *,
    batch_size: int,
    input_size: int,
    hidden_size: int,
    output_size: int,
    spectral_radius: float,
) -> dict[str, NDArray[np.float64]]:
    """Random float64 parameters with W rescaled to a given spectral radius.

    ``U`` (O, H) ~ N(0, 1/H), ``V`` (H, D) ~ N(0, 1/D), ``W`` (H, H) Gaussian scaled so
    that max |eig(W)| = ``spectral_radius`` (below 1 contracts, above 1 can explode),
    ``b_h`` (H,), ``b_y`` (O,) ~ N(0, 0.1²) and ``h0`` (B, H) ~ N(0, 0.5²).
    """
    B, D, H, O = batch_size, input_size, hidden_size, output_size
    W = rng.standard_normal((H, H))
    radius = np.max(np.abs(np.linalg.eigvals(W)))
    return {
        "U": rng.standard_normal((O, H)) / np.sqrt(H),
        "V": rng.standard_normal((H, D)) / np.sqrt(D),
        "W": W * (spectral_radius / radius),
        "b_h": 0.1 * rng.standard_normal(H),
        "b_y": 0.1 * rng.standard_normal(O),
        "h0": 0.5 * rng.standard_normal((B, H)),
    }
