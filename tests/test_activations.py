"""Activation conventions: kinks follow jax.nn; the oracle's forms are jax.nn's functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bptt_ref import HIDDEN_ACTIVATIONS, jax_reference
from bptt_ref._activations import HIDDEN

KINKS = {"relu": 0.0, "leaky_relu": 1.0, "elu": 1.0}
"""The derivative at a = 0 promised in README.md, as jax.nn computes it."""


@pytest.mark.parametrize("name", sorted(KINKS))
def test_kink_derivative_is_jax_nn_s(name: str) -> None:
    jax_nn = {"relu": jax.nn.relu, "leaky_relu": jax.nn.leaky_relu, "elu": jax.nn.elu}[name]
    with jax.enable_x64(True):
        from_jax_nn = float(jax.grad(jax_nn)(0.0))
        from_oracle = float(jax.grad(jax_reference.HIDDEN[name])(0.0))
    zero = np.zeros(1)
    from_numpy = float(HIDDEN[name].df(zero, HIDDEN[name].f(zero))[0])
    assert from_jax_nn == from_oracle == from_numpy == KINKS[name]


def test_oracle_and_textbook_tables_cover_every_name() -> None:
    assert tuple(jax_reference.HIDDEN) == HIDDEN_ACTIVATIONS
    assert tuple(jax_reference.TEXTBOOK_HIDDEN) == HIDDEN_ACTIVATIONS
    assert tuple(HIDDEN) == HIDDEN_ACTIVATIONS


@given(
    st.sampled_from(HIDDEN_ACTIVATIONS),
    st.floats(-50, 50, allow_nan=False).filter(lambda a: a != 0.0),
)
def test_oracle_forms_are_the_jax_nn_functions(name: str, a: float) -> None:
    # The oracle rewrites tanh, sigmoid, elu, silu and gelu so that autodiff keeps
    # precision where they saturate; they must still be the same functions, and away
    # from saturation their derivatives must equal the textbook ones.
    with jax.enable_x64(True):
        x = jnp.float64(a)
        value = float(jax_reference.HIDDEN[name](x))
        textbook = float(jax_reference.TEXTBOOK_HIDDEN[name](x))
        slope = float(jax.grad(jax_reference.HIDDEN[name])(x))
        textbook_slope = float(jax.grad(jax_reference.TEXTBOOK_HIDDEN[name])(x))
    # The textbook forms cancel in 1 + tanh(u) and 1 - t², so only agreement to a few
    # eps in absolute terms, scaled by the size of the function, can be asked of them.
    eps = np.finfo(np.float64).eps
    assert abs(value - textbook) <= 4 * eps * (1 + abs(a))
    if abs(a) < 5:
        assert abs(slope - textbook_slope) <= 64 * eps


@given(
    st.sampled_from(HIDDEN_ACTIVATIONS),
    st.floats(-800, 800, allow_nan=False),
    st.sampled_from([np.float32, np.float64]),
)
def test_numpy_activations_are_finite_and_warning_free(name: str, a: float, dtype: type) -> None:
    x: np.ndarray = np.array([a], dtype=dtype)
    h = HIDDEN[name].f(x)
    slope = HIDDEN[name].df(x, h)
    assert np.isfinite(h).all()
    assert np.isfinite(slope).all()
    assert h.dtype == slope.dtype == dtype
