"""The NumPy formulas against closed forms, without JAX: values, kinks, precision, range.

These pin down what differencing the forward pass cannot see: a change that alters a
nonlinearity and its derivative together (relu's branch point, say), the shift that
keeps softmax from overflowing, and the precision of a confident prediction's loss.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest

import bptt_ref
from bptt_ref._activations import HIDDEN, OUTPUT
from bptt_ref._losses import loss_grad_logits, loss_sum

POINTS = np.array([-1e5, -30.0, -2.0, -0.5, 0.0, 0.5, 2.0, 30.0, 1e5])

CLOSED_FORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda a: a,
    "tanh": np.tanh,
    "sigmoid": lambda a: np.exp(-np.logaddexp(0, -a)),
    "relu": lambda a: np.maximum(a, 0),
    "leaky_relu": lambda a: np.where(a >= 0, a, 0.01 * a),
    "elu": lambda a: np.where(a > 0, a, np.expm1(np.minimum(a, 0))),
    "softplus": lambda a: np.logaddexp(0, a),
    "silu": lambda a: a * np.exp(-np.logaddexp(0, -a)),
    "gelu": lambda a: 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a**3))),
}
"""Each hidden nonlinearity as its textbook definition (valid over POINTS)."""


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_hidden_values(name: str) -> None:
    with np.errstate(over="ignore"):  # gelu's textbook a³ overflows at 1e5, harmlessly
        expected = CLOSED_FORMS[name](POINTS)
    np.testing.assert_allclose(HIDDEN[name].f(POINTS), expected, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_float32_extremes_are_finite_and_warning_free(name: str) -> None:
    # gelu's a³ overflows float32 past |a| ≈ 7e12 unless a is held where σ has saturated.
    a = np.array([-1e13, -1e5, 1e5, 1e13], dtype=np.float32)
    h = HIDDEN[name].f(a)
    assert np.isfinite(h).all()
    assert np.isfinite(HIDDEN[name].df(a, h)).all()


@pytest.mark.parametrize(
    ("name", "slope"),
    [("relu", 0.0), ("leaky_relu", 1.0), ("elu", 1.0), ("identity", 1.0), ("tanh", 1.0)],
)
def test_slope_at_zero(name: str, slope: float) -> None:
    zero = np.zeros(1)
    assert HIDDEN[name].df(zero, HIDDEN[name].f(zero))[0] == slope


def test_output_softmax_is_shift_safe_per_row() -> None:
    # Rows on very different scales: a shift by the global maximum would underflow the
    # second row to 0/0.
    z = np.array([[1000.0, 999.0], [-1000.0, -1001.0]])
    p = OUTPUT["softmax"].f(z)
    expected = np.array([1 / (1 + np.exp(-1.0)), np.exp(-1.0) / (1 + np.exp(-1.0))])
    np.testing.assert_allclose(p, [expected, expected], rtol=1e-14)


def test_confident_cross_entropy_keeps_its_tiny_loss_and_gradient() -> None:
    # -log softmax([0, -40])_0 = log1p(e^-40) ≈ 4.2e-18, far below eps relative to 1.
    z = np.array([[[0.0, -40.0]]])
    y = np.array([[[1.0, 0.0]]])
    p = OUTPUT["softmax"].f(z)
    assert loss_sum("cross_entropy", z, p, y) == pytest.approx(
        np.log1p(np.exp(-40.0)), rel=1e-14, abs=0
    )
    g = loss_grad_logits("softmax", "cross_entropy", z, p, y)
    e = np.exp(-40.0) / (1 + np.exp(-40.0))
    np.testing.assert_allclose(g[0, 0], [-e, e], rtol=1e-14)
    # Rows on different scales are each shifted by their own maximum.
    wide = np.array([[[1000.0, 999.0]], [[-1000.0, -1001.0]]])
    targets = np.array([[[1.0, 0.0]], [[1.0, 0.0]]])
    two = loss_sum("cross_entropy", wide, OUTPUT["softmax"].f(wide), targets)
    assert two == pytest.approx(2 * np.log1p(np.exp(-1.0)), rel=1e-14, abs=0)


def test_confident_binary_cross_entropy_keeps_its_tiny_loss_and_gradient() -> None:
    z = np.array([[[40.0, -40.0]]])
    y = np.array([[[1.0, 0.0]]])
    s = OUTPUT["sigmoid"].f(z)
    assert loss_sum("binary_cross_entropy", z, s, y) == pytest.approx(
        2 * np.log1p(np.exp(-40.0)), rel=1e-14
    )
    e = np.exp(-40.0) / (1 + np.exp(-40.0))
    np.testing.assert_allclose(
        loss_grad_logits("sigmoid", "binary_cross_entropy", z, s, y)[0, 0], [-e, e], rtol=1e-14
    )


@pytest.mark.parametrize(
    "head", [("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy")]
)
def test_logits_of_1e4_are_finite_through_loss_and_grad(head: tuple[str, str]) -> None:
    rng = np.random.default_rng(0)
    params = bptt_ref.random_params(rng, batch_size=2, input_size=2, hidden_size=3, output_size=3)
    params["U"] *= 1e4 / np.abs(params["U"]).max()
    xs = rng.standard_normal((4, 2, 2))
    targets = np.zeros((4, 2, 3))
    targets[..., 0] = 1
    output, loss = head
    value, grads = bptt_ref.loss_and_grad(params, xs, targets, output=output, loss=loss)
    assert np.isfinite(value)
    assert all(np.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("function", [loss_sum, loss_grad_logits])
def test_internal_loss_functions_name_an_unknown_loss(function: Callable[..., object]) -> None:
    z = np.zeros((1, 1, 2))
    args = ("nll", z, z, z) if function is loss_sum else ("identity", "nll", z, z, z)
    message = "unknown loss 'nll'; expected one of ['binary_cross_entropy', 'cross_entropy', 'mse']"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        function(*args)
