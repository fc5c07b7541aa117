"""Derivatives at a kink: ``check`` accepts either one-sided derivative by default, pins one
with ``kink``, names the convention a pinned check's failure follows, and the oracle's
gradient under each convention agrees with an independent computation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from planted import kink_kernels

from bptt_ref import _activations, kinks, loss_and_grad, stack
from bptt_ref.cli import main
from bptt_ref.layouts import layout_named
from bptt_ref.oracle import engine
from bptt_ref.oracle import stack as stack_oracle
from bptt_ref.oracle.activations import KINKED, branch
from bptt_ref.strategies import make_case
from bptt_ref.testing import CheckResult, check_gradients

DIMS = {"T": 4, "B": 2, "D": 3, "H": 5, "O": 2}


def checked(fn: Any, hidden: str, kink: str | None, **options: Any) -> CheckResult:
    # Small cases only: the kink cases are among them, and one compilation serves all.
    options = {"sizes": "small", "max_examples": 40, "repeat": 1, **options}
    return check_gradients(fn, hidden=hidden, kink=kink, **options)


def kink_case(hidden: str, *, seed: int = 1, dtype: Any = np.float64, **network: Any) -> Any:
    case = make_case(
        dims=DIMS,
        hidden=hidden,
        output="identity",
        loss="mse",
        dtype=np.dtype(dtype),
        regime="near_critical",
        style="kink",
        seed=seed,
        **network,
    )
    assert kinks.at_kink(case.params, case.xs, hidden, **case.network)
    return case


@pytest.mark.parametrize("kink", [None, "torch", "left"])
def test_a_pytorch_leaky_relu_passes_by_default_and_under_its_convention(kink: str | None) -> None:
    assert checked(kink_kernels.leaky_relu_torch, "leaky_relu", kink).report is None


def test_a_pytorch_leaky_relu_checked_as_jax_fails_with_the_torch_hint() -> None:
    report = checked(kink_kernels.leaky_relu_torch, "leaky_relu", "jax").report
    assert report is not None
    assert report.case.style == "kink"
    assert report.hints == [
        "your gradient matches PyTorch's convention at the kink (leaky_relu'(0) = 0.01), not "
        "--kink jax's (leaky_relu'(0) = 1), on this case's units at exactly a = 0: pass --kink "
        "torch or left (kink='torch' in bptt_ref.testing) or drop --kink, which accepts either "
        "one-sided derivative"
    ]


@pytest.mark.parametrize("kink", [None, "right"])
def test_a_relu_written_with_ge_passes_by_default_and_as_right(kink: str | None) -> None:
    assert checked(kink_kernels.relu_ge, "relu", kink).report is None


@pytest.mark.parametrize("kink", ["jax", "torch", "left"])
def test_a_relu_written_with_ge_fails_when_pinned_to_the_left_with_the_hint(kink: str) -> None:
    report = checked(kink_kernels.relu_ge, "relu", kink).report
    assert report is not None
    assert report.case.style == "kink"
    (hint,) = report.hints
    assert hint.startswith(
        f"your gradient matches the derivative from above at the kink (relu'(0) = 1), not "
        f"--kink {kink}'s (relu'(0) = 0)"
    ), hint
    assert "pass --kink right (kink='right' in bptt_ref.testing) or drop --kink" in hint


@pytest.mark.parametrize(
    ("fn", "hidden", "kink", "ok"),
    [
        (kink_kernels.relu_gt, "relu", "jax", True),
        (kink_kernels.relu_gt, "relu", "right", False),
        (kink_kernels.leaky_relu_jax, "leaky_relu", None, True),
        (kink_kernels.leaky_relu_jax, "leaky_relu", "torch", False),
    ],
    ids=["relu>-jax", "relu>-right", "leaky>=-default", "leaky>=-torch"],
)
def test_the_jax_convention_controls(fn: Any, hidden: str, kink: str | None, ok: bool) -> None:
    assert (checked(fn, hidden, kink).report is None) is ok


def test_a_kernel_that_mixes_conventions_fails_by_default() -> None:
    report = checked(kink_kernels.relu_mixed, "relu", None).report
    assert report is not None
    assert report.case.style == "kink"
    assert report.case.dims["T"] >= 2
    # Both one-sided derivatives were tried: no convention is hinted.
    assert not any("--kink" in hint for hint in report.hints), report.hints


@pytest.mark.parametrize("kink", [None, *kinks.CONVENTIONS])
def test_a_wrong_derivative_at_the_kink_fails_under_every_convention(kink: str | None) -> None:
    report = checked(kink_kernels.relu_half, "relu", kink).report
    assert report is not None
    assert report.case.style == "kink"
    assert not any("--kink" in hint for hint in report.hints), report.hints


def test_a_correct_client_pays_no_kink_search(monkeypatch: pytest.MonkeyPatch) -> None:
    def at_kink(*args: Any, **kwargs: Any) -> bool:
        raise AssertionError("looked for a kink on a case that passed")

    monkeypatch.setattr(kinks, "at_kink", at_kink)
    assert checked(kink_kernels.relu_gt, "relu", None).report is None


def test_the_stacked_check_takes_the_default_and_hints_too() -> None:
    options = {"num_layers": 2, "max_examples": 15}
    assert checked(kink_kernels.relu_ge_stack, "relu", None, **options).report is None
    report = checked(kink_kernels.relu_ge_stack, "relu", "jax", **options).report
    assert report is not None
    assert [h.split(",")[0] for h in report.hints] == [
        "your gradient matches the derivative from above at the kink (relu'(0) = 1)"
    ]


def in_torch_names(fn: Any) -> Any:
    """``fn`` taking and returning PyTorch's ``nn.RNN`` names (``weight_hh_l0``, ...)."""
    torch = layout_named("torch")

    def grad(params: dict[str, Any], xs: Any, targets: Any) -> dict[str, Any]:
        canonical = torch.from_layout("rnn", torch.flatten(params))
        xs, targets = (torch.data("rnn", a) for a in (xs, targets))
        return torch.grads_to_layout("rnn", fn(canonical, xs, targets))

    return grad


def test_a_layout_check_takes_kink_and_hints() -> None:
    fn = in_torch_names(kink_kernels.relu_ge)
    options = {"layout": "torch", "max_examples": 30}
    assert checked(fn, "relu", None, **options).report is None
    report = checked(fn, "relu", "torch", **options).report
    assert report is not None
    assert [h.split(",")[0] for h in report.hints] == [
        "your gradient matches the derivative from above at the kink (relu'(0) = 1)"
    ]


def test_the_command_takes_kink(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["check", "planted.kink_kernels:leaky_relu_torch", "--hidden", "leaky_relu"]
    base += ["--sizes", "small", "--examples", "40", "--save-dir", str(tmp_path)]
    assert main([*base, "--kink", "torch"]) == 0, capsys.readouterr()
    capsys.readouterr()
    assert main([*base, "--kink", "jax"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "your gradient matches PyTorch's convention at the kink" in out, out
    assert "pass --kink torch or left" in out, out


def test_an_unknown_convention_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="kink is 'pytorch'; expected one of jax, torch"):
        checked(kink_kernels.relu_gt, "relu", "pytorch")


@pytest.mark.parametrize(
    ("hidden", "side", "slope"),
    [
        ("relu", "left", 0.0),
        ("relu", "right", 1.0),
        ("leaky_relu", "left", 0.01),
        ("leaky_relu", "right", 1.0),
    ],
)
def test_the_oracles_branch_has_the_derivative_of_its_side(
    hidden: str, side: str, slope: float
) -> None:
    from bptt_ref.oracle.activations import HIDDEN

    f = {**HIDDEN, **KINKED}[branch(hidden, side)]
    with jax.enable_x64(True):
        assert float(jax.grad(f)(jnp.float64(0.0))) == slope
        for a in (-0.5, 0.0, 0.7):
            assert float(f(jnp.float64(a))) == float(_activations.HIDDEN[hidden].f(np.float64(a)))


def test_each_convention_takes_its_documented_derivative() -> None:
    at_zero = {
        c: {h: kinks.SLOPES[h][kinks.side(c, h) or ""] for h in kinks.SLOPES}
        for c in kinks.CONVENTIONS
    }
    assert at_zero == {
        "jax": {"relu": 0.0, "leaky_relu": 1.0},
        "torch": {"relu": 0.0, "leaky_relu": 0.01},
        "left": {"relu": 0.0, "leaky_relu": 0.01},
        "right": {"relu": 1.0, "leaky_relu": 1.0},
    }
    # The library's own NumPy derivatives follow JAX's convention.
    for h, slope in at_zero["jax"].items():
        zero = np.zeros(1)
        assert _activations.HIDDEN[h].df(zero, _activations.HIDDEN[h].f(zero))[0] == slope


def _patched(monkeypatch: pytest.MonkeyPatch, hidden: str, slope_at_zero: float) -> None:
    """The NumPy library's f_h with its derivative at exactly 0 replaced."""
    own = _activations.HIDDEN[hidden]

    def df(a: Any, h: Any) -> Any:
        return np.where(a == 0, slope_at_zero, own.df(a, h))

    monkeypatch.setitem(_activations.HIDDEN, hidden, _activations.Activation(own.f, df))


@pytest.mark.parametrize("network", [{}, {"num_layers": 2, "bidirectional": True}])
@pytest.mark.parametrize("hidden", list(kinks.SLOPES))
@pytest.mark.parametrize("kink", list(kinks.CONVENTIONS))
def test_the_oracle_under_a_convention_is_the_numpy_library_with_that_derivative(
    monkeypatch: pytest.MonkeyPatch, kink: str, hidden: str, network: dict[str, Any]
) -> None:
    case = kink_case(hidden, **network)
    side = kinks.side(kink, hidden)
    assert side is not None
    oracle = stack_oracle.reference(
        case.params, case.xs, case.targets, noise=False, kink=kink, **case.config, **network
    ).grads
    _patched(monkeypatch, hidden, kinks.SLOPES[hidden][side])
    _, numpy = stack.loss_and_grad(case.params, case.xs, case.targets, **case.config, **network)
    for k, g in numpy.items():
        np.testing.assert_allclose(oracle[k], g, rtol=1e-10, atol=1e-12, err_msg=k)
    # The case's kinks matter: the other side gives another gradient.
    _patched(monkeypatch, hidden, kinks.SLOPES[hidden]["left" if side == "right" else "right"])
    _, other = stack.loss_and_grad(case.params, case.xs, case.targets, **case.config, **network)
    assert any(np.max(np.abs(other[k] - g)) > 1e-3 for k, g in oracle.items())


def test_the_oracle_at_one_kink_by_hand() -> None:
    # T = B = H = D = O = 1, a_0 = 0·x + 0·h0 + 0 = 0: ∂L/∂b_h = f'(0)·(z - y)·U and
    # ∂L/∂V = f'(0)·(z - y)·U·x, with z = U·f(0) + b_y = b_y.
    params = {
        "U": np.array([[2.0]]),
        "V": np.array([[0.0]]),
        "W": np.array([[0.0]]),
        "b_h": np.array([0.0]),
        "b_y": np.array([0.5]),
        "h0": np.array([[0.0]]),
    }
    xs, targets = np.array([[[3.0]]]), np.array([[[-1.0]]])
    for kink in kinks.CONVENTIONS:
        for hidden, slopes in kinks.SLOPES.items():
            side = kinks.side(kink, hidden)
            assert side is not None
            grads = engine.reference(
                params, xs, targets, hidden=hidden, noise=False, kink=kink
            ).grads
            slope = slopes[side]
            assert grads["b_h"][0] == slope * 1.5 * 2.0, (kink, hidden)
            assert grads["V"][0, 0] == slope * 1.5 * 2.0 * 3.0, (kink, hidden)


def test_loss_and_grad_keeps_the_jax_convention() -> None:
    case = kink_case("leaky_relu")
    _, grads = loss_and_grad(case.params, case.xs, case.targets, **case.config)
    jax_ref = engine.reference(case.params, case.xs, case.targets, noise=False, **case.config)
    for k, g in grads.items():
        np.testing.assert_allclose(g, jax_ref.grads[k], rtol=1e-10, atol=1e-12, err_msg=k)
