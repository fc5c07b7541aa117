"""Every cell through the public API, without JAX: the complex step and central differences
over Hypothesis-drawn cases, empty sums, untouched inputs, layouts and bad input.

The gated cells' own equations, saturation and planted bugs are tested in
``test_lstm_without_jax.py`` and ``test_gru_without_jax.py``; here the cell runs behind
the shared head (every output and loss) and the generic input checks.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import tracemalloc
import types
from typing import Any

import numpy as np
import pytest
from checks import check_directional
from hypothesis import find, given, settings
from hypothesis.errors import NoSuchExample

import bptt_ref
from bptt_ref import _model
from bptt_ref._activations import Array
from bptt_ref.cases import Case, make_case
from bptt_ref.cells import CELLS
from bptt_ref.strategies import cases

GATED = tuple(name for name in CELLS if name != "rnn")


@given(cases(cells=GATED, dtypes=(np.float64,)))
def test_complex_step_matches_every_gated_cell(case: Case) -> None:
    check_directional(case, "complex")


@given(
    cases(
        cells=GATED,
        dtypes=(np.float64,),
        regimes=("contracting", "near_critical"),
        styles=("normal", "zeros", "kink"),
    )
)
def test_central_difference_matches_every_gated_cell(case: Case) -> None:
    check_directional(case, "central")


def _case(cell: str, dims: dict[str, int] | None = None, dtype: type = np.float64) -> Case:
    return make_case(
        dims=dims or {"T": 4, "B": 3, "D": 2, "H": 5, "O": 2},
        hidden="tanh",
        output="softmax",
        loss="cross_entropy",
        dtype=dtype,
        regime="near_critical",
        style="normal",
        seed=11,
        cell=cell,
    )


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_keys_shapes_and_dtypes(cell: str, dtype: type) -> None:
    case = _case(cell, dtype=dtype)
    loss, grads = bptt_ref.loss_and_grad(
        case.params, case.xs, case.targets, cell=cell, **case.config
    )
    assert isinstance(loss, float)
    assert list(grads) == list(CELLS[cell].grad_names)
    inputs = {**case.params, "xs": case.xs}
    for k, g in grads.items():
        assert g.shape == inputs[k].shape, k
        assert g.dtype == np.dtype(dtype), k


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("empty", ["T", "B"])
def test_empty_sequence_or_batch_is_an_empty_sum(cell: str, empty: str) -> None:
    case = _case(cell, {"T": 3, "B": 2, "D": 2, "H": 3, "O": 2, empty: 0})
    loss, grads = bptt_ref.loss_and_grad(
        case.params, case.xs, case.targets, cell=cell, **case.config
    )
    assert loss == 0.0
    for k, g in grads.items():
        assert not g.any(), k


@pytest.mark.parametrize("cell", GATED)
def test_inputs_untouched_and_layout_invariant(cell: str) -> None:
    case = _case(cell)
    frozen = {k: v.copy() for k, v in case.params.items()}
    for v in case.params.values():
        v.flags.writeable = False
    _, grads = bptt_ref.loss_and_grad(case.params, case.xs, case.targets, cell=cell)
    fortran = {k: np.asfortranarray(v) for k, v in case.params.items()}
    strided = np.repeat(case.xs, 2, axis=2)[:, :, ::2]
    _, again = bptt_ref.loss_and_grad(fortran, strided, case.targets, cell=cell)
    for k in grads:
        assert np.array_equal(grads[k], again[k]), k
    for k, v in frozen.items():
        assert np.array_equal(case.params[k], v), k


@pytest.mark.parametrize("cell", GATED)
def test_forward_trace(cell: str) -> None:
    case = _case(cell)
    trace = bptt_ref.forward(case.params, case.xs, cell=cell, output="softmax")
    T, B, H = case.dims["T"], case.dims["B"], case.dims["H"]
    assert trace.a is None
    assert trace.h.shape == (T, B, H)
    np.testing.assert_allclose(trace.y_hat.sum(axis=-1), 1.0, rtol=1e-12)
    loss, _ = bptt_ref.loss_and_grad(case.params, case.xs, case.targets, cell=cell, **case.config)
    assert loss == pytest.approx(float(-np.sum(case.targets * np.log(trace.y_hat))), rel=1e-12)


def test_parameters_of_another_cell_are_named_as_such() -> None:
    lstm = _case("lstm")
    message = (
        "params has unexpected keys ['c0'] (these are the keys of cell "
        "'lstm'); expected exactly W_ih, W_hh, b_ih, b_hh, U, b_y, h0 for cell 'gru'"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        bptt_ref.loss_and_grad(lstm.params, lstm.xs, lstm.targets, cell="gru")


def test_a_gru_weight_given_to_the_lstm_names_cell_array_and_named_dims() -> None:
    lstm, gru = _case("lstm"), _case("gru")
    params = {**lstm.params, "W_ih": gru.params["W_ih"]}
    message = (
        "W_ih has shape (15, 2); expected (4H, D) = (20, 2) (D from xs, H from W_hh) "
        "for cell 'lstm'"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        bptt_ref.loss_and_grad(params, lstm.xs, lstm.targets, cell="lstm")


def test_unknown_cell_and_activation_a_cell_does_not_take() -> None:
    case = _case("lstm")
    with pytest.raises(ValueError, match=r"unknown cell 'lstm2'; expected one of \['rnn'"):
        bptt_ref.loss_and_grad(case.params, case.xs, case.targets, cell="lstm2")
    with pytest.raises(
        ValueError, match=r"unknown hidden activation 'relu' for cell 'lstm'; expected one of"
    ):
        bptt_ref.loss_and_grad(case.params, case.xs, case.targets, cell="lstm", hidden="relu")


@pytest.mark.parametrize("cell", list(CELLS))
def test_random_params_of_every_cell(cell: str) -> None:
    rng = np.random.default_rng(0)
    sizes = {"batch_size": 2, "input_size": 3, "hidden_size": 4, "output_size": 5}
    params = bptt_ref.random_params(rng, cell=cell, dtype=np.float32, **sizes)
    assert list(params) == list(CELLS[cell].names)
    assert all(v.dtype == np.float32 for v in params.values())
    dims = {"B": 2, "D": 3, "H": 4, "O": 5}
    for k, spec in CELLS[cell].shapes.items():
        if k in params:
            assert params[k].shape == bptt_ref.cells.shape_of(spec, dims), k


# One planted bug per cell module, as a line of its source and its replacement: a bias
# that gets no gradient (the "only one of two biases"), seen by the complex step.
PLANTED = {
    "lstm": ('"b_hh": d_b.copy(),', '"b_hh": 0 * d_b,'),
    "gru": ('"b_hh": db_hh,', '"b_hh": 0 * db_hh,'),
    "gru_reset_before": ('"b_hh": db_hh,', '"b_hh": 0 * db_hh,'),
}


def _planted_loss_and_grad(cell: str, original: str, replacement: str) -> Any:
    """``loss_and_grad`` whose ``cell`` runs its module's source with one line replaced."""
    real = sys.modules[CELLS[cell].backward.__module__]
    source = inspect.getsource(real)
    assert source.count(original) == 1, f"the line {original!r} is gone from {real.__name__}"
    module = types.ModuleType(f"{real.__name__}_mutant")
    module.__dict__["__package__"] = "bptt_ref.cells"
    exec(compile(source.replace(original, replacement), "<mutant>", "exec"), module.__dict__)
    planted = dataclasses.replace(CELLS[cell], backward=module.backward)

    def loss_and_grad(*args: Any, cell: str, **config: Any) -> Any:
        return _model.loss_and_grad(*args, cell=planted, **config)

    return loss_and_grad


def _fails(cell: str, loss_and_grad: Any) -> bool:
    def wrong(case: Case) -> bool:
        try:
            check_directional(case, "complex", loss_and_grad)
        except AssertionError:
            return True
        return False

    search = settings(max_examples=100, database=None, derandomize=True)
    try:
        find(cases(cells=(cell,), dtypes=(np.float64,)), wrong, settings=search)
    except NoSuchExample:
        return False
    return True


@pytest.mark.parametrize("cell", sorted(PLANTED))
def test_the_complex_step_property_fails_on_a_planted_bias_bug(cell: str) -> None:
    assert _fails(cell, _planted_loss_and_grad(cell, *PLANTED[cell]))


@pytest.mark.parametrize("cell", sorted(PLANTED))
def test_the_unplanted_source_passes(cell: str) -> None:
    original = PLANTED[cell][0]
    assert not _fails(cell, _planted_loss_and_grad(cell, original, original))


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_heads_cotangent_by_blocks_is_g_times_U_bit_for_bit(B: int, dtype: type) -> None:
    # At B = 1 in float64, OpenBLAS gives one product over all T·B rows other bits than
    # the head's g @ U, T products of one row each: a block must be made the latter way.
    rng = np.random.default_rng(0)
    T, O, H = 13, 16, 64
    g: Array = rng.standard_normal((T, B, O)).astype(dtype)
    U: Array = rng.standard_normal((O, H)).astype(dtype)
    expected = g @ U
    dh = _model.HeadCotangent(g, U)
    # Newest first, as a backward pass reads it, then out of order across blocks.
    for t in [*range(T - 1, -1, -1), 0, 12, 5, 6, 5]:
        assert np.array_equal(dh[t], expected[t]), t


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_peak_memory_is_within_2G_plus_2_state_sized_arrays(cell: str, dtype: type) -> None:
    # The memory target for the gated cells, as a deterministic count (tracemalloc
    # sees every NumPy allocation): the peak above the inputs, outputs included, stays below
    # (2G + 2)·T·B·H·itemsize, at the benchmark's largest size scaled down by 4 in B, D, H
    # and O (the same ratios D/H, O/H and G·H/(T·B) of the weights to the states). Holding
    # the head's ∂L/∂h for all T steps, as before HeadCotangent, breaks it.
    dims = {"T": 100, "B": 16, "D": 64, "H": 128, "O": 64}
    case = make_case(
        dims=dims,
        hidden="tanh",
        output="identity",
        loss="mse",
        dtype=dtype,
        regime="contracting",
        style="normal",
        seed=1,
        cell=cell,
    )
    tracemalloc.start()
    try:
        bptt_ref.loss_and_grad(case.params, case.xs, case.targets, cell=cell)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    limit = 2 * CELLS[cell].gates + 2
    assert peak <= limit * dims["T"] * dims["B"] * dims["H"] * np.dtype(dtype).itemsize
