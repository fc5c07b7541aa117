"""The JAX oracle: the same loss written independently in ``jax.numpy``, differentiated by ``jax.grad``.

Nothing here is shared with the NumPy implementation but the input checks: the
nonlinearities are ``jax.nn``'s, the losses are written from their definitions
(``log_softmax``, ``log_sigmoid``), and every derivative comes from autodiff. It runs
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

from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpy.typing import NDArray

from bptt_ref._validate import check_inputs, check_names

__all__ = ["HIDDEN", "HEADS", "bucket", "loss_and_grad", "step_losses"]

HIDDEN: dict[str, Callable[[jax.Array], jax.Array]] = {
    "identity": lambda a: a,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "leaky_relu": lambda a: jax.nn.leaky_relu(a, negative_slope=0.01),
    "elu": lambda a: jax.nn.elu(a, alpha=1.0),
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "gelu": lambda a: jax.nn.gelu(a, approximate=True),
}
"""``f_h`` by name, from ``jax.nn``: their kink derivatives are the ones we promise."""

_Head = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def _mse(f: Callable[[jax.Array], jax.Array]) -> _Head:
    def head(z: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
        return 0.5 * jnp.sum(jnp.where(valid, (f(z) - y) ** 2, 0.0), axis=-1)

    return head


def _softmax_mse(z: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
    p = jax.nn.softmax(z, where=valid)
    return 0.5 * jnp.sum(jnp.where(valid, (p - y) ** 2, 0.0), axis=-1)


def _cross_entropy(z: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
    return -jnp.sum(jnp.where(valid, y * jax.nn.log_softmax(z, where=valid), 0.0), axis=-1)


def _binary_cross_entropy(z: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
    nll = y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z)
    return -jnp.sum(jnp.where(valid, nll, 0.0), axis=-1)


HEADS: dict[tuple[str, str], _Head] = {
    ("identity", "mse"): _mse(lambda z: z),
    ("tanh", "mse"): _mse(jnp.tanh),
    ("sigmoid", "mse"): _mse(jax.nn.sigmoid),
    ("softmax", "mse"): _softmax_mse,
    ("softmax", "cross_entropy"): _cross_entropy,
    ("sigmoid", "binary_cross_entropy"): _binary_cross_entropy,
}
"""Per-row loss ``loss(f_y(z), y)`` summed over the valid outputs, by (output, loss)."""

_HIDDEN_INDEX = {name: i for i, name in enumerate(HIDDEN)}
_HEAD_INDEX = {pair: i for i, pair in enumerate(HEADS)}
_FLOORS = {"T": 16, "B": 4, "D": 4, "H": 8, "O": 4}


def bucket(dims: Mapping[str, int]) -> dict[str, int]:
    """The padded size of each dim: the next power of two, at least the dim's floor.

    The floors (T 16, B 4, D 4, H 8, O 4) put every small case in one bucket, so one
    compilation serves a whole property-test run.
    """
    return {d: max(_FLOORS[d], 1 << max(n - 1, 0).bit_length()) for d, n in dims.items()}


def step_losses(
    arrays: Mapping[str, jax.Array],
    targets: jax.Array,
    masks: tuple[jax.Array, jax.Array, jax.Array],
    hidden_index: jax.Array,
    head_index: jax.Array,
) -> jax.Array:
    """Per-step losses ``L_t = Σ_b loss(ŷ_{t,b}, y_{t,b})``, shape (T,).

    ``arrays`` holds ``U, V, W, b_h, b_y, h0, xs``, ``targets`` is (T, B, O); ``masks`` are the valid
    time steps (T,), batch rows (B,) and outputs (O,). With all-true masks this is the
    plain RNN loss of the README, written with ``lax.scan``.
    """
    time_valid, row_valid, out_valid = masks

    def step(h: jax.Array, inputs: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        x, y, live = inputs
        a = x @ arrays["V"].T + h @ arrays["W"].T + arrays["b_h"]
        h_new = jnp.where(live, lax.switch(hidden_index, list(HIDDEN.values()), a), h)
        z = h_new @ arrays["U"].T + arrays["b_y"]
        per_row = lax.switch(head_index, list(HEADS.values()), z, y, out_valid)
        return h_new, jnp.sum(jnp.where(live & row_valid, per_row, 0.0))

    _, losses = lax.scan(step, arrays["h0"], (arrays["xs"], targets, time_valid))
    return losses


def _total_loss(arrays: Mapping[str, jax.Array], *rest: Any) -> jax.Array:
    return jnp.sum(step_losses(arrays, *rest))


@cache
def _compiled_value_and_grad() -> Callable[..., Any]:
    return jax.jit(jax.value_and_grad(_total_loss))


def _padded(arr: NDArray[np.floating], shape: tuple[int, ...]) -> NDArray[np.float64]:
    out = np.zeros(shape, dtype=np.float64)
    out[tuple(slice(0, n) for n in arr.shape)] = arr
    return out


def loss_and_grad(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any,
    *,
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
) -> tuple[float, dict[str, NDArray[np.float64]]]:
    """The oracle's ``(L, grads)`` in float64, for the same arguments as ``bptt_ref.loss_and_grad``.

    Shapes: ``U`` (O, H), ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``b_y`` (O,),
    ``h0`` (B, H), ``xs`` (T, B, D), ``targets`` (T, B, O); float32 inputs are
    converted to float64 exactly. ``grads`` has keys ``U, V, W, b_h, b_y, h0, xs``.
    """
    check_names(hidden, output, loss)
    p, x, y = check_inputs(params, xs, targets, loss=loss)
    assert y is not None
    real = {**p, "xs": x}
    T, B, D = x.shape
    dims = {"T": T, "B": B, "D": D, "H": p["W"].shape[0], "O": y.shape[-1]}
    size = bucket(dims)
    layout = {
        "U": "OH", "V": "HD", "W": "HH", "b_h": "H", "b_y": "O", "h0": "BH",
        "xs": "TBD",
    }
    padded = {k: _padded(v, tuple(size[d] for d in layout[k])) for k, v in real.items()}
    padded_targets = _padded(y, (size["T"], size["B"], size["O"]))
    masks = tuple(np.arange(size[d]) < dims[d] for d in "TBO")
    with jax.enable_x64(True):
        value, grads = _compiled_value_and_grad()(
            padded, padded_targets, masks, _HIDDEN_INDEX[hidden], _HEAD_INDEX[(output, loss)]
        )
        value = float(value)
        grads = {k: np.asarray(g)[tuple(slice(0, n) for n in real[k].shape)] for k, g in grads.items()}
    return value, grads
