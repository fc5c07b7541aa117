"""Variants of the loss for the oracle: per term, per lag, truncated, masked.

Each is the plain loss of :mod:`bptt_ref.oracle.engine` with one change made in
``lax.scan`` (a Jacobian instead of a gradient, ``lax.stop_gradient`` at the cuts, a
(T, B) mask), run on the engine's padding with the cell's own step
(:mod:`bptt_ref.oracle.cells`) and judged with the plain model's rounding magnitudes.
Truncation and masks serve every cell; the per-term and per-lag Jacobians are what the
vanilla rnn's note forms are checked against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache, partial
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpy.typing import NDArray

from bptt_ref.cells import CELLS
from bptt_ref.compare import Reference
from bptt_ref.config import Config, model_of
from bptt_ref.oracle.cache import stored
from bptt_ref.oracle.cells import STEPS
from bptt_ref.oracle.engine import (
    UNROLL,
    _assembled,
    _layout,
    _padded_case,
    _unpadded,
    bucket,
    functions,
    step_losses,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack


def cut_step_losses(
    cell: str,
    arrays: Mapping[str, jax.Array],
    targets: jax.Array,
    masks: tuple[jax.Array, jax.Array, jax.Array],
    hidden_index: jax.Array | int,
    head_index: jax.Array | int,
    *,
    keep: jax.Array | None = None,
    step_mask: jax.Array | None = None,
    freeze: bool = False,
    stepwise: bool = False,
    textbook: bool = False,
) -> jax.Array:
    """Per-step losses ``L_t`` (T,) with gradient cuts and a (T, B) mask: truncation, padding.

    Arguments as :func:`step_losses` (with ``cell`` first), plus:

    - ``keep`` (T, T) bool: loss term t is computed on its own copy of the state
      sequence, in which step i reads its input state (``h_{i-1}`` — and ``c_{i-1}`` for
      the LSTM — or the initial states for i = 0) through ``lax.stop_gradient`` wherever
      ``keep[t, i]`` is False. Every copy has the same values; only what ``L_t``
      differentiates differs. ``None``: one shared copy.
    - ``step_mask`` (T, B) bool: ``loss(ŷ_{t,b}, y_{t,b})`` counts only where True
      (``None``: everywhere).
    - ``freeze``: where ``step_mask`` is False, the state is held (``h_{t,b} = h_{t-1,b}``,
      likewise ``c``).
    - ``stepwise``: the weights and biases of the step's two products (the cell's
      ``roles``: ``V, W, b_h`` for the rnn) carry a leading (T,) axis and step i uses
      entry i: the gradient with respect to entry i is then the immediate contribution
      of step i alone (the lag decomposition).
    """
    fn, head_fns = functions(hidden_index, textbook)
    step, info = STEPS[cell], CELLS[cell]
    time_valid, row_valid, out_valid = masks
    xs = arrays["xs"]
    T, B = xs.shape[:2]
    copies = 1 if keep is None else T
    keep_by_step = jnp.ones((T, 1), dtype=bool) if keep is None else keep.T
    real = jnp.ones((T, B), dtype=bool) if step_mask is None else step_mask
    width = arrays[info.roles[1]].shape[-2]
    no_probe = jnp.zeros((B, width), dtype=xs.dtype)
    # Stepwise, the scan hands each step its own copies. Otherwise the weights are closed
    # over, as in step_losses, so that the float32 peer accumulates their gradient in the
    # same order (a tree sum over broadcast copies rounds less, and would understate noise).
    weights = tuple(k for k in info.roles if k is not None) if stepwise else ()

    def one_copy(
        state: tuple[jax.Array, ...],
        x: jax.Array,
        keep_i: jax.Array,
        moves: jax.Array,
        own: tuple[jax.Array, ...],
    ) -> tuple[jax.Array, ...]:
        held = tuple(jnp.where(keep_i, s, lax.stop_gradient(s)) for s in state)
        p = {**arrays, **dict(zip(weights, own, strict=True))}
        moved = step(p, held, x, held[0], (no_probe, no_probe), fn)
        return tuple(jnp.where(moves[:, None], m, h) for m, h in zip(moved, held, strict=True))

    copied = jax.vmap(one_copy, in_axes=(0, None, 0, None, None))

    def body(
        state: tuple[jax.Array, ...], inputs: tuple[jax.Array, ...]
    ) -> tuple[tuple[jax.Array, ...], jax.Array]:
        x, y, live, keep_i, real_i, i, *own = inputs
        moves = live & (real_i if freeze else jnp.ones_like(real_i))
        new = copied(state, x, keep_i, moves, tuple(own))
        h = new[0][0] if keep is None else new[0][i]
        z = h @ arrays["U"].T + arrays["b_y"][None, :]
        per_row = lax.switch(head_index, head_fns, z, y, jnp.broadcast_to(out_valid, z.shape))
        return new, jnp.sum(jnp.where(live & row_valid & real_i, per_row, 0.0))

    initial = tuple(
        jnp.broadcast_to(arrays[k][None, :, :], (copies, *arrays[k].shape)) for k in info.states
    )
    inputs = (
        xs,
        targets,
        time_valid,
        keep_by_step,
        real,
        jnp.arange(T),
        *(arrays[k] for k in weights),
    )
    _, losses = lax.scan(body, initial, inputs, unroll=UNROLL)
    return losses


@cache
def _compiled_variant(cell: str, judged: np.dtype[Any] | None, variant: str) -> Callable[..., Any]:
    """``(losses, grads)`` of a variant: the oracle (``judged=None``) or its textbook peer.

    ``per_term``: :func:`step_losses` and its ``jax.jacrev`` (grads (T, *θ.shape));
    ``lags``: the same for :func:`cut_step_losses` with ``stepwise`` weights;
    ``cut``, ``masked``, ``frozen``: :func:`cut_step_losses` with ``keep``, with a loss
    mask, with a freezing mask; their sum and its gradient.
    """

    def losses(
        arrays: Mapping[str, jax.Array],
        targets: jax.Array,
        masks: tuple[jax.Array, jax.Array, jax.Array],
        hidden_index: jax.Array,
        head_index: jax.Array,
        keep: jax.Array,
        step_mask: jax.Array,
        *,
        textbook: bool,
    ) -> jax.Array:
        base = (arrays, targets, masks, hidden_index, head_index)
        if variant == "per_term":
            return step_losses(*base, textbook=textbook, cell=cell)
        return cut_step_losses(
            cell,
            *base,
            keep=keep if variant == "cut" else None,
            step_mask=step_mask if variant in ("masked", "frozen") else None,
            freeze=variant == "frozen",
            stepwise=variant == "lags",
            textbook=textbook,
        )

    def differentiated(arrays: dict[str, jax.Array], *rest: Any, textbook: bool) -> Any:
        fn = partial(losses, textbook=textbook)
        if variant in ("per_term", "lags"):
            return fn(arrays, *rest), jax.jacrev(fn)(arrays, *rest)
        return jax.value_and_grad(lambda arr, *r: jnp.sum(fn(arr, *r)))(arrays, *rest)

    if judged is None:
        return stored(f"{cell}/{variant}/oracle", jax.jit(partial(differentiated, textbook=False)))

    def peer(arrays: dict[str, jax.Array], targets: jax.Array, *rest: Any) -> Any:
        cast = {k: v.astype(judged) for k, v in arrays.items()}
        return differentiated(cast, targets.astype(judged), *rest, textbook=True)

    return stored(f"{cell}/{variant}/peer/{judged}", jax.jit(peer))


def _variant_reference(
    variant: str,
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    keep: Callable[[int, int], jax.Array] | None = None,
    mask: Any = None,
    dtype: Any,
    noise: bool,
    config: Config,
) -> Reference:
    """:func:`reference` for a variant of the loss (see :func:`_compiled_variant`).

    ``keep(T_padded, T)`` builds the cut table; ``mask`` is a (T, B) bool array or None.
    """
    from bptt_ref.truncation import _check_mask

    model = model_of(config)
    cell = model.cell.name
    real, dims, args = _padded_case(params, xs, targets, model)
    if mask is not None:
        mask = _check_mask(mask, dims["T"], dims["B"])
    judged = np.dtype(real["xs"].dtype if dtype is None else dtype)
    size = bucket(dims)
    T_pad, B_pad = size["T"], size["B"]
    layout = _layout(cell)
    with jax.enable_x64(True):
        cuts = jnp.ones((1, 1), dtype=bool) if keep is None else keep(T_pad, dims["T"])
        step_mask = np.zeros((T_pad, B_pad), dtype=bool)
        step_mask[: dims["T"], : dims["B"]] = True if mask is None else mask
        arrays = dict(args[0])
        roles = tuple(k for k in CELLS[cell].roles if k is not None)
        stepwise = roles if variant == "lags" else ()
        for k in stepwise:
            arrays[k] = np.broadcast_to(arrays[k], (T_pad, *arrays[k].shape))
        full = (arrays, *args[1:], cuts, step_mask)

        def unpadded(grads: Mapping[str, jax.Array]) -> dict[str, NDArray[np.float64]]:
            out = {}
            for k, g in grads.items():
                # Per term, a leading axis of loss terms t; stepwise, one of steps k too.
                lead = ("T",) * ((variant in ("per_term", "lags")) + (k in stepwise))
                if variant != "lags" or k in stepwise:
                    shape = (*(dims["T"] for _ in lead), *real[k].shape)
                    out[k] = _unpadded(g, (*lead, *layout[k]), shape)
            return out

        value, grads = _compiled_variant(cell, None, variant)(*full)
        total = float(np.sum(np.asarray(value, dtype=np.float64)))
        peer = unpadded(_compiled_variant(cell, judged, variant)(*full)[1]) if noise else None
        # The untruncated model's magnitudes: every variant's sums run over a subset of
        # the same terms, so they bound its rounding too.
        return _assembled(cell, real, dims, args, total, unpadded(grads), peer, judged)


def per_term_reference(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    dtype: Any = None,
    noise: bool = True,
    **config: Unpack[Config],
) -> Reference:
    """The per-term gradients ``dL_t/dθ``: ``jax.jacrev`` of :func:`step_losses`.

    As :func:`reference`, but ``grads[θ]`` has shape (T, *θ.shape) (``xs``: (T, T, B, D)),
    entry t being the gradient of ``L_t`` alone, and ``loss`` is ``L = Σ_t L_t``.
    """
    return _variant_reference(
        "per_term", params, xs, targets, dtype=dtype, noise=noise, config=config
    )


def lag_reference(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    dtype: Any = None,
    noise: bool = True,
    **config: Unpack[Config],
) -> Reference:
    """Each step's own contribution to each loss term's gradient, for W, V and b_h.

    Step k is given its own copy of the weights (``stepwise`` in :func:`cut_step_losses`)
    and ``jax.jacrev`` of the per-step losses is taken with respect to every copy:
    ``grads["W"][t, k]`` (T, T, H, H) is the part of ``dL_t/dW`` that flows through step
    k's use of W (zero for k > t); ``V`` is (T, T, H, D), ``b_h`` (T, T, H). Otherwise as
    :func:`reference`.
    """
    return _variant_reference("lags", params, xs, targets, dtype=dtype, noise=noise, config=config)


def truncated_reference(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    window: int | None = None,
    chunks: tuple[int, int] | None = None,
    dtype: Any = None,
    noise: bool = True,
    **config: Unpack[Config],
) -> Reference:
    """The truncated gradient of ``L``, by ``lax.stop_gradient`` at the truncation's cuts.

    Exactly one of:

    - ``window=k``: loss term t differentiates steps at most k steps back: step i's input
      state ``h_{i-1}`` is live iff ``t - (i - 1) <= k``, and ``h0`` (step 0's input, a
      leaf) iff ``t <= k``.
    - ``chunks=(k1, k2)``: loss term t belongs to the chunk ending at
      ``e = min((t // k1 + 1)·k1, T) - 1`` and differentiates the last k2 steps up to e:
      ``h_{i-1}`` is live iff ``e - (i - 1) < k2``, ``h0`` iff ``e < k2``.

    Otherwise as :func:`reference` (the loss is the full ``L``).
    """
    from bptt_ref.truncation import _count

    if (window is None) == (chunks is None):
        raise ValueError("pass exactly one of window=k or chunks=(k1, k2)")
    if window is not None:
        k = _count("window", window, 0)

        def keep(size: int, T: int) -> jax.Array:
            t, i = jnp.arange(size)[:, None], jnp.arange(size)[None, :]
            return jnp.where(i == 0, t <= k, t - (i - 1) <= k)

    else:
        assert chunks is not None
        k1, k2 = _count("k1", chunks[0], 1), _count("k2", chunks[1], 1)
        if k2 < k1:
            raise ValueError(f"chunks = {chunks}; expected k2 >= k1")

        def keep(size: int, T: int) -> jax.Array:
            t, i = jnp.arange(size)[:, None], jnp.arange(size)[None, :]
            end = jnp.minimum((t // k1 + 1) * k1, T) - 1
            return jnp.where(i == 0, end < k2, end - (i - 1) < k2)

    return _variant_reference(
        "cut", params, xs, targets, keep=keep, dtype=dtype, noise=noise, config=config
    )


def masked_reference(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    mask: Any,
    *,
    mode: str = "loss",
    dtype: Any = None,
    noise: bool = True,
    **config: Unpack[Config],
) -> Reference:
    """The masked loss ``Σ_{t,b} m_{t,b} loss(ŷ_{t,b}, y_{t,b})`` and its gradient.

    ``mask`` (T, B) bool; ``mode="loss"`` masks the loss only, ``mode="freeze"`` also
    holds the state on masked steps (``h_{t,b} = h_{t-1,b}``), by ``jnp.where`` in the
    scan. Otherwise as :func:`reference`.
    """
    from bptt_ref.truncation import MASK_MODES

    if mode not in MASK_MODES:
        raise ValueError(f"unknown mask mode {mode!r}; expected one of {list(MASK_MODES)}")
    variant = "frozen" if mode == "freeze" else "masked"
    return _variant_reference(
        variant, params, xs, targets, mask=mask, dtype=dtype, noise=noise, config=config
    )
