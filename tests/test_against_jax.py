"""The hand-written NumPy gradients against the JAX autodiff oracle."""

from __future__ import annotations

from checks import check_against_oracle
from hypothesis import given, settings

from bptt_ref.cases import Case
from bptt_ref.strategies import cases


@given(cases())
def test_every_gradient_matches_jax(case: Case) -> None:
    check_against_oracle(case)


@settings(max_examples=12)
@given(
    cases(
        min_T=256,
        max_T=300,
        regimes=("contracting", "near_critical"),
        styles=("normal", "zeros", "kink"),
    )
)
def test_long_sequences_match_jax(case: Case) -> None:
    check_against_oracle(case)
