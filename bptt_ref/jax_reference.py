"""The JAX oracle: the same loss written independently in ``jax.numpy``, differentiated by autodiff.

Nothing here is shared with the NumPy implementation but the input checks: the
nonlinearities are written in ``jax.numpy`` (``jax.nn``'s for the kinked ones), the
losses from their definitions (``log_softmax``, ``log_sigmoid``), and every
derivative comes from autodiff. It runs
in float64 inside ``jax.enable_x64`` so a caller's global JAX settings stay untouched.

Speed comes from compiling once per *bucket*: each dim is padded up to a bucket size
(``bucket``) and the activation, output and loss are picked by traced indices with
``lax.switch``, so every case in one bucket reuses one compiled function. The padding
is exact: padded inputs, weights and biases are zero, so padded hidden units and
inputs never reach a real unit; padded outputs are masked out of the softmax and the
loss; padded batch rows and time steps are masked out of the loss, and on padded time
steps the state is carried unchanged, so nothing after step T-1 can feed back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpy.typing import NDArray

from bptt_ref._validate import check_inputs, check_names
from bptt_ref.compare import KeyComparison, Reference, compare_gradients

__all__ = [
    "HEADS",
    "HIDDEN",
    "TEXTBOOK_HEADS",
    "TEXTBOOK_HIDDEN",
    "CompileClock",
    "assert_matches",
    "assert_matches_oracle",
    "bucket",
    "compile_clock",
    "cut_step_losses",
    "judge",
    "judge_against",
    "lag_reference",
    "loss_and_grad",
    "masked_reference",
    "per_term_reference",
    "reference",
    "step_losses",
    "time_split",
    "truncated_reference",
]


def _sigmoid(x: jax.Array) -> jax.Array:
    # jax.nn.sigmoid differentiates to σ(1 - σ), which rounds to 0 (or a multiple of
    # eps) once σ ≈ 1; through logaddexp the derivative is σ(x)·σ(-x), exact to eps.
    return jnp.exp(-jnp.logaddexp(-x, 0.0))


def _tanh(x: jax.Array) -> jax.Array:
    # jnp.tanh differentiates to (1 + t)(1 - t), which loses all precision as |t| → 1
    # (and expm1's rule, 1 + expm1(u), does the same); through σ it is 4 σ(2x) σ(-2x).
    # Near 0, where 2σ(2x) - 1 would cancel, jnp.tanh and its rule are both exact.
    return jnp.where(jnp.abs(x) < 0.5, jnp.tanh(x), 2 * _sigmoid(2 * x) - 1)


def _elu(x: jax.Array) -> jax.Array:
    # jax.nn.elu goes through expm1, whose derivative rule 1 + expm1(x) cancels for
    # x << 0; exp(x) - 1 differentiates to exp(x). The branch test x > 0 is
    # jax.nn.elu's, so the derivative at the kink (1, from the left) is the same.
    neg = jnp.where(x > 0, 0.0, x)
    return jnp.where(x > 0, x, jnp.exp(neg) - 1)


def _gelu(x: jax.Array) -> jax.Array:
    # The tanh approximation x/2 (1 + tanh(u)) equals x σ(2u); the σ form keeps
    # 1 + tanh(u) from cancelling for large negative x. Past |x| = 1e4, σ(2u) is exactly
    # 0 or 1 and x³ would overflow (to a NaN derivative), so x is held there inside u.
    held = jnp.clip(x, -1e4, 1e4)
    return x * _sigmoid(2 * math.sqrt(2 / math.pi) * (held + 0.044715 * held**3))


HIDDEN: dict[str, Callable[[jax.Array], jax.Array]] = {
    "identity": lambda a: a,
    "tanh": _tanh,
    "sigmoid": _sigmoid,
    "relu": jax.nn.relu,
    "leaky_relu": lambda a: jax.nn.leaky_relu(a, negative_slope=0.01),
    "elu": _elu,
    "softplus": jax.nn.softplus,
    "silu": lambda a: a * _sigmoid(a),
    "gelu": _gelu,
}
"""``f_h`` by name, as the oracle writes it. relu and leaky_relu are ``jax.nn``'s, whose
derivatives at the kink we promise (elu keeps jax.nn.elu's branch test); the smooth
saturating ones are written so that their autodiff derivative keeps full relative
precision where they saturate, and the oracle stays exact for vanishing gradients."""

TEXTBOOK_HIDDEN: dict[str, Callable[[jax.Array], jax.Array]] = {
    **HIDDEN,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "silu": jax.nn.silu,
    "gelu": lambda a: jax.nn.gelu(a, approximate=True),
}
"""``f_h`` as ``jax.nn`` writes it: the *peer* whose rounding error in the judged dtype
sets the noise term of the comparison (see :mod:`bptt_ref.compare`)."""

_Head = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
_Fn = Callable[[jax.Array], jax.Array]


@jax.custom_jvp
def _softmax_rule(z: jax.Array, weight: jax.Array) -> jax.Array:
    return jax.nn.softmax(z, where=weight > 0)


@_softmax_rule.defjvp
def _softmax_rule_jvp(primals: Any, tangents: Any) -> Any:
    # The textbook rule J dz = p ⊙ (dz - <dz, p>), rounded in its own way, unlike the
    # oracle's autodiff through exp and the division. The mask has no tangent.
    (z, weight), (dz, _) = primals, tangents
    p = _softmax_rule(z, weight)
    return p, p * (dz - jnp.sum(dz * p, axis=-1, keepdims=True))


def _exact_cross_entropy(z: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
    # -log p_i = softplus(logsumexp_{m≠i} z_m - z_i): autodiff gives -(1 - p_i) as
    # σ(·), never as p_i - 1, so a confident correct prediction keeps its tiny loss and
    # gradient. A large finite fill (not -inf) keeps the derivative finite in a row
    # with no other valid output, where the loss is 0.
    size = z.shape[-1]
    others = ~jnp.eye(size, dtype=bool)[None, :, :] & valid[:, None, :]
    rest = jax.nn.logsumexp(jnp.where(others, z[:, None, :], -1e300), axis=-1)
    return jnp.sum(jnp.where(valid, y * jax.nn.softplus(rest - z), 0.0), axis=-1)


def _log_softmax_cross_entropy(z: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
    return -jnp.sum(jnp.where(valid, y * jax.nn.log_softmax(z, where=valid), 0.0), axis=-1)


def _heads(
    tanh: _Fn,
    sigmoid: _Fn,
    softmax: Callable[[jax.Array, jax.Array], jax.Array],
    cross_entropy: _Head,
) -> dict[tuple[str, str], _Head]:
    def mse(f: Callable[[jax.Array, jax.Array], jax.Array]) -> _Head:
        def head(z: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
            return 0.5 * jnp.sum(jnp.where(valid, (f(z, valid) - y) ** 2, 0.0), axis=-1)

        return head

    def binary_cross_entropy(z: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
        nll = y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z)
        return -jnp.sum(jnp.where(valid, nll, 0.0), axis=-1)

    return {
        ("identity", "mse"): mse(lambda z, valid: z),
        ("tanh", "mse"): mse(lambda z, valid: tanh(z)),
        ("sigmoid", "mse"): mse(lambda z, valid: sigmoid(z)),
        ("softmax", "mse"): mse(softmax),
        ("softmax", "cross_entropy"): cross_entropy,
        ("sigmoid", "binary_cross_entropy"): binary_cross_entropy,
    }


HEADS = _heads(
    _tanh, _sigmoid, lambda z, valid: jax.nn.softmax(z, where=valid), _exact_cross_entropy
)
"""Per-row loss ``loss(f_y(z), y)`` summed over the valid outputs, by (output, loss)."""
TEXTBOOK_HEADS = _heads(
    jnp.tanh,
    jax.nn.sigmoid,
    lambda z, valid: _softmax_rule(z, valid.astype(z.dtype)),
    _log_softmax_cross_entropy,
)
"""The heads of the textbook peer."""

_HIDDEN_INDEX = {name: i for i, name in enumerate(HIDDEN)}
_HEAD_INDEX = {pair: i for i, pair in enumerate(HEADS)}
UNROLL = 1
_FLOORS = {"T": 16, "B": 4, "D": 4, "H": 8, "O": 4}


def bucket(dims: Mapping[str, int]) -> dict[str, int]:
    """The padded size of each dim: the next power of two, at least the dim's floor.

    The floors (T 16, B 4, D 4, H 8, O 4) put every small case in one bucket, so one
    compilation serves a whole property-test run.
    """
    return {d: max(_FLOORS[d], 1 << max(n - 1, 0).bit_length()) for d, n in dims.items()}


def _scan(
    arrays: Mapping[str, jax.Array],
    targets: jax.Array,
    masks: tuple[jax.Array, jax.Array, jax.Array],
    hidden_index: jax.Array | int,
    head_index: jax.Array | int,
    *,
    textbook: bool = False,
    probes: tuple[jax.Array, jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """:func:`step_losses` and the hidden states h_t (T, B, H) it runs through.

    ``probes`` (T, B, H) and (T, B, O), added to h_t and z_t, are zero where given:
    the gradient with respect to them is ``∂L/∂h_t`` and ``∂L/∂z_t``.
    """
    hidden_fns = list((TEXTBOOK_HIDDEN if textbook else HIDDEN).values())
    head_fns = list((TEXTBOOK_HEADS if textbook else HEADS).values())
    time_valid, row_valid, out_valid = masks
    T, B, _ = arrays["xs"].shape
    dtype = arrays["h0"].dtype
    probe_h, probe_z = probes or (
        jnp.zeros((T, B, arrays["h0"].shape[-1]), dtype=dtype),
        jnp.zeros((T, B, targets.shape[-1]), dtype=dtype),
    )

    def step(
        h: jax.Array, inputs: tuple[jax.Array, ...]
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        x, y, live, ph, pz = inputs
        # Broadcasts are spelled out so that strict rank promotion can be on in tests.
        a = x @ arrays["V"].T + h @ arrays["W"].T + arrays["b_h"][None, :]
        h_new = jnp.where(live, lax.switch(hidden_index, hidden_fns, a), h) + ph
        z = h_new @ arrays["U"].T + arrays["b_y"][None, :] + pz
        per_row = lax.switch(head_index, head_fns, z, y, jnp.broadcast_to(out_valid, z.shape))
        return h_new, (jnp.sum(jnp.where(live & row_valid, per_row, 0.0)), h_new)

    inputs = (arrays["xs"], targets, time_valid, probe_h, probe_z)
    _, (losses, states) = lax.scan(step, arrays["h0"], inputs, unroll=UNROLL)
    return losses, states


def step_losses(
    arrays: Mapping[str, jax.Array],
    targets: jax.Array,
    masks: tuple[jax.Array, jax.Array, jax.Array],
    hidden_index: jax.Array | int,
    head_index: jax.Array | int,
    *,
    textbook: bool = False,
) -> jax.Array:
    """Per-step losses ``L_t = Σ_b loss(ŷ_{t,b}, y_{t,b})``, shape (T,).

    ``arrays`` holds ``U, V, W, b_h, b_y, h0, xs``; ``targets`` is (T, B, O); ``masks``
    are the valid time steps (T,), batch rows (B,) and outputs (O,); the indices pick
    ``f_h`` from ``HIDDEN`` and the head from ``HEADS`` (in their order). With all-true
    masks this is the plain RNN loss of the README, written with ``lax.scan``;
    ``textbook=True`` uses ``TEXTBOOK_HIDDEN`` and ``TEXTBOOK_HEADS`` instead.
    """
    return _scan(arrays, targets, masks, hidden_index, head_index, textbook=textbook)[0]


@jax.jit
def _cotangents(
    arrays: dict[str, jax.Array], targets: jax.Array, *rest: Any
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The oracle's h_t, ``∂L/∂h_t`` and ``∂L/∂z_t``: (T, B, H), (T, B, H), (T, B, O)."""
    T, B, _ = arrays["xs"].shape
    zeros = (jnp.zeros((T, B, arrays["h0"].shape[-1])), jnp.zeros((T, B, targets.shape[-1])))

    def total(probes: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        losses, states = _scan(arrays, targets, *rest, probes=probes)
        return jnp.sum(losses), states

    (dh, dz), states = jax.grad(total, has_aux=True)(zeros)
    return states, dh, dz


def _rounding_scales(
    real: Mapping[str, NDArray[np.floating]], cotangents: tuple[jax.Array, ...]
) -> dict[str, float]:
    """Per key, the largest entry of the gradient's *magnitude*: the same sums with
    every factor replaced by its absolute value and ``f_h'`` by 1 (see compare.py)."""
    T, B, D = real["xs"].shape
    H, O = real["W"].shape[0], real["U"].shape[0]
    h, c, g = (np.abs(np.asarray(a, dtype=np.float64)[:T, :B]) for a in cotangents)
    h, c, g = h[..., :H], c[..., :H], g[..., :O]
    prev = np.concatenate([np.abs(real["h0"])[None], h[:-1]]).reshape(T * B, H)
    rows_c, rows_g = c.reshape(T * B, H), g.reshape(T * B, O)
    magnitudes = {
        "U": rows_g.T @ h.reshape(T * B, H),
        "V": rows_c.T @ np.abs(real["xs"]).reshape(T * B, D),
        "W": rows_c.T @ prev,
        "b_h": rows_c.sum(axis=0),
        "b_y": rows_g.sum(axis=0),
        "h0": c[0] @ np.abs(real["W"]) if T > 0 else np.zeros(0),
        "xs": rows_c @ np.abs(real["V"]),
    }
    return {k: float(np.max(m, initial=0.0)) for k, m in magnitudes.items()}


def _total_loss(arrays: Mapping[str, jax.Array], *rest: Any, textbook: bool = False) -> jax.Array:
    return jnp.sum(step_losses(arrays, *rest, textbook=textbook))


@cache
def _compiled(judged: np.dtype[Any] | None) -> Callable[..., Any]:
    """The oracle (``judged=None``: float64, exact forms) or its textbook peer in ``judged``."""
    if judged is None:
        return jax.jit(jax.value_and_grad(_total_loss))

    def peer(arrays: dict[str, jax.Array], targets: jax.Array, *rest: Any) -> Any:
        cast = {k: v.astype(judged) for k, v in arrays.items()}
        return jax.value_and_grad(partial(_total_loss, textbook=True))(
            cast, targets.astype(judged), *rest
        )

    return jax.jit(peer)


_LAYOUT = {"U": "OH", "V": "HD", "W": "HH", "b_h": "H", "b_y": "O", "h0": "BH", "xs": "TBD"}


def _padded(arr: NDArray[np.floating], shape: tuple[int, ...]) -> NDArray[np.float64]:
    out = np.zeros(shape, dtype=np.float64)
    out[tuple(slice(0, n) for n in arr.shape)] = arr
    return out


def _padded_case(
    params: Mapping[str, Any], xs: Any, targets: Any, *, hidden: str, output: str, loss: str
) -> tuple[dict[str, NDArray[np.floating]], dict[str, int], tuple[Any, ...]]:
    """Check a case and pad it to its bucket: ``(real arrays, dims, oracle arguments)``.

    The arguments are those of :func:`step_losses`: padded float64 ``arrays`` and
    ``targets``, the (T, B, O) validity masks, and the hidden and head indices.
    """
    check_names(hidden, output, loss)
    p, x, y = check_inputs(params, xs, targets, loss=loss)
    assert y is not None
    real = {**p, "xs": x}
    T, B, D = x.shape
    dims = {"T": T, "B": B, "D": D, "H": p["W"].shape[0], "O": y.shape[-1]}
    size = bucket(dims)
    args = (
        {k: _padded(v, tuple(size[d] for d in _LAYOUT[k])) for k, v in real.items()},
        _padded(y, (size["T"], size["B"], size["O"])),
        tuple(np.arange(size[d]) < dims[d] for d in "TBO"),
        _HIDDEN_INDEX[hidden],
        _HEAD_INDEX[(output, loss)],
    )
    return real, dims, args


def _gap(peer: NDArray[np.float64], oracle: NDArray[np.float64]) -> float:
    # Where the textbook peer overflows in the judged dtype (and the oracle does not),
    # it says nothing about rounding: such entries add no noise, the strict choice.
    gap = np.abs(peer - oracle)
    return float(np.max(gap[np.isfinite(gap)], initial=0.0))


def _assembled(
    real: Mapping[str, NDArray[np.floating]],
    dims: Mapping[str, int],
    args: tuple[Any, ...],
    loss: float,
    oracle: dict[str, NDArray[np.float64]],
    peer: Mapping[str, NDArray[np.float64]] | None,
    judged: np.dtype[Any],
) -> Reference:
    """The :class:`Reference` for the oracle's gradients; with a peer, its noise and the
    magnitudes R_k of the plain model (``args`` as for :func:`step_losses`). Runs in x64."""
    return Reference(
        loss=loss,
        grads=oracle,
        noise=None if peer is None else {k: _gap(peer[k], g) for k, g in oracle.items()},
        input_scale={k: float(np.max(np.abs(v), initial=0.0)) for k, v in real.items()},
        dtype=judged,
        rounding=None if peer is None else _rounding_scales(real, _cotangents(*args)),
        steps=dims["T"],
    )


def reference(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
    dtype: Any = None,
    noise: bool = True,
) -> Reference:
    """The oracle's loss and gradients in float64, and the rounding noise of a peer.

    Shapes: ``U`` (O, H), ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``b_y`` (O,),
    ``h0`` (B, H), ``xs`` (T, B, D), ``targets`` (T, B, O); float32 inputs are
    converted to float64 exactly. The noise of key k is ``max |g_peer - g_oracle|``
    where the peer is the same loss written with ``jax.nn``'s textbook functions and
    differentiated in ``dtype`` (the dtype of the result to be judged; default the
    inputs'): how far a correct implementation in that dtype strays on this very case.
    ``noise=False`` skips the peer and leaves ``Reference.noise`` as ``None``.
    """
    real, dims, args = _padded_case(params, xs, targets, hidden=hidden, output=output, loss=loss)
    judged = np.dtype(real["xs"].dtype if dtype is None else dtype)

    def unpadded(grads: Mapping[str, jax.Array]) -> dict[str, NDArray[np.float64]]:
        return {
            k: np.asarray(g, dtype=np.float64)[tuple(slice(0, n) for n in real[k].shape)]
            for k, g in grads.items()
        }

    with jax.enable_x64(True):
        value, grads = _compiled(None)(*args)
        peer = unpadded(_compiled(judged)(*args)[1]) if noise else None
        return _assembled(real, dims, args, float(value), unpadded(grads), peer, judged)


def judge(
    actual: Mapping[str, Any],
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
    dtype: Any = None,
    keys: Iterable[str] | None = None,
) -> tuple[Reference, list[KeyComparison]]:
    """Judge gradients ``actual`` of this case against the oracle (see :mod:`bptt_ref.compare`).

    The peer's noise only ever widens a bound, so it is computed only when a key fails
    without it: the verdicts are those of ``compare_gradients(actual, reference(...))``
    at half the cost for the cases that pass.
    """
    config = {"hidden": hidden, "output": output, "loss": loss, "dtype": dtype}
    return judge_against(
        actual, lambda noise: reference(params, xs, targets, noise=noise, **config), keys=keys
    )


def judge_against(
    actual: Mapping[str, Any],
    make_reference: Callable[[bool], Reference],
    *,
    keys: Iterable[str] | None = None,
) -> tuple[Reference, list[KeyComparison]]:
    """:func:`judge` for any reference: ``make_reference(noise)`` builds it, with or without
    the peer's noise (e.g. ``partial(truncated_reference, params, xs, targets, window=3)``
    called as ``noise=...``); the noise is computed only when a key fails without it."""
    keys = None if keys is None else list(keys)
    ref = make_reference(False)
    verdicts = compare_gradients(actual, ref, keys=keys)
    if all(v.ok for v in verdicts):
        return ref, verdicts
    ref = make_reference(True)
    return ref, compare_gradients(actual, ref, keys=keys)


def assert_matches(
    actual: Mapping[str, Any],
    make_reference: Callable[[bool], Reference],
    *,
    context: str,
    keys: Iterable[str] | None = None,
) -> Reference:
    """:func:`judge_against`, raising ``AssertionError`` naming every failing key."""
    __tracebackhide__ = True
    ref, verdicts = judge_against(actual, make_reference, keys=keys)
    failed = [v for v in verdicts if not v.ok]
    if failed:
        lines = "\n".join(f"  {v}" for v in failed)
        raise AssertionError(f"gradients disagree with the oracle for {context}:\n{lines}")
    return ref


def assert_matches_oracle(
    actual: Mapping[str, Any],
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    context: str,
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
    dtype: Any = None,
    keys: Iterable[str] | None = None,
) -> Reference:
    """:func:`judge`, raising ``AssertionError`` naming every failing key; returns the reference."""
    __tracebackhide__ = True
    config = {"hidden": hidden, "output": output, "loss": loss, "dtype": dtype}
    return assert_matches(
        actual,
        lambda noise: reference(params, xs, targets, noise=noise, **config),
        context=context,
        keys=keys,
    )


def cut_step_losses(
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

    Arguments as :func:`step_losses`, plus:

    - ``keep`` (T, T) bool: loss term t is computed on its own copy of the state
      sequence, in which step i reads its input state (``h_{i-1}``, or ``h0`` for i = 0)
      through ``lax.stop_gradient`` wherever ``keep[t, i]`` is False. Every copy has the
      same values; only what ``L_t`` differentiates differs. ``None``: one shared copy.
    - ``step_mask`` (T, B) bool: ``loss(ŷ_{t,b}, y_{t,b})`` counts only where True
      (``None``: everywhere).
    - ``freeze``: where ``step_mask`` is False, the state is held, ``h_{t,b} = h_{t-1,b}``.
    - ``stepwise``: ``W``, ``V`` and ``b_h`` carry a leading (T,) axis and step i uses
      ``W[i]``, ``V[i]``, ``b_h[i]``: the gradient with respect to ``W[i]`` is then the
      immediate contribution of step i alone (the lag decomposition).
    """
    hidden_fns = list((TEXTBOOK_HIDDEN if textbook else HIDDEN).values())
    head_fns = list((TEXTBOOK_HEADS if textbook else HEADS).values())
    time_valid, row_valid, out_valid = masks
    xs, h0 = arrays["xs"], arrays["h0"]
    T, B = xs.shape[:2]
    copies = 1 if keep is None else T
    keep_by_step = jnp.ones((T, 1), dtype=bool) if keep is None else keep.T
    real = jnp.ones((T, B), dtype=bool) if step_mask is None else step_mask
    # Stepwise, the scan hands each step its own copies. Otherwise the weights are closed
    # over, as in step_losses, so that the float32 peer accumulates their gradient in the
    # same order (a tree sum over broadcast copies rounds less, and would understate noise).
    weights = tuple(arrays[k] for k in ("W", "V", "b_h")) if stepwise else ()

    def step(h: jax.Array, inputs: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        x, y, live, keep_i, real_i, i, *own_weights = inputs
        W, V, b_h = own_weights if stepwise else (arrays["W"], arrays["V"], arrays["b_h"])
        h_in = jnp.where(keep_i[:, None, None], h, lax.stop_gradient(h))
        a = (x @ V.T)[None, :, :] + jnp.einsum("cbj,ij->cbi", h_in, W) + b_h[None, None, :]
        moves = live & (real_i if freeze else jnp.ones_like(real_i))
        h_new = jnp.where(moves[None, :, None], lax.switch(hidden_index, hidden_fns, a), h_in)
        own = h_new[0] if keep is None else h_new[i]
        z = own @ arrays["U"].T + arrays["b_y"][None, :]
        per_row = lax.switch(head_index, head_fns, z, y, jnp.broadcast_to(out_valid, z.shape))
        return h_new, jnp.sum(jnp.where(live & row_valid & real_i, per_row, 0.0))

    init = jnp.broadcast_to(h0[None, :, :], (copies, *h0.shape))
    inputs = (xs, targets, time_valid, keep_by_step, real, jnp.arange(T), *weights)
    _, losses = lax.scan(step, init, inputs, unroll=UNROLL)
    return losses


@cache
def _compiled_variant(judged: np.dtype[Any] | None, variant: str) -> Callable[..., Any]:
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
            return step_losses(*base, textbook=textbook)
        return cut_step_losses(
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
        return jax.jit(partial(differentiated, textbook=False))

    def peer(arrays: dict[str, jax.Array], targets: jax.Array, *rest: Any) -> Any:
        cast = {k: v.astype(judged) for k, v in arrays.items()}
        return differentiated(cast, targets.astype(judged), *rest, textbook=True)

    return jax.jit(peer)


def _variant_reference(
    variant: str,
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    keep: Callable[[int, int], jax.Array] | None = None,
    mask: Any = None,
    hidden: str,
    output: str,
    loss: str,
    dtype: Any,
    noise: bool,
) -> Reference:
    """:func:`reference` for a variant of the loss (see :func:`_compiled_variant`).

    ``keep(T_padded, T)`` builds the cut table; ``mask`` is a (T, B) bool array or None.
    """
    from bptt_ref.truncation import _check_mask

    real, dims, args = _padded_case(params, xs, targets, hidden=hidden, output=output, loss=loss)
    if mask is not None:
        mask = _check_mask(mask, dims["T"], dims["B"])
    judged = np.dtype(real["xs"].dtype if dtype is None else dtype)
    size = bucket(dims)
    T_pad, B_pad = size["T"], size["B"]
    with jax.enable_x64(True):
        cuts = jnp.ones((1, 1), dtype=bool) if keep is None else keep(T_pad, dims["T"])
        step_mask = np.zeros((T_pad, B_pad), dtype=bool)
        step_mask[: dims["T"], : dims["B"]] = True if mask is None else mask
        arrays = dict(args[0])
        stepwise = ("W", "V", "b_h") if variant == "lags" else ()
        for k in stepwise:
            arrays[k] = np.broadcast_to(arrays[k], (T_pad, *arrays[k].shape))
        full = (arrays, *args[1:], cuts, step_mask)

        def unpadded(grads: Mapping[str, jax.Array]) -> dict[str, NDArray[np.float64]]:
            out = {}
            for k, g in grads.items():
                # Per term, a leading axis of loss terms t; stepwise, one of steps k too.
                lead = [dims["T"]] * ((variant in ("per_term", "lags")) + (k in stepwise))
                window = tuple(slice(0, n) for n in (*lead, *real[k].shape))
                if variant != "lags" or k in stepwise:
                    out[k] = np.asarray(g, dtype=np.float64)[window]
            return out

        value, grads = _compiled_variant(None, variant)(*full)
        total = float(np.sum(np.asarray(value, dtype=np.float64)))
        peer = unpadded(_compiled_variant(judged, variant)(*full)[1]) if noise else None
        # The untruncated model's magnitudes: every variant's sums run over a subset of
        # the same terms, so they bound its rounding too.
        return _assembled(real, dims, args, total, unpadded(grads), peer, judged)


def per_term_reference(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
    dtype: Any = None,
    noise: bool = True,
) -> Reference:
    """The per-term gradients ``dL_t/dθ``: ``jax.jacrev`` of :func:`step_losses`.

    As :func:`reference`, but ``grads[θ]`` has shape (T, *θ.shape) (``xs``: (T, T, B, D)),
    entry t being the gradient of ``L_t`` alone, and ``loss`` is ``L = Σ_t L_t``.
    """
    config = {"hidden": hidden, "output": output, "loss": loss, "dtype": dtype, "noise": noise}
    return _variant_reference("per_term", params, xs, targets, **config)


def lag_reference(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
    dtype: Any = None,
    noise: bool = True,
) -> Reference:
    """Each step's own contribution to each loss term's gradient, for W, V and b_h.

    Step k is given its own copy of the weights (``stepwise`` in :func:`cut_step_losses`)
    and ``jax.jacrev`` of the per-step losses is taken with respect to every copy:
    ``grads["W"][t, k]`` (T, T, H, H) is the part of ``dL_t/dW`` that flows through step
    k's use of W (zero for k > t); ``V`` is (T, T, H, D), ``b_h`` (T, T, H). Otherwise as
    :func:`reference`.
    """
    config = {"hidden": hidden, "output": output, "loss": loss, "dtype": dtype, "noise": noise}
    return _variant_reference("lags", params, xs, targets, **config)


def truncated_reference(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    window: int | None = None,
    chunks: tuple[int, int] | None = None,
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
    dtype: Any = None,
    noise: bool = True,
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
    config = {"hidden": hidden, "output": output, "loss": loss, "dtype": dtype, "noise": noise}
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

    return _variant_reference("cut", params, xs, targets, keep=keep, **config)


def masked_reference(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    mask: Any,
    *,
    mode: str = "loss",
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
    dtype: Any = None,
    noise: bool = True,
) -> Reference:
    """The masked loss ``Σ_{t,b} m_{t,b} loss(ŷ_{t,b}, y_{t,b})`` and its gradient.

    ``mask`` (T, B) bool; ``mode="loss"`` masks the loss only, ``mode="freeze"`` also
    holds the state on masked steps (``h_{t,b} = h_{t-1,b}``), by ``jnp.where`` in the
    scan. Otherwise as :func:`reference`.
    """
    from bptt_ref.truncation import MASK_MODES

    if mode not in MASK_MODES:
        raise ValueError(f"unknown mask mode {mode!r}; expected one of {list(MASK_MODES)}")
    config = {"hidden": hidden, "output": output, "loss": loss, "dtype": dtype, "noise": noise}
    variant = "frozen" if mode == "freeze" else "masked"
    return _variant_reference(variant, params, xs, targets, mask=mask, **config)


def loss_and_grad(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
) -> tuple[float, dict[str, NDArray[np.float64]]]:
    """The oracle's ``(L, grads)`` in float64, for the arguments of ``bptt_ref.loss_and_grad``."""
    ref = reference(params, xs, targets, hidden=hidden, output=output, loss=loss, noise=False)
    return ref.loss, ref.grads


_COMPILE_EVENTS = frozenset(
    {
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    }
)
"""The ``jax.monitoring`` duration events of turning a function into an executable: tracing
to a jaxpr, lowering to MLIR, XLA compilation (or a read of the persistent cache)."""


@dataclass
class CompileClock:
    """The spans JAX spent compiling while :func:`compile_clock` ran.

    Attributes:
        on_event: called when a compilation step ends (the first, tracing, ends before
            the long XLA compilation starts, so a caller can say "compiling" then).
        spans: ``(start, end)`` of each step on the ``time.perf_counter`` clock.
    """

    on_event: Callable[[], None] | None = None
    spans: list[tuple[float, float]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """The length of the union of :attr:`spans`.

        A union, not a sum: tracing a function traces the jitted functions it calls
        within its own span, and those nested spans must count once.
        """
        total, reach = 0.0, -math.inf
        for start, end in sorted(self.spans):
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total


_RUNNING: list[CompileClock] = []


def _record(event: str, duration_secs: float, **_: str | int) -> None:
    if event not in _COMPILE_EVENTS:
        return
    end = time.perf_counter()
    for clock in _RUNNING:
        clock.spans.append((end - duration_secs, end))
        if clock.on_event is not None:
            clock.on_event()


@cache
def _listen() -> None:
    # One listener for the life of the process, registered on first use: the public
    # jax.monitoring of older JAX releases has no way to take a listener off again.
    jax.monitoring.register_event_duration_secs_listener(_record)


@contextmanager
def compile_clock(on_event: Callable[[], None] | None = None) -> Iterator[CompileClock]:
    """Measure the wall time JAX spends compiling (any function, the oracle's included)
    inside the block, from JAX's own compile events; ``on_event`` as in :class:`CompileClock`.

    What runs outside a compilation, executing the compiled functions included, is not
    counted, so ``clock.seconds`` is the part of a block's time that a second run of the
    same shapes in the same process would not spend.
    """
    _listen()
    clock = CompileClock(on_event)
    _RUNNING.append(clock)
    try:
        yield clock
    finally:
        _RUNNING.remove(clock)


def time_split(seconds: float, compiling: float) -> str:
    """``seconds`` of wall time in words, ``compiling`` of them measured by a
    :class:`CompileClock`: ``"6.7 s (6.5 s compiling the oracle, 0.2 s on the cases)"``."""
    return (
        f"{seconds:.1f} s ({compiling:.1f} s compiling the oracle, "
        f"{seconds - compiling:.1f} s on the cases)"
    )
