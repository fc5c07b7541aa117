"""The one configuration value: defaults, typos refused at run time, cells a form supports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import bptt_ref
from bptt_ref import finite_difference
from bptt_ref.config import DEFAULTS, model_of


def _case() -> tuple[dict[str, Any], Any, Any]:
    rng = np.random.default_rng(0)
    sizes: dict[str, Any] = {"batch_size": 2, "input_size": 2, "hidden_size": 3, "output_size": 2}
    params = bptt_ref.random_params(rng, **sizes)
    return params, rng.standard_normal((4, 2, 2)), rng.standard_normal((4, 2, 2))


def _direction(params: dict[str, Any], xs: Any) -> dict[str, Any]:
    return {**{k: np.ones_like(v) for k, v in params.items()}, "xs": np.ones_like(xs)}


# Every public function configured by **config, called on one small rnn case.
CONFIGURED: dict[str, Callable[..., Any]] = {
    "loss_and_grad": bptt_ref.loss_and_grad,
    "window_loss_and_grad": lambda p, x, y, **c: bptt_ref.window_loss_and_grad(
        p, x, y, window=1, **c
    ),
    "tbptt_loss_and_grad": lambda p, x, y, **c: bptt_ref.tbptt_loss_and_grad(
        p, x, y, k1=1, k2=2, **c
    ),
    "masked_loss_and_grad": lambda p, x, y, **c: bptt_ref.masked_loss_and_grad(
        p, x, y, np.ones(x.shape[:2], dtype=bool), **c
    ),
    "vectorized_grads": bptt_ref.vectorized_grads,
    "chains_grads": bptt_ref.chains_grads,
    "literal_grads": bptt_ref.literal_grads,
    "lag_contributions": bptt_ref.lag_contributions,
    "directional_derivative": lambda p, x, y, **c: finite_difference.directional_derivative(
        p, x, y, _direction(p, x), **c
    ),
}


def test_defaults_are_the_documented_ones() -> None:
    model = model_of({})
    assert (model.cell.name, model.hidden, model.output, model.loss) == tuple(DEFAULTS.values())
    assert DEFAULTS == {"cell": "rnn", "hidden": "tanh", "output": "identity", "loss": "mse"}


@pytest.mark.parametrize("name", CONFIGURED)
def test_a_misspelt_keyword_is_refused_not_defaulted(name: str) -> None:
    params, xs, targets = _case()
    fn = CONFIGURED[name]
    fn(params, xs, targets, hidden="relu")  # the spelled-right call works
    with pytest.raises(TypeError, match="unexpected keyword argument 'hiden'; the model is"):
        fn(params, xs, targets, hiden="relu")


@pytest.mark.parametrize(
    "name", ["vectorized_grads", "chains_grads", "literal_grads", "lag_contributions"]
)
def test_the_note_forms_refuse_a_gated_cell(name: str) -> None:
    params, xs, targets = _case()
    with pytest.raises(ValueError, match="cell 'lstm' is not supported here; expected one of"):
        CONFIGURED[name](params, xs, targets, cell="lstm")


def test_an_invalid_name_is_a_value_error_listing_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown hidden activation 'tan'"):
        model_of({"hidden": "tan"})
    with pytest.raises(ValueError, match="unknown cell"):
        model_of({"cell": "lsmt"})
