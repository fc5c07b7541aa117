"""The hand-written NumPy gradients against the JAX autodiff oracle."""

from __future__ import annotations

import numpy as np
from checks import check_against_oracle
from hypothesis import given, settings
from hypothesis import strategies as st

import bptt_ref
from bptt_ref import jax_reference
from bptt_ref.strategies import Case, cases


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


@given(cases(max_T=4), st.sampled_from(["T", "B"]))
def test_empty_time_or_batch_is_an_empty_sum(case: Case, dim: str) -> None:
    axis = {"T": 0, "B": 1}[dim]
    xs = np.take(case.xs, [], axis=axis)
    targets = np.take(case.targets, [], axis=axis)
    params = dict(case.params)
    if dim == "B":
        params["h0"] = params["h0"][:0]
    loss, grads = bptt_ref.loss_and_grad(params, xs, targets, **case.config)
    ref_loss, ref_grads = jax_reference.loss_and_grad(params, xs, targets, **case.config)
    assert loss == ref_loss == 0.0
    for key, grad in grads.items():
        assert grad.shape == ref_grads[key].shape
        assert grad.dtype == case.dtype
        assert not grad.any(), key
