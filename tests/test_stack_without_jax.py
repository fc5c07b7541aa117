"""Stacked and bidirectional networks (``bptt_ref.stack``) against oracles that need no JAX.

What is checked:

- PyTorch's semantics, from the single cell's public ``bptt_ref.forward`` alone: each
  direction of each layer is the cell on its own sequence, the reverse one on the
  time-reversed sequence with its final state at output step 0, the initial state of
  layer k and direction d is row ``k·dirs + d``, and layer k > 0 reads ``[h_fwd, h_bwd]``;
- ``⟨grad, u⟩`` against the complex step and central differences of the network's own
  forward pass, over every cell, L in 1..3 and both directions;
- L = 1 unidirectional is the single cell to the bit; float32 stays float32; T = 0 and
  B = 0 are empty sums; inputs are never modified; wrong keys and shapes are named;
- test the tester: each planted bug below, a one-line edit of ``bptt_ref/stack.py``
  loaded as a separate module, must fail the check it names, and the unedited source
  must pass it.
"""

from __future__ import annotations

import inspect
import types
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from numpy.typing import NDArray

import bptt_ref
from bptt_ref import stack
from bptt_ref.cases import Case, make_case
from bptt_ref.cells import CELLS
from bptt_ref.compare import DIRECTIONAL_TOLERANCES, directional_error, tolerance_for
from bptt_ref.finite_difference import directional_estimate, random_direction
from bptt_ref.strategies import cases

Array = NDArray[Any]
CELL_NAMES = tuple(CELLS)
NETWORKS = [(L, bi) for L in (1, 2, 3) for bi in (False, True)]
SMOOTH = ("identity", "tanh", "sigmoid", "softplus", "silu", "gelu")


def _case(cell: str, num_layers: int, bidirectional: bool, seed: int = 0, **kw: Any) -> Case:
    # Every dim different, so a transposed product or a swapped slice changes a shape.
    dims = {"T": 5, "B": 3, "D": 2, "H": 4, "O": 3, **kw.pop("dims", {})}
    config = {"hidden": "tanh", "output": "identity", "loss": "mse", **kw}
    return make_case(
        dims=dims,
        dtype=config.pop("dtype", np.float64),
        regime="near_critical",
        style="normal",
        seed=seed,
        cell=cell,
        num_layers=num_layers,
        bidirectional=bidirectional,
        **config,
    )


def _directional(case: Case, method: str, loss_and_grad: Any = stack.loss_and_grad) -> float:
    """``err / bound`` of ⟨grad, u⟩ against ``method`` (complex or central) on ``case``."""
    _, grads = loss_and_grad(
        case.params, case.xs, case.targets, cell=case.cell, **case.network, **case.config
    )
    u = random_direction(np.random.default_rng(case.seed), case.params, case.xs)
    numeric = directional_estimate(
        case.params,
        case.xs,
        case.targets,
        u,
        method=method,  # type: ignore[arg-type]
        cell=case.cell,
        **case.network,
        **case.config,
    )
    magnitude = sum(float(np.sum(np.abs(grads[k] * u[k]))) for k in u)
    bound = DIRECTIONAL_TOLERANCES[method].rtol + (
        2 * numeric.truncation / magnitude if magnitude > 0 else 0.0
    )
    return directional_error(grads, u, numeric.value) / bound


stacks = {"layers": (1, 2, 3), "bidirectional": (False, True), "max_T": 8, "max_H": 5}


@settings(max_examples=60)
@given(
    cases(cells=CELL_NAMES, dtypes=(np.float64,), **stacks).filter(  # type: ignore[arg-type]
        lambda c: not (c.style == "kink" and c.hidden in ("relu", "leaky_relu"))
    )
)
def test_gradient_matches_the_complex_step(case: Case) -> None:
    assert _directional(case, "complex") <= 1, repr(case)


@settings(max_examples=30)
@given(
    cases(
        cells=CELL_NAMES,
        dtypes=(np.float64,),
        hidden=SMOOTH,
        regimes=("contracting", "near_critical"),
        styles=("normal", "zeros"),
        **stacks,  # type: ignore[arg-type]
    )
)
def test_gradient_matches_central_differences(case: Case) -> None:
    assert _directional(case, "central") <= 1, repr(case)


def _single(cell: str, params: dict[str, Array], xs: Array, states: dict[str, Array]) -> Array:
    """h_t (T, B, H) of one cell from ``bptt_ref.forward``, with a head it does not read."""
    H = next(iter(states.values())).shape[-1]
    head = {"U": np.zeros((1, H)), "b_y": np.zeros(1)}
    return bptt_ref.forward({**params, **states, **head}, xs, cell=cell).h


def _pytorch_forward(case: Case) -> Array:
    """The top layer's output (T, B, dirs·H) composed from ``bptt_ref.forward`` of one cell."""
    cell, num_layers = case.cell, case.num_layers
    spec, dirs = CELLS[cell], 2 if case.bidirectional else 1
    weights = [k for k in spec.params if k not in spec.states]
    x = case.xs
    for k in range(num_layers):
        outputs = []
        for d in range(dirs):
            suffix = "" if (num_layers, dirs) == (1, 1) else f"_l{k}{'_reverse' if d else ''}"
            own = {w: case.params[w + suffix] for w in weights}
            states = {
                s: case.params[s] if (num_layers, dirs) == (1, 1) else case.params[s][k * dirs + d]
                for s in spec.states
            }
            if d:
                outputs.append(_single(cell, own, x[::-1].copy(), states)[::-1])
            else:
                outputs.append(_single(cell, own, x, states))
        x = np.concatenate(outputs, axis=-1)
    return x


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize(("num_layers", "bidirectional"), NETWORKS)
def test_forward_has_pytorchs_semantics(cell: str, num_layers: int, bidirectional: bool) -> None:
    case = _case(cell, num_layers, bidirectional)
    expected = _pytorch_forward(case)
    trace = stack.forward(case.params, case.xs, cell=cell, **case.network)
    np.testing.assert_array_equal(trace.h, expected)
    z = np.einsum("tbk,ok->tbo", expected, case.params["U"]) + case.params["b_y"]
    np.testing.assert_allclose(trace.z, z, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_one_unidirectional_layer_is_the_single_cell_to_the_bit(cell: str) -> None:
    case = _case(cell, 1, False)
    assert stack.names(cell) == CELLS[cell].names
    loss, grads = stack.loss_and_grad(case.params, case.xs, case.targets, cell=cell)
    loss1, grads1 = bptt_ref.loss_and_grad(case.params, case.xs, case.targets, cell=cell)
    assert loss == loss1
    for k in grads1:
        np.testing.assert_array_equal(grads[k], grads1[k], err_msg=k)


def test_names_map_onto_pytorchs_state_dict() -> None:
    # nn.LSTM(num_layers=2, bidirectional=True).state_dict() lists weight_ih_l0,
    # weight_hh_l0, bias_ih_l0, bias_hh_l0, then the _reverse four, then layer 1.
    torch = [
        f"{w}_l{k}{r}"
        for k in (0, 1)
        for r in ("", "_reverse")
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ]
    renamed = {"weight_ih": "W_ih", "weight_hh": "W_hh", "bias_ih": "b_ih", "bias_hh": "b_hh"}
    ours = [n for n in stack.names("lstm", num_layers=2, bidirectional=True) if "_l" in n]
    assert ours == [renamed[t.rsplit("_l", 1)[0]] + "_l" + t.rsplit("_l", 1)[1] for t in torch]
    shapes = stack.configure("lstm", 2, True).shapes()
    assert shapes["W_ih_l0"] == ("4H", "D")
    assert shapes["W_ih_l1_reverse"] == ("4H", "2H")
    assert shapes["h0"] == ("L·dirs", "B", "H")
    assert shapes["U"] == ("O", "2H")


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_float32_in_float32_out_and_close_to_float64(cell: str) -> None:
    case = _case(cell, 2, True)
    single = _case(cell, 2, True, dtype=np.float32)
    loss64, g64 = stack.loss_and_grad(case.params, case.xs, case.targets, cell=cell, **case.network)
    loss32, g32 = stack.loss_and_grad(
        single.params, single.xs, single.targets, cell=cell, **single.network
    )
    assert abs(loss32 - loss64) <= 1e-4 * abs(loss64)
    for k, g in g32.items():
        assert g.dtype == np.float32, k
        scale = float(np.max(np.abs(g64[k])))
        assert float(np.max(np.abs(g - g64[k]))) <= 100 * tolerance_for(np.float32) * scale, k


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("empty", ["T", "B"])
def test_empty_time_or_batch_is_an_empty_sum(cell: str, empty: str) -> None:
    case = _case(cell, 2, True, dims={empty: 0})
    loss, grads = stack.loss_and_grad(case.params, case.xs, case.targets, cell=cell, **case.network)
    assert loss == 0.0
    for k, g in grads.items():
        assert g.shape == ({**case.params, "xs": case.xs})[k].shape, k
        assert not np.any(g), k


def test_inputs_are_never_modified() -> None:
    for cell in CELL_NAMES:
        case = _case(cell, 3, True)
        frozen = {k: v.copy() for k, v in case.params.items()}
        for v in case.params.values():
            v.flags.writeable = False
        case.xs.flags.writeable = False
        stack.loss_and_grad(case.params, case.xs, case.targets, cell=cell, **case.network)
        for k, v in frozen.items():
            np.testing.assert_array_equal(case.params[k], v)


def test_bad_keys_shapes_and_arguments_are_named() -> None:
    case = _case("lstm", 2, True)
    config: dict[str, Any] = {"cell": "lstm", "num_layers": 2, "bidirectional": True}
    params = {k: v for k, v in case.params.items() if k != "W_hh_l1_reverse"}
    with pytest.raises(ValueError, match=r"missing keys \['W_hh_l1_reverse'\]"):
        stack.loss_and_grad(params, case.xs, case.targets, **config)
    wrong = {**case.params, "W_ih_l1": case.params["W_ih_l1"][:, :4]}
    with pytest.raises(ValueError, match=r"W_ih_l1 has shape \(16, 4\); expected \(4H, 2H\)"):
        stack.loss_and_grad(wrong, case.xs, case.targets, **config)
    wrong = {**case.params, "h0": case.params["h0"][:3]}
    with pytest.raises(ValueError, match=r"h0 has shape \(3, 3, 4\); expected \(L·dirs, B, H\)"):
        stack.loss_and_grad(wrong, case.xs, case.targets, **config)
    with pytest.raises(ValueError, match="num_layers is 0"):
        stack.loss_and_grad(case.params, case.xs, case.targets, cell="lstm", num_layers=0)
    with pytest.raises(TypeError, match="bidirectional is 1"):
        stack.loss_and_grad(case.params, case.xs, case.targets, cell="lstm", bidirectional=1)  # type: ignore[arg-type]
    single = _case("lstm", 1, False)
    with pytest.raises(ValueError, match="missing keys"):
        stack.loss_and_grad(single.params, single.xs, single.targets, **config)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_random_params_have_the_named_shapes(cell: str) -> None:
    rng = np.random.default_rng(0)
    params = stack.random_params(
        rng,
        batch_size=3,
        input_size=2,
        hidden_size=4,
        output_size=5,
        cell=cell,
        num_layers=2,
        bidirectional=True,
        dtype=np.float32,
    )
    assert tuple(params) == stack.names(cell, num_layers=2, bidirectional=True)
    assert params["h0"].shape == (4, 3, 4)
    assert params["U"].shape == (5, 8)
    assert all(v.dtype == np.float32 for v in params.values())


# One-line edits of bptt_ref/stack.py and the check each must fail: "complex" is the
# complex step of the network's own forward pass; "semantics" the forward pass against
# the single cell (test_forward_has_pytorchs_semantics), which sees an edit shared by
# forward and backward, invisible to the first.
BUGS: dict[str, tuple[str, str, str]] = {
    "reverse direction's input gradient taken unreversed": (
        "complex",
        'd_in += g["xs"][::-1] if d else g["xs"]',
        'd_in += g["xs"]',
    ),
    "reverse direction's dh not reversed": (
        "complex",
        "seq, dh = (_reversed(x), _reversed(dh)) if d else (x, np.ascontiguousarray(dh))",
        "seq, dh = (_reversed(x), 1 * dh) if d else (x, np.ascontiguousarray(dh))",
    ),
    "layer > 0 input gradient dropped": ("complex", "d_out = d_in", "d_out = d_in * (k == 0)"),
    "dh columns of the two directions swapped": (
        "complex",
        "dh = d_out[:, :, d * H : (d + 1) * H]",
        "dh = d_out[:, :, (1 - d) * H : (2 - d) * H]",
    ),
    "h0 row direction·L + layer instead of layer·dirs + direction": (
        "semantics",
        "row = layer * config.dirs + direction",
        "row = direction * config.num_layers + layer",
    ),
}


def mutant(original: str, replacement: str) -> types.ModuleType:
    source = inspect.getsource(stack)
    if "mutmut" in source:
        pytest.skip("mutmut has rewritten the source these bugs are planted in")
    assert source.count(original) == 1, f"the line {original!r} is gone from stack.py"
    module = types.ModuleType("bptt_ref.stack_mutant")
    module.__dict__["__package__"] = "bptt_ref"
    exec(compile(source.replace(original, replacement), "<mutant>", "exec"), module.__dict__)
    return module


def _fails(check: str, module: types.ModuleType, cell: str) -> bool:
    case = _case(cell, 2, True)
    if check == "complex":
        return _directional(case, "complex", module.loss_and_grad) > 1
    h = module.forward(case.params, case.xs, cell=cell, **case.network).h
    return not np.array_equal(h, _pytorch_forward(case))


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("bug", sorted(BUGS))
def test_planted_stack_bug_fails(bug: str, cell: str) -> None:
    check, original, replacement = BUGS[bug]
    assert _fails(check, mutant(original, replacement), cell)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_unplanted_stack_source_passes(cell: str) -> None:
    module = mutant("import numpy as np", "import numpy as np")
    assert not _fails("complex", module, cell)
    assert not _fails("semantics", module, cell)


@pytest.mark.parametrize("hidden", ["tanh", "softplus", "identity"])
def test_rnn_head_free_backward_holds_rows_under_a_freeze_mask(hidden: str) -> None:
    # The rnn's backward from dh (bptt_ref._rnn.backward), which its layers use, against
    # the complex step of its own forward pass, with rows held as the LSTM's tests hold them.
    from bptt_ref import _rnn

    rng = np.random.default_rng(3)
    T, B, D, H = 5, 3, 2, 4
    own = {
        k: v
        for k, v in _rnn.init(
            rng, batch_size=B, input_size=D, hidden_size=H, output_size=1, spectral_radius=1.0
        ).items()
        if k in ("V", "W", "b_h", "h0")
    }
    xs, w = rng.standard_normal((T, B, D)), rng.standard_normal((T, B, H))
    live = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 1], [1, 0, 1], [1, 0, 0]], dtype=bool)
    grads = _rnn.backward(own, xs, _rnn.forward(own, xs, live, hidden), w, live)
    theta = {**own, "xs": xs}
    u = {k: rng.standard_normal(v.shape) for k, v in theta.items()}
    moved = {k: v + 1e-20j * u[k] for k, v in theta.items()}
    x_moved = moved.pop("xs")
    numeric = float(np.imag(np.sum(w * _rnn.forward(moved, x_moved, live, hidden).h))) / 1e-20
    err = directional_error(grads, u, numeric)
    assert err <= DIRECTIONAL_TOLERANCES["complex"].rtol, err
    # A held row's state is its previous one, so the mask is seen at all.
    h = _rnn.forward(own, xs, live, hidden).h
    np.testing.assert_array_equal(h[1, 2], h[0, 2])
