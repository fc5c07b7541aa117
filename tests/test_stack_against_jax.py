"""Stacked and bidirectional networks against the JAX oracle (``bptt_ref.oracle.stack``).

The oracle composes each cell's ``jax.numpy`` step anew, from PyTorch's semantics, and
pads every case to a bucket (the reverse direction then meets the padded steps first);
the NumPy network reuses each cell's hand-written backward pass. Planted bugs in
``bptt_ref/stack.py`` (the table of ``test_stack_without_jax.py``) must fail here too,
including the one the complex step cannot see (a wrong initial-state row, shared by
forward and backward).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from test_stack_without_jax import BUGS, CELL_NAMES, _case, mutant

from bptt_ref import stack
from bptt_ref.cases import Case
from bptt_ref.compare import tolerance_for
from bptt_ref.oracle import stack as oracle
from bptt_ref.strategies import cases


def check(case: Case, loss_and_grad: object = stack.loss_and_grad) -> None:
    """Every gradient and the loss agree with the oracle, by ``bptt_ref.compare``'s measure."""
    __tracebackhide__ = True
    config = {"cell": case.cell, **case.network, **case.config}
    loss, grads = loss_and_grad(case.params, case.xs, case.targets, **config)  # type: ignore[operator]
    assert tuple(grads) == (*stack.names(case.cell, **case.network), "xs")
    for key, grad in grads.items():
        assert grad.dtype == case.dtype, key
    ref = oracle.assert_matches_oracle(
        grads, case.params, case.xs, case.targets, context=repr(case), **config
    )
    floor = float(np.finfo(case.dtype).tiny)
    assert abs(loss - ref.loss) <= tolerance_for(case.dtype) * max(abs(ref.loss), floor), (
        f"loss {loss!r} != oracle {ref.loss!r} for {case!r}"
    )


# Each (cell, L, bidirectional) compiles once per bucket; the sizes stay in the smallest.
@settings(max_examples=40)
@given(cases(cells=CELL_NAMES, layers=(1, 2, 3), bidirectional=(False, True), max_T=10, max_H=5))
def test_stacks_match_jax(case: Case) -> None:
    check(case)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_a_case_past_the_smallest_bucket_matches_jax(cell: str) -> None:
    # T = 17 and H = 9 pad to 32 and 16: the reverse direction runs 15 padded steps first.
    check(_case(cell, 2, True, dims={"T": 17, "H": 9}))


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_planted_stack_bug_fails_the_jax_comparison(bug: str) -> None:
    _, original, replacement = BUGS[bug]
    planted = mutant(original, replacement)
    with pytest.raises(AssertionError, match="disagree with the oracle"):
        check(_case("lstm", 2, True), planted.loss_and_grad)


def test_oracle_rejects_what_numpy_rejects() -> None:
    case = _case("gru", 2, True)
    wrong = {**case.params, "h0": case.params["h0"][:2]}
    with pytest.raises(ValueError, match=r"h0 has shape \(2, 3, 4\); expected \(L·dirs, B, H\)"):
        oracle.reference(wrong, case.xs, case.targets, cell="gru", **case.network)
