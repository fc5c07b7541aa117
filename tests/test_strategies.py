"""The strategies stay inside the bounds they are given and refuse bad bounds."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis.errors import InvalidArgument

import bptt_ref
from bptt_ref import cases as case_model
from bptt_ref import strategies
from bptt_ref.cases import Case
from bptt_ref.strategies import cases


@given(cases(min_T=2, max_T=5, max_B=2, max_D=3, max_H=4, max_O=2, dtypes=(np.float32,)))
def test_cases_respect_their_bounds(case: Case) -> None:
    dims = case.dims
    assert 2 <= dims["T"] <= 5
    assert 1 <= dims["B"] <= 2
    assert 1 <= dims["D"] <= 3
    assert 1 <= dims["H"] <= 4
    assert 1 <= dims["O"] <= 2
    assert case.dtype == np.float32
    assert all(a.dtype == np.float32 for a in (*case.params.values(), case.xs, case.targets))
    assert (case.output, case.loss) in bptt_ref.VALID_HEADS
    assert not (case.style == "large" and (case.output, case.loss) == ("softmax", "mse"))
    radius = np.max(np.abs(np.linalg.eigvals(case.params["W"].astype(np.float64))))
    if case.style != "kink":  # zeroed rows change the spectrum on purpose
        assert radius == pytest.approx(case_model.REGIMES[case.regime], rel=1e-5)


@given(cases(styles=("kink",), hidden=("relu",), max_T=4))
def test_kink_style_puts_units_exactly_at_zero(case: Case) -> None:
    trace = bptt_ref.forward(case.params, case.xs, hidden=case.hidden, output=case.output)
    dead = ~case.params["V"].any(axis=1)
    assert trace.a is not None
    assert (trace.a[:, :, dead] == 0).all()


@given(cases(heads=[("softmax", "cross_entropy")], max_T=3))
def test_cross_entropy_targets_are_distributions(case: Case) -> None:
    assert (case.targets >= 0).all()
    np.testing.assert_allclose(case.targets.sum(axis=-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_T": 3, "max_T": 2}, "need 0 <= min_T <= max_T"),
        ({"regimes": ("chaotic",)}, "regime 'chaotic' is not one of"),
        ({"styles": ("huge",)}, "style 'huge' is not one of"),
        ({"hidden": ("swish",)}, "hidden='swish' is not one of"),
        (
            {"heads": [("identity", "cross_entropy")]},
            "head ('identity', 'cross_entropy') is not one of",
        ),
    ],
)
def test_bad_bounds_are_invalid_arguments(kwargs: dict[str, object], message: str) -> None:
    @given(cases(**kwargs))  # type: ignore[arg-type]
    def draw(case: Case) -> None:
        raise AssertionError("drawn despite invalid bounds")

    with pytest.raises(InvalidArgument, match=re.escape(message)):
        draw()


def test_the_case_model_is_still_importable_from_strategies() -> None:
    # It moved to the NumPy-only bptt_ref.cases; users' `from bptt_ref.strategies import
    # make_case` keeps working and names the same objects.
    for name in case_model.__all__:
        assert getattr(strategies, name) is getattr(case_model, name), name
        assert name in strategies.__all__, name
