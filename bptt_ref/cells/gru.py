r"""The GRU cell in PyTorch / cuDNN layout, both placements of the reset gate.

Gates r, z, n are stacked in this order along the first axis of ``W_ih`` (3H, D),
``W_hh`` (3H, H), ``b_ih`` (3H,) and ``b_hh`` (3H,): ``W_ir = W_ih[0:H]``,
``W_iz = W_ih[H:2H]``, ``W_in = W_ih[2H:3H]``, and likewise for ``W_hh``, ``b_ih``,
``b_hh``. Row vectors, batched, time-major; for t = 0 … T−1, with h = h_{t−1}
(h_{−1} = ``h0``) and x = x_t:

.. math::
    r = \sigma(x W_{ir}^\top + b_{ir} + h W_{hr}^\top + b_{hr}),\qquad
    z = \sigma(x W_{iz}^\top + b_{iz} + h W_{hz}^\top + b_{hz}),

    n = \tanh(x W_{in}^\top + b_{in} + r \odot (h W_{hn}^\top + b_{hn}))
        \quad\text{(reset after the product: ``gru``)},

    n = \tanh(x W_{in}^\top + b_{in} + (r \odot h) W_{hn}^\top + b_{hn})
        \quad\text{(reset before it: ``gru_reset_before``)},

    h_t = (1 - z) \odot n + z \odot h_{t-1}.

The first is PyTorch's ``nn.GRU``, cuDNN, ONNX ``linear_before_reset=1`` and Keras
``reset_after=True``; the second is Cho et al. (2014), ONNX's default and Keras
``reset_after=False``. One implementation serves both: :func:`forward` takes
``reset_after`` and records it in its :class:`GRUPass`, from which :func:`backward` reads
it, so a pass cannot be differentiated as the other variant. docs/derivation.md §10
derives the backward recurrence (the four paths into h_{t−1}).

Every function also accepts complex128 arrays and is analytic in them (σ(a) and
σ(−a) = 1 − σ(a) come from one exponential, capped on the real part; tanh's derivative
chooses its branch on the real part), so the complex-step check differentiates this very
forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

# _tanh_prime is private to _activations: the package's one sech², cancellation-free.
from bptt_ref._activations import Array, _tanh_prime, logistic_pair
from bptt_ref._rnn import _BLOCK_BYTES, _small_ufunc_buffers
from bptt_ref.cells._spec import Cell, StepCotangent, gated_init, with_head

PARAMS: dict[str, tuple[str, ...]] = {
    "W_ih": ("3H", "D"),
    "W_hh": ("3H", "H"),
    "b_ih": ("3H",),
    "b_hh": ("3H",),
    "h0": ("B", "H"),
}
"""The GRU's parameters and their shapes in named dims (both variants)."""

# The forward pass holds the gates of a block of steps for :func:`_slopes` in four buffers
# of (block, B, H); with at least this many blocks they stay within T·B·H / 2 where T·B·H
# is small (B = 1), as well as within _BLOCK_BYTES where it is large.
_MIN_BLOCKS = 8


class GRUPass(NamedTuple):
    """The forward pass as :func:`backward` needs it, time-major.

    Attributes:
        states: (T + 1, B, H): ``states[0] = h0``, ``states[t + 1] = h_t``, so that
            ``states[:-1]`` is the h_{t−1} sequence, as a view.
        slots: (T, B, 4H): columns ``[P_n, P_r, P_z, r]``, the factors of the backward
            step (see :func:`_slopes`; n first, see :func:`_n_first`), which take the
            place of the pre-activations ``[a_n, a_r, a_z]`` and of the operand of the
            reset ``m``. :func:`backward` overwrites them with the gate cotangents.
        n: (T, B, H): the update gate z_t (the candidate n_t is not kept).
        reset_after: which variant ran (True: ``gru``; False: ``gru_reset_before``).
    """

    states: Array
    slots: Array
    n: Array
    reset_after: bool

    @property
    def h(self) -> Array:
        """The hidden states h_t, shape (T, B, H), ``h0`` not included; a view of ``states``."""
        return self.states[1:]


def _n_first(gates: Array) -> Array:
    """Rows (3H, …) in gate order r, z, n reordered to n, r, z, C-contiguous.

    With n first, the input-side gate cotangents ``[da_n, da_r, da_z]`` and the
    recurrent-side ones ``[da_r, da_z, d(h W_hnᵀ)]`` are both contiguous column ranges of
    one (T, B, 4H) buffer, so each weight gradient is one product. ``np.roll(g, -H, 0)``
    turns a gradient in this order back to r, z, n.
    """
    return np.ascontiguousarray(np.roll(gates, gates.shape[0] // 3, axis=0))


def _update_gate(
    a_z: Array, keep: NDArray[np.bool_] | None, out: tuple[Array, Array] | None = None
) -> tuple[Array, Array]:
    """``z = σ(a_z)`` and ``1 − z = σ(−a_z)`` from one exponential (no cancellation where
    z → 1), into ``out`` where given.

    A row that is not live (``keep`` False, broadcast against ``a_z``) gets z = 1 and
    1 − z = 0, so that ``h_t = h_{t−1}`` exactly and no gradient reaches its gates.
    """
    z, z_c = logistic_pair(a_z, out=out)
    if keep is not None:
        held = ~keep
        np.copyto(z, 1, where=held)
        np.copyto(z_c, 0, where=held)
    return z, z_c


def forward(
    params: Mapping[str, Array],
    xs: Array,
    live: NDArray[np.bool_] | None = None,
    *,
    reset_after: bool = True,
) -> GRUPass:
    r"""Run the GRU over all T steps, without input checks.

    .. math::
        [a_r, a_z] = x_t [W_{ir}; W_{iz}]^\top + [b_{ir} + b_{hr}, b_{iz} + b_{hz}]
                     + h_{t-1} [W_{hr}; W_{hz}]^\top,\qquad r = \sigma(a_r),\ z = \sigma(a_z),

        a_n = x_t W_{in}^\top + b_{in} + r \odot m_t,\quad m_t = h_{t-1} W_{hn}^\top + b_{hn}
        \quad\text{(reset after)},

        a_n = x_t W_{in}^\top + b_{in} + (r \odot h_{t-1}) W_{hn}^\top + b_{hn}
        \quad\text{(reset before)},

        n_t = \tanh(a_n),\qquad h_t = \sigma(-a_z) \odot n_t + z \odot h_{t-1}.

    All T·B input projections are one product; each step makes one recurrent product
    (reset after) or two (reset before, where the second needs r).

    Args:
        params: ``W_ih`` (3H, D), ``W_hh`` (3H, H), ``b_ih`` (3H,), ``b_hh`` (3H,),
            ``h0`` (B, H); float32, float64 or complex128.
        xs: inputs, shape (T, B, D).
        live: (T, B) bool or None. Where ``live[t, b]`` is False, row b holds its state
            through step t (``h_t = h_{t−1}``, the "freeze" mask of packed sequences).
        reset_after: True for ``gru`` (PyTorch), False for ``gru_reset_before``.

    Returns:
        The :class:`GRUPass`; its ``h`` (T, B, H) are the hidden states, in the dtype
        all inputs promote to.
    """
    with _small_ufunc_buffers():
        W_ih, W_hh, b_ih, b_hh, h0 = (params[k] for k in PARAMS)
        T, B, D = xs.shape
        H = W_hh.shape[1]
        dtype = np.result_type(xs, *(params[k] for k in PARAMS))
        states = np.empty((T + 1, B, H), dtype)
        slots = np.empty((T, B, 4 * H), dtype)
        n = np.empty((T, B, H), dtype)
        pre = slots[..., : 3 * H]
        # Only the recurrent products are sequential: all T·B inputs in one product,
        # written into the strided view (its (T, B) dims merge, so the reshape is a view).
        np.matmul(xs.reshape(T * B, D), _n_first(W_ih).T, out=pre.reshape(T * B, 3 * H))
        b_hn = b_hh[2 * H :]
        # b_hr and b_hz add to the pre-activations as b_ir and b_iz do; b_hn does only
        # where the reset comes before the product.
        pre += _n_first(b_ih) + np.concatenate(
            [np.zeros_like(b_hn) if reset_after else b_hn, b_hh[: 2 * H]]
        )
        states[0] = h0
        W_hh_T = np.ascontiguousarray(W_hh.T)
        W_rec_T = W_hh_T if reset_after else np.ascontiguousarray(W_hh_T[:, : 2 * H])
        W_hn_T = W_hh_T[:, 2 * H :]
        keep = None if live is None else live[..., None]
        # The step's temporaries, allocated once: at B·H of a few thousand a fresh array a
        # call costs as much as the arithmetic. The gates of a block of steps wait in
        # cache-sized buffers for :func:`_slopes`, which needs no recurrence and so makes
        # one call per pass over the block.
        prod = np.empty((B, W_rec_T.shape[1]), dtype)
        work, reset = np.empty((B, H), dtype), np.empty((B, H), dtype)
        most = min(-(-T // _MIN_BLOCKS), _BLOCK_BYTES // max(1, B * 4 * H * dtype.itemsize))
        block = max(1, most)
        r, r_c, z, z_c = (np.empty((block, B, H), dtype) for _ in range(4))
        for t in range(T):
            h_prev, step, k = states[t], slots[t], t % block
            a_n, a_rz, m = step[:, :H], step[:, H : 3 * H], step[:, 3 * H :]
            np.matmul(h_prev, W_rec_T, out=prod)
            a_rz += prod[:, : 2 * H]
            logistic_pair(a_rz[:, :H], out=(r[k], r_c[k]))
            if reset_after:
                np.add(prod[:, 2 * H :], b_hn, out=m)
                np.multiply(r[k], m, out=work)
                a_n += work
            else:
                np.multiply(r[k], h_prev, out=work)
                np.matmul(work, W_hn_T, out=reset)
                a_n += reset
            _update_gate(a_rz[:, H:], None if keep is None else keep[t], out=(z[k], z_c[k]))
            np.tanh(a_n, out=n[t])
            np.multiply(z_c[k], n[t], out=work)
            np.multiply(z[k], h_prev, out=states[t + 1])
            states[t + 1] += work
            if k == block - 1 or t == T - 1:
                steps = slice(t - k, t + 1)
                gates = (r[: k + 1], r_c[: k + 1], z[: k + 1], z_c[: k + 1])
                _slopes(slots[steps], n[steps], states[steps], gates, reset_after)
        return GRUPass(states, slots, n, reset_after)


def _slopes(
    slots: Array,
    n: Array,
    h_prev: Array,
    gates: tuple[Array, Array, Array, Array],
    reset_after: bool,
) -> None:
    """Turn a block of steps of the forward pass into the factors of the backward step.

    In place, for shapes (τ, B, ·) and the block's gates ``(r, σ(−a_r), z, σ(−a_z))``
    (the last two with held rows at 1 and 0, see :func:`_update_gate`):
    ``[a_n, a_r, a_z, m]`` becomes ``[P_n, P_r, P_z, r]`` and ``n`` becomes z, where

        P_n = σ(−a_z) ⊙ sech²(a_n)             da_n = dh_t ⊙ P_n
        P_z = z ⊙ σ(−a_z) ⊙ (h_{t−1} − n_t)    da_z = dh_t ⊙ P_z
        P_r = s ⊙ r ⊙ σ(−a_r)                  da_r = ds ⊙ P_r

    with s the operand of the reset (m after, h_{t−1} before) and ds its cotangent
    (da_n after, (da_n W_hn) before). None of them depends on the recurrence, so a block
    of steps is one set of array operations. The gate buffers are overwritten.
    """
    H = h_prev.shape[-1]
    a_n, a_r, a_z, m = np.split(slots, [H, 2 * H, 3 * H], axis=-1)
    r, slope_r, z, z_c = gates
    slope_r *= r
    np.multiply(slope_r, m if reset_after else h_prev, out=a_r)
    m[...] = r
    slope_n = _tanh_prime(a_n, n, out=a_n)
    slope_n *= z_c
    np.subtract(h_prev, n, out=n)
    n *= z_c
    np.multiply(n, z, out=a_z)
    n[...] = z


def backward(
    params: Mapping[str, Array],
    xs: Array,
    fw: GRUPass,
    dh: StepCotangent,
    live: NDArray[np.bool_] | None = None,
) -> dict[str, Array]:
    r"""The gradient of L with respect to every parameter and the inputs, by BPTT.

    With ``dh[t]`` = ∂L/∂h_t from the output head and the total cotangent
    :math:`\bar h_t = dh_t + \bar h_{t+1} \partial h_{t+1}/\partial h_t`
    (:math:`\bar h_T = 0`), each step back, newest first, is

    .. math::
        \bar a_n = \bar h_t \odot (1 - z) \odot \operatorname{sech}^2(a_n),\qquad
        \bar a_z = \bar h_t \odot z (1 - z) \odot (h_{t-1} - n_t),

        \text{after:}\quad \bar m = \bar a_n \odot r,\quad
        \bar a_r = \bar a_n \odot m_t \odot r(1 - r),

        \bar h_{t-1} = \bar h_t \odot z + [\bar a_r, \bar a_z, \bar m]\, W_{hh},

        \text{before:}\quad \bar s = \bar a_n W_{hn},\quad
        \bar a_r = \bar s \odot h_{t-1} \odot r(1 - r),

        \bar h_{t-1} = \bar h_t \odot z + \bar s \odot r
                       + [\bar a_r, \bar a_z]\, [W_{hr}; W_{hz}]

    (the four paths into h_{t−1}: direct through z ⊙ h_{t−1}, and through r, z and n),
    with 1 − z = σ(−a_z) and r(1 − r) = σ(a_r) σ(−a_r). Then, over all T·B rows at once,
    with :math:`\bar a = [\bar a_r, \bar a_z, \bar a_n]`,

    .. math::
        \partial L/\partial W_{ih} = \textstyle\sum_t \bar a^\top x_t,\quad
        \partial L/\partial b_{ih} = \sum_{t,b} \bar a,\quad
        \partial L/\partial x_t = \bar a\, W_{ih},\quad
        \partial L/\partial h_0 = \bar h_{-1},

        \text{after:}\quad \partial L/\partial W_{hh} = \textstyle\sum_t
            [\bar a_r, \bar a_z, \bar m]^\top h_{t-1},\quad
        \partial L/\partial b_{hh} = \sum_{t,b} [\bar a_r, \bar a_z, \bar m],

        \text{before:}\quad \partial L/\partial W_{hh} = \textstyle\sum_t
            [\bar a_r^\top h_{t-1}; \bar a_z^\top h_{t-1}; \bar a_n^\top (r \odot h_{t-1})],\quad
        \partial L/\partial b_{hh} = \partial L/\partial b_{ih}.

    Where ``live[t, b]`` is False the row's step is the identity: its gate cotangents are
    0 and :math:`\bar h_{t-1} = \bar h_t`. The variant is the one ``fw`` ran.

    Args:
        params: as for :func:`forward`, the arrays ``fw`` was computed from.
        xs: inputs, shape (T, B, D), the ones ``fw`` was computed from.
        fw: the pass of :func:`forward`; its ``slots`` are overwritten with the gate
            cotangents, its ``states`` (``h``) and ``n`` are left intact. Use each pass once.
        dh: the direct cotangent ∂L/∂h_t of the output head as ``dh[t]`` (B, H), read
            once per step, newest first (a (T, B, H) array or the head's
            ``HeadCotangent``), in the inputs' dtype; the recurrence is added here.
        live: the mask ``fw`` was computed with.

    Returns:
        Gradients for ``W_ih``, ``W_hh``, ``b_ih``, ``b_hh``, ``h0`` and ``xs``, each of
        its input's shape, in the inputs' dtype; all zero when T = 0 or B = 0.
        ``params``, ``xs`` and ``dh`` are not modified.
    """
    with _small_ufunc_buffers():
        states, slots, n, reset_after = fw
        T, B, D = xs.shape
        H = states.shape[-1]
        h_prev = states[:-1]
        W_hh = np.ascontiguousarray(params["W_hh"])
        W_rz, W_hn = W_hh[: 2 * H], W_hh[2 * H :]
        carry = np.zeros((B, H), states.dtype)
        # The step's temporaries, allocated once (see forward).
        d, d_s, work = (np.empty_like(carry) for _ in range(3))
        for t in range(T - 1, -1, -1):
            np.add(dh[t], carry, out=d)
            step = slots[t]
            # [P_n, P_z] and [P_r, r] as (B, 2, H) views: four cotangents in two multiplications.
            paired = step.reshape(B, 2, 2, H)
            paired[:, :, 0] *= d[:, None]
            if reset_after:
                paired[:, :, 1] *= paired[:, :1, 0]
                np.matmul(step[:, H:], W_hh, out=carry)
            else:
                np.matmul(step[:, :H], W_hn, out=d_s)
                step[:, H : 2 * H] *= d_s
                np.matmul(step[:, H : 3 * H], W_rz, out=carry)
                np.multiply(d_s, step[:, 3 * H :], out=work)
                carry += work
            np.multiply(d, n[t], out=work)
            carry += work

        rows = slots.reshape(T * B, 4 * H)
        d_in = rows[:, : 3 * H]
        h_rows = h_prev.reshape(T * B, H)
        db_ih = np.roll(d_in.sum(axis=0), -H)
        if reset_after:
            d_rec = rows[:, H:]
            dW_hh = d_rec.T @ h_rows
            db_hh = d_rec.sum(axis=0)
        else:
            reset_h = rows[:, 3 * H :]
            reset_h *= h_rows
            dW_hh = np.concatenate([rows[:, H : 3 * H].T @ h_rows, rows[:, :H].T @ reset_h])
            db_hh = db_ih.copy()
        return {
            "W_ih": np.roll(d_in.T @ xs.reshape(T * B, D), -H, axis=0),
            "W_hh": dW_hh,
            "b_ih": db_ih,
            "b_hh": db_hh,
            "h0": carry,
            "xs": (d_in @ _n_first(params["W_ih"])).reshape(T, B, D),
        }


init = gated_init(3, ("h0",))
"""Random parameters of either variant (:func:`~bptt_ref.cells._spec.gated_init`): each
gate's block of ``W_hh`` at the given spectral radius."""


# What the two variants share, as the fields of their ``Cell``s (module data, as the LSTM's
# ``CELL``: built at import, not by a function).
_SHARED: dict[str, Any] = {
    "params": PARAMS,
    "names": ("W_ih", "W_hh", "b_ih", "b_hh", "U", "b_y", "h0"),
    "states": ("h0",),
    "hidden_from": "W_hh",
    "roles": ("W_ih", "W_hh", "b_ih", "b_hh"),
    "activations": ("tanh",),
    "init": with_head(init),
    "backward": backward,
    "gate_names": ("r", "z", "n"),
}
_GATES = "r = σ(x_t W_irᵀ + b_ir + h_{t-1} W_hrᵀ + b_hr), z likewise\n"
_UPDATE = "\nh_t = (1 − z) ⊙ n + z ⊙ h_{t-1}"

CELL = Cell(
    name="gru",
    equations=_GATES + "n = tanh(x_t W_inᵀ + b_in + r ⊙ (h_{t-1} W_hnᵀ + b_hn))" + _UPDATE,
    forward=lambda params, xs, live, hidden: forward(params, xs, live, reset_after=True),
    **_SHARED,
)
"""The GRU with the reset after the recurrent product (PyTorch, cuDNN; gates r, z, n)."""
CELL_RESET_BEFORE = Cell(
    name="gru_reset_before",
    equations=_GATES + "n = tanh(x_t W_inᵀ + b_in + (r ⊙ h_{t-1}) W_hnᵀ + b_hn)" + _UPDATE,
    forward=lambda params, xs, live, hidden: forward(params, xs, live, reset_after=False),
    **_SHARED,
)
"""The GRU with the reset before the recurrent product (Cho et al. 2014; gates r, z, n)."""
