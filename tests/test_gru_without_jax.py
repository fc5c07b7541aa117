"""The GRU cell (``bptt_ref.cells.gru``, both reset placements) against oracles that need no JAX.

With a random linear functional of the hidden states, L = Σ_t Σ_b ⟨w_{t,b}, h_{t,b}⟩
(so ∂L/∂h_t = w_t and no output head is involved), ``backward``'s gradient along a
random direction u is compared with the complex step Im L(θ + i·1e-20·u)/1e-20 of the
module's own ``forward``, jointly over every parameter and the inputs and one key at a
time; the forward pass is compared with the equations written out here. Then float32
against float64, T = 0 and B = 0, the freeze mask, inputs left alone, memory layout, and
``init``.

Test the tester: planted bugs, each a one-line edit of the module's source loaded as a
separate module, must fail the very complex-step comparison the tests above pass, and the
unedited source loaded the same way must pass it.

Small and deterministic, without JAX, so that they can run under mutmut
(docs/mutation.md).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from bptt_ref.cells import gru
from bptt_ref.compare import DIRECTIONAL_TOLERANCES, TOLERANCES, directional_error

Array = NDArray[Any]
Case = tuple[dict[str, Array], Array, Array]

STEP = 1e-20
"""The complex step: Im f(θ + i·STEP·u) / STEP is ⟨∇f, u⟩ exact to rounding."""
RTOL = DIRECTIONAL_TOLERANCES["complex"].rtol

# Every dim different, so that a transposed product or a sum over the wrong axis changes
# a shape instead of passing unnoticed.
DIMS = {"T": 5, "B": 3, "D": 2, "H": 4}
VARIANTS = {"gru": True, "gru_reset_before": False}
KEYS = (*gru.PARAMS, "xs")

MASK = np.array(
    [
        [True, True, True],
        [True, True, False],
        [True, False, True],
        [True, False, False],
        [True, False, True],
    ]
)
"""Row 0 live throughout, row 1 padded at the end, row 2 with holes."""


def _case(
    seed: int = 0,
    *,
    dtype: Any = np.float64,
    radius: float = 1.0,
    input_scale: float = 1.0,
    **dims: int,
) -> Case:
    """Parameters from ``gru.init``, inputs and the functional's weights w = ∂L/∂h."""
    d = {**DIMS, **dims}
    rng = np.random.default_rng(seed)
    params = gru.init(
        rng,
        batch_size=d["B"],
        input_size=d["D"],
        hidden_size=d["H"],
        spectral_radius=radius,
        dtype=np.float64,
    )
    xs = input_scale * rng.standard_normal((d["T"], d["B"], d["D"]))
    w = rng.standard_normal((d["T"], d["B"], d["H"]))
    return {k: v.astype(dtype) for k, v in params.items()}, xs.astype(dtype), w.astype(dtype)


def _shut(case: Case) -> Case:
    """The case with b_hz raised by 40: z = 1 − 4e-18 rounds to 1, and every gate's
    gradient is of order 1 − z, which only a cancellation-free σ(−a_z) resolves."""
    params, xs, w = case
    H = params["h0"].shape[-1]
    b_hh = params["b_hh"].copy()
    b_hh[H : 2 * H] += 40
    return {**params, "b_hh": b_hh}, xs, w


CASES: dict[str, Case] = {
    "contracting": _case(1, radius=0.5),
    "near_critical": _case(2, radius=1.0),
    "expanding": _case(3, radius=1.5),
    # Inputs ×30 drive gates and candidates deep into saturation (σ(a_z) rounds to 1),
    # where only derivatives written without cancellation keep their relative precision.
    "saturated": _case(4, input_scale=30.0),
    "update_gate_shut": _shut(_case(5)),
}


def _grads(
    module: types.ModuleType, case: Case, reset_after: bool, live: Array | None = None
) -> dict[str, Array]:
    params, xs, w = case
    fw = module.forward(params, xs, live, reset_after=reset_after)
    grads: dict[str, Array] = module.backward(params, xs, fw, w, live)
    return grads


def _complex_step(
    module: types.ModuleType,
    case: Case,
    direction: Mapping[str, Array],
    reset_after: bool,
    live: Array | None,
) -> float:
    params, xs, w = case
    theta = {**params, "xs": xs}
    moved = {k: theta[k] + 1j * STEP * direction[k] for k in KEYS}
    h = module.forward(moved, moved.pop("xs"), live, reset_after=reset_after).h
    return float(np.imag(np.sum(h * w))) / STEP


def check_complex_step(
    module: types.ModuleType, case: Case, reset_after: bool, live: Array | None = None
) -> None:
    """⟨∇L, u⟩ agrees with the complex step along u over all keys, and for each key alone."""
    __tracebackhide__ = True
    params, xs, _ = case
    grads = _grads(module, case, reset_after, live)
    assert set(grads) == set(KEYS)
    theta = {**params, "xs": xs}
    rng = np.random.default_rng(99)
    u = {k: rng.standard_normal(theta[k].shape) for k in KEYS}
    for keys in (KEYS, *((k,) for k in KEYS)):
        direction = {k: u[k] for k in keys}
        full = {k: direction.get(k, np.zeros_like(u[k])) for k in KEYS}
        numeric = _complex_step(module, case, full, reset_after, live)
        err = directional_error(grads, direction, numeric)
        assert err <= RTOL, f"keys {keys}: err {err:.3g} > {RTOL:.3g} (complex step {numeric!r})"


def _reference_h(case: Case, reset_after: bool, live: Array | None = None) -> Array:
    """h_t written out from the equations, gate blocks sliced r, z, n; (T, B, H)."""
    params, xs, _ = case
    W_ir, W_iz, W_in = np.split(params["W_ih"], 3)
    W_hr, W_hz, W_hn = np.split(params["W_hh"], 3)
    b_ir, b_iz, b_in = np.split(params["b_ih"], 3)
    b_hr, b_hz, b_hn = np.split(params["b_hh"], 3)
    h = params["h0"]
    hs = []
    for t, x in enumerate(xs):
        r = 1 / (1 + np.exp(-(x @ W_ir.T + b_ir + h @ W_hr.T + b_hr)))
        z = 1 / (1 + np.exp(-(x @ W_iz.T + b_iz + h @ W_hz.T + b_hz)))
        if reset_after:
            n = np.tanh(x @ W_in.T + b_in + r * (h @ W_hn.T + b_hn))
        else:
            n = np.tanh(x @ W_in.T + b_in + (r * h) @ W_hn.T + b_hn)
        new = (1 - z) * n + z * h
        h = new if live is None else np.where(live[t][:, None], new, h)
        hs.append(h)
    return np.array(hs).reshape(*xs.shape[:2], h.shape[-1])


@pytest.mark.parametrize("live", [None, MASK], ids=["all_live", "mask"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_matches_the_equations(variant: str, live: Array | None) -> None:
    case = CASES["near_critical"]
    h = gru.forward(case[0], case[1], live, reset_after=VARIANTS[variant]).h
    expected = _reference_h(case, VARIANTS[variant], live)
    assert h.shape == expected.shape
    assert h.dtype == np.float64
    np.testing.assert_allclose(h, expected, rtol=1e-13, atol=1e-15)
    # The two variants are different functions of the same parameters.
    other = _reference_h(case, not VARIANTS[variant], live)
    assert np.max(np.abs(h - other)) > 1e-3


@pytest.mark.parametrize("regime", CASES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradient_matches_complex_step(variant: str, regime: str) -> None:
    check_complex_step(gru, CASES[regime], VARIANTS[variant])


def test_forward_is_the_pytorch_variant_by_default() -> None:
    params, xs, _ = CASES["contracting"]
    assert gru.forward(params, xs).reset_after is True
    pytorch = gru.forward(params, xs, reset_after=True)
    np.testing.assert_array_equal(gru.forward(params, xs).h, pytorch.h)


@pytest.mark.parametrize("variant", VARIANTS)
def test_blocks_of_steps_change_no_bit(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The forward pass turns its gates into slopes a block of steps at a time; a block of
    # one step (each step its own block) must give the bits of one block of all.
    # Control: with one block at least, the default block holds every step of this case.
    _, xs, w = CASES["expanding"]
    T, B, H = w.shape
    assert T * B * 4 * H * xs.itemsize <= vars(gru)["_BLOCK_BYTES"]
    monkeypatch.setattr(gru, "_MIN_BLOCKS", 1)
    whole = _grads(gru, CASES["expanding"], VARIANTS[variant])
    monkeypatch.setattr(gru, "_BLOCK_BYTES", 1)
    for key, grad in _grads(gru, CASES["expanding"], VARIANTS[variant]).items():
        np.testing.assert_array_equal(grad, whole[key], err_msg=key)


@pytest.mark.parametrize(
    ("T", "block_bytes", "blocks"),
    [
        (20, None, [3] * 6 + [2]),  # ⌈20 / 8⌉ = 3 steps, the last block short
        (8, None, [1] * 8),  # ⌈8 / 8⌉ = 1
        (20, 2 * 3 * 4 * 4 * 8 + 7, [2] * 10),  # two steps' four (B, H) gates fit, not three
        (20, 3 * 3 * 4 * 4 * 8, [3] * 6 + [2]),  # three fit: the step limit, as by default
    ],
)
@pytest.mark.parametrize("variant", VARIANTS)
def test_blocks_are_as_long_as_both_limits_allow(
    variant: str,
    T: int,
    block_bytes: int | None,
    blocks: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The gates wait for _slopes in blocks of ⌈T / _MIN_BLOCKS⌉ steps, or of as many as
    # fit in _BLOCK_BYTES (four (B, H) buffers a step): few NumPy calls, bounded buffers.
    # Whatever the blocks, short last one included, the bits are those of one block of all.
    case = _case(11, T=T)
    B, H = case[2].shape[1:]
    assert (B, H, case[1].itemsize) == (3, 4, 8)  # the sizes block_bytes is written for
    monkeypatch.setattr(gru, "_MIN_BLOCKS", 1)
    whole = _grads(gru, case, VARIANTS[variant])
    monkeypatch.undo()
    if block_bytes is not None:
        monkeypatch.setattr(gru, "_BLOCK_BYTES", block_bytes)
    slopes, seen = vars(gru)["_slopes"], []

    def recording(slots: Array, *rest: Any) -> None:
        seen.append(len(slots))
        slopes(slots, *rest)

    monkeypatch.setattr(gru, "_slopes", recording)
    for key, grad in _grads(gru, case, VARIANTS[variant]).items():
        np.testing.assert_array_equal(grad, whole[key], err_msg=key)
    assert seen == blocks


@pytest.mark.parametrize("narrow", ["xs", "params"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_mixed_dtypes_run_in_their_common_dtype(variant: str, narrow: str) -> None:
    # forward promises the dtype all inputs promote to: float32 inputs with float64
    # parameters (or the reverse) give a float64 pass, that of both upcast to float64 to
    # float32 rounding. (Not bit for bit: with float32 parameters the sum b_ih + b_hh is
    # formed in float32. Checked inputs, as loss_and_grad passes them, share one dtype.)
    params, xs, _ = CASES["near_critical"]
    if narrow == "xs":
        xs = xs.astype(np.float32)
    else:
        params = {k: v.astype(np.float32) for k, v in params.items()}
    wide_params = {k: v.astype(np.float64) for k, v in params.items()}
    mixed = gru.forward(params, xs, reset_after=VARIANTS[variant])
    wide = gru.forward(wide_params, xs.astype(np.float64), reset_after=VARIANTS[variant])
    for name in ("states", "slots", "n"):
        assert getattr(mixed, name).dtype == np.float64, name
        np.testing.assert_allclose(
            getattr(mixed, name), getattr(wide, name), rtol=1e-6, atol=1e-7, err_msg=name
        )


@pytest.mark.parametrize("variant", VARIANTS)
def test_freeze_mask_matches_complex_step(variant: str) -> None:
    case = CASES["near_critical"]
    reset_after = VARIANTS[variant]
    check_complex_step(gru, case, reset_after, MASK)
    h0 = case[0]["h0"][None]
    states = np.concatenate([h0, gru.forward(case[0], case[1], MASK, reset_after=reset_after).h])
    # A frozen row holds its state bit for bit, and its input gets no gradient.
    assert np.array_equal(states[1:][~MASK], states[:-1][~MASK])
    grads = _grads(gru, case, reset_after, MASK)
    assert not grads["xs"][~MASK].any()
    assert grads["xs"][MASK].all()
    # A mask that freezes nothing is no mask, bit for bit.
    everything = np.ones_like(MASK)
    unmasked = _grads(gru, case, reset_after)
    for key, grad in _grads(gru, case, reset_after, everything).items():
        assert np.array_equal(grad, unmasked[key]), key


@pytest.mark.parametrize("input_scale", [1.0, 30.0])
@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_against_float64(variant: str, input_scale: float) -> None:
    # Inputs ×30 saturate gates beyond float32's range of exp and cosh (|a| > 89), which
    # must stay warning-free and finite (pytest turns warnings into errors).
    reset_after = VARIANTS[variant]
    rtol = TOLERANCES[np.dtype(np.float32)].rtol
    single = _case(5, dtype=np.float32, input_scale=input_scale)
    double = _case(5, dtype=np.float64, input_scale=input_scale)
    h32 = gru.forward(single[0], single[1], reset_after=reset_after).h
    h64 = gru.forward(double[0], double[1], reset_after=reset_after).h
    assert h32.dtype == np.float32
    np.testing.assert_allclose(h32, h64, rtol=0, atol=rtol * np.max(np.abs(h64)))
    expected = _grads(gru, double, reset_after)
    for key, grad in _grads(gru, single, reset_after).items():
        assert grad.dtype == np.float32, key
        assert grad.shape == expected[key].shape, key
        scale = np.max(np.abs(expected[key]))
        np.testing.assert_allclose(grad, expected[key], rtol=0, atol=rtol * scale, err_msg=key)


@pytest.mark.parametrize(("T", "B"), [(0, 3), (4, 0), (0, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", VARIANTS)
def test_empty_time_or_batch_is_an_empty_sum(variant: str, dtype: Any, T: int, B: int) -> None:
    case = _case(6, dtype=dtype, T=T, B=B)
    params, xs, _ = case
    fw = gru.forward(params, xs, reset_after=VARIANTS[variant])
    assert fw.h.shape == (T, B, DIMS["H"])
    assert fw.h.dtype == dtype
    grads = _grads(gru, case, VARIANTS[variant])
    theta = {**params, "xs": xs}
    for key in KEYS:
        assert grads[key].shape == theta[key].shape, key
        assert grads[key].dtype == dtype, key
        assert not grads[key].any(), key


@pytest.mark.parametrize("variant", VARIANTS)
def test_inputs_are_not_modified(variant: str) -> None:
    params, xs, w = CASES["near_critical"]
    copies = {**{k: v.copy() for k, v in params.items()}, "xs": xs.copy(), "w": w.copy()}
    frozen = {k: v.copy() for k, v in copies.items()}
    for array in frozen.values():
        array.setflags(write=False)  # a write into any of them raises
    live = MASK.copy()
    live.setflags(write=False)
    xs_frozen, w_frozen = frozen.pop("xs"), frozen.pop("w")
    fw = gru.forward(frozen, xs_frozen, live, reset_after=VARIANTS[variant])
    gru.backward(frozen, xs_frozen, fw, w_frozen, live)
    inputs = {**params, "xs": xs, "w": w}
    for key, value in copies.items():
        assert np.array_equal(value, inputs[key]), key
    assert np.array_equal(live, MASK)


@pytest.mark.parametrize("variant", VARIANTS)
def test_memory_layout_does_not_change_a_bit(variant: str) -> None:
    case = CASES["near_critical"]
    params, xs, w = case
    fortran: Case = (
        {k: np.asfortranarray(v) for k, v in params.items()},
        np.asfortranarray(xs),
        np.asfortranarray(w),
    )
    assert not fortran[0]["W_hh"].flags.c_contiguous
    reset_after = VARIANTS[variant]
    h_c = gru.forward(params, xs, MASK, reset_after=reset_after).h
    h_f = gru.forward(fortran[0], fortran[1], np.asfortranarray(MASK), reset_after=reset_after).h
    assert np.array_equal(h_c, h_f)
    from_f = _grads(gru, fortran, reset_after, np.asfortranarray(MASK))
    for key, grad in _grads(gru, case, reset_after, MASK).items():
        assert np.array_equal(grad, from_f[key]), key


def _init(dtype: Any) -> dict[str, Array]:
    return gru.init(
        np.random.default_rng(7),
        batch_size=3,
        input_size=2,
        hidden_size=5,
        spectral_radius=1.5,
        dtype=dtype,
    )


def test_init_shapes_dtypes_and_spectral_radius() -> None:
    double = _init(np.float64)
    sizes = {"B": 3, "D": 2, "H": 5, "3H": 15}
    assert list(double) == list(gru.PARAMS)
    for key, dims in gru.PARAMS.items():
        assert double[key].shape == tuple(sizes[d] for d in dims), key
        assert double[key].dtype == np.float64, key
    # Each gate's block of W_hh has the spectral radius asked for.
    for block in np.split(double["W_hh"], 3):
        assert np.max(np.abs(np.linalg.eigvals(block))) == pytest.approx(1.5, rel=1e-12)
    # The same draws in either dtype, from the same seed.
    single = _init(np.float32)
    for key, value in double.items():
        assert single[key].dtype == np.float32, key
        assert np.array_equal(single[key], value.astype(np.float32)), key


# Test the tester.

# name: (variants it applies to, line as written in gru.py, the planted replacement)
BUGS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "z and 1 − z swapped": (
        tuple(VARIANTS),
        "np.multiply(z_c[k], n[t], out=work)\n"
        "            np.multiply(z[k], h_prev, out=states[t + 1])",
        "np.multiply(z[k], n[t], out=work)\n"
        "            np.multiply(z_c[k], h_prev, out=states[t + 1])",
    ),
    "b_hn outside r ⊙ (…) in the forward pass": (
        ("gru",),
        "np.multiply(r[k], m, out=work)",
        "np.add(r[k] * (m - b_hn), b_hn, out=work)",
    ),
    "b_hn's gradient as if outside r ⊙ (…)": (
        ("gru",),
        "db_hh = d_rec.sum(axis=0)",
        "db_hh = db_ih.copy()",
    ),
    "only b_ih gets a gradient": (
        tuple(VARIANTS),
        '"b_hh": db_hh,',
        '"b_hh": np.zeros_like(db_hh),',
    ),
    "only b_hh gets a gradient": (
        tuple(VARIANTS),
        '"b_ih": db_ih,',
        '"b_ih": np.zeros_like(db_ih),',
    ),
    "reset applied after the product": (
        ("gru_reset_before",),
        "np.matmul(work, W_hn_T, out=reset)",
        "np.multiply(r[k], h_prev @ W_hn_T, out=reset)",
    ),
    # Consistent in forward and backward, so only a saturated unit tells: σ(a_z) rounds
    # to 1 there and 1 − σ(a_z) to 0, while the complex step sees σ(−a_z).
    "1 − z by subtraction": (
        tuple(VARIANTS),
        "z, z_c = logistic_pair(a_z, out=out)",
        "z, z_c = logistic_pair(a_z, out=out); np.subtract(1, z, out=z_c)",
    ),
}
PLANTED = [(bug, variant) for bug, (variants, _, _) in BUGS.items() for variant in variants]


def mutant(original: str, replacement: str) -> types.ModuleType:
    """``bptt_ref.cells.gru`` from its source with one line replaced."""
    source = inspect.getsource(gru)
    if "mutmut" in source:
        pytest.skip("mutmut has rewritten the source these bugs are planted in")
    assert source.count(original) == 1, f"the line {original!r} is gone from gru.py"
    module = types.ModuleType("bptt_ref.cells._gru_mutant")
    module.__dict__["__package__"] = "bptt_ref.cells"
    exec(compile(source.replace(original, replacement), "<mutant>", "exec"), module.__dict__)
    return module


def _fails(module: types.ModuleType, reset_after: bool) -> list[str]:
    """The cases (each regime, and the mask) on which ``check_complex_step`` fails."""
    runs: dict[str, tuple[Case, Array | None]] = {
        name: (case, None) for name, case in CASES.items()
    }
    runs["mask"] = (CASES["near_critical"], MASK)
    failed = []
    for name, (case, live) in runs.items():
        try:
            check_complex_step(module, case, reset_after, live)
        except AssertionError:
            failed.append(name)
    return failed


@pytest.mark.parametrize(("bug", "variant"), PLANTED)
def test_planted_bug_fails_the_complex_step(bug: str, variant: str) -> None:
    _, original, replacement = BUGS[bug]
    assert _fails(mutant(original, replacement), VARIANTS[variant])


@pytest.mark.parametrize("variant", VARIANTS)
def test_unedited_source_passes(variant: str) -> None:
    # The control: the same loading path with no edit fails on no case.
    assert _fails(mutant("import numpy as np", "import numpy as np"), VARIANTS[variant]) == []
