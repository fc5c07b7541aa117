"""The torch layout against PyTorch itself: ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` with
``num_layers`` and ``bidirectional`` and an ``nn.Linear`` head, loaded with the layout's
arrays through ``load_state_dict``, and its autograd gradient against bptt-ref's NumPy
stack converted to the layout. Skipped where torch is not installed (it is no dependency
of bptt-ref): run it in an environment with torch and NumPy, ``python -m pytest
tests/test_layouts_torch.py``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from bptt_ref import stack
from bptt_ref.compare import tolerance_for
from bptt_ref.layouts import layout_named

torch = pytest.importorskip("torch")

DIMS = {"T": 4, "B": 2, "D": 3, "H": 5, "O": 2}
MODULES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
STACKS = [(c, L, bi) for c in MODULES for L in (1, 2, 3) for bi in (False, True)]


def torch_gradients(
    cell: str, num_layers: int, bidirectional: bool, arrays: dict[str, Any], targets: Any
) -> tuple[float, dict[str, Any]]:
    """PyTorch's loss 0.5 Σ (fc(rnn(xs, h_0)) − targets)² and its gradient, by name."""
    module = getattr(torch.nn, MODULES[cell])(
        DIMS["D"], DIMS["H"], num_layers=num_layers, bidirectional=bidirectional
    ).double()
    fc = torch.nn.Linear(DIMS["H"] * (2 if bidirectional else 1), DIMS["O"]).double()
    names = set(module.state_dict())
    module.load_state_dict({k: torch.tensor(v) for k, v in arrays.items() if k in names})
    fc.load_state_dict(
        {"weight": torch.tensor(arrays["fc.weight"]), "bias": torch.tensor(arrays["fc.bias"])}
    )
    xs = torch.tensor(arrays["xs"], requires_grad=True)
    h0 = torch.tensor(arrays["h_0"], requires_grad=True)
    if cell == "lstm":
        c0 = torch.tensor(arrays["c_0"], requires_grad=True)
        out, _ = module(xs, (h0, c0))
    else:
        out, _ = module(xs, h0)
    loss = 0.5 * ((fc(out) - torch.tensor(targets)) ** 2).sum()
    loss.backward()
    grads = {k: v.grad.numpy() for k, v in module.named_parameters()}
    grads |= {f"fc.{k}": v.grad.numpy() for k, v in fc.named_parameters()}
    grads |= {"xs": xs.grad.numpy(), "h_0": h0.grad.numpy()}
    if cell == "lstm":
        grads["c_0"] = c0.grad.numpy()
    return float(loss.detach()), grads


def agree_with_pytorch(
    cell: str,
    num_layers: int,
    bidirectional: bool,
    dtype: Any,
    planted: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """bptt-ref's stack converted to the torch layout against PyTorch on the same arrays
    (``planted`` edits them before PyTorch sees them: a control)."""
    layout = layout_named("torch", num_layers=num_layers, bidirectional=bidirectional)
    rng = np.random.default_rng(7)
    params = stack.random_params(
        rng,
        batch_size=DIMS["B"],
        input_size=DIMS["D"],
        hidden_size=DIMS["H"],
        output_size=DIMS["O"],
        cell=cell,
        num_layers=num_layers,
        bidirectional=bidirectional,
        dtype=dtype,
    )
    xs = rng.standard_normal((DIMS["T"], DIMS["B"], DIMS["D"])).astype(dtype)
    targets = rng.standard_normal((DIMS["T"], DIMS["B"], DIMS["O"])).astype(dtype)
    loss, grads = stack.loss_and_grad(
        params, xs, targets, cell=cell, num_layers=num_layers, bidirectional=bidirectional
    )
    arrays = layout.to_layout(cell, {**params, "xs": xs})
    # PyTorch runs in float64 on the very numbers of the dtype-rounded inputs.
    wide = {k: v.astype(np.float64) for k, v in arrays.items()}
    if planted is not None:
        planted(wide)
    theirs_loss, theirs = torch_gradients(
        cell, num_layers, bidirectional, wide, targets.astype(np.float64)
    )
    ours = layout.grads_to_layout(cell, grads)
    assert sorted(ours) == sorted(theirs) == sorted(layout.of(cell).grad_names)
    rtol = tolerance_for(dtype)
    assert loss == pytest.approx(theirs_loss, rel=10 * rtol)
    for k, g in theirs.items():
        size = np.max(np.abs(g))
        np.testing.assert_allclose(ours[k], g, rtol=0, atol=10 * rtol * size, err_msg=k)
    # And back: PyTorch's gradient in bptt-ref's names is the stack's.
    back = layout.grads_from_layout(cell, theirs)
    for k, g in grads.items():
        size = np.max(np.abs(g))
        np.testing.assert_allclose(back[k], g, rtol=0, atol=10 * rtol * size, err_msg=k)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("cell", "num_layers", "bidirectional"), STACKS)
def test_the_torch_layout_is_pytorchs(
    cell: str, num_layers: int, bidirectional: bool, dtype: Any
) -> None:
    agree_with_pytorch(cell, num_layers, bidirectional, dtype)


def _swap_layer_1_states(arrays: dict[str, Any]) -> None:
    arrays["h_0"] = arrays["h_0"][[0, 1, 3, 2]]


def _layer_1_reads_layer_0_reverse(arrays: dict[str, Any]) -> None:
    arrays["weight_hh_l1"] = arrays["weight_hh_l0_reverse"]


@pytest.mark.parametrize("planted", [_swap_layer_1_states, _layer_1_reads_layer_0_reverse])
def test_a_planted_mixup_fails_the_comparison(planted: Callable[[dict[str, Any]], None]) -> None:
    with pytest.raises(AssertionError):
        agree_with_pytorch("lstm", 2, True, np.float64, planted)
