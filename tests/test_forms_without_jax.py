"""The note's form and truncated BPTT against oracles that need no JAX.

What is checked, each against something computed independently in this file:

- the per-term gradients dL_t/dθ of ``literal_grads``, ``chains_grads`` and ``vectorized_grads``
  against the complex-step derivative of each loss term L_t of a forward pass written here
  (and the zero structure dL_t/dx_k = 0 for k > t); their sums over t against
  ``loss_and_grad``; float32 against float64;
- ``step_jacobians`` against complex-step Jacobians of one step of the recurrence,
  ``jacobian_product_norms`` against spectral norms of explicit products of those Jacobians,
  ``lag_contributions`` against the complex-step derivative with respect to one step's copy
  of W, V and b_h;
- the subnormal flush of the float32 chains;
- window truncation, chunked TBPTT and both mask semantics against the complex-step
  gradient of a forward pass that holds the state entering each window constant (or holds
  the state of padded steps), the identities that tie them to full BPTT, and the error
  messages of their arguments.

Why without JAX: ``nox -s mutation`` runs these tests under mutmut, which runs every
mutant in a process forked from one that has run the tests, and a process forked after
XLA has started its thread pool deadlocks (docs/mutation.md). The JAX oracle tests of the
same functions are in ``test_note_form.py`` and ``test_truncation.py``. The tests here are
small and deterministic, because mutmut reruns them for every mutant.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import bptt_ref
from bptt_ref import note_form
from bptt_ref._activations import HIDDEN, OUTPUT
from bptt_ref._losses import loss_sum
from bptt_ref.cases import Case, make_case
from bptt_ref.config import model_of
from bptt_ref.truncation import chunk_starts, window_starts

Array = NDArray[Any]
Config = tuple[str, str, str]
PerTerm = Callable[..., tuple[Array, dict[str, Array]]]

STEP = 1e-20
"""The complex step: Im f(θ + i·STEP·e) / STEP is ∂f/∂θ·e exact to rounding."""

# Every dim different, so that a transposed product or a sum over the wrong axis changes
# a shape instead of passing unnoticed.
DIMS = {"T": 5, "B": 2, "D": 3, "H": 4, "O": 6}
DEFAULT: Config = ("tanh", "identity", "mse")
# sigmoid is the hidden activation whose derivative reads h = f(a) as well as a.
CONFIGS: list[Config] = [
    DEFAULT,
    ("sigmoid", "softmax", "cross_entropy"),
    ("softplus", "sigmoid", "binary_cross_entropy"),
]
FORMS: dict[str, PerTerm] = {
    "literal": bptt_ref.literal_grads,
    "chains": bptt_ref.chains_grads,
    "vectorized": bptt_ref.vectorized_grads,
}


def _case(
    config: Config = DEFAULT,
    *,
    dtype: Any = np.float64,
    regime: str = "near_critical",
    seed: int = 0,
    **dims: int,
) -> Case:
    hidden, output, loss = config
    return make_case(
        dims={**DIMS, **dims},
        hidden=hidden,
        output=output,
        loss=loss,
        dtype=dtype,
        regime=regime,
        style="normal",
        seed=seed,
    )


def _config(case: Case) -> Config:
    return (case.hidden, case.output, case.loss)


def _theta(case: Case) -> dict[str, Array]:
    """Every differentiable input in float64, keyed as the gradients are."""
    return {k: v.astype(np.float64) for k, v in {**case.params, "xs": case.xs}.items()}


def _at_step(theta: Mapping[str, Array], name: str, t: int) -> Array:
    """θ's value at step t: W, V and b_h may be given one copy per step (an extra first axis)."""
    value = theta[name]
    per_step = value.ndim == {"W": 3, "V": 3, "b_h": 2}[name]
    return value[t] if per_step else value


def _row_losses(
    theta: Mapping[str, Array],
    targets: Array,
    config: Config,
    *,
    start: int = 0,
    state: Array | None = None,
    live: Array | None = None,
) -> Array:
    """``loss(ŷ_{t,b}, y_{t,b})`` for steps ``start …`` T - 1, shape (T - start, B).

    The recurrence is entered at step ``start`` with ``state`` (``θ["h0"]`` when None);
    where ``live[t, b]`` is False, row b keeps its state through step t. Written out here
    step by step, independently of the package's forward pass; complex inputs welcome.
    """
    hidden, output, loss = config
    h = theta["h0"] if state is None else state
    rows = []
    for t in range(start, theta["xs"].shape[0]):
        a = theta["xs"][t] @ _at_step(theta, "V", t).T + h @ _at_step(theta, "W", t).T
        new = HIDDEN[hidden].f(a + _at_step(theta, "b_h", t))
        h = new if live is None else np.where(live[t][:, None], new, h)
        z = h @ theta["U"].T + theta["b_y"]
        y_hat = OUTPUT[output].f(z)
        rows.append(
            [
                loss_sum(loss, z[b][None, None], y_hat[b][None, None], targets[t, b][None, None])
                for b in range(z.shape[0])
            ]
        )
    return np.array(rows).reshape(-1, theta["h0"].shape[0])


def _real_states(theta: Mapping[str, Array], config: Config) -> Array:
    """``h_{t-1}`` for t = 0 … T - 1 (``h_{-1} = h0``) of the real forward pass, (T, B, H)."""
    h = theta["h0"]
    states = []
    for t in range(theta["xs"].shape[0]):
        states.append(h)
        a = theta["xs"][t] @ theta["V"].T + h @ theta["W"].T + theta["b_h"]
        h = HIDDEN[config[0]].f(a)
    return np.array(states)


def _complex_jacobian(
    f: Callable[[dict[str, Array]], Array], theta: Mapping[str, Array], keys: Sequence[str]
) -> dict[str, Array]:
    """``∂f(θ)/∂θ[key]`` for each key by the complex step, shape (*f(θ).shape, *θ[key].shape)."""
    base = {k: v.astype(np.complex128) for k, v in theta.items()}
    jacobians = {}
    for key in keys:
        columns = []
        for index in np.ndindex(theta[key].shape):
            moved = {**base, key: base[key].copy()}
            moved[key][index] += 1j * STEP
            columns.append(np.imag(f(moved)) / STEP)
        out_shape = np.shape(f(base))
        jacobians[key] = np.stack(columns, axis=-1).reshape(*out_shape, *theta[key].shape)
    return jacobians


def _assert_close(actual: Array, expected: Array, rtol: float, what: str) -> None:
    """Entrywise within rtol, and within rtol of the largest entry where an entry is ~0."""
    assert actual.shape == expected.shape, what
    scale = float(np.max(np.abs(expected), initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def _per_term_oracle(case: Case) -> tuple[Array, dict[str, Array]]:
    theta = _theta(case)
    targets = case.targets.astype(np.float64)

    def losses(th: dict[str, Array]) -> Array:
        terms: Array = _row_losses(th, targets, _config(case)).sum(axis=1)
        return terms

    return losses(theta).real, _complex_jacobian(losses, theta, bptt_ref.GRAD_NAMES)


def _check_per_term(case: Case, losses: Array, grads: Mapping[str, Array], rtol: float) -> None:
    T = case.xs.shape[0]
    theta = _theta(case)
    assert set(grads) == set(bptt_ref.GRAD_NAMES)
    assert losses.shape == (T,)
    assert losses.dtype == case.dtype
    expected_losses, expected = _per_term_oracle(case)
    _assert_close(losses, expected_losses, rtol, "losses")
    for key, grad in grads.items():
        assert grad.dtype == case.dtype, key
        assert grad.shape == (T, *theta[key].shape), key
        _assert_close(grad, expected[key], rtol, key)
    for t in range(T):
        assert not grads["xs"][t, t + 1 :].any(), f"L_{t} depends on a later input"


@pytest.mark.parametrize("config", CONFIGS, ids="-".join)
@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_per_term_gradients_match_complex_step(form: PerTerm, config: Config) -> None:
    case = _case(config, seed=1)
    losses, grads = form(case.params, case.xs, case.targets, **case.config)
    _check_per_term(case, losses, grads, rtol=1e-9)
    # Summed over the loss terms they are the gradient of L.
    total, full = bptt_ref.loss_and_grad(case.params, case.xs, case.targets, **case.config)
    assert losses.sum() == pytest.approx(total, rel=1e-13, abs=0)
    for key, grad in grads.items():
        _assert_close(grad.sum(axis=0), full[key], 1e-11, key)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("terms_per_block", [1, 2, 3])
def test_vectorized_in_blocks_of_loss_terms(
    monkeypatch: pytest.MonkeyPatch, terms_per_block: int, dtype: Any
) -> None:
    # Large problems run their chains a block of terms at a time (T = 5: blocks of 2 end
    # with a block of one, blocks of 3 with one of two).
    case = _case(CONFIGS[1], dtype=dtype, seed=3, T=5)
    T, B, _ = case.xs.shape
    H = case.params["W"].shape[0]
    monkeypatch.setattr(
        note_form, "_TERM_BLOCK_BYTES", terms_per_block * T * B * H * np.dtype(dtype).itemsize
    )
    blocks: list[range] = []

    run_block = note_form._term_chains

    def term_chains(top: Array, slope: Array, W: Array, terms: range, out: Array) -> Array:
        blocks.append(terms)
        return run_block(top, slope, W, terms, out)

    monkeypatch.setattr(note_form, "_term_chains", term_chains)
    losses, grads = bptt_ref.vectorized_grads(case.params, case.xs, case.targets, **case.config)
    _check_per_term(case, losses, grads, rtol=1e-9 if dtype == np.float64 else 2e-5)
    # Each term's chain runs once, in a block of the given size (the last one shorter).
    starts = range(0, T, terms_per_block)
    assert blocks == [range(t, min(t + terms_per_block, T)) for t in starts]


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_per_term_gradients_in_float32_with_the_default_configuration(form: PerTerm) -> None:
    case = _case(DEFAULT, dtype=np.float32, seed=2)
    losses, grads = form(case.params, case.xs, case.targets)
    _check_per_term(case, losses, grads, rtol=2e-5)


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_per_term_forms_of_empty_time_and_batch(form: PerTerm) -> None:
    for T, B in ((0, 2), (3, 0)):
        case = _case(dtype=np.float32, T=T, B=B)
        losses, grads = form(case.params, case.xs, case.targets, **case.config)
        assert losses.shape == (T,)
        assert losses.dtype == np.float32
        theta = _theta(case)
        for key, grad in grads.items():
            assert grad.shape == (T, *theta[key].shape), key
            assert grad.dtype == np.float32, key
            assert not grad.any(), key


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_per_term_forms_check_names_and_targets(form: PerTerm) -> None:
    case = _case()
    with pytest.raises(ValueError, match=r"^loss 'cross_entropy' cannot follow output 'identity'"):
        form(case.params, case.xs, case.targets, loss="cross_entropy")
    with pytest.raises(ValueError, match=r"^targets has rows that are not probability"):
        form(case.params, case.xs, case.targets, output="softmax", loss="cross_entropy")


# One step of the recurrence, h_k = f(x_k Vᵀ + h_{k-1} Wᵀ + b_h), and its Jacobians.


def _one_step_jacobians(case: Case, k: int) -> dict[str, Array]:
    """Dense Jacobians of step k by complex step, laid out as ``StepJacobians`` lays them out."""
    theta = _theta(case)
    inputs = {
        "h_prev": _real_states(theta, _config(case))[k],
        "W": theta["W"],
        "V": theta["V"],
        "b_h": theta["b_h"],
        "x": theta["xs"][k],
    }

    def step(th: dict[str, Array]) -> Array:
        a = th["x"] @ th["V"].T + th["h_prev"] @ th["W"].T + th["b_h"]
        return HIDDEN[case.hidden].f(a)

    dense = _complex_jacobian(step, inputs, list(inputs))
    rows = np.arange(case.xs.shape[1])
    return {
        # (B, H, B, H) and (B, H, B, D) are block-diagonal over the batch; the blocks:
        "recurrent": dense["h_prev"][rows, :, rows, :],
        "xs": dense["x"][rows, :, rows, :],
        "W": dense["W"],
        "V": dense["V"],
        "b_h": dense["b_h"],
        "off_diagonal": dense["h_prev"] * (1 - np.eye(len(rows)))[:, None, :, None],
    }


@pytest.mark.parametrize("hidden", ["tanh", "sigmoid"])
def test_step_jacobians_match_complex_step(hidden: str) -> None:
    case = _case((hidden, "identity", "mse"), T=3, seed=3)
    # tanh, the default, is left to the default.
    kwargs = {} if hidden == "tanh" else {"hidden": hidden}
    jac = bptt_ref.step_jacobians(case.params, case.xs, **kwargs)
    T, B = case.xs.shape[:2]
    H = case.params["W"].shape[0]
    assert jac.recurrent().shape == (T, B, H, H)
    v = np.random.default_rng(4).standard_normal((B, H))
    for k in range(T):
        expected = _one_step_jacobians(case, k)
        assert not expected["off_diagonal"].any()
        _assert_close(jac.recurrent(k), expected["recurrent"], 1e-12, f"recurrent({k})")
        _assert_close(jac.recurrent()[k], expected["recurrent"], 1e-12, f"recurrent()[{k}]")
        for name in ("W", "V", "b_h", "xs"):
            _assert_close(jac.immediate(name, k), expected[name], 1e-12, f"{name} at {k}")
            # Σ_b v_b ∂h_{k,b}/∂θ; for x_k, one row per b (x_{k,b} feeds row b only).
            spec = "bi,bid->bd" if name == "xs" else "bi,bi...->..."
            pulled = np.einsum(spec, v, expected[name])
            _assert_close(jac.pull(name, k, v), pulled, 1e-12, f"pull {name} at {k}")


def test_step_jacobians_keep_float32() -> None:
    case = _case(dtype=np.float32, T=2)
    jac = bptt_ref.step_jacobians(case.params, case.xs)
    v = np.ones(case.params["h0"].shape, dtype=np.float32)
    for name in ("W", "V", "b_h", "xs"):
        assert jac.immediate(name, 1).dtype == np.float32, name
        assert jac.pull(name, 1, v).dtype == np.float32, name
    assert jac.recurrent(1).dtype == np.float32


@pytest.mark.parametrize("method", ["immediate", "pull"])
def test_step_jacobians_name_the_parameters_they_have(method: str) -> None:
    case = _case(T=2)
    jac = bptt_ref.step_jacobians(case.params, case.xs)
    args = (0,) if method == "immediate" else (0, np.zeros(case.params["h0"].shape))
    message = "no immediate partial for 'U'; expected one of W, V, b_h, xs"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        getattr(jac, method)("U", *args)


@pytest.mark.parametrize("hidden", ["tanh", "sigmoid"])
def test_jacobian_product_norms_are_norms_of_explicit_products(hidden: str) -> None:
    case = _case((hidden, "identity", "mse"), T=4, regime="expanding", seed=5)
    kwargs = {} if hidden == "tanh" else {"hidden": hidden}
    norms = bptt_ref.jacobian_product_norms(case.params, case.xs, **kwargs)
    T, B = case.xs.shape[:2]
    assert norms.shape == (T, T, B)
    J = [_one_step_jacobians(case, i)["recurrent"] for i in range(T)]
    expected = np.zeros((T, T, B))
    for t in range(T):
        for k in range(t + 1):
            # Π_{i=k+1..t} J_i, the newest factor on the left.
            product = np.broadcast_to(np.eye(J[0].shape[-1]), J[0].shape)
            for i in range(t, k, -1):
                product = product @ J[i]
            expected[t, k] = np.linalg.norm(product, ord=2, axis=(1, 2))
    _assert_close(norms, expected, 1e-12, "norms")
    assert np.array_equal(norms[np.arange(T), np.arange(T)], np.ones((T, B)))


def test_jacobian_product_norms_keep_float32() -> None:
    case = _case(dtype=np.float32, T=3)
    assert bptt_ref.jacobian_product_norms(case.params, case.xs).dtype == np.float32


def _lag_oracle(case: Case) -> dict[str, Array]:
    """Norm of ∂L_t/∂(step k's own copy of θ) for θ = W, V, b_h: the summands of the note's sum."""
    T = case.xs.shape[0]
    theta = _theta(case)
    for name in ("W", "V", "b_h"):
        theta[name] = np.repeat(theta[name][None], T, axis=0)
    targets = case.targets.astype(np.float64)

    def losses(th: dict[str, Array]) -> Array:
        terms: Array = _row_losses(th, targets, _config(case)).sum(axis=1)
        return terms

    per_step = _complex_jacobian(losses, theta, ["W", "V", "b_h"])
    return {k: np.linalg.norm(g.reshape(T, T, -1), axis=-1) for k, g in per_step.items()}


@pytest.mark.parametrize("config", CONFIGS[:2], ids="-".join)
def test_lag_contributions_are_norms_of_per_step_derivatives(config: Config) -> None:
    case = _case(config, seed=6)
    kwargs = (
        {} if config == DEFAULT else dict(zip(("hidden", "output", "loss"), config, strict=True))
    )
    table = bptt_ref.lag_contributions(case.params, case.xs, case.targets, **kwargs)
    expected = _lag_oracle(case)
    assert set(table) == {"W", "V", "b_h"}
    for name, norms in table.items():
        assert norms.dtype == np.float64
        _assert_close(norms, expected[name], 1e-9, name)


def test_lag_contributions_keep_float32() -> None:
    case = _case(dtype=np.float32, T=3)
    table = bptt_ref.lag_contributions(case.params, case.xs, case.targets)
    assert {k: v.dtype for k, v in table.items()} == dict.fromkeys(("W", "V", "b_h"), np.float32)


# float32 chains: carried in float64, stored in float32 with subnormals flushed to zero.


def _chains(
    per_term: bool, top: np.ndarray, slope: np.ndarray, W: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(u, h0) of every loss term on its own (T, T, B, H) or summed (T, B, H)."""
    if not per_term:
        return note_form._chain_cotangents(top, slope, W)
    T = top.shape[0]
    u = np.zeros((T, T, *top.shape[1:]), top.dtype)
    return u, note_form._term_chains(top, slope, W, range(T), out=u)


@pytest.mark.parametrize("per_term", [True, False])
def test_float32_chains_flush_subnormals(per_term: bool) -> None:
    # A contracting chain falls below float32's smallest normal number within about a
    # hundred and fifty steps back.
    case = _case(dtype=np.float32, regime="contracting", seed=7, T=160, H=3)
    fp = note_form._forward(case.params, case.xs, case.targets, model_of(case.config))
    top = fp.top.copy()
    if not per_term:
        # The sum of all chains is renewed at every step; one loss term's chain decays.
        top[:-1] = 0
    W, slope = fp.params["W"], fp.slope
    u, h0 = _chains(per_term, top, slope, W)
    wide = (a.astype(np.float64) for a in (top, slope, W))
    u64, h0_64 = _chains(per_term, *wide)
    floor = np.finfo(np.float32).tiny / np.finfo(np.float32).eps
    assert u.dtype == h0.dtype == np.float32
    assert ((u64 != 0) & (np.abs(u64) < floor)).any(), "nothing to flush: make the case longer"
    assert not ((u != 0) & (np.abs(u) < floor)).any(), "a value below tiny/eps was stored"
    # Carried in float64, each u is its float64 value rounded once, or flushed; a value
    # flushed further up a chain moves the values below it by a few times the floor at most.
    np.testing.assert_allclose(u, u64, rtol=1e-6, atol=8 * floor)
    np.testing.assert_allclose(h0, h0_64, rtol=1e-6, atol=8 * floor)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flush_keeps_the_floor_and_flushes_the_summed_chain(dtype: type[np.floating]) -> None:
    # T = 2, B = H = 1, f_h' = 1, W = 1: the chain of L_1 carries -floor back to step 0,
    # where L_0 adds 1.5·floor (floor = tiny/eps). The floor itself is kept; full BPTT
    # carries the sum of the chains as one chain (the δ recurrence), so it is that sum,
    # 0.5·floor, that is flushed, not a value left over from adding two chains.
    floor = float(np.finfo(dtype).tiny / np.finfo(dtype).eps)
    top = np.array([1.5 * floor, -floor], dtype=dtype).reshape(2, 1, 1)
    ones = np.ones((2, 1, 1), dtype=dtype)
    u, h0 = note_form._chain_cotangents(top, ones, ones[0])
    assert u.dtype == dtype
    assert u[1, 0, 0] == dtype(-floor)
    assert u[0, 0, 0] == 0
    assert h0[0, 0] == 0


def test_long_float32_per_term_gradients_match_float64() -> None:
    case = _case(dtype=np.float32, regime="contracting", seed=7, T=160, H=3)
    losses, grads = bptt_ref.vectorized_grads(case.params, case.xs, case.targets)
    wide = _theta(case)
    targets = case.targets.astype(np.float64)
    params = {k: v for k, v in wide.items() if k != "xs"}
    losses64, grads64 = bptt_ref.vectorized_grads(params, wide["xs"], targets)
    _assert_close(losses, losses64, 1e-5, "losses")
    for key, grad in grads.items():
        assert grad.dtype == np.float32, key
        _assert_close(grad, grads64[key], 1e-4, key)


# Truncation: the gradient of Σ_t L_t with the state entering each loss term's window held.


def _truncated_oracle(case: Case, starts: Sequence[int]) -> tuple[float, dict[str, Array]]:
    """L and the per-term truncated gradients (T, *θ.shape) by complex step.

    Loss term t's window starts at starts[t]: L_t is computed by a forward pass entering
    step starts[t] with the real (unperturbed, so constant) state h_{starts[t] - 1}, or
    with h0 itself at step 0. Summed over t, these are the truncated gradient of L.
    """
    config = _config(case)
    theta = _theta(case)
    targets = case.targets.astype(np.float64)
    held = _real_states(theta, config)

    def windowed_terms(th: dict[str, Array]) -> Array:
        terms = np.zeros(len(starts), dtype=complex)
        for s in set(starts):
            state = None if s == 0 else held[s].astype(complex)
            rows = _row_losses(th, targets, config, start=s, state=state).sum(axis=1)
            for t in np.flatnonzero(np.asarray(starts) == s):
                terms[t] = rows[t - s]
        return terms

    full = float(_row_losses(theta, targets, config).sum().real)
    return full, _complex_jacobian(windowed_terms, theta, bptt_ref.GRAD_NAMES)


def _check_truncated(
    case: Case, got: tuple[float, Mapping[str, Array]], starts: Sequence[int]
) -> None:
    loss, grads = got
    expected_loss, expected = _truncated_oracle(case, starts)
    assert isinstance(loss, float)
    assert loss == pytest.approx(expected_loss, rel=1e-13, abs=0)
    # The loss itself is never truncated: the very sum loss_and_grad computes.
    assert loss == bptt_ref.loss_and_grad(case.params, case.xs, case.targets, **case.config)[0]
    assert set(grads) == set(bptt_ref.GRAD_NAMES)
    theta = _theta(case)
    for key, grad in grads.items():
        assert grad.dtype == case.dtype, key
        assert grad.shape == theta[key].shape, key
        _assert_close(grad, expected[key].sum(axis=0), 1e-9, key)


@pytest.mark.parametrize(
    ("window", "starts"), [(0, range(6)), (1, [0, 0, 1, 2, 3, 4]), (3, [0, 0, 0, 0, 1, 2])]
)
def test_window_truncation_matches_held_state_complex_step(
    window: int, starts: Sequence[int]
) -> None:
    case = _case(CONFIGS[1], T=6, seed=8)
    got = bptt_ref.window_loss_and_grad(
        case.params, case.xs, case.targets, window=window, **case.config
    )
    _check_truncated(case, got, list(starts))


@pytest.mark.parametrize(
    ("T", "k1", "k2", "starts"),
    [
        (5, 1, 1, [0, 1, 2, 3, 4]),
        (6, 2, 3, [0, 0, 1, 1, 3, 3]),
        # A short last chunk is back-propagated from the sequence's end over k2 steps.
        (7, 3, 3, [0, 0, 0, 3, 3, 3, 4]),
        (5, 2, 4, [0, 0, 0, 0, 1]),
    ],
)
def test_chunked_tbptt_matches_held_state_complex_step(
    T: int, k1: int, k2: int, starts: list[int]
) -> None:
    case = _case(T=T, seed=9)
    got = bptt_ref.tbptt_loss_and_grad(case.params, case.xs, case.targets, k1=k1, k2=k2)
    _check_truncated(case, got, starts)
    assert np.array_equal(chunk_starts(T, k1, k2), starts)


def test_starts_of_windows_and_chunks() -> None:
    for starts in (window_starts(5, 3), window_starts(4, 0), chunk_starts(7, 3, 3)):
        assert starts.dtype == np.intp
    assert np.array_equal(window_starts(5, 3), [0, 0, 0, 0, 1])
    assert np.array_equal(window_starts(4, 0), [0, 1, 2, 3])
    assert np.array_equal(window_starts(3, 7), [0, 0, 0])
    assert window_starts(0, 2).shape == (0,)
    assert np.array_equal(chunk_starts(5, 5, 5), [0, 0, 0, 0, 0])
    assert np.array_equal(chunk_starts(8, 3, 4), [0, 0, 0, 2, 2, 2, 4, 4])
    assert chunk_starts(0, 1, 1).shape == (0,)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_truncation_reaching_step_0_is_full_bptt(dtype: Any) -> None:
    case = _case(CONFIGS[1], dtype=dtype, T=6, seed=10)
    args = (case.params, case.xs, case.targets)
    T = case.xs.shape[0]
    loss, full = bptt_ref.window_loss_and_grad(*args, window=T - 1, **case.config)
    everything = np.ones((T, case.xs.shape[1]), dtype=bool)
    # Every window reaching step 0 is the same sum, formed the same way: bit for bit.
    for other_loss, other in (
        bptt_ref.window_loss_and_grad(*args, window=T + 3, **case.config),
        bptt_ref.tbptt_loss_and_grad(*args, k1=2, k2=T, **case.config),
        bptt_ref.tbptt_loss_and_grad(*args, k1=T + 1, k2=T + 1, **case.config),
        bptt_ref.masked_loss_and_grad(*args, everything, **case.config),
        bptt_ref.masked_loss_and_grad(*args, everything, mode="freeze", **case.config),
    ):
        assert other_loss == loss
        for key, grad in full.items():
            assert np.array_equal(other[key], grad), key
    # ... and that sum is full BPTT, summed by loss_and_grad in another order.
    reference_loss, reference = bptt_ref.loss_and_grad(*args, **case.config)
    assert loss == reference_loss
    for key, grad in full.items():
        assert grad.dtype == dtype, key
        _assert_close(grad, reference[key], 1e-12 if dtype == np.float64 else 1e-5, key)


@pytest.mark.parametrize(("T", "B"), [(0, 2), (3, 0)])
@pytest.mark.parametrize("function", ["window", "tbptt", "masked"])
def test_truncation_of_empty_time_or_batch(function: str, T: int, B: int) -> None:
    # An empty sum, as for loss_and_grad: L = 0 and every gradient zero.
    case = _case(dtype=np.float32, T=T, B=B)
    args = (case.params, case.xs, case.targets)
    loss, grads = {
        "window": lambda: bptt_ref.window_loss_and_grad(*args, window=1),
        "tbptt": lambda: bptt_ref.tbptt_loss_and_grad(*args, k1=1, k2=2),
        "masked": lambda: bptt_ref.masked_loss_and_grad(*args, np.ones((T, B), dtype=bool)),
    }[function]()
    assert loss == 0.0
    theta = _theta(case)
    for key, grad in grads.items():
        assert grad.shape == theta[key].shape, key
        assert grad.dtype == np.float32, key
        assert not grad.any(), key


@pytest.mark.parametrize("function", ["window", "tbptt"])
def test_truncation_in_float32_with_the_default_configuration(function: str) -> None:
    case = _case(dtype=np.float32, T=6, seed=11)
    wide = _theta(case)
    runs = []
    for params, xs, targets in (
        (case.params, case.xs, case.targets),
        ({k: v for k, v in wide.items() if k != "xs"}, wide["xs"], case.targets.astype(float)),
    ):
        if function == "window":
            runs.append(bptt_ref.window_loss_and_grad(params, xs, targets, window=2))
        else:
            runs.append(bptt_ref.tbptt_loss_and_grad(params, xs, targets, k1=2, k2=3))
    (loss, grads), (loss64, grads64) = runs
    assert loss == pytest.approx(loss64, rel=1e-5)
    for key, grad in grads.items():
        assert grad.dtype == np.float32, key
        _assert_close(grad, grads64[key], 2e-5, key)


# Masks.

MASK = np.array(
    [
        [True, True, True],
        [True, True, False],
        [True, False, True],
        [True, False, True],
        [True, False, False],
        [True, False, True],
    ]
)
"""Row 0 real throughout, row 1 padded at the end, row 2 with holes."""


def _masked_oracle(case: Case, mode: str) -> tuple[float, dict[str, Array]]:
    theta = _theta(case)
    targets = case.targets.astype(np.float64)
    live = MASK if mode == "freeze" else None

    def masked_loss(th: dict[str, Array]) -> Array:
        rows = _row_losses(th, targets, _config(case), live=live)
        total: Array = np.sum(np.where(MASK, rows, 0))
        return total

    loss = float(np.real(masked_loss(theta)))
    return loss, _complex_jacobian(masked_loss, theta, bptt_ref.GRAD_NAMES)


@pytest.mark.parametrize("config", CONFIGS, ids="-".join)
@pytest.mark.parametrize("mode", ["loss", "freeze"])
def test_masks_match_complex_step(mode: str, config: Config) -> None:
    case = _case(config, T=6, B=3, seed=12)
    # "loss", the default mode, is left to the default; tanh/identity/mse likewise.
    kwargs: dict[str, Any] = {} if mode == "loss" else {"mode": mode}
    if config != DEFAULT:
        kwargs.update(case.config)
    loss, grads = bptt_ref.masked_loss_and_grad(case.params, case.xs, case.targets, MASK, **kwargs)
    expected_loss, expected = _masked_oracle(case, mode)
    assert isinstance(loss, float)
    assert loss == pytest.approx(expected_loss, rel=1e-13, abs=0)
    theta = _theta(case)
    for key, grad in grads.items():
        assert grad.dtype == np.float64, key
        assert grad.shape == theta[key].shape, key
        _assert_close(grad, expected[key], 1e-9, key)
    if mode == "freeze":
        assert not grads["xs"][~MASK].any(), "a held step differentiated its input"


def test_masks_keep_float32() -> None:
    case = _case(dtype=np.float32, T=6, B=3, seed=13)
    for mode in bptt_ref.MASK_MODES:
        loss, grads = bptt_ref.masked_loss_and_grad(
            case.params, case.xs, case.targets, MASK, mode=mode
        )
        assert isinstance(loss, float)
        assert {k: g.dtype for k, g in grads.items()} == dict.fromkeys(grads, np.float32)


# Arguments: each error names the argument, what it got and what was expected.


def _raises(error: type[Exception], message: str) -> Any:
    return pytest.raises(error, match=f"^{re.escape(message)}$")


@pytest.mark.parametrize(
    ("window", "error", "message"),
    [
        (-1, ValueError, "window = -1; expected an integer >= 0"),
        (1.5, TypeError, "window has type float; expected an integer >= 0"),
        (True, TypeError, "window is a bool (True); expected an integer >= 0"),
    ],
)
def test_window_errors(window: Any, error: type[Exception], message: str) -> None:
    case = _case()
    with _raises(error, message):
        bptt_ref.window_loss_and_grad(case.params, case.xs, case.targets, window=window)
    with _raises(error, message):
        window_starts(5, window)


K2_BELOW_K1 = (
    "k2 = 2 < k1 = 3; expected k2 >= k1 (with k2 < k1 the first k1 - k2 losses of each "
    "chunk would lie outside the window they are back-propagated in)"
)


@pytest.mark.parametrize(
    ("k1", "k2", "error", "message"),
    [
        (0, 2, ValueError, "k1 = 0; expected an integer >= 1"),
        (1, 0, ValueError, "k2 = 0; expected an integer >= 1"),
        (3, 2, ValueError, K2_BELOW_K1),
        (2, "3", TypeError, "k2 has type str; expected an integer >= 1"),
        (False, 2, TypeError, "k1 is a bool (False); expected an integer >= 1"),
    ],
)
def test_chunk_errors(k1: Any, k2: Any, error: type[Exception], message: str) -> None:
    case = _case()
    with _raises(error, message):
        bptt_ref.tbptt_loss_and_grad(case.params, case.xs, case.targets, k1=k1, k2=k2)
    with _raises(error, message):
        chunk_starts(5, k1, k2)


@pytest.mark.parametrize(
    ("T", "error", "message"),
    [
        (-1, ValueError, "T = -1; expected an integer >= 0"),
        (2.0, TypeError, "T has type float; expected an integer >= 0"),
    ],
)
def test_sequence_length_errors(T: Any, error: type[Exception], message: str) -> None:
    with _raises(error, message):
        window_starts(T, 1)
    with _raises(error, message):
        chunk_starts(T, 1, 1)


def test_mask_errors() -> None:
    case = _case(T=5, B=2)
    args = (case.params, case.xs, case.targets)
    good = np.ones((5, 2), dtype=bool)
    message = "mask has dtype float64; expected bool (True where a step is real)"
    with _raises(TypeError, message):
        bptt_ref.masked_loss_and_grad(*args, good.astype(float))
    with _raises(ValueError, "mask has shape (2, 5); expected (T, B) = (5, 2) from xs"):
        bptt_ref.masked_loss_and_grad(*args, good.T)
    with _raises(ValueError, "unknown mask mode 'hold'; expected one of ['loss', 'freeze']"):
        bptt_ref.masked_loss_and_grad(*args, good, mode="hold")
    with pytest.raises(ValueError, match=r"^loss 'cross_entropy' cannot follow output 'identity'"):
        bptt_ref.masked_loss_and_grad(*args, good, loss="cross_entropy")
    with pytest.raises(ValueError, match=r"^targets has rows that are not probability"):
        bptt_ref.masked_loss_and_grad(*args, good, output="softmax", loss="cross_entropy")
