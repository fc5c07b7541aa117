"""The JAX-free oracle: gradients against differencing the NumPy forward pass."""

from __future__ import annotations

import numpy as np
import pytest
from checks import central_difference_cases, check_directional, complex_step_cases
from hypothesis import given

from bptt_ref import finite_difference
from bptt_ref.cases import Case, make_case


@given(complex_step_cases)
def test_complex_step_matches_gradient(case: Case) -> None:
    check_directional(case, "complex")


@given(central_difference_cases)
def test_central_difference_matches_gradient(case: Case) -> None:
    check_directional(case, "central")


def test_direction_must_cover_every_key() -> None:
    case = make_case(
        dims={"T": 2, "B": 1, "D": 1, "H": 2, "O": 1},
        hidden="tanh",
        output="identity",
        loss="mse",
        dtype=np.float64,
        regime="contracting",
        style="normal",
        seed=0,
    )
    u = finite_difference.random_direction(np.random.default_rng(0), case.params, case.xs)
    del u["h0"]
    with pytest.raises(ValueError, match=r"direction is missing keys \['h0'\]"):
        finite_difference.directional_derivative(case.params, case.xs, case.targets, u)
    u["h0"] = np.zeros((3, 3))
    with pytest.raises(
        ValueError, match=r"direction\['h0'\] has shape \(3, 3\); expected \(1, 2\)"
    ):
        finite_difference.directional_derivative(case.params, case.xs, case.targets, u)


def test_complex_step_over_ten_thousand_steps() -> None:
    # Long enough that the backward pass works through f'(a) in more than one block.
    case = make_case(
        dims={"T": 10_000, "B": 2, "D": 2, "H": 8, "O": 2},
        hidden="tanh",
        output="identity",
        loss="mse",
        dtype=np.float64,
        regime="contracting",
        style="normal",
        seed=7,
    )
    check_directional(case, "complex")
