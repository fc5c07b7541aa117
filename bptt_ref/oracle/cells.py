"""One ``jax.numpy`` step per cell, written from its equations; autodiff gives every derivative.

A step maps the state entering step t (``h_{t-1}``, and ``c_{t-1}`` for the LSTM) and the
input ``x_t`` (B, D) to the state leaving it; the engine (:mod:`bptt_ref.oracle.engine`)
runs it with ``lax.scan``, holds the state on padded steps and feeds ``h_t`` to the shared
head. Every step takes the same arguments:

- ``p``: the cell's parameters (PyTorch / cuDNN layout, gates stacked along the first axis:
  ``W_ih`` (G·H, D), ``W_hh`` (G·H, H), ``b_ih``, ``b_hh`` (G·H,); the rnn's ``V`` (H, D),
  ``W`` (H, H), ``b_h`` (H,));
- ``state``: ``(h,)`` or ``(h, c)``, each (B, H);
- ``x`` (B, D);
- ``recurrent`` (B, H): ``h_{t-1}`` as it enters the hidden-side product, the same value as
  ``state[0]``; the engine cuts its gradient at step 0 to isolate the paths from ``h0``
  that bypass ``W_hh`` (the GRU's ``z ⊙ h``) for the rounding magnitudes;
- ``probes`` ``(p_ih, p_hh)`` (B, G·H): zero, added to the input-side product
  ``x W_ihᵀ + b_ih`` and the hidden-side product ``h W_hhᵀ + b_hh``, so that their
  gradients are those products' cotangents (for the rnn: ∂L/∂h_t, see :func:`rnn`);
- ``fn``: the nonlinearities, exact (``EXACT``: σ through ``logaddexp``, tanh through σ
  away from 0, ``1 - σ(a)`` as ``σ(-a)``) or textbook (``TEXTBOOK``: ``jax.nn.sigmoid``,
  ``jnp.tanh``, ``1 - σ(a)``), the peer whose rounding sets the noise term.

Nothing here is shared with the NumPy cells.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bptt_ref.oracle.activations import Fn, sigmoid, tanh


class Nonlinear(NamedTuple):
    """The nonlinearities a step may use."""

    sigmoid: Fn
    """σ(a)."""
    complement: Fn
    """1 - σ(a) (the GRU's ``1 - z``), from the pre-activation a."""
    tanh: Fn
    """tanh(a)."""
    hidden: Fn
    """The rnn's ``f_h`` (the engine picks it by a traced index); unused by the gated cells."""


EXACT = Nonlinear(sigmoid, lambda a: sigmoid(-a), tanh, tanh)
"""Exact at saturation: σ' = σ(a)σ(-a) and tanh' = 4σ(2a)σ(-2a) keep their relative precision,
and ``1 - z`` of a saturated ``z`` is σ(-a), not a difference that rounds to a multiple of eps."""
TEXTBOOK = Nonlinear(jax.nn.sigmoid, lambda a: 1 - jax.nn.sigmoid(a), jnp.tanh, jnp.tanh)
"""What a user of JAX writes."""

State = tuple[jax.Array, ...]
Step = Callable[
    [Mapping[str, jax.Array], State, jax.Array, jax.Array, tuple[jax.Array, jax.Array], Nonlinear],
    State,
]


def rnn(
    p: Mapping[str, jax.Array],
    state: State,
    x: jax.Array,
    recurrent: jax.Array,
    probes: tuple[jax.Array, jax.Array],
    fn: Nonlinear,
) -> State:
    """``h_t = f_h(x_t Vᵀ + h_{t-1} Wᵀ + b_h)``; V, W, b_h play W_ih, W_hh, b_ih (one bias).

    The probes are added to ``h_t`` itself, so both gradients are ∂L/∂h_t: the products'
    cotangents with ``f_h'`` taken as 1, the rounding magnitude's model since the rnn had one.
    """
    p_ih, p_hh = probes
    # Broadcasts are spelled out so that strict rank promotion can be on in tests.
    a = x @ p["V"].T + recurrent @ p["W"].T + p["b_h"][None, :]
    return (fn.hidden(a) + p_ih + p_hh,)


def _products(
    p: Mapping[str, jax.Array],
    x: jax.Array,
    recurrent: jax.Array,
    probes: tuple[jax.Array, jax.Array],
) -> tuple[jax.Array, jax.Array]:
    """``x W_ihᵀ + b_ih`` and ``h W_hhᵀ + b_hh`` (B, G·H), each with its probe."""
    p_ih, p_hh = probes
    ih = x @ p["W_ih"].T + p["b_ih"][None, :] + p_ih
    hh = recurrent @ p["W_hh"].T + p["b_hh"][None, :] + p_hh
    return ih, hh


def lstm(
    p: Mapping[str, jax.Array],
    state: State,
    x: jax.Array,
    recurrent: jax.Array,
    probes: tuple[jax.Array, jax.Array],
    fn: Nonlinear,
) -> State:
    """Gates i, f, g, o: ``[i f g o] = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh``;
    ``c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)``, ``h_t = σ(o) ⊙ tanh(c_t)``."""
    ih, hh = _products(p, x, recurrent, probes)
    i, f, g, o = jnp.split(ih + hh, 4, axis=-1)
    c = fn.sigmoid(f) * state[1] + fn.sigmoid(i) * fn.tanh(g)
    return fn.sigmoid(o) * fn.tanh(c), c


def gru(
    p: Mapping[str, jax.Array],
    state: State,
    x: jax.Array,
    recurrent: jax.Array,
    probes: tuple[jax.Array, jax.Array],
    fn: Nonlinear,
) -> State:
    """Gates r, z, n, reset after the product (PyTorch, cuDNN):
    ``r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr)``, z likewise,
    ``n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn))``, ``h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}``."""
    ih, hh = _products(p, x, recurrent, probes)
    i_r, i_z, i_n = jnp.split(ih, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(hh, 3, axis=-1)
    a_z = i_z + h_z
    n = fn.tanh(i_n + fn.sigmoid(i_r + h_r) * h_n)
    return (fn.complement(a_z) * n + fn.sigmoid(a_z) * state[0],)


def gru_reset_before(
    p: Mapping[str, jax.Array],
    state: State,
    x: jax.Array,
    recurrent: jax.Array,
    probes: tuple[jax.Array, jax.Array],
    fn: Nonlinear,
) -> State:
    """The GRU with the reset before the product (Cho et al. 2014, ONNX's default):
    ``n = tanh(x W_inᵀ + b_in + (r ⊙ h) W_hnᵀ + b_hn)``, otherwise as :func:`gru`.

    The hidden-side product of the n block reads ``r ⊙ h_{t-1}``, not ``h_{t-1}``.
    """
    p_ih, p_hh = probes
    H = recurrent.shape[-1]
    W_hh, b_hh = p["W_hh"], p["b_hh"]
    ih = x @ p["W_ih"].T + p["b_ih"][None, :] + p_ih
    rz = recurrent @ W_hh[: 2 * H].T + b_hh[None, : 2 * H] + p_hh[:, : 2 * H]
    i_r, i_z, i_n = jnp.split(ih, 3, axis=-1)
    h_r, h_z = jnp.split(rz, 2, axis=-1)
    a_z = i_z + h_z
    reset = fn.sigmoid(i_r + h_r) * recurrent
    h_n = reset @ W_hh[2 * H :].T + b_hh[None, 2 * H :] + p_hh[:, 2 * H :]
    n = fn.tanh(i_n + h_n)
    return (fn.complement(a_z) * n + fn.sigmoid(a_z) * state[0],)


STEPS: dict[str, Step] = {
    "rnn": rnn,
    "lstm": lstm,
    "gru": gru,
    "gru_reset_before": gru_reset_before,
}
"""The step of each cell, by the name the ``cell`` argument takes."""
