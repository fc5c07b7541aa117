"""The note's form (step Jacobians, literal, chains, vectorized, lag table) against JAX autodiff."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial
from typing import Any

import jax
import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st
from jax import lax

import bptt_ref
from bptt_ref import jax_reference, note_form
from bptt_ref.cases import Case
from bptt_ref.compare import Reference, compare_gradients
from bptt_ref.config import model_of
from bptt_ref.strategies import cases

PerTerm = Callable[..., tuple[Any, dict[str, Any]]]
FORMS: dict[str, PerTerm] = {
    "vectorized": bptt_ref.vectorized_grads,
    "chains": bptt_ref.chains_grads,
    "literal": bptt_ref.literal_grads,
}


def per_term_reference(case: Case) -> Callable[[bool], Reference]:
    return partial(_per_term, case)


def _per_term(case: Case, noise: bool) -> Reference:
    return jax_reference.per_term_reference(
        case.params, case.xs, case.targets, noise=noise, **case.config
    )


def check_per_term(form: PerTerm, case: Case) -> None:
    losses, grads = form(case.params, case.xs, case.targets, **case.config)
    T = case.dims["T"]
    assert set(grads) == set(bptt_ref.GRAD_NAMES)
    for key, grad in grads.items():
        assert grad.dtype == case.dtype, key
        expected = (T, *(case.xs.shape if key == "xs" else case.params[key].shape))
        assert grad.shape == expected, key
    assert losses.shape == (T,)
    ref = jax_reference.assert_matches(
        grads, per_term_reference(case), context=f"{form.__name__} {case!r}"
    )
    # Summed over the loss terms, the per-term gradients are the whole gradient.
    total = {k: g.sum(axis=0) for k, g in grads.items()}
    jax_reference.assert_matches_oracle(
        total, case.params, case.xs, case.targets, context=f"sum of {case!r}", **case.config
    )
    assert np.isclose(losses.sum(), ref.loss, rtol=1e-3 if case.dtype == np.float32 else 1e-9)


@settings(max_examples=300)
@given(cases())
def test_vectorized_per_term_gradients_match_jacrev(case: Case) -> None:
    check_per_term(bptt_ref.vectorized_grads, case)


@settings(max_examples=100)
@given(cases(max_T=10))
def test_chains_per_term_gradients_match_jacrev(case: Case) -> None:
    check_per_term(bptt_ref.chains_grads, case)


@settings(max_examples=60)
@given(cases(max_T=6, max_H=4, max_B=3))
def test_literal_per_term_gradients_match_jacrev(case: Case) -> None:
    check_per_term(bptt_ref.literal_grads, case)


_PAD = {"B": 4, "H": 8, "D": 4}


@cache
def _jacobians_of_one_step(textbook: bool, dtype: np.dtype[Any]) -> Callable[..., Any]:
    """Jitted dense Jacobians and VJPs of ``h = f(x Vᵀ + h_prev Wᵀ + b_h)`` on padded shapes.

    One compilation per (textbook, dtype): the activation is picked by ``lax.switch``, and
    zero padding of B, H, D leaves every real entry unchanged (padded units read zero
    weights and feed nothing real).
    """
    table = jax_reference.TEXTBOOK_HIDDEN if textbook else jax_reference.HIDDEN
    fns = list(table.values())

    def step(
        index: jax.Array, h: jax.Array, W: jax.Array, V: jax.Array, b_h: jax.Array, x: jax.Array
    ) -> jax.Array:
        h_new: jax.Array = lax.switch(index, fns, x @ V.T + h @ W.T + b_h[None, :])
        return h_new

    def all_of_them(index: jax.Array, v: jax.Array, *inputs: jax.Array) -> Any:
        inputs = tuple(a.astype(dtype) for a in inputs)
        fn = partial(step, index)
        _, vjp = jax.vjp(fn, *inputs)
        return (
            jax.jacfwd(fn, argnums=0)(*inputs),
            jax.jacrev(fn, argnums=(1, 2, 3, 4))(*inputs),
            vjp(v.astype(dtype))[1:],
        )

    return jax.jit(all_of_them)


def _padded(arr: np.ndarray, dims: str) -> np.ndarray:
    out = np.zeros(tuple(_PAD[d] for d in dims))
    out[tuple(slice(0, n) for n in arr.shape)] = arr
    return out


def _step_jacobians(case: Case, k: int, v: Any, textbook: bool) -> dict[str, np.ndarray]:
    """Dense Jacobians of step k by jacfwd/jacrev, and the VJPs of a cotangent v on h_k."""
    trace = bptt_ref.forward(case.params, case.xs, hidden=case.hidden)
    p = case.params
    h_prev = p["h0"] if k == 0 else trace.h[k - 1]
    B, H, D = case.dims["B"], case.dims["H"], case.dims["D"]
    inputs = [
        _padded(a, dims)
        for a, dims in (
            (h_prev, "BH"),
            (p["W"], "HH"),
            (p["V"], "HD"),
            (p["b_h"], "H"),
            (case.xs[k], "BD"),
        )
    ]
    index = list(jax_reference.HIDDEN).index(case.hidden)
    fn = _jacobians_of_one_step(textbook, np.dtype(case.dtype if textbook else np.float64))
    with jax.enable_x64(True):
        wrt_h, wrt, pulled = jax.tree.map(
            lambda a: np.asarray(a, dtype=np.float64),
            fn(index, _padded(np.asarray(v), "BH"), *inputs),
        )
    rows = np.arange(B)
    out = {
        # (B, H, B, H) is block-diagonal over the batch; keep the diagonal blocks.
        "recurrent": wrt_h[rows, :H, rows, :H],
        "off_diagonal": wrt_h[:B, :H, :B, :H] * (1 - np.eye(B))[:, None, :, None],
        "xs": wrt[3][rows, :H, rows, :D],
        "W": wrt[0][:B, :H, :H, :H],
        "V": wrt[1][:B, :H, :H, :D],
        "b_h": wrt[2][:B, :H, :H],
    }
    for name, got, shape in zip(
        ("W", "V", "b_h", "xs"), pulled, ((H, H), (H, D), (H,), (B, D)), strict=True
    ):
        out[f"pull_{name}"] = got[tuple(slice(0, n) for n in shape)]
    return out


@settings(max_examples=200)
@given(cases(max_T=5), st.data())
def test_step_jacobians_match_jacfwd_and_jacrev(case: Case, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, case.dims["T"] - 1), label="k")
    v = np.random.default_rng(case.seed).standard_normal(case.params["h0"].shape)
    jac = bptt_ref.step_jacobians(case.params, case.xs, hidden=case.hidden)
    actual = {
        "recurrent": jac.recurrent(k),
        "off_diagonal": np.zeros(1),
        **{name: jac.immediate(name, k) for name in ("W", "V", "b_h", "xs")},
        **{f"pull_{name}": jac.pull(name, k, v.astype(case.dtype)) for name in ("W", "V", "b_h")},
        "pull_xs": jac.pull("xs", k, v.astype(case.dtype)),
    }
    expected = _step_jacobians(case, k, v, textbook=False)
    peer = _step_jacobians(case, k, v, textbook=True)
    assert not expected["off_diagonal"].any(), "a step mixes batch rows"
    del expected["off_diagonal"], actual["off_diagonal"], peer["off_diagonal"]
    ref = Reference(
        loss=0.0,
        grads=expected,
        noise={key: float(np.max(np.abs(peer[key] - e))) for key, e in expected.items()},
        input_scale=dict.fromkeys(expected, 1.0),
        dtype=case.dtype,
    )
    failed = [str(c) for c in compare_gradients(actual, ref) if not c.ok]
    assert not failed, f"step {k} of {case!r}:\n" + "\n".join(failed)
    assert jac.recurrent().shape == (*case.xs.shape[:2], case.dims["H"], case.dims["H"])


def _lag_norms(case: Case, noise: bool) -> Reference:
    ref = jax_reference.lag_reference(
        case.params, case.xs, case.targets, noise=noise, **case.config
    )
    norms = {k: np.linalg.norm(g.reshape(*g.shape[:2], -1), axis=-1) for k, g in ref.grads.items()}
    # |‖a‖ - ‖e‖| <= ‖a - e‖: the peer's noise on the contributions bounds it on their norms.
    return Reference(ref.loss, norms, ref.noise, ref.input_scale, ref.dtype)


@settings(max_examples=150)
@given(cases(max_T=10))
def test_lag_table_matches_stepwise_jacrev(case: Case) -> None:
    table = bptt_ref.lag_contributions(case.params, case.xs, case.targets, **case.config)
    T = case.dims["T"]
    assert set(table) == {"W", "V", "b_h"}
    for name, norms in table.items():
        assert norms.shape == (T, T), name
        assert not np.triu(norms, 1).any(), (
            f"{name}: a loss term got a contribution from its future"
        )
    jax_reference.assert_matches(table, partial(_lag_norms, case), context=repr(case))


@settings(max_examples=40)
@given(cases(max_T=6, max_H=4))
def test_jacobian_product_norms_are_products_of_step_jacobians(case: Case) -> None:
    norms = bptt_ref.jacobian_product_norms(case.params, case.xs, hidden=case.hidden)
    jac = bptt_ref.step_jacobians(case.params, case.xs, hidden=case.hidden)
    T, B = case.xs.shape[:2]
    assert norms.shape == (T, T, B)
    assert np.array_equal(np.diagonal(norms, axis1=0, axis2=1), np.ones((B, T), dtype=case.dtype))
    assert not np.triu(norms.transpose(2, 0, 1), 1).any()
    if T >= 2:
        # One factor: the spectral norm of diag(f'(a_t)) W itself.
        one = np.linalg.norm(jac.recurrent(T - 1).astype(np.float64), ord=2, axis=(1, 2))
        ref = Reference(0.0, {"one": one}, None, {"one": 1.0}, case.dtype)
        assert all(c.ok for c in compare_gradients({"one": norms[T - 1, T - 2]}, ref))


def test_forms_agree_on_empty_time_and_batch() -> None:
    rng = np.random.default_rng(0)
    for T, B in ((0, 2), (3, 0)):
        params = bptt_ref.random_params(
            rng, batch_size=B, input_size=2, hidden_size=3, output_size=2
        )
        xs, targets = np.zeros((T, B, 2)), np.zeros((T, B, 2))
        for form in FORMS.values():
            losses, grads = form(params, xs, targets)
            assert losses.shape == (T,)
            assert grads["W"].shape == (T, 3, 3)
            assert grads["xs"].shape == (T, T, B, 2)
            assert not any(g.any() for g in grads.values())


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_forms_validate_like_loss_and_grad(form: PerTerm) -> None:
    rng = np.random.default_rng(1)
    params = bptt_ref.random_params(rng, batch_size=2, input_size=2, hidden_size=3, output_size=2)
    xs, targets = rng.standard_normal((4, 2, 2)), rng.standard_normal((4, 2, 2))
    before = {k: v.copy() for k, v in params.items()}
    form(params, xs.copy(), targets)
    assert all(np.array_equal(before[k], params[k]) for k in params), "inputs were modified"
    with pytest.raises(ValueError, match=r"W has shape \(3, 2\)"):
        form({**params, "W": np.zeros((3, 2))}, xs, targets)
    with pytest.raises(TypeError, match="xs has dtype int64"):
        form(params, xs.astype(np.int64), targets)
    with pytest.raises(ValueError, match="unknown hidden activation 'tan'"):
        form(params, xs, targets, hidden="tan")
    with pytest.raises(ValueError, match="no immediate partial for 'U'"):
        bptt_ref.step_jacobians(params, xs).pull("U", 0, np.zeros((2, 3)))


def test_import_does_not_pull_in_jax_or_matplotlib() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bptt_ref, bptt_ref.note_form, bptt_ref.truncation, bptt_ref.plots; "
        "bad = [m for m in ('jax', 'matplotlib', 'hypothesis') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# Test the tester: planted wrong per-term gradients must fail the comparison.


def _dropped_oldest_term(case: Case) -> dict[str, Any]:
    """Per-term gradients whose chains stop one step early: the k = 0 summand is lost."""
    _, grads = bptt_ref.vectorized_grads(case.params, case.xs, case.targets, **case.config)
    fp = note_form._forward(case.params, case.xs, case.targets, model_of(case.config))
    T = case.dims["T"]
    u = np.zeros((T, T, *fp.top.shape[1:]), fp.top.dtype)
    note_form._term_chains(fp.top, fp.slope, fp.params["W"], range(T), out=u)
    u0 = u[:, 0]  # ∂L_t/∂a_0, (T, B, H)
    grads["W"] = grads["W"] - np.einsum("tbi,bj->tij", u0, fp.states[0])
    grads["V"] = grads["V"] - np.einsum("tbi,bj->tij", u0, fp.xs[0])
    grads["b_h"] = grads["b_h"] - u0.sum(axis=1)
    grads["xs"][:, 0] = 0
    grads["h0"] = np.zeros_like(grads["h0"])
    return grads


def _misattributed_terms(case: Case) -> dict[str, Any]:
    """dL_t/dθ reported as the gradient of L_{t+1}: an off-by-one in the loss-term index."""
    _, grads = bptt_ref.vectorized_grads(case.params, case.xs, case.targets, **case.config)
    return {k: np.roll(g, 1, axis=0) for k, g in grads.items()}


def _fails(
    planted: Callable[[Case], dict[str, Any]], reference: Callable[[Case, bool], Reference]
) -> Callable[[Case], bool]:
    def fails(case: Case) -> bool:
        _, verdicts = jax_reference.judge_against(planted(case), partial(reference, case))
        return not all(v.ok for v in verdicts)

    return fails


@pytest.mark.parametrize("planted", [_dropped_oldest_term, _misattributed_terms])
def test_planted_per_term_bugs_fail(planted: Callable[[Case], dict[str, Any]]) -> None:
    find(cases(min_T=2, max_T=6, dtypes=(np.float64,)), _fails(planted, _per_term))


def _lag_off_by_one(case: Case) -> dict[str, Any]:
    table = bptt_ref.lag_contributions(case.params, case.xs, case.targets, **case.config)
    return {k: np.roll(v, 1, axis=1) for k, v in table.items()}


def test_planted_lag_shift_fails() -> None:
    find(cases(min_T=2, max_T=6, dtypes=(np.float64,)), _fails(_lag_off_by_one, _lag_norms))


def test_planted_wrong_step_jacobian_fails() -> None:
    def fails(case: Case) -> bool:
        jac = bptt_ref.step_jacobians(case.params, case.xs, hidden=case.hidden)
        # diag(f'(a)) Wᵀ: the transpose is the classic slip in the row convention.
        wrong = jac.slope[0][:, :, None] * jac.W.T
        expected = _step_jacobians(case, 0, np.zeros(case.params["h0"].shape), False)
        ref = Reference(0.0, {"J": expected["recurrent"]}, None, {"J": 1.0}, case.dtype)
        return not all(c.ok for c in compare_gradients({"J": wrong}, ref))

    find(cases(max_T=2, dtypes=(np.float64,)), fails)
