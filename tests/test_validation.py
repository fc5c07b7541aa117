"""Bad input gets a clear error; good input is never modified and keeps its dtype."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bptt_ref
from bptt_ref.cases import Case, make_case
from bptt_ref.strategies import cases


def small_case(**overrides: Any) -> Case:
    config: dict[str, Any] = {
        "dims": {"T": 3, "B": 2, "D": 4, "H": 5, "O": 3},
        "hidden": "tanh",
        "output": "identity",
        "loss": "mse",
        "dtype": np.float64,
        "regime": "contracting",
        "style": "normal",
        "seed": 0,
    }
    return make_case(**{**config, **overrides})


def call(case: Case, **changes: Any) -> None:
    params = {**case.params, **changes.pop("params", {})}
    for name in changes.pop("drop", ()):
        del params[name]
    args = {"xs": case.xs, "targets": case.targets, **changes.pop("arrays", {})}
    bptt_ref.loss_and_grad(params, args["xs"], args["targets"], **{**case.config, **changes})


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        (
            {"drop": ["W"]},
            ValueError,
            "params has missing keys ['W']; expected exactly U, V, W, b_h, b_y, h0",
        ),
        ({"params": {"w": np.zeros(1)}}, ValueError, "params has unexpected keys ['w']; expected"),
        (
            {"params": {"w": np.zeros(1)}, "drop": ["W"]},
            ValueError,
            "params has missing keys ['W'] and unexpected keys ['w']; expected",
        ),
        (
            {"params": {"V": np.zeros((5, 3))}},
            ValueError,
            "V has shape (5, 3); expected (H, D) = (5, 4) (D from xs, H from W)",
        ),
        (
            {"params": {"b_h": np.zeros((5, 1))}},
            ValueError,
            "b_h has shape (5, 1); expected 1 dim (H)",
        ),
        (
            {"params": {"W": np.zeros((5, 4))}},
            ValueError,
            "W has shape (5, 4); expected (H, H) = (5, 5)",
        ),
        (
            {"params": {"h0": np.zeros((3, 5))}},
            ValueError,
            "h0 has shape (3, 5); expected (B, H) = (2, 5) (B from xs, H from W)",
        ),
        (
            {"arrays": {"targets": np.zeros((4, 2, 3))}},
            ValueError,
            "targets has shape (4, 2, 3); expected (T, B, O) = (3, 2, 3) "
            "(B from xs, O from targets, T from xs)",
        ),
        (
            {"params": {"U": np.zeros((3, 5), dtype=np.int64)}},
            TypeError,
            "U has dtype int64; expected float32 or float64",
        ),
        (
            {"params": {"U": np.zeros((3, 5), dtype=np.float32)}},
            TypeError,
            "U has dtype float32 but xs has float64; expected all arrays to share one dtype",
        ),
        (
            {"params": {"U": np.zeros((3, 5), dtype=np.complex128)}},
            TypeError,
            "U has dtype complex128",
        ),
        (
            {"params": {"b_y": np.array([0.0, np.nan, 1.0])}},
            ValueError,
            "b_y contains 1 non-finite value(s), the first at index (1,); expected all finite",
        ),
        (
            {"arrays": {"xs": np.full((3, 2, 4), np.inf)}},
            ValueError,
            "xs contains 24 non-finite value(s)",
        ),
        (
            {"hidden": "ReLU"},
            ValueError,
            "unknown hidden activation 'ReLU'; expected one of ['elu'",
        ),
        ({"output": "soft_max"}, ValueError, "unknown output activation 'soft_max'"),
        ({"loss": "nll"}, ValueError, "unknown loss 'nll'; expected one of"),
        (
            {"loss": "cross_entropy"},
            ValueError,
            "loss 'cross_entropy' cannot follow output 'identity'; "
            "valid output+loss pairs: identity+mse, tanh+mse, sigmoid+mse, softmax+mse, "
            "softmax+cross_entropy, sigmoid+binary_cross_entropy",
        ),
        ({"arrays": {"xs": np.zeros((3, 2, 0))}}, ValueError, "xs gives D = 0; expected D >= 1"),
        (
            {"arrays": {"targets": np.zeros((3, 2, 4))}},
            ValueError,
            "U has shape (3, 5); expected (O, H) = (4, 5) (H from W, O from targets)",
        ),
        (
            {"arrays": {"xs": np.zeros((3, 2, 4), dtype=np.int64)}},
            TypeError,
            "xs has dtype int64; expected float32 or float64",
        ),
        (
            {"arrays": {"targets": np.zeros((3, 2, 3), dtype=np.float16)}},
            TypeError,
            "targets has dtype float16; expected float32 or float64",
        ),
    ],
)
def test_bad_input_is_named(changes: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        call(small_case(), **changes)


BATCH_MAJOR = "h0 has shape (2, 5); expected (B, H) = (3, 5) (B from xs, H from W); "


@pytest.mark.parametrize(
    ("swap", "message"),
    [
        (
            ("xs",),
            f"{BATCH_MAJOR}xs looks batch-major, (B, T, D) = (2, 3, 4) with B = 2 as in h0: "
            "bptt_ref takes time-major xs (T, B, D) = (3, 2, 4), e.g. xs.transpose(1, 0, 2)",
        ),
        (
            ("xs", "targets"),
            f"{BATCH_MAJOR}if xs and targets are batch-major, (B, T, ...) with B = 2 as in h0, "
            "pass them time-major (T, B, ...): xs.transpose(1, 0, 2), targets.transpose(1, 0, 2)",
        ),
    ],
    ids=["xs", "xs-and-targets"],
)
def test_batch_major_inputs_are_named_as_such(swap: tuple[str, ...], message: str) -> None:
    case = small_case()  # T = 3, B = 2
    arrays = {k: getattr(case, k).transpose(1, 0, 2) for k in swap}
    with pytest.raises(ValueError, match="batch-major") as raised:
        call(case, arrays=arrays)
    assert str(raised.value) == message
    if swap == ("xs",):
        # Without targets the shapes of xs and h0 say the same.
        with pytest.raises(ValueError, match="batch-major") as raised:
            bptt_ref.forward(case.params, arrays["xs"])
        assert str(raised.value) == message


@pytest.mark.parametrize(
    "changes",
    [
        {"params": {"h0": np.zeros((4, 5))}},  # xs time-major, h0 of a fourth B
        {"arrays": {"xs": np.zeros((2, 3, 4)), "targets": np.zeros((4, 4, 3))}},
    ],
    ids=["h0-wrong", "targets-fit-neither"],
)
def test_batch_major_is_not_suggested_when_the_shapes_do_not_say_so(
    changes: dict[str, Any],
) -> None:
    with pytest.raises(ValueError, match="has shape") as raised:
        call(small_case(), **changes)
    assert "batch-major" not in str(raised.value)


def test_params_must_be_a_mapping() -> None:
    case = small_case()
    with pytest.raises(
        TypeError, match="params must be a mapping with keys U, V, W, b_h, b_y, h0; got list"
    ):
        bptt_ref.loss_and_grad(list(case.params.values()), case.xs, case.targets)  # type: ignore[arg-type]


def test_target_domains() -> None:
    bce = small_case(output="sigmoid", loss="binary_cross_entropy")
    message = "targets has values outside [0, 1]; expected 0 <= y <= 1 for binary_cross_entropy"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call(bce, arrays={"targets": bce.targets + 1.0})
    ce = small_case(output="softmax", loss="cross_entropy")
    with pytest.raises(
        ValueError, match=r"^targets has rows that are not probability distributions"
    ):
        call(ce, arrays={"targets": 2 * ce.targets})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probability_rows_may_be_off_by_their_rounding(dtype: type) -> None:
    # The slack is sqrt(eps) · O: rows within it pass, rows just beyond it fail.
    ce = small_case(output="softmax", loss="cross_entropy", dtype=dtype)
    O = ce.targets.shape[-1]
    slack = float(np.sqrt(np.finfo(dtype).eps)) * O
    one_hot = np.zeros_like(ce.targets)
    one_hot[..., 0] = 1
    for shift, ok in ((0.9 * slack, True), (1.1 * slack, False)):
        shifted = one_hot.copy()
        shifted[..., 0] += dtype(shift)
        if ok:
            call(ce, arrays={"targets": shifted})
        else:
            with pytest.raises(ValueError, match="not probability distributions"):
                call(ce, arrays={"targets": shifted})


def test_a_probability_row_off_by_exactly_the_slack_passes() -> None:
    # In float64 sqrt(eps) = 2^-26 exactly, so a row can sum to exactly 1 + slack: the
    # bound is inclusive.
    ce = small_case(output="softmax", loss="cross_entropy")
    slack = float(np.sqrt(np.finfo(np.float64).eps)) * ce.targets.shape[-1]
    targets = np.zeros_like(ce.targets)
    targets[..., 0] = 1 + slack
    assert (np.abs(targets.sum(axis=-1) - 1) == slack).all()
    call(ce, arrays={"targets": targets})


def test_forward_checks_names_and_shapes() -> None:
    case = small_case()
    bad_U = {**case.params, "U": np.zeros((3, 4))}
    with pytest.raises(ValueError, match=re.escape("(H from W, O from U)")):
        bptt_ref.forward(bad_U, case.xs)
    with pytest.raises(ValueError, match="unknown hidden activation 'tan'"):
        bptt_ref.forward(case.params, case.xs, hidden="tan")
    with pytest.raises(
        ValueError, match=re.escape("xs has shape (3, 2); expected 3 dims (T, B, D)")
    ):
        bptt_ref.forward(case.params, case.xs[:, :, 0])


@given(cases(max_T=6))
def test_inputs_are_never_modified_and_dtype_is_kept(case: Case) -> None:
    arrays = {**case.params, "xs": case.xs, "targets": case.targets}
    before = {k: v.copy() for k, v in arrays.items()}
    for v in arrays.values():
        v.flags.writeable = False  # a write would raise
    loss, grads = bptt_ref.loss_and_grad(case.params, case.xs, case.targets, **case.config)
    trace = bptt_ref.forward(case.params, case.xs, hidden=case.hidden, output=case.output)
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert isinstance(loss, float)
    for k, g in grads.items():
        assert g.dtype == case.dtype, k
        assert g.shape == arrays[k].shape, k
    T, B, _ = case.xs.shape
    H, O = case.params["W"].shape[0], case.targets.shape[-1]
    assert trace.a is not None  # the RNN's trace has its pre-activations
    assert [a.shape for a in (trace.a, trace.h, trace.z, trace.y_hat)] == [
        (T, B, H),
        (T, B, H),
        (T, B, O),
        (T, B, O),
    ]
    assert all(a.dtype == case.dtype for a in (trace.a, trace.h, trace.z, trace.y_hat))


@given(cases(max_T=6))
def test_layout_and_repetition_give_bit_identical_results(case: Case) -> None:
    _, grads = bptt_ref.loss_and_grad(case.params, case.xs, case.targets, **case.config)
    fortran = {k: np.asfortranarray(v) for k, v in case.params.items()}
    strided_xs = np.repeat(case.xs, 2, axis=2)[:, :, ::2]  # a non-contiguous view
    _, again = bptt_ref.loss_and_grad(fortran, strided_xs, case.targets, **case.config)
    _, twice = bptt_ref.loss_and_grad(case.params, case.xs, case.targets, **case.config)
    for k in grads:
        np.testing.assert_array_equal(grads[k], twice[k], err_msg=f"{k}: not deterministic")
        np.testing.assert_array_equal(grads[k], again[k], err_msg=f"{k}: depends on layout")


@given(cases(max_T=6))
def test_numpy_buffer_size_is_the_callers_after_and_changes_no_bit(case: Case) -> None:
    # The forward and backward passes run with small ufunc buffers of their own.
    _, grads = bptt_ref.loss_and_grad(case.params, case.xs, case.targets, **case.config)
    with np.errstate():
        np.setbufsize(16)
        _, small = bptt_ref.loss_and_grad(case.params, case.xs, case.targets, **case.config)
        trace = bptt_ref.forward(case.params, case.xs, hidden=case.hidden, output=case.output)
        assert np.getbufsize() == 16
    assert np.getbufsize() == 8192
    assert trace.h.shape == case.xs.shape[:2] + case.params["W"].shape[:1]
    for k in grads:
        np.testing.assert_array_equal(small[k], grads[k], err_msg=k)


def test_random_params_contract() -> None:
    rng = np.random.default_rng(0)
    p = bptt_ref.random_params(
        rng,
        batch_size=2,
        input_size=3,
        hidden_size=4,
        output_size=5,
        spectral_radius=1.5,
        dtype=np.float32,
    )
    assert {k: v.shape for k, v in p.items()} == {
        "U": (5, 4),
        "V": (4, 3),
        "W": (4, 4),
        "b_h": (4,),
        "b_y": (5,),
        "h0": (2, 4),
    }
    assert all(v.dtype == np.float32 for v in p.values())
    assert np.max(np.abs(np.linalg.eigvals(p["W"].astype(np.float64)))) == pytest.approx(
        1.5, rel=1e-6
    )
    with pytest.raises(TypeError, match=r"^dtype is int64; expected float32 or float64$"):
        bptt_ref.random_params(
            rng, batch_size=1, input_size=1, hidden_size=1, output_size=1, dtype=int
        )
    with pytest.raises(TypeError, match=r"rng must be a numpy\.random\.Generator; got int"):
        bptt_ref.random_params(0, batch_size=1, input_size=1, hidden_size=1, output_size=1)  # type: ignore[arg-type]


@given(cases(max_T=4), st.sampled_from(["T", "B"]))
def test_empty_time_or_batch_is_an_empty_sum(case: Case, dim: str) -> None:
    axis = {"T": 0, "B": 1}[dim]
    xs = np.take(case.xs, [], axis=axis)
    targets = np.take(case.targets, [], axis=axis)
    params = dict(case.params)
    if dim == "B":
        params["h0"] = params["h0"][:0]
    loss, grads = bptt_ref.loss_and_grad(params, xs, targets, **case.config)
    assert loss == 0.0
    for key, grad in grads.items():
        assert grad.shape == (xs if key == "xs" else params[key]).shape, key
        assert grad.dtype == case.dtype, key
        assert not grad.any(), key


def test_random_params_distributions() -> None:
    # The documented scales: U ~ N(0, 1/H), V ~ N(0, 1/D), biases ~ N(0, 0.1²), h0 ~ N(0, 0.5²).
    rng = np.random.default_rng(1)
    B, D, H, O = 300, 100, 400, 200
    p = bptt_ref.random_params(rng, batch_size=B, input_size=D, hidden_size=H, output_size=O)
    expected = {"U": H**-0.5, "V": D**-0.5, "b_h": 0.1, "b_y": 0.1, "h0": 0.5}
    for name, std in expected.items():
        assert np.std(p[name]) == pytest.approx(std, rel=0.1), name
    default = np.max(np.abs(np.linalg.eigvals(p["W"])))
    assert default == pytest.approx(0.9, rel=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_random_params_rescale_any_w(seed: int) -> None:
    # With H = 1 the drawn W is often smaller than 1 in magnitude: it is rescaled too.
    p = bptt_ref.random_params(
        np.random.default_rng(seed),
        batch_size=1,
        input_size=1,
        hidden_size=1,
        output_size=1,
        spectral_radius=0.7,
    )
    assert abs(float(p["W"][0, 0])) == pytest.approx(0.7, rel=1e-12)
