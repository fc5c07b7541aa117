"""The LSTM cell (``bptt_ref.cells.lstm``) against oracles that need no JAX.

With a random linear functional ``L = Σ_t Σ_b ⟨w_{t,b}, h_{t,b}⟩`` the direct cotangent is
``dh = w`` and no output head is needed. What is checked:

- the forward pass against the equations written out here, gate by gate (this is what sees
  a gate order that forward and backward share);
- ``⟨grad, u⟩`` against the complex step ``Im L(θ + i·1e-20·u) / 1e-20`` of the cell's own
  forward pass, along a direction over every key and along one key at a time, in three
  weight regimes, saturated, and with the freeze mask;
- float32 against float64, T = 0 and B = 0 as empty sums, inputs never modified, memory
  layout changing no bit, one backward per pass, and ``init``;
- test the tester: each planted bug below, a one-line edit of the module's source loaded as
  a separate module, must fail the complex-step comparison, and the unedited source must
  pass it.

Why without JAX and small: mutmut runs these tests for every mutant, in processes that
deadlock once XLA has started (docs/mutation.md).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from bptt_ref.cells import lstm
from bptt_ref.compare import DIRECTIONAL_TOLERANCES, directional_error, tolerance_for

Array = NDArray[Any]

STEP = 1e-20
"""The complex step: Im L(θ + i·STEP·u) / STEP is ⟨∇L, u⟩ exact to rounding."""
BOUND = DIRECTIONAL_TOLERANCES["complex"].rtol
KEYS = (*lstm.PARAMS, "xs")
# Every dim different, and 4H different from all of them, so that a transposed product or
# a sum over the wrong axis changes a shape instead of passing unnoticed.
DIMS = {"T": 5, "B": 3, "D": 2, "H": 4}
LIVE = np.array(
    [
        [True, True, True],
        [True, True, False],
        [True, False, True],
        [True, False, True],
        [True, False, False],
    ]
)
"""Row 0 live throughout, row 1 held from step 2 on, row 2 with holes (T = 5, B = 3)."""


class Case:
    """Parameters from ``lstm.init``, inputs and the cotangent ``w = dh``, one dtype."""

    def __init__(
        self,
        seed: int,
        *,
        dtype: Any = np.float64,
        radius: float = 1.0,
        **dims: int,
    ) -> None:
        T, B, D, H = ({**DIMS, **dims}[k] for k in ("T", "B", "D", "H"))
        rng = np.random.default_rng(seed)
        self.params = lstm.init(
            rng, batch_size=B, input_size=D, hidden_size=H, spectral_radius=radius, dtype=dtype
        )
        self.xs = rng.standard_normal((T, B, D)).astype(dtype)
        self.dh = rng.standard_normal((T, B, H)).astype(dtype)

    def theta(self) -> dict[str, Array]:
        return {**self.params, "xs": self.xs}


def _split(theta: Mapping[str, Array]) -> tuple[dict[str, Array], Array]:
    params = {k: v for k, v in theta.items() if k != "xs"}
    return params, theta["xs"]


def _grads(module: Any, case: Case, live: Array | None = None) -> dict[str, Array]:
    fw = module.forward(case.params, case.xs, live)
    grads: dict[str, Array] = module.backward(case.params, case.xs, fw, case.dh, live)
    return grads


def _complex_step(module: Any, case: Case, u: Mapping[str, Array], live: Array | None) -> float:
    moved = {k: v.astype(np.complex128) + 1j * STEP * u[k] for k, v in case.theta().items()}
    params, xs = _split(moved)
    loss = np.sum(case.dh * module.forward(params, xs, live).h)
    return float(np.imag(loss) / STEP)


def _directional_errors(
    module: Any, case: Case, live: Array | None = None, seed: int = 0
) -> dict[str, float]:
    """``directional_error`` along a direction over every key ("all"), over each key alone,
    and over each gate's block of ``b_ih`` alone ("b_ih[i]" …), where a gate's own
    derivative is not swamped by the other gates' terms."""
    grads = _grads(module, case, live)
    rng = np.random.default_rng(seed)
    u = {k: rng.standard_normal(v.shape) for k, v in case.theta().items()}
    H = case.params["h0"].shape[1]
    gate_blocks = {
        f"b_ih[{name}]": np.where(np.arange(4 * H) // H == k, u["b_ih"], 0)
        for k, name in enumerate("ifgo")
    }
    errors = {"all": directional_error(grads, u, _complex_step(module, case, u, live))}
    for name, part in [*((k, u[k]) for k in KEYS), *gate_blocks.items()]:
        key = name[:4] if name.startswith("b_ih") else name
        one = {k: part if k == key else np.zeros_like(v) for k, v in u.items()}
        errors[name] = directional_error(grads, {key: part}, _complex_step(module, case, one, live))
    return errors


def _sigmoid(a: Array) -> Array:
    s: Array = 1 / (1 + np.exp(-a))
    return s


def _equations(case: Case, live: Array | None) -> tuple[Array, Array]:
    """h_t and c_t (T, B, H) by the equations, one gate block of rows at a time, float64."""
    p = case.params
    H = p["h0"].shape[1]
    gate = {name: slice(k * H, (k + 1) * H) for k, name in enumerate("ifgo")}

    def pre(name: str, x: Array, h: Array) -> Array:
        rows = gate[name]
        out: Array = (
            x @ p["W_ih"][rows].T + p["b_ih"][rows] + h @ p["W_hh"][rows].T + p["b_hh"][rows]
        )
        return out

    h, c = p["h0"], p["c0"]
    hs, cs = [], []
    for t, x in enumerate(case.xs):
        i, f, o = (_sigmoid(pre(name, x, h)) for name in "ifo")
        g = np.tanh(pre("g", x, h))
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)
        keep = np.ones(len(x), bool) if live is None else live[t]
        h = np.where(keep[:, None], h_new, h)
        c = np.where(keep[:, None], c_new, c)
        hs.append(h)
        cs.append(c)
    return np.array(hs), np.array(cs)


@pytest.mark.parametrize("live", [None, LIVE], ids=["all-live", "freeze"])
def test_forward_follows_the_equations(live: Array | None) -> None:
    case = Case(1)
    fw = lstm.forward(case.params, case.xs, live)
    h, c = _equations(case, live)
    np.testing.assert_allclose(fw.h, h, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(fw.c, c, rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(fw.states[0], case.params["h0"])
    np.testing.assert_array_equal(fw.cells[0], case.params["c0"])


def _assert_within_bound(errors: Mapping[str, float]) -> None:
    worst = max(errors, key=lambda k: errors[k])
    assert errors[worst] <= BOUND, f"{worst}: directional error {errors[worst]:.3g} > {BOUND:g}"


@pytest.mark.parametrize("radius", [0.5, 1.0, 1.5])
def test_gradients_match_complex_step(radius: float) -> None:
    case = Case(2, radius=radius)
    grads = _grads(lstm, case)
    assert set(grads) == set(KEYS)
    for key, value in case.theta().items():
        assert grads[key].shape == value.shape, key
        assert grads[key].dtype == np.float64, key
    _assert_within_bound(_directional_errors(lstm, case, seed=3))


def _saturated() -> Case:
    """Every gate at a ≈ 20 and every c_t above 10, so that every derivative of the cell is
    below 1e-8 (σ'(20) = 2e-9, sech²(10) = 8e-9, sech²(20) = 2e-17): σ(1 − σ) or 1 − tanh²
    of a rounded value would lose most of its digits here, and fail (see CANCELLING)."""
    case = Case(4)
    case.params["b_ih"] = case.params["b_ih"] + 20
    case.params["c0"] = case.params["c0"] + 10
    return case


def test_gradients_match_complex_step_when_saturated() -> None:
    _assert_within_bound(_directional_errors(lstm, _saturated(), seed=5))


def test_freeze_mask_matches_complex_step() -> None:
    case = Case(6, radius=1.5)
    _assert_within_bound(_directional_errors(lstm, case, LIVE, seed=7))
    fw = lstm.forward(case.params, case.xs, LIVE)
    for t in range(1, len(LIVE)):
        held = ~LIVE[t]
        np.testing.assert_array_equal(fw.h[t][held], fw.h[t - 1][held])
        np.testing.assert_array_equal(fw.c[t][held], fw.c[t - 1][held])
    grads = _grads(lstm, case, LIVE)
    assert not grads["xs"][~LIVE].any(), "a held step differentiated its input"
    # A mask that holds nothing is no mask, bit for bit.
    everything = np.ones(LIVE.shape, bool)
    unmasked = _grads(lstm, case)
    for key, grad in _grads(lstm, case, everything).items():
        np.testing.assert_array_equal(grad, unmasked[key], err_msg=key)


def test_float32_agrees_with_float64() -> None:
    case = Case(8, dtype=np.float32, T=6)
    wide = Case(8, dtype=np.float32, T=6)
    wide.params = {k: v.astype(np.float64) for k, v in wide.params.items()}
    wide.xs, wide.dh = wide.xs.astype(np.float64), wide.dh.astype(np.float64)
    fw = lstm.forward(case.params, case.xs)
    assert fw.h.dtype == fw.c.dtype == np.float32
    grads, reference = _grads(lstm, case), _grads(lstm, wide)
    rtol = tolerance_for(np.float32)
    for key, grad in grads.items():
        assert grad.dtype == np.float32, key
        scale = np.max(np.abs(reference[key]))
        err = np.max(np.abs(grad - reference[key])) / scale
        assert err <= rtol, f"{key}: float32 off by {err:.3g} of its largest entry > {rtol:g}"


@pytest.mark.parametrize("narrow", ["xs", "params"])
def test_mixed_dtypes_run_in_their_common_dtype(narrow: str) -> None:
    # forward promises the inputs' common dtype: float32 inputs with float64 parameters
    # (or the reverse) give the pass of both upcast to float64, bit for bit.
    case = Case(10)
    params, xs = case.params, case.xs
    if narrow == "xs":
        xs = xs.astype(np.float32)
    else:
        params = {k: v.astype(np.float32) for k, v in params.items()}
    wide_params = {k: v.astype(np.float64) for k, v in params.items()}
    mixed, wide = lstm.forward(params, xs), lstm.forward(wide_params, xs.astype(np.float64))
    for name, array in mixed._asdict().items():
        assert array.dtype == np.float64, name
        np.testing.assert_array_equal(array, getattr(wide, name), err_msg=name)


@pytest.mark.parametrize(("T", "B"), [(0, 3), (4, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_time_or_batch_is_an_empty_sum(T: int, B: int, dtype: Any) -> None:
    case = Case(9, dtype=dtype, T=T, B=B)
    fw = lstm.forward(case.params, case.xs)
    assert fw.h.shape == fw.c.shape == (T, B, DIMS["H"])
    grads = _grads(lstm, case)
    for key, value in case.theta().items():
        assert grads[key].shape == value.shape, key
        assert grads[key].dtype == dtype, key
        assert not grads[key].any(), key


def test_inputs_are_never_modified() -> None:
    case = Case(10)
    arrays = {**case.theta(), "dh": case.dh, "live": LIVE.copy()}
    before = {k: v.copy() for k, v in arrays.items()}
    for v in arrays.values():
        v.flags.writeable = False  # a write would raise
    fw = lstm.forward(case.params, case.xs, arrays["live"])
    lstm.backward(case.params, case.xs, fw, case.dh, arrays["live"])
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_layout_changes_no_bit() -> None:
    case = Case(11)
    expected = _grads(lstm, case, LIVE)
    other = Case(11)
    other.params = {k: np.asfortranarray(v) for k, v in case.params.items()}
    other.xs = np.repeat(case.xs, 2, axis=2)[:, :, ::2]  # a non-contiguous view
    other.dh = np.asfortranarray(case.dh)
    live = np.asfortranarray(LIVE)
    assert not other.xs.flags.c_contiguous
    np.testing.assert_array_equal(
        lstm.forward(other.params, other.xs, live).h, lstm.forward(case.params, case.xs, LIVE).h
    )
    for key, grad in _grads(lstm, other, live).items():
        np.testing.assert_array_equal(grad, expected[key], err_msg=f"{key}: depends on layout")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gates_past_the_exponents_range_are_finite(dtype: Any) -> None:
    # Inputs ×1e4 drive pre-activations to ±1e4, where e^{−a} overflows both dtypes: the
    # capped exponent keeps σ and its slope below the normal range there instead of
    # inf · 0 = NaN.
    case = Case(16, dtype=dtype)
    case.xs = case.xs * dtype(1e4)
    fw = lstm.forward(case.params, case.xs)
    assert np.max(np.abs(fw.partials)) < np.inf
    grads = lstm.backward(case.params, case.xs, fw, case.dh)
    for key, grad in grads.items():
        assert np.all(np.isfinite(grad)), key
    # Both ends reached: σ below the smallest normal number, and 1.
    assert np.min(fw.forget) < np.finfo(dtype).tiny
    assert np.max(fw.forget) == 1


def test_a_pass_serves_one_backward() -> None:
    case = Case(12)
    fw = lstm.forward(case.params, case.xs)
    lstm.backward(case.params, case.xs, fw, case.dh)
    message = (
        r"^fw has already been used by backward, which overwrites fw\.partials; "
        r"expected a pass fresh from forward \(run forward again\)$"
    )
    with pytest.raises(ValueError, match=message):
        lstm.backward(case.params, case.xs, fw, case.dh)


@pytest.mark.parametrize("radius", [0.5, 1.5])
def test_init_shapes_dtypes_and_spectral_radius(radius: float) -> None:
    B, D, H = 3, 2, 5
    sizes = {"B": B, "D": D, "H": H, "4H": 4 * H}
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(13)
        params = lstm.init(
            rng, batch_size=B, input_size=D, hidden_size=H, spectral_radius=radius, dtype=dtype
        )
        assert list(params) == list(lstm.PARAMS)
        for key, dims in lstm.PARAMS.items():
            assert params[key].shape == tuple(sizes[d] for d in dims), key
            assert params[key].dtype == dtype, key
        for k in range(4):
            block = params["W_hh"][k * H : (k + 1) * H].astype(np.float64)
            rho = np.max(np.abs(np.linalg.eigvals(block)))
            assert rho == pytest.approx(radius, rel=1e-5), f"gate block {k}"


def test_init_errors() -> None:
    kwargs: dict[str, Any] = {
        "batch_size": 1,
        "input_size": 1,
        "hidden_size": 1,
        "spectral_radius": 1.0,
    }
    with pytest.raises(TypeError, match=r"^rng must be a numpy.random.Generator; got int$"):
        lstm.init(0, dtype=np.float64, **kwargs)
    with pytest.raises(TypeError, match=r"^dtype is float16; expected float32 or float64$"):
        lstm.init(np.random.default_rng(0), dtype=np.float16, **kwargs)


# Test the tester: planted bugs, each a one-line edit of the real source.

# name: (line as written in lstm.py, the planted replacement)
BUGS: dict[str, tuple[str, str]] = {
    "forget gate without the c_{t-1} carry (forward)": (
        "np.multiply(f, c_prev, out=c)",
        "c[...] = 0",
    ),
    "forget gate without the c_{t-1} carry (backward)": (
        "c_bar *= fw.forget[t]",
        "c_bar[...] = 0",
    ),
    "gate order i, f, o, g": (
        "i, f, _, o = (value[:, k * H : (k + 1) * H] for k in range(4))",
        "i, f, o, _ = (value[:, k * H : (k + 1) * H] for k in range(4))",
    ),
    "tanh(c_t)'s derivative dropped": (
        "slope_c = _tanh_prime(c, tanh_c, out=dh_dc[t])",
        "slope_c = dh_dc[t]; slope_c[...] = 1",
    ),
    "only one of the two biases getting a gradient": (
        '"b_hh": d_b.copy(),',
        '"b_hh": np.zeros_like(d_b),',
    ),
}


def _mutant(original: str, replacement: str) -> types.ModuleType:
    """``bptt_ref.cells.lstm`` from its source with one line replaced."""
    source = inspect.getsource(lstm)
    if "mutmut" in source:
        pytest.skip("mutmut has rewritten the source these bugs are planted in")
    assert source.count(original) == 1, f"the line {original!r} is gone from lstm.py"
    module = types.ModuleType("bptt_ref.cells._lstm_mutant")
    module.__dict__["__package__"] = "bptt_ref.cells"
    exec(compile(source.replace(original, replacement), "<mutant>", "exec"), module.__dict__)
    return module


# Derivatives in their cancelling forms: exact in real arithmetic, wrong in floating point
# at saturation, and only there.
CANCELLING: dict[str, tuple[str, str]] = {
    "σ'(a) as σ(1 − σ), tanh'(a_g) as 4 σ(2a_g)(1 − σ(2a_g))": (
        "logistic_pair(a, scale, out=(value, complement))",
        "logistic_pair(a, scale, out=(value, complement)); np.subtract(1, value, out=complement)",
    ),
    "tanh'(a_g) as 1 − g²": ("d_g *= work", "d_g[...] = i * (1 - g * g)"),
    "tanh'(c_t) as 1 − tanh²(c_t)": (
        "_tanh_prime(c, tanh_c, out=dh_dc[t])",
        "np.subtract(1, tanh_c * tanh_c, out=dh_dc[t])",
    ),
}


def _assert_fails(errors: Mapping[str, float], bug: str) -> None:
    worst = max(errors, key=lambda k: errors[k])
    assert errors[worst] > BOUND, f"{bug}: largest error {errors[worst]:.3g} ({worst}) within bound"


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_planted_bug_fails_the_complex_step_comparison(bug: str) -> None:
    module = _mutant(*BUGS[bug])
    _assert_fails(_directional_errors(module, Case(14, radius=1.5), seed=15), bug)


@pytest.mark.parametrize("bug", sorted(CANCELLING))
def test_cancelling_derivative_fails_when_saturated(bug: str) -> None:
    module = _mutant(*CANCELLING[bug])
    _assert_fails(_directional_errors(module, _saturated(), seed=5), bug)


def test_unedited_source_passes_the_complex_step_comparison() -> None:
    # The control: the same loading path with no edit, on both cases the bugs are shown on.
    module = _mutant("import numpy as np", "import numpy as np")
    _assert_within_bound(_directional_errors(module, Case(14, radius=1.5), seed=15))
    _assert_within_bound(_directional_errors(module, _saturated(), seed=5))
