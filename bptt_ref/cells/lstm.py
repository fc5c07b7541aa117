r"""The LSTM cell in the PyTorch / cuDNN layout: forward pass and hand-written BPTT.

The four gates are stacked along the first axis of the weights in the order i, f, g, o
(input, forget, cell candidate, output), as ``torch.nn.LSTM`` stacks them. For
t = 0 … T−1, with h_{−1} = ``h0`` and c_{−1} = ``c0``:

.. math::
    [a_i\; a_f\; a_g\; a_o] = x_t W_{ih}^\top + b_{ih} + h_{t-1} W_{hh}^\top + b_{hh},

    i = \sigma(a_i),\quad f = \sigma(a_f),\quad g = \tanh(a_g),\quad o = \sigma(a_o),

    c_t = f \odot c_{t-1} + i \odot g,\qquad h_t = o \odot \tanh(c_t).

Every function here accepts complex128 arrays and is analytic in them (the logistic
function picks its branch on the real part), so the complex-step check differentiates this
very forward pass. Derivatives are written without cancellation: σ'(a) = σ(a) σ(−a) and
tanh'(a) = 4 σ(2a) σ(−2a) with σ(−a) from the same exponential as σ(a)
(:func:`~bptt_ref._activations.logistic_pair`), tanh'(c_t) = sech²(c_t) from cosh, never
1 − σ or 1 − tanh² of a rounded value.
docs/derivation.md §9 derives the backward recurrence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

# _tanh_prime is private to _activations: the package's one sech², cancellation-free.
from bptt_ref._activations import Array, _tanh_prime, logistic_pair
from bptt_ref.cells._spec import Cell, StepCotangent, gated_init, with_head

PARAMS: dict[str, tuple[str, ...]] = {
    "W_ih": ("4H", "D"),
    "W_hh": ("4H", "H"),
    "b_ih": ("4H",),
    "b_hh": ("4H",),
    "h0": ("B", "H"),
    "c0": ("B", "H"),
}
"""The LSTM's parameters and the shape of each in named dims, gates i, f, g, o stacked."""


class LSTMPass(NamedTuple):
    """The forward pass, laid out for :func:`backward`.

    Attributes:
        states: (T + 1, B, H), ``states[0] = h0`` and ``states[t + 1] = h_t``, so that
            ``states[:-1]`` is the h_{t−1} sequence the gradient of ``W_hh`` needs, as a view.
        cells: (T + 1, B, H), ``cells[0] = c0`` and ``cells[t + 1] = c_t``.
        partials: (T, B, 4H), the diagonal partials of step t with respect to its
            pre-activations, in gate order: ``[∂c_t/∂a_i, ∂c_t/∂a_f, ∂c_t/∂a_g, ∂h_t/∂a_o]
            = [g ⊙ σ'(a_i), c_{t−1} ⊙ σ'(a_f), i ⊙ tanh'(a_g), tanh(c_t) ⊙ σ'(a_o)]``.
            They take the pre-activations' place, and :func:`backward` overwrites them with
            ∂L/∂a_t and then makes the array read-only: a pass serves one backward.
        forget: (T, B, H), ``f_t = ∂c_t/∂c_{t−1}``.
        dh_dc: (T, B, H), ``∂h_t/∂c_t = o ⊙ tanh'(c_t)``.

    Where a row is held (``live[t, b]`` False), step t does not touch it: its partials
    and ``dh_dc`` are 0 and its ``forget`` is 1.
    """

    states: Array
    cells: Array
    partials: Array
    forget: Array
    dh_dc: Array

    @property
    def h(self) -> Array:
        """Hidden states h_t, shape (T, B, H) (``h0`` not included), a view of ``states``."""
        return self.states[1:]

    @property
    def c(self) -> Array:
        """Cell states c_t, shape (T, B, H) (``c0`` not included), a view of ``cells``."""
        return self.cells[1:]


def forward(
    params: Mapping[str, Array], xs: Array, live: NDArray[np.bool_] | None = None
) -> LSTMPass:
    r"""Run the LSTM over a sequence, without input checks.

    .. math::
        a_t = x_t W_{ih}^\top + b_{ih} + h_{t-1} W_{hh}^\top + b_{hh},\quad
        c_t = \sigma(a_f) \odot c_{t-1} + \sigma(a_i) \odot \tanh(a_g),\quad
        h_t = \sigma(a_o) \odot \tanh(c_t)

    All T·B inputs are projected in one product; the loop holds one recurrent product per
    step. Besides h_t and c_t it keeps what :func:`backward` needs of each step (see
    :class:`LSTMPass`), computed while the step's pre-activations are at hand.

    Args:
        params: ``W_ih`` (4H, D), ``W_hh`` (4H, H), ``b_ih`` (4H,), ``b_hh`` (4H,),
            ``h0`` (B, H), ``c0`` (B, H); float32, float64 or complex128.
        xs: inputs, shape (T, B, D).
        live: (T, B) bool or None. Where ``live[t, b]`` is False row b holds its state
            through step t: ``h_t = h_{t−1}`` and ``c_t = c_{t−1}`` (the "freeze" mask of
            packed sequences).

    Returns:
        The pass, in the inputs' common dtype; ``.h`` and ``.c`` are (T, B, H).
    """
    W_ih, W_hh, b_ih, b_hh, h0, c0 = (params[k] for k in PARAMS)
    T, B, D = xs.shape
    H = W_hh.shape[1]
    dtype = np.result_type(xs, *(params[k] for k in PARAMS))
    states = np.empty((T + 1, B, H), dtype)
    cells = np.empty((T + 1, B, H), dtype)
    partials = np.empty((T, B, 4 * H), dtype)
    forget = np.empty((T, B, H), dtype)
    dh_dc = np.empty((T, B, H), dtype)
    # Contiguous operands: BLAS takes other paths for other layouts, and the result must
    # not depend on the caller's.
    rows = partials.reshape(T * B, 4 * H)
    np.matmul(np.ascontiguousarray(xs).reshape(T * B, D), np.ascontiguousarray(W_ih).T, out=rows)
    rows += b_ih
    rows += b_hh
    states[0] = h0
    cells[0] = c0
    W_hh_T = np.ascontiguousarray(W_hh.T)
    # One logistic pair per step covers all four gates: σ(a) for i, f, o and σ(2a_g),
    # whose product with σ(−2a_g) is sech²(a_g) / 4.
    scale = np.repeat(np.array([1, 1, 2, 1], dtype), H)
    # The step's temporaries, allocated once: at B·H of a few thousand a fresh array a
    # call costs as much as the arithmetic.
    product, value, complement = (np.empty((B, 4 * H), dtype) for _ in range(3))
    g, tanh_c, work = (np.empty((B, H), dtype) for _ in range(3))
    i, f, _, o = (value[:, k * H : (k + 1) * H] for k in range(4))
    for t in range(T):
        a = partials[t]
        np.matmul(states[t], W_hh_T, out=product)
        a += product
        np.tanh(a[:, 2 * H : 3 * H], out=g)
        logistic_pair(a, scale, out=(value, complement))
        c_prev, c = cells[t], cells[t + 1]
        np.multiply(f, c_prev, out=c)
        np.multiply(i, g, out=work)
        c += work
        np.tanh(c, out=tanh_c)
        np.multiply(o, tanh_c, out=states[t + 1])
        # a_t is not read again: its slots take the partials, σ'(a) = σ(a) σ(−a) first.
        np.multiply(value, complement, out=a)
        d_i, d_f, d_g, d_o = (a[:, k * H : (k + 1) * H] for k in range(4))
        d_i *= g
        d_f *= c_prev
        np.multiply(i, 4, out=work)
        d_g *= work
        d_o *= tanh_c
        forget[t] = f
        slope_c = _tanh_prime(c, tanh_c, out=dh_dc[t])
        slope_c *= o
        if live is not None:
            held = ~live[t]
            c[held] = c_prev[held]
            states[t + 1][held] = states[t][held]
            a[held] = 0
            forget[t][held] = 1
            dh_dc[t][held] = 0
    return LSTMPass(states, cells, partials, forget, dh_dc)


def backward(
    params: Mapping[str, Array],
    xs: Array,
    fw: LSTMPass,
    dh: StepCotangent,
    live: NDArray[np.bool_] | None = None,
) -> dict[str, Array]:
    r"""The gradient of L for every parameter and the inputs, by reverse accumulation.

    With ``dh`` the direct cotangent ∂L/∂h_t of the output head, the total cotangents
    \bar h_t = ∂L/∂h_t and \bar c_t = ∂L/∂c_t (B, H) and \bar a_t = ∂L/∂a_t (B, 4H) are, from
    t = T−1 down to 0, with \bar a_T = 0 and \bar c_T = 0:

    .. math::
        \bar h_t = dh_t + \bar a_{t+1} W_{hh},\qquad
        \bar c_t = \bar c_{t+1} \odot f_{t+1} + \bar h_t \odot o_t \odot \tanh'(c_t),

        \bar a_t = [\bar c_t \odot g \odot \sigma'(a_i),\;
                    \bar c_t \odot c_{t-1} \odot \sigma'(a_f),\;
                    \bar c_t \odot i \odot \tanh'(a_g),\;
                    \bar h_t \odot \tanh(c_t) \odot \sigma'(a_o)],

    and the gradients are single products over all T·B rows:

    .. math::
        \partial L/\partial W_{ih} = \sum_t \bar a_t^\top x_t,\quad
        \partial L/\partial W_{hh} = \sum_t \bar a_t^\top h_{t-1},\quad
        \partial L/\partial b_{ih} = \partial L/\partial b_{hh} = \sum_{t,b} \bar a_{t,b},

        \partial L/\partial h_0 = \bar a_0 W_{hh},\quad
        \partial L/\partial c_0 = \bar c_0 \odot f_0,\quad
        \partial L/\partial x_t = \bar a_t W_{ih}.

    Where row b is held at step t (``live[t, b]`` False), \bar a_{t,b} = 0 and both
    cotangents pass to step t−1 unchanged.

    Args:
        params: as for :func:`forward`; xs: (T, B, D).
        fw: the pass :func:`forward` returned for these ``params``, ``xs`` and ``live``;
            its ``partials`` become \bar a_t (T, B, 4H), so a pass serves one backward.
        dh: the direct cotangent ∂L/∂h_t as ``dh[t]`` (B, H), read once per step, newest
            first (a (T, B, H) array or the head's ``HeadCotangent``); the recurrence is
            added here.
        live: (T, B) bool or None, as given to :func:`forward`.

    Returns:
        Gradients keyed ``W_ih, W_hh, b_ih, b_hh, h0, c0, xs``, each of its input's shape,
        in the pass's dtype. T = 0 or B = 0 is an empty sum: zeros.

    Raises:
        ValueError: if ``fw`` has already served a backward pass.
    """
    if not fw.partials.flags.writeable:
        raise ValueError(
            "fw has already been used by backward, which overwrites fw.partials; "
            "expected a pass fresh from forward (run forward again)"
        )
    T, B, D = xs.shape
    H = fw.states.shape[-1]
    W_hh = np.ascontiguousarray(params["W_hh"])
    d_a = fw.partials.reshape(T, B, 4, H)
    # ∂L/∂h_t and ∂L/∂c_t through the steps after t; at the end, through every step.
    h_bar = np.zeros((B, H), fw.partials.dtype)
    c_bar = np.zeros((B, H), fw.partials.dtype)
    # The step's temporaries, allocated once (see forward); ``through`` and ``h_bar`` swap.
    through, work = np.empty_like(h_bar), np.empty_like(h_bar)
    for t in range(T - 1, -1, -1):
        h_bar += dh[t]
        np.multiply(h_bar, fw.dh_dc[t], out=work)
        c_bar += work
        d_a[t, :, 3] *= h_bar
        d_a[t, :, :3] *= c_bar[:, None]
        c_bar *= fw.forget[t]
        np.matmul(fw.partials[t], W_hh, out=through)
        if live is not None:
            # ā_t is 0 on a held row, so its h-cotangent passes only by holding.
            held = ~live[t]
            through[held] = h_bar[held]
        h_bar, through = through, h_bar
    fw.partials.flags.writeable = False

    rows = fw.partials.reshape(T * B, 4 * H)
    d_b = rows.sum(axis=0)
    return {
        "W_ih": rows.T @ np.ascontiguousarray(xs).reshape(T * B, D),
        "W_hh": rows.T @ fw.states[:-1].reshape(T * B, H),
        "b_ih": d_b,
        "b_hh": d_b.copy(),
        "h0": h_bar,
        "c0": c_bar,
        "xs": (rows @ np.ascontiguousarray(params["W_ih"])).reshape(T, B, D),
    }


init = gated_init(4, ("h0", "c0"))
"""Random parameters (:func:`~bptt_ref.cells._spec.gated_init`): each gate's block of
``W_hh`` at the given spectral radius."""


CELL = Cell(
    name="lstm",
    equations=(
        "[i f g o] = x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh\n"
        "i, f, o = σ(·), g = tanh(·)\n"
        "c_t = f ⊙ c_{t-1} + i ⊙ g\n"
        "h_t = o ⊙ tanh(c_t)"
    ),
    params=PARAMS,
    names=("W_ih", "W_hh", "b_ih", "b_hh", "U", "b_y", "h0", "c0"),
    states=("h0", "c0"),
    hidden_from="W_hh",
    roles=("W_ih", "W_hh", "b_ih", "b_hh"),
    activations=("tanh",),
    init=with_head(init),
    forward=lambda params, xs, live, hidden: forward(params, xs, live),
    backward=backward,
    gate_names=("i", "f", "g", "o"),
)
"""The LSTM (PyTorch / cuDNN layout, gates i, f, g, o)."""
