"""The JAX oracle's engine for every cell: exact padding and rounding magnitudes that bound.

The cells' oracles themselves were checked against PyTorch's ``nn.LSTM`` and ``nn.GRU`` (and
a hand-written reset-before GRU in torch autograd); torch is no dependency, so those runs
live in the report, not here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import pytest

from bptt_ref import jax_reference
from bptt_ref.config import model_of
from bptt_ref.oracle import engine

GATED = ("lstm", "gru", "gru_reset_before")
HEADS = (("identity", "mse"), ("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy"))


def random_case(
    cell: str,
    seed: int,
    *,
    dims: tuple[int, int, int, int, int] = (5, 3, 2, 3, 2),
    loss: str = "mse",
    gate_bias: float = 0.0,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """``(params, xs, targets)`` with asymmetric weights and nonzero h0 (and c0).

    ``gate_bias`` is added to the biases of the GRU's z gate (rows H:2H of ``b_ih``),
    to hold z near 1 where it is large: most of ∂L/∂h0 then bypasses ``W_hh``.
    """
    rng = np.random.default_rng(seed)
    T, B, D, H, O = dims
    G = {"rnn": 1, "lstm": 4}.get(cell, 3)
    if cell == "rnn":
        params = {"V": ("H", "D"), "W": ("H", "H"), "b_h": ("H",), "h0": ("B", "H")}
    else:
        params = {
            "W_ih": ("GH", "D"),
            "W_hh": ("GH", "H"),
            "b_ih": ("GH",),
            "b_hh": ("GH",),
            "h0": ("B", "H"),
            **({"c0": ("B", "H")} if cell == "lstm" else {}),
        }
    size = {"T": T, "B": B, "D": D, "H": H, "O": O, "GH": G * H}
    out = {k: rng.standard_normal(tuple(size[d] for d in shape)) for k, shape in params.items()}
    out["U"], out["b_y"] = rng.standard_normal((O, H)), 0.1 * rng.standard_normal(O)
    if cell.startswith("gru"):
        out["b_ih"][H : 2 * H] += gate_bias
    xs = rng.standard_normal((T, B, D))
    if loss == "cross_entropy":
        targets = rng.dirichlet(np.ones(O), size=(T, B))
    elif loss == "binary_cross_entropy":
        targets = rng.uniform(size=(T, B, O))
    else:
        targets = rng.standard_normal((T, B, O))
    return out, xs, targets


def padded_buckets_disagree(cell: str, seed: int, loss: str, output: str) -> list[str]:
    """The keys whose gradient or loss changes between the default and the doubled buckets
    (beyond the rounding of sums whose tree shape follows the padded size)."""
    params, xs, targets = random_case(cell, seed, loss=loss)
    config: dict[str, Any] = {"cell": cell, "output": output, "loss": loss}
    small = jax_reference.reference(params, xs, targets, noise=False, **config)
    floors = dict(engine._FLOORS)
    try:
        engine._FLOORS.update({d: 2 * f for d, f in floors.items()})
        large = jax_reference.reference(params, xs, targets, noise=False, **config)
    finally:
        engine._FLOORS.update(floors)
    bad = [] if np.isclose(small.loss, large.loss, rtol=1e-14, atol=0) else ["loss"]
    for key, grad in small.grads.items():
        scale = float(np.max(np.abs(grad)))
        if not np.max(np.abs(large.grads[key] - grad), initial=0.0) <= 1e-14 * scale:
            bad.append(key)
    return bad


@pytest.mark.parametrize("cell", [*GATED, "rnn"])
@pytest.mark.parametrize(("output", "loss"), HEADS[:2])
def test_the_same_case_in_two_buckets_has_the_same_gradients(
    cell: str, output: str, loss: str
) -> None:
    assert padded_buckets_disagree(cell, 1, loss, output) == []


def test_padding_gates_as_one_block_fails_the_bucket_test(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bug per-block padding exists to prevent: (4H, D) padded at its end, so gate k of
    # unit j (row k·H + j) lands in another gate's block once H is padded.
    def stacked(arr: np.ndarray, names: Any, size: Any) -> np.ndarray:
        out = np.zeros([engine._split(n)[0] * size[engine._split(n)[1]] for n in names])
        out[tuple(slice(0, n) for n in arr.shape)] = arr
        return out

    def unstacked(arr: Any, names: Any, shape: tuple[int, ...]) -> np.ndarray:
        return np.asarray(arr, dtype=np.float64)[tuple(slice(0, n) for n in shape)]

    monkeypatch.setattr(engine, "_padded", stacked)
    monkeypatch.setattr(engine, "_unpadded", unstacked)
    for cell in GATED:
        assert {"W_ih", "W_hh"} <= set(padded_buckets_disagree(cell, 1, "mse", "identity"))
    # The rnn has no gate blocks, so its padding stays right under the plant: the control.
    assert padded_buckets_disagree("rnn", 1, "mse", "identity") == []


@pytest.mark.parametrize("cell", GATED)
def test_padded_hidden_units_stay_exactly_zero(cell: str) -> None:
    params, xs, targets = random_case(cell, 2)
    _, dims, args = engine._padded_case(params, xs, targets, model_of({"cell": cell}))
    with jax.enable_x64(True):
        states = np.asarray(engine._scan(cell, *args)[1])
    T, B, H = dims["T"], dims["B"], dims["H"]
    assert np.all(states[:, :, H:] == 0.0)
    # (Padded batch rows do move, driven by the biases; rows never mix and the loss masks them.)
    # Padded time steps carry the last real state unchanged.
    assert np.all(states[T:, :B, :H] == states[T - 1, :B, :H])
    assert np.any(states[:T, :B, :H] != 0.0)


def magnitude_shortfalls(ref: Any) -> dict[str, tuple[float, float]]:
    """Keys whose R_k is not finite, not positive, or below the largest |gradient| entry."""
    assert ref.rounding is not None
    assert set(ref.rounding) == set(ref.grads)
    out = {}
    for key, grad in ref.grads.items():
        bound, largest = ref.rounding[key], float(np.max(np.abs(grad)))
        if not (np.isfinite(bound) and bound > 0 and bound >= largest):
            out[key] = (bound, largest)
    return out


CASES = [
    (cell, seed, output, loss, dtype, gate_bias)
    for cell in GATED
    for seed, ((output, loss), dtype) in enumerate(
        [(h, d) for h in HEADS for d in (np.float64, np.float32)]
    )
    for gate_bias in (0.0, 6.0)
]


@pytest.mark.parametrize(("cell", "seed", "output", "loss", "dtype", "gate_bias"), CASES)
def test_rounding_magnitudes_bound_the_gradients(
    cell: str, seed: int, output: str, loss: str, dtype: type, gate_bias: float
) -> None:
    params, xs, targets = random_case(cell, seed, loss=loss, gate_bias=gate_bias)
    params = {k: v.astype(dtype) for k, v in params.items()}
    ref = jax_reference.reference(
        params, xs.astype(dtype), targets.astype(dtype), cell=cell, output=output, loss=loss
    )
    assert magnitude_shortfalls(ref) == {}


def test_h0_magnitude_without_the_path_around_w_hh_falls_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With z near 1, h_t ≈ h_{t-1}: ∂L/∂h0 flows mostly through z ⊙ h0, not through W_hh.
    # A magnitude that leaves that path out must fail the test above.
    real_cotangents = engine._cotangents

    def without_direct(cell: str, fixed: engine.Fixed = None) -> Callable[..., Any]:
        fn = real_cotangents(cell, fixed)

        def call(*args: Any) -> Any:
            states, probes, direct = fn(*args)
            return states, probes, {k: 0 * v for k, v in direct.items()}

        return call

    params, xs, targets = random_case("gru", 0, gate_bias=6.0)
    ref = jax_reference.reference(params, xs, targets, cell="gru")
    assert magnitude_shortfalls(ref) == {}  # the control: the unplanted engine
    monkeypatch.setattr(engine, "_cotangents", without_direct)
    ref = jax_reference.reference(params, xs, targets, cell="gru")
    assert set(magnitude_shortfalls(ref)) == {"h0"}


@pytest.mark.parametrize(
    ("cell", "change", "message"),
    [
        (
            "lstm",
            {"W_ih": np.zeros((9, 2))},
            "W_ih has shape (9, 2); expected (4H, D) = (12, 2) (D from xs, H from W_hh) "
            "for cell 'lstm'",
        ),
        ("gru", {"c0": np.zeros((3, 3))}, "params has unexpected keys ['c0']"),
        ("gru", {"hidden": "relu"}, "unknown hidden activation 'relu' for cell 'gru'"),
        ("cnn", {}, "unknown cell 'cnn'"),
    ],
)
def test_bad_cell_input_is_named(cell: str, change: dict[str, Any], message: str) -> None:
    params, xs, targets = random_case("lstm" if cell == "cnn" else cell, 4)
    hidden = change.pop("hidden", "tanh")
    with pytest.raises(ValueError, match=re.escape(message)):
        jax_reference.loss_and_grad({**params, **change}, xs, targets, cell=cell, hidden=hidden)


@pytest.mark.parametrize(
    ("cell", "hidden", "output", "loss"),
    [
        ("rnn", "relu", "softmax", "cross_entropy"),
        ("rnn", "sigmoid", "identity", "mse"),
        ("lstm", "tanh", "sigmoid", "binary_cross_entropy"),
        ("gru_reset_before", "tanh", "softmax", "cross_entropy"),
    ],
)
def test_a_program_for_one_configuration_gives_the_shared_programs_results(
    cell: str, hidden: str, output: str, loss: str
) -> None:
    """``specialize`` picks the configuration's branches while tracing instead of by
    ``lax.switch``: the same arithmetic, its sums fused by XLA in another order, so the
    results agree to float64 rounding, where a wrong branch picked moves them by O(1)
    (the peer's noise and the rounding magnitudes included)."""
    params, xs, targets = random_case(cell, 3, loss=loss)
    shared, alone = (
        jax_reference.reference(
            params,
            xs,
            targets,
            dtype=np.float32,
            specialize=s,
            cell=cell,
            hidden=hidden,
            output=output,
            loss=loss,
        )
        for s in (False, True)
    )
    assert shared.noise is not None
    assert alone.noise is not None
    assert shared.rounding is not None
    assert alone.rounding is not None

    def close(got: Any, expected: Any, what: str) -> None:
        scale = np.max(np.abs(expected), initial=1.0)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * scale, err_msg=what)

    close(alone.loss, shared.loss, "loss")
    for key, grad in shared.grads.items():
        close(alone.grads[key], grad, key)
        close(alone.rounding[key], shared.rounding[key], f"R_{key}")
        close(alone.noise[key], shared.noise[key], f"noise of {key}")
