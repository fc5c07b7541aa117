"""The oracle of stacked and bidirectional networks: each cell's JAX step, composed anew.

The network is written here from PyTorch's semantics alone (:mod:`bptt_ref.stack`'s
docstring states them), in ``jax.numpy``, with autodiff for every derivative: layer k's
forward direction scans its step (:mod:`bptt_ref.oracle.cells`) over t = 0 … T−1, its
reverse direction over the reversed sequence, whose outputs are reversed back; the next
layer reads their concatenation and the shared head (:mod:`bptt_ref.oracle.heads`) the
top layer's. Nothing is shared with the NumPy network but the input checks.

Cases are padded to buckets as in :mod:`bptt_ref.oracle.engine` (its docstring shows the
padding exact), with two additions: a layer above the first reads ``dirs·H`` inputs, and
each direction's block of H columns is padded on its own, so that real unit j of either
direction keeps its column; and the reverse direction meets the padded time steps first,
where every state is held, so it starts its real steps from its initial state. The initial
states (L·dirs, B, H) are padded in B and H only.

The reference's noise is the textbook peer's, as for one cell; its rounding magnitudes R_k
are not computed for stacks (``Reference.rounding`` is ``None``, the strictest bound).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpy.typing import NDArray

from bptt_ref import stack
from bptt_ref._validate import check_names
from bptt_ref.cells import DATA
from bptt_ref.compare import Reference, assert_matches, judge_against, peer_gap
from bptt_ref.oracle import engine
from bptt_ref.oracle.activations import branch
from bptt_ref.oracle.cache import stored
from bptt_ref.oracle.cells import STEPS

_ROWS = "S"
"""The states' first axis (L·dirs) under a one-letter name the engine's padding reads."""


def _layout(config: stack.Stack) -> dict[str, tuple[str, ...]]:
    """Named dims of every parameter and ``xs``, the states' first axis as ``S``."""
    shapes = config.shapes()
    return {
        k: tuple(_ROWS if e == stack.STATE_ROWS else e for e in v)
        for k, v in shapes.items()
        if k != "targets"
    }


def _network(
    config: tuple[str, int, bool],
    arrays: Mapping[str, jax.Array],
    targets: jax.Array,
    masks: tuple[jax.Array, jax.Array, jax.Array],
    hidden_index: jax.Array | int,
    head_index: jax.Array | int,
    *,
    textbook: bool,
) -> jax.Array:
    """The total loss of the network ``config`` = (cell, L, bidirectional) on padded arrays."""
    cell, num_layers, bidirectional = config
    spec = stack.configure(cell, num_layers, bidirectional)
    fn, head_fns = engine.functions(hidden_index, textbook)
    step = STEPS[cell]
    time_valid, row_valid, out_valid = masks
    x = arrays["xs"]
    B = x.shape[1]
    for k in range(num_layers):
        outputs = []
        for d in range(spec.dirs):
            p = {w: arrays[spec.key(w, k, d)] for w in spec.weights}
            zero = jnp.zeros((B, p[spec.cell.roles[1]].shape[0]), dtype=x.dtype)

            def body(
                state: tuple[jax.Array, ...],
                inputs: tuple[jax.Array, jax.Array],
                p: Mapping[str, jax.Array] = p,
                zero: jax.Array = zero,
            ) -> tuple[tuple[jax.Array, ...], jax.Array]:
                x_t, live = inputs
                moved = step(p, state, x_t, state[0], (zero, zero), fn)
                new = tuple(jnp.where(live, a, b) for a, b in zip(moved, state, strict=True))
                return new, new[0]

            initial = tuple(arrays[s][k * spec.dirs + d] for s in spec.states)
            if d == 0:
                _, h = lax.scan(body, initial, (x, time_valid))
            else:
                _, h = lax.scan(body, initial, (x, time_valid), reverse=True)
            outputs.append(h)
        x = jnp.concatenate(outputs, axis=-1)
    z = x @ arrays["U"].T + arrays["b_y"][None, None, :]

    def head(z_t: jax.Array, y_t: jax.Array) -> jax.Array:
        per_row: jax.Array = lax.switch(
            head_index, head_fns, z_t, y_t, jnp.broadcast_to(out_valid, z_t.shape)
        )
        return per_row

    per_row = jax.vmap(head)(z, targets)
    return jnp.sum(jnp.where(time_valid[:, None] & row_valid[None, :], per_row, 0.0))


@cache
def _compiled(config: tuple[str, int, bool], judged: np.dtype[Any] | None) -> Callable[..., Any]:
    """The oracle's value and gradient (``judged=None``: float64, exact forms), or the
    textbook peer's in ``judged``."""
    name = "/".join(map(str, ("stack", *config)))
    if judged is None:
        return stored(
            f"{name}/oracle", jax.jit(jax.value_and_grad(partial(_network, config, textbook=False)))
        )

    def peer(arrays: dict[str, jax.Array], targets: jax.Array, *rest: Any) -> Any:
        cast = {k: v.astype(judged) for k, v in arrays.items()}
        total = partial(_network, config, textbook=True)
        return jax.value_and_grad(total)(cast, targets.astype(judged), *rest)

    return stored(f"{name}/peer/{judged}", jax.jit(peer))


def reference(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    cell: str = "rnn",
    num_layers: int = 1,
    bidirectional: bool = False,
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
    dtype: Any = None,
    noise: bool = True,
    kink: str = "jax",
) -> Reference:
    """The oracle's loss and gradients in float64 for the network of :mod:`bptt_ref.stack`.

    Arrays as for :func:`bptt_ref.stack.loss_and_grad`; ``dtype`` and ``noise`` as for
    :func:`bptt_ref.oracle.engine.reference` (and ``kink``), which serves L = 1 and
    ``bidirectional=False`` (the single cell, with its rounding magnitudes). The gradients
    are keyed by :func:`bptt_ref.stack.names` and ``xs``.
    """
    config = stack.configure(cell, num_layers, bidirectional)
    if config.single:
        return engine.reference(
            params,
            xs,
            targets,
            cell=config.cell.name,
            hidden=hidden,
            output=output,
            loss=loss,
            dtype=dtype,
            noise=noise,
            kink=kink,
        )
    check_names(hidden, output, loss, cell=config.cell)
    p, x, y = stack.check_inputs(config, params, xs, targets, loss)
    assert y is not None
    real = {**p, "xs": x}
    T, B, D = x.shape
    dims = {"T": T, "B": B, "D": D, "H": p["h0"].shape[-1], "O": y.shape[-1]}
    size = {**engine.bucket(dims), _ROWS: p["h0"].shape[0]}
    layout = _layout(config)
    args = (
        {k: engine._padded(v, layout[k], size) for k, v in real.items()},
        engine._padded(y, DATA["targets"], size),
        tuple(np.arange(size[d]) < dims[d] for d in "TBO"),
        engine._HIDDEN_INDEX[branch(hidden, kink)],
        engine._HEAD_INDEX[(output, loss)],
    )
    judged = np.dtype(x.dtype if dtype is None else dtype)
    key = (config.cell.name, config.num_layers, config.bidirectional)

    def unpadded(grads: Mapping[str, jax.Array]) -> dict[str, NDArray[np.float64]]:
        return {k: engine._unpadded(g, layout[k], real[k].shape) for k, g in grads.items()}

    with jax.enable_x64(True):
        value, grads = _compiled(key, None)(*args)
        oracle = unpadded(grads)
        peer = unpadded(_compiled(key, judged)(*args)[1]) if noise else None
    return Reference(
        loss=float(value),
        grads=oracle,
        noise=None if peer is None else {k: peer_gap(peer[k], g) for k, g in oracle.items()},
        input_scale={k: float(np.max(np.abs(v), initial=0.0)) for k, v in real.items()},
        dtype=judged,
        rounding=None,
        steps=T,
    )


def judge(
    actual: Mapping[str, Any],
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    keys: Iterable[str] | None = None,
    **config: Any,
) -> tuple[Reference, list[Any]]:
    """Judge gradients ``actual`` against :func:`reference` (``config``: its keywords but
    ``noise``); the peer's noise is computed only when a key fails without it."""
    return judge_against(
        actual, lambda noise: reference(params, xs, targets, noise=noise, **config), keys=keys
    )


def assert_matches_oracle(
    actual: Mapping[str, Any],
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    context: str,
    **config: Any,
) -> Reference:
    """:func:`judge`, raising ``AssertionError`` naming every failing key."""
    __tracebackhide__ = True
    return assert_matches(
        actual,
        lambda noise: reference(params, xs, targets, noise=noise, **config),
        context=context,
    )


def loss_and_grad(
    params: Mapping[str, Any], xs: Any, targets: Any, **config: Any
) -> tuple[float, dict[str, NDArray[np.float64]]]:
    """The oracle's ``(L, grads)`` in float64, for the arguments of
    :func:`bptt_ref.stack.loss_and_grad`."""
    ref = reference(params, xs, targets, noise=False, **config)
    return ref.loss, ref.grads
