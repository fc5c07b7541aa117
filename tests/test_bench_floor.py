"""The benchmark's floors compute what ``bptt_ref`` computes, pass for pass; no time is asserted.

``math_floor`` is only a fair floor if its elementwise passes are the library's: the same
f_h, the same form of f_h′, the same loss gradient. If the library's f_h′ changes form,
the first test fails until the floor follows.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np
import pytest
from session_env import ROOT

from bptt_ref._activations import HIDDEN, logistic_pair
from bptt_ref._losses import loss_grad_logits, loss_sum


@pytest.fixture
def bench_rows(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("bench_rows")


def _floor_arrays(bench_rows: ModuleType, dtype: str) -> dict[str, np.ndarray]:
    problem = bench_rows.make_problem(bench_rows.Size(3, 4, 8, 2, 6), dtype)
    work = bench_rows._rnn_floor_work(problem)
    work.forward_products()
    work.forward_passes()
    work.backward_passes()
    return {k: v.copy() for k, v in work.arrays.items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_math_floors_passes_are_the_librarys(bench_rows: ModuleType, dtype: str) -> None:
    f = _floor_arrays(bench_rows, dtype)
    a, h = f["a"], f["h"]
    # a saturated unit, where the forms of f_h′ differ most, is among the checked values
    assert np.abs(a).max() > 1
    np.testing.assert_array_equal(h, np.tanh(a))
    np.testing.assert_array_equal(f["dh"], HIDDEN["tanh"].df(a, h))
    z, targets = f["z"], f["targets"]
    np.testing.assert_array_equal(f["g"], loss_grad_logits("identity", "mse", z, z, targets))
    expected = loss_sum("mse", z, z, targets)
    np.testing.assert_allclose(f["loss"], expected, rtol=10 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_floor_with_another_form_of_f_prime_would_be_caught(
    bench_rows: ModuleType, dtype: str
) -> None:
    # Test the tester: 1 − h², the cheaper form, is not what the floor computes.
    f = _floor_arrays(bench_rows, dtype)
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(f["dh"], 1 - f["h"] ** 2)


def _gated_pair(bench_rows: ModuleType, cell: str, dtype: str) -> tuple[np.ndarray, ...]:
    """The gated floor's pre-activations, scale and logistic pair after its forward passes."""
    problem = bench_rows.make_problem(bench_rows.Size(3, 4, 8, 2, 6), dtype, cell=cell)
    work = bench_rows._gated_floor_work(problem)
    work.forward_products()
    work.forward_passes()
    f = work.arrays
    width = f["scale"].shape[0]
    a, value, complement = (f[k][..., :width].copy() for k in ("a", "value", "complement"))
    return a, value, complement, f["scale"]


@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_reset_before"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_gated_math_floors_logistic_pass_is_the_librarys(
    bench_rows: ModuleType, cell: str, dtype: str
) -> None:
    a, value, complement, scale = _gated_pair(bench_rows, cell, dtype)
    assert np.abs(a).max() > 1
    expected = logistic_pair(a, scale)
    np.testing.assert_array_equal(value, expected[0])
    np.testing.assert_array_equal(complement, expected[1])
    # Test the tester: 1 − σ, the cancelling form, is not what the floor computes.
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(complement, 1 - value)


def test_the_blas_floor_runs_no_pass_and_the_math_floor_every_one(bench_rows: ModuleType) -> None:
    problem = bench_rows.make_problem(bench_rows.Size(2, 3, 4, 2, 3), "float64")
    calls: list[str] = []

    def work(problem: object) -> object:
        names = ("forward_products", "backward_products", "forward_passes", "backward_passes")
        closures = {n: (lambda n=n: calls.append(n)) for n in names}
        return bench_rows.FloorWork(**closures, arrays={})

    for elementwise, expected in (
        (False, ["forward_products", "backward_products"]),
        (True, ["forward_products", "forward_passes", "backward_passes", "backward_products"]),
    ):
        calls.clear()
        bench = bench_rows._floor(work, elementwise=elementwise)(problem)
        bench.run()
        assert calls == expected
        calls.clear()
        bench.backward()
        assert calls == expected[len(expected) // 2 :]


def test_the_step_floor_adds_the_biases_before_f_h_and_checks_the_inputs(
    bench_rows: ModuleType,
) -> None:
    problem = bench_rows.make_problem(bench_rows.Size(3, 4, 8, 2, 6), "float64")
    work = bench_rows._rnn_step_work(problem)
    work.forward_products()
    a, z = work.arrays["a"].copy(), work.arrays["z"].copy()
    work.forward_passes()
    p = problem.case.params
    np.testing.assert_array_equal(work.arrays["a"], a + p["b_h"])
    np.testing.assert_array_equal(work.arrays["z"], z + p["b_y"])
    np.testing.assert_array_equal(work.arrays["h"], np.tanh(a + p["b_h"]))
    problem.case.xs[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="xs"):
        work.forward_passes()


@pytest.fixture
def tanh_forms(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("tanh_forms")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_prototype_forms_of_tanh_are_as_accurate_as_the_readme_says(
    tanh_forms: ModuleType, dtype: str
) -> None:
    # README "A cheaper f_h′ for tanh": sech² from one exp is within a few eps relative,
    # as 1/cosh² is; tanh from one exp within a few eps absolute, not relative.
    errors = tanh_forms.accuracy(dtype)
    assert errors["f_h′ exp"][0] <= 4
    assert errors["f_h′ cosh"][0] <= 4
    assert errors["f_h exp"][1] <= 2
    assert errors["f_h exp"][0] > 1e4
    assert errors["f_h tanh"][0] <= 2


def test_the_accuracy_check_catches_a_slope_that_cancels(
    tanh_forms: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Test the tester: 1 − h², which rounds to a multiple of eps where tanh saturates,
    # fails the bound the exp form meets.
    monkeypatch.setitem(tanh_forms.SLOPE, "exp", lambda a, h: 1 - h * h)
    assert tanh_forms.accuracy("float64")["f_h′ exp"][0] > 1e6
