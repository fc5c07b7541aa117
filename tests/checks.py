"""The comparisons the suite makes, each a function of one case and the gradient under test.

Tests call them with ``bptt_ref.loss_and_grad``; ``test_meta.py`` calls the very same
functions with planted wrong gradients and requires each to fail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from hypothesis import strategies as st

import bptt_ref
from bptt_ref.cases import Case
from bptt_ref.cells import CELLS
from bptt_ref.compare import DIRECTIONAL_TOLERANCES, directional_error, tolerance_for
from bptt_ref.finite_difference import directional_estimate, random_direction
from bptt_ref.strategies import cases

LossAndGrad = Callable[..., tuple[float, dict[str, Any]]]

SMOOTH = ("identity", "tanh", "sigmoid", "softplus", "silu", "gelu")
"""Hidden activations with a continuous second derivative, where central differences hold."""

# Complex step differentiates the branch each unit is on; at an exact relu or
# leaky_relu kink a second-order real perturbation (h²·u_W·u_h0) picks a branch at
# random, so those cases have no complex-step derivative to compare with.
complex_step_cases = cases(dtypes=(np.float64,)).filter(
    lambda c: not (c.style == "kink" and c.hidden in ("relu", "leaky_relu"))
)
# Central differences also need no kink within the step and a loss whose higher
# derivatives along u stay moderate, which an expanding recurrence or inputs scaled by 30
# break.
central_difference_cases = cases(
    dtypes=(np.float64,),
    hidden=SMOOTH,
    regimes=("contracting", "near_critical"),
    styles=("normal", "zeros", "kink"),
)


def check_against_oracle(case: Case, loss_and_grad: LossAndGrad = bptt_ref.loss_and_grad) -> None:
    """Every gradient and the loss agree with the JAX oracle (``bptt_ref.compare``)."""
    __tracebackhide__ = True
    from bptt_ref import jax_reference  # the directional checks below run without JAX

    loss, grads = loss_and_grad(case.params, case.xs, case.targets, cell=case.cell, **case.config)
    assert set(grads) == set(CELLS[case.cell].grad_names)
    for key, grad in grads.items():
        assert grad.dtype == case.dtype, key
    ref = jax_reference.assert_matches_oracle(
        grads,
        case.params,
        case.xs,
        case.targets,
        context=repr(case),
        cell=case.cell,
        **case.config,
    )
    # The loss is one sum, so its rounding is bounded like one gradient entry. Below the
    # dtype's smallest normal number it has no relative precision left: a float32 loss of
    # 0 for an oracle loss of 7e-301 (confident softmax on logits of 1e4) is right.
    floor = float(np.finfo(case.dtype).tiny)
    bound = tolerance_for(case.dtype) * max(abs(ref.loss), floor) + _logit_rounding(case)
    assert abs(loss - ref.loss) <= bound, f"loss {loss!r} != oracle {ref.loss!r} for {case!r}"


def _logit_rounding(case: Case) -> float:
    """What rounding the logits alone moves the loss by: each ``z = h Uᵀ + b_y``, a dot of
    H terms and a bias in the case's dtype, is off by up to ``(H + 1)·eps·m`` with ``m =
    |h| |U|ᵀ + |b_y|``, so L by up to ``Σ |∂L/∂z|·(H + 1)·eps·m`` to first order. A loss
    far below its logits (1e-29 from logits of 1e4, in float32) moves by about 1e4·eps of
    itself: more than the relative tolerance alone allows."""
    from bptt_ref._losses import loss_grad_logits

    wide = {k: v.astype(np.float64) for k, v in case.params.items()}
    trace = bptt_ref.forward(
        wide, case.xs.astype(np.float64), cell=case.cell, hidden=case.hidden, output=case.output
    )
    g = loss_grad_logits(
        case.output, case.loss, trace.z, trace.y_hat, case.targets.astype(np.float64)
    )
    m = np.abs(trace.h) @ np.abs(wide["U"]).T + np.abs(wide["b_y"])
    eps = float(np.finfo(case.dtype).eps)
    return (case.dims["H"] + 1) * eps * float(np.sum(np.abs(g) * m))


def check_directional(
    case: Case,
    method: Literal["complex", "central"],
    loss_and_grad: LossAndGrad = bptt_ref.loss_and_grad,
) -> None:
    """⟨∇L, u⟩ from the gradients agrees with differencing the forward pass along u.

    The bound is the method's rtol plus twice its own truncation estimate (Richardson
    for central differences, 0 for the complex step), relative to Σ|g_i u_i|.
    """
    __tracebackhide__ = True
    _, grads = loss_and_grad(case.params, case.xs, case.targets, cell=case.cell, **case.config)
    u = random_direction(np.random.default_rng(case.seed), case.params, case.xs)
    numeric = directional_estimate(
        case.params, case.xs, case.targets, u, method=method, cell=case.cell, **case.config
    )
    err = directional_error(grads, u, numeric.value)
    magnitude = sum(float(np.sum(np.abs(grads[k] * u[k]))) for k in u)
    bound = DIRECTIONAL_TOLERANCES[method].rtol + (
        2 * numeric.truncation / magnitude if magnitude > 0 else 0.0
    )
    assert err <= bound, f"{method} difference: err {err:.3g} > {bound:.3g} for {case!r}"


ORACLES: dict[str, tuple[st.SearchStrategy[Case], Callable[[Case, LossAndGrad], None]]] = {
    "jax": (cases(), check_against_oracle),
    "complex_step": (complex_step_cases, lambda c, lg: check_directional(c, "complex", lg)),
    "central_difference": (
        central_difference_cases,
        lambda c, lg: check_directional(c, "central", lg),
    ),
}
"""Every comparison of gradients the suite makes: the cases it runs on and the check."""
