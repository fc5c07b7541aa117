"""The shared engine: checks, padding to buckets, one compilation per bucket and cell, the
plain-loss reference and its judge.

Speed comes from compiling once per *bucket* and cell: each dim is padded up to a bucket
size (:func:`bucket`), and the rnn's ``f_h``, the output and the loss are picked by traced
indices with ``lax.switch``, so every case of one cell in one bucket reuses one compiled
function (the cell itself is static). A process that judges one configuration (``bptt-ref
check``) compiles a program for it alone instead (``specialize``, :func:`picked`), which
compiles several times faster. The padding is exact:

- padded inputs, weights and biases are zero; gate-stacked arrays (G·H, ·) are padded per
  gate block (reshaped to (G, H, ·), padded, reshaped back), so gate k of real unit j stays
  row k·H + j of its block and never meets a padded row;
- a padded hidden unit has every pre-activation 0 and stays exactly 0: rnn ``f_h(0) = 0``
  for every ``f_h`` but sigmoid and softplus, whose padded units read zero weights and feed
  only zero columns of ``W`` and ``U``; LSTM ``i = f = o = σ(0) = ½``, ``g = tanh(0) = 0``,
  so ``c_t = ½ c_{t-1} = 0`` from ``c0 = 0`` and ``h_t = ½ tanh(0) = 0``; GRU ``n = tanh(0 +
  r ⊙ 0) = 0`` and ``h_t = ½·0 + ½ h_{t-1} = 0``. The columns of ``W_hh`` and ``U`` that
  read it are zero, so it never reaches a real unit or the loss either way;
- padded outputs are masked out of the softmax and the loss; padded batch rows and time
  steps are masked out of the loss, and on padded time steps every state is carried
  unchanged, so nothing after step T-1 can feed back.

The oracle runs in float64 inside ``jax.enable_x64`` so a caller's global JAX settings stay
untouched. The rounding magnitudes R_k of the tolerance model are computed here for every
cell from the oracle's own cotangents (:func:`_rounding_scales`; what they mean:
:mod:`bptt_ref.compare`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import cache, partial
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpy.typing import NDArray

from bptt_ref._validate import check_inputs
from bptt_ref.cells import CELLS, DATA, HEAD_PARAMS
from bptt_ref.compare import KeyComparison, Reference, assert_matches, judge_against, peer_gap
from bptt_ref.config import Config, Model, model_of
from bptt_ref.oracle.activations import HIDDEN, KINKED, TEXTBOOK_HIDDEN, branch
from bptt_ref.oracle.cache import stored
from bptt_ref.oracle.cells import EXACT, STEPS, TEXTBOOK, Nonlinear
from bptt_ref.oracle.heads import HEADS, TEXTBOOK_HEADS

if TYPE_CHECKING:
    from typing_extensions import Unpack

Dims = tuple[str, ...]


_HIDDEN_INDEX = {name: i for i, name in enumerate({**HIDDEN, **KINKED})}
_HEAD_INDEX = {pair: i for i, pair in enumerate(HEADS)}
UNROLL = 1
_FLOORS = {"T": 16, "B": 4, "D": 4, "H": 8, "O": 4}


def bucket(dims: Mapping[str, int]) -> dict[str, int]:
    """The padded size of each dim: the next power of two, at least the dim's floor.

    The floors (T 16, B 4, D 4, H 8, O 4) put every small case in one bucket, so one
    compilation serves a whole property-test run.
    """
    return {d: max(_FLOORS[d], 1 << max(n - 1, 0).bit_length()) for d, n in dims.items()}


def _layout(cell: str) -> dict[str, Dims]:
    """Named dims of every array of a case of ``cell``: its parameters, the head, xs."""
    return {**CELLS[cell].params, **HEAD_PARAMS, "xs": DATA["xs"]}


def _split(name: str) -> tuple[int, str]:
    """A named dim as (blocks, dim): "4H" → (4, "H"), "H" → (1, "H")."""
    return (int(name[:-1]), name[-1]) if len(name) > 1 else (1, name)


def _blocks(names: Dims, shape: Iterable[int]) -> list[int]:
    """``shape`` with each gate-stacked axis split into (gates, H)."""
    return [m for (k, _), n in zip(map(_split, names), shape, strict=True) for m in (k, n // k)]


def _padded(arr: NDArray[np.floating], names: Dims, size: Mapping[str, int]) -> NDArray[np.float64]:
    """``arr`` (shape ``names``) zero-padded to ``size``, each gate block on its own."""
    blocked: NDArray[np.floating] = arr.reshape(_blocks(names, arr.shape))
    padded = [k * size[d] for k, d in map(_split, names)]
    out = np.zeros(_blocks(names, padded), dtype=np.float64)
    out[tuple(slice(0, n) for n in blocked.shape)] = blocked
    return out.reshape(padded)


def _unpadded(arr: Any, names: Dims, shape: tuple[int, ...]) -> NDArray[np.float64]:
    """The real part (``shape``) of a padded array, as float64: :func:`_padded` undone."""
    full = np.asarray(arr, dtype=np.float64)
    window = tuple(slice(0, n) for n in _blocks(names, shape))
    return full.reshape(_blocks(names, full.shape))[window].reshape(shape)


def _padded_case(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    model: Model,
    pad_to: Mapping[str, int] | None = None,
    kink: str = "jax",
) -> tuple[dict[str, NDArray[np.floating]], dict[str, int], tuple[Any, ...]]:
    """Check a case and pad it to its bucket: ``(real arrays, dims, oracle arguments)``.

    The arguments are those of :func:`step_losses`: padded float64 ``arrays`` and
    ``targets``, the (T, B, O) validity masks, and the hidden and head indices. A dim
    named in ``pad_to`` is padded to at least that size (see :func:`reference`); ``kink``
    picks the hidden index of ``f_h`` under that convention.
    """
    spec, hidden, output, loss = model
    cell = spec.name
    p, x, y = check_inputs(params, xs, targets, loss=loss, cell=spec)
    assert y is not None
    real = {**p, "xs": x}
    T, B, D = x.shape
    dims = {"T": T, "B": B, "D": D, "H": p["h0"].shape[-1], "O": y.shape[-1]}
    size = {d: max(n, (pad_to or {}).get(d, 0)) for d, n in bucket(dims).items()}
    layout = _layout(cell)
    args = (
        {k: _padded(v, layout[k], size) for k, v in real.items()},
        _padded(y, DATA["targets"], size),
        tuple(np.arange(size[d]) < dims[d] for d in "TBO"),
        _HIDDEN_INDEX[branch(hidden, kink)],
        _HEAD_INDEX[(output, loss)],
    )
    return real, dims, args


def functions(
    hidden_index: jax.Array | int, textbook: bool
) -> tuple[Nonlinear, list[Callable[..., jax.Array]]]:
    """The nonlinearities of a step, the rnn's ``f_h`` picked by ``hidden_index``, and the
    heads in ``HEADS`` order: exact, or the textbook peer's (``textbook=True``). The indices
    past ``HIDDEN``'s pick ``KINKED``: a kinked ``f_h`` under the other convention at its
    kink, so that every convention shares the shared program's compilation."""
    hidden_fns = [*(TEXTBOOK_HIDDEN if textbook else HIDDEN).values(), *KINKED.values()]
    fn = (TEXTBOOK if textbook else EXACT)._replace(
        hidden=lambda a: picked(hidden_index, hidden_fns, a)
    )
    return fn, list((TEXTBOOK_HEADS if textbook else HEADS).values())


def picked(index: jax.Array | int, branches: list[Callable[..., jax.Array]], *operands: Any) -> Any:
    """``branches[index](*operands)``: a traced index compiles every branch behind
    ``lax.switch``, one program for every configuration; a Python int picks its branch
    while tracing, a program for one configuration that compiles several times faster."""
    if isinstance(index, int):
        return branches[index](*operands)
    return lax.switch(index, branches, *operands)


def _scan(
    cell: str,
    arrays: Mapping[str, jax.Array],
    targets: jax.Array,
    masks: tuple[jax.Array, jax.Array, jax.Array],
    hidden_index: jax.Array | int,
    head_index: jax.Array | int,
    *,
    textbook: bool = False,
    probes: tuple[jax.Array, jax.Array, jax.Array] | None = None,
    cut_h0: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """:func:`step_losses` and the hidden states h_t (T, B, H) it runs through.

    ``probes`` (T, B, G·H), (T, B, G·H), (T, B, O), zero where given, go to each step's
    input-side and hidden-side products (:mod:`bptt_ref.oracle.cells`) and to z_t: their
    gradients are those products' cotangents and ``∂L/∂z_t``. ``cut_h0`` stops the
    gradient of ``h0`` through step 0's hidden-side product, leaving its other paths.
    """
    fn, head_fns = functions(hidden_index, textbook)
    step, info = STEPS[cell], CELLS[cell]
    time_valid, row_valid, out_valid = masks
    T, B, _ = arrays["xs"].shape
    dtype = arrays["h0"].dtype
    width = arrays[info.roles[1]].shape[0]
    probe_ih, probe_hh, probe_z = probes or (
        jnp.zeros((T, B, width), dtype=dtype),
        jnp.zeros((T, B, width), dtype=dtype),
        jnp.zeros((T, B, targets.shape[-1]), dtype=dtype),
    )

    def body(
        state: tuple[jax.Array, ...], inputs: tuple[jax.Array, ...]
    ) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, jax.Array]]:
        x, y, live, p_ih, p_hh, pz, first = inputs
        h = state[0]
        recurrent = jnp.where(first, lax.stop_gradient(h), h) if cut_h0 else h
        moved = step(arrays, state, x, recurrent, (p_ih, p_hh), fn)
        new = tuple(jnp.where(live, a, b) for a, b in zip(moved, state, strict=True))
        z = new[0] @ arrays["U"].T + arrays["b_y"][None, :] + pz
        per_row = picked(head_index, head_fns, z, y, jnp.broadcast_to(out_valid, z.shape))
        return new, (jnp.sum(jnp.where(live & row_valid, per_row, 0.0)), new[0])

    inputs = (arrays["xs"], targets, time_valid, probe_ih, probe_hh, probe_z, jnp.arange(T) == 0)
    initial = tuple(arrays[k] for k in info.states)
    _, (losses, states) = lax.scan(body, initial, inputs, unroll=UNROLL)
    return losses, states


def step_losses(
    arrays: Mapping[str, jax.Array],
    targets: jax.Array,
    masks: tuple[jax.Array, jax.Array, jax.Array],
    hidden_index: jax.Array | int,
    head_index: jax.Array | int,
    *,
    textbook: bool = False,
    cell: str = "rnn",
) -> jax.Array:
    """Per-step losses ``L_t = Σ_b loss(ŷ_{t,b}, y_{t,b})``, shape (T,).

    ``arrays`` holds the cell's parameters (rnn: ``V, W, b_h, h0``), the head's ``U, b_y``
    and ``xs`` (T, B, D); ``targets`` is (T, B, O); ``masks`` are the valid time steps (T,),
    batch rows (B,) and outputs (O,); the indices pick the rnn's ``f_h`` from ``HIDDEN`` and
    the head from ``HEADS`` (in their order). With all-true masks this is the plain loss of
    the README, written with ``lax.scan``; ``textbook=True`` uses the textbook peer's
    functions (``TEXTBOOK_HIDDEN``, ``TEXTBOOK_HEADS``, ``jax.nn.sigmoid``, ``jnp.tanh``).
    """
    return _scan(cell, arrays, targets, masks, hidden_index, head_index, textbook=textbook)[0]


Fixed = tuple[int, int] | None
"""The hidden and head indices a program is compiled for, or ``None``: every configuration,
picked by the indices it is called with (see :func:`picked`)."""


def _total_loss(
    arrays: Mapping[str, jax.Array],
    targets: jax.Array,
    masks: tuple[jax.Array, jax.Array, jax.Array],
    hidden_index: jax.Array | int,
    head_index: jax.Array | int,
    *,
    cell: str,
    fixed: Fixed = None,
    textbook: bool = False,
) -> jax.Array:
    indices = (hidden_index, head_index) if fixed is None else fixed
    return jnp.sum(step_losses(arrays, targets, masks, *indices, textbook=textbook, cell=cell))


def _named(cell: str, fixed: Fixed, what: str) -> str:
    return f"{cell}/{'all' if fixed is None else '{}-{}'.format(*fixed)}/{what}"


@cache
def _compiled(cell: str, judged: np.dtype[Any] | None, fixed: Fixed = None) -> Callable[..., Any]:
    """The oracle (``judged=None``: float64, exact forms) or its textbook peer in ``judged``,
    for the configuration ``fixed`` or for every one."""
    total = partial(_total_loss, cell=cell, fixed=fixed)
    if judged is None:
        return stored(_named(cell, fixed, "oracle"), jax.jit(jax.value_and_grad(total)))

    def peer(arrays: dict[str, jax.Array], targets: jax.Array, *rest: Any) -> Any:
        cast = {k: v.astype(judged) for k, v in arrays.items()}
        return jax.value_and_grad(partial(total, textbook=True))(
            cast, targets.astype(judged), *rest
        )

    return stored(_named(cell, fixed, f"peer/{judged}"), jax.jit(peer))


@cache
def _cotangents(cell: str, fixed: Fixed = None) -> Callable[..., Any]:
    """The oracle's h_t (T, B, H); the cotangents ``c_ih``, ``c_hh`` (T, B, G·H) of each step's
    two products and ``∂L/∂z_t`` (T, B, O); and the gradient of every initial state through
    its paths that bypass step 0's hidden-side product (all padded)."""

    def cotangents(
        arrays: dict[str, jax.Array], targets: jax.Array, masks: Any, *indices: Any
    ) -> Any:
        T, B, _ = arrays["xs"].shape
        width = arrays[CELLS[cell].roles[1]].shape[0]
        zeros = (
            jnp.zeros((T, B, width)),
            jnp.zeros((T, B, width)),
            jnp.zeros((T, B, targets.shape[-1])),
        )
        initial = {k: arrays[k] for k in CELLS[cell].states}

        def total(probes: Any, states: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
            losses, hs = _scan(
                cell,
                {**arrays, **states},
                targets,
                masks,
                *(indices if fixed is None else fixed),
                probes=probes,
                cut_h0=True,
            )
            return jnp.sum(losses), hs

        (probes, direct), hs = jax.grad(total, argnums=(0, 1), has_aux=True)(zeros, initial)
        return hs, probes, direct

    return stored(_named(cell, fixed, "cotangents"), jax.jit(cotangents))


def _rounding_scales(
    cell: str, real: Mapping[str, NDArray[np.floating]], cotangents: Any
) -> dict[str, float]:
    """Per key, the largest entry of the gradient's *magnitude* R_k (see :mod:`bptt_ref.compare`).

    With ``c_ih``, ``c_hh`` the cotangents of each step's two products (T·B rows of G·H),
    ``g = ∂L/∂z_t`` and the oracle's own states: ``U``: ``Σ_t |g_t|ᵀ|h_t|``; ``b_y``:
    ``Σ|g|``; ``W_ih``: ``Σ_t |c_ih,t|ᵀ|x_t|``; ``W_hh``: ``Σ_t |c_hh,t|ᵀ|h_{t-1}|``;
    ``b_ih``, ``b_hh``: ``Σ|c_ih|``, ``Σ|c_hh|``; ``xs``: ``|c_ih,t| |W_ih|``; ``h0``:
    ``|c_hh,0| |W_hh|`` plus ``|∂L/∂h0|`` along the paths that bypass that product (the
    GRU's ``z ⊙ h0``); ``c0``: ``|∂L/∂c0|``. ``cotangents`` is :func:`_cotangents`'s result.
    """
    T, B, D = real["xs"].shape
    H, O = real["h0"].shape[1], real["U"].shape[0]
    W_ih, W_hh, b_ih, b_hh = CELLS[cell].roles
    gates = f"{real[W_hh].shape[0] // H}H"
    states, (c_ih, c_hh, dz), direct = cotangents
    h = np.abs(_unpadded(states, ("T", "B", "H"), (T, B, H)))
    rows_ih, rows_hh = (
        np.abs(_unpadded(c, ("T", "B", gates), (T, B, real[W_hh].shape[0]))).reshape(T * B, -1)
        for c in (c_ih, c_hh)
    )
    rows_g = np.abs(_unpadded(dz, ("T", "B", "O"), (T, B, O))).reshape(T * B, O)
    # [:T]: with T = 0 there is no step, and h0 is no step's input.
    prev = np.concatenate([np.abs(real["h0"])[None], h[:-1]])[:T].reshape(T * B, H)
    around = {k: np.abs(_unpadded(direct[k], ("B", "H"), (B, H))) for k in CELLS[cell].states}
    magnitudes = {
        "U": rows_g.T @ h.reshape(T * B, H),
        W_ih: rows_ih.T @ np.abs(real["xs"]).reshape(T * B, D),
        W_hh: rows_hh.T @ prev,
        b_ih: rows_ih.sum(axis=0),
        "b_y": rows_g.sum(axis=0),
        "h0": rows_hh[:B] @ np.abs(real[W_hh]) + around["h0"] if T > 0 else np.zeros(0),
        "xs": rows_ih @ np.abs(real[W_ih]),
        **{k: v for k, v in around.items() if k != "h0"},
    }
    if b_hh is not None:
        magnitudes[b_hh] = rows_hh.sum(axis=0)
    return {k: float(np.max(m, initial=0.0)) for k, m in magnitudes.items()}


def _assembled(
    cell: str,
    real: Mapping[str, NDArray[np.floating]],
    dims: Mapping[str, int],
    args: tuple[Any, ...],
    loss: float,
    oracle: dict[str, NDArray[np.float64]],
    peer: Mapping[str, NDArray[np.float64]] | None,
    judged: np.dtype[Any],
    fixed: Fixed = None,
) -> Reference:
    """The :class:`Reference` for the oracle's gradients; with a peer, its noise and the
    magnitudes R_k of the plain model (``args`` as for :func:`step_losses`, ``fixed`` as
    for :func:`_compiled`). Runs in x64."""
    return Reference(
        loss=loss,
        grads=oracle,
        noise=None if peer is None else {k: peer_gap(peer[k], g) for k, g in oracle.items()},
        input_scale={k: float(np.max(np.abs(v), initial=0.0)) for k, v in real.items()},
        dtype=judged,
        rounding=None
        if peer is None
        else _rounding_scales(cell, real, _cotangents(cell, fixed)(*args)),
        steps=dims["T"],
    )


def reference(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    dtype: Any = None,
    noise: bool = True,
    pad_to: Mapping[str, int] | None = None,
    specialize: bool = False,
    kink: str = "jax",
    **config: Unpack[Config],
) -> Reference:
    """The oracle's loss and gradients in float64, and the rounding noise of a peer.

    Shapes: the cell's parameters (rnn: ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,),
    ``h0`` (B, H); lstm: ``W_ih`` (4H, D), ``W_hh`` (4H, H), ``b_ih``, ``b_hh`` (4H,),
    ``h0``, ``c0`` (B, H); gru and gru_reset_before: the same with 3H and no ``c0``), the
    head's ``U`` (O, H) and ``b_y`` (O,), ``xs`` (T, B, D), ``targets`` (T, B, O); float32
    inputs are converted to float64 exactly. ``config`` is the model's ``cell``,
    ``hidden``, ``output`` and ``loss`` (:class:`bptt_ref.Config`; ``hidden`` is the rnn's
    ``f_h``, the gated cells' nonlinearities are fixed). The noise of key k is
    ``max |g_peer - g_oracle|`` where the peer is the same loss written with ``jax.nn``'s
    textbook functions and differentiated in ``dtype`` (the dtype of the result to be
    judged; default the inputs'): how far a correct implementation in that dtype strays on
    this very case. ``noise=False`` skips the peer and leaves ``Reference.noise`` as ``None``.
    ``pad_to`` (dim name -> size) pads those dims to at least that size instead of their
    bucket: the result is the same (the padding is exact), and cases of many sizes that
    share one ``pad_to`` share one compilation. ``specialize=True`` compiles the oracle for
    this configuration alone, which compiles several times faster than the default, one
    program for every ``hidden``, ``output`` and ``loss`` of the cell (the one to use when
    a process judges many configurations); the results are the same. ``kink`` (a key of
    :data:`bptt_ref.kinks.CONVENTIONS`) sets the derivative of a kinked ``f_h`` at an exact
    ``a = 0``, the oracle's and the peer's alike; by default ``jax.nn``'s.
    """
    model = model_of(config)
    cell = model.cell.name
    real, dims, args = _padded_case(params, xs, targets, model, pad_to, kink)
    judged = np.dtype(real["xs"].dtype if dtype is None else dtype)
    layout = _layout(cell)

    def unpadded(grads: Mapping[str, jax.Array]) -> dict[str, NDArray[np.float64]]:
        return {k: _unpadded(g, layout[k], real[k].shape) for k, g in grads.items()}

    with jax.enable_x64(True):
        fixed = (args[3], args[4]) if specialize else None
        value, grads = _compiled(cell, None, fixed)(*args)
        peer = unpadded(_compiled(cell, judged, fixed)(*args)[1]) if noise else None
        return _assembled(
            cell, real, dims, args, float(value), unpadded(grads), peer, judged, fixed
        )


def judge(
    actual: Mapping[str, Any],
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    dtype: Any = None,
    keys: Iterable[str] | None = None,
    pad_to: Mapping[str, int] | None = None,
    specialize: bool = False,
    kink: str = "jax",
    **config: Unpack[Config],
) -> tuple[Reference, list[KeyComparison]]:
    """Judge gradients ``actual`` of this case against the oracle (see :mod:`bptt_ref.compare`).

    The peer's noise only ever widens a bound, so it is computed only when a key fails
    without it: the verdicts are those of ``compare_gradients(actual, reference(...))``
    at half the cost for the cases that pass. ``pad_to``, ``specialize`` and ``kink`` as
    for :func:`reference`.
    """
    model_of(config)
    return judge_against(
        actual,
        lambda noise: reference(
            params,
            xs,
            targets,
            dtype=dtype,
            noise=noise,
            pad_to=pad_to,
            specialize=specialize,
            kink=kink,
            **config,
        ),
        keys=keys,
    )


def assert_matches_oracle(
    actual: Mapping[str, Any],
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    context: str,
    dtype: Any = None,
    keys: Iterable[str] | None = None,
    **config: Unpack[Config],
) -> Reference:
    """:func:`judge`, raising ``AssertionError`` naming every failing key; returns the reference."""
    __tracebackhide__ = True
    model_of(config)
    return assert_matches(
        actual,
        lambda noise: reference(params, xs, targets, dtype=dtype, noise=noise, **config),
        context=context,
        keys=keys,
    )


def loss_and_grad(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    pad_to: Mapping[str, int] | None = None,
    specialize: bool = False,
    **config: Unpack[Config],
) -> tuple[float, dict[str, NDArray[np.float64]]]:
    """The oracle's ``(L, grads)`` in float64, for the arguments of ``bptt_ref.loss_and_grad``
    (``pad_to`` and ``specialize`` as for :func:`reference`)."""
    ref = reference(
        params, xs, targets, noise=False, pad_to=pad_to, specialize=specialize, **config
    )
    return ref.loss, ref.grads
