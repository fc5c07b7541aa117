"""The gated cells' hand-written NumPy gradients against the JAX autodiff oracle.

Every comparison here must fail on the bugs people really make in LSTM and GRU kernels:
each planted bug is a one-line edit of the real cell module (the tables in
``test_lstm_without_jax.py`` and ``test_gru_without_jax.py``), loaded as a separate
module, and Hypothesis must find a case on which ``check_against_oracle`` fails.
"""

from __future__ import annotations

import inspect
import types
from typing import Any

import pytest
from checks import LossAndGrad, check_against_oracle
from hypothesis import HealthCheck, find, given, settings
from hypothesis.errors import NoSuchExample
from test_gru_without_jax import BUGS as GRU_BUGS
from test_lstm_without_jax import BUGS as LSTM_BUGS

from bptt_ref import _model
from bptt_ref.cases import Case
from bptt_ref.cells import CELLS, gru, lstm
from bptt_ref.strategies import cases

GATED = tuple(name for name in CELLS if name != "rnn")


@given(cases(cells=GATED))
def test_every_gated_cell_matches_jax(case: Case) -> None:
    check_against_oracle(case)


@settings(max_examples=12)
@given(
    cases(
        cells=GATED,
        min_T=256,
        max_T=300,
        regimes=("contracting", "near_critical"),
        styles=("normal", "zeros"),
    )
)
def test_long_sequences_of_gated_cells_match_jax(case: Case) -> None:
    check_against_oracle(case)


def _planted(module: types.ModuleType, cell: str, original: str, replacement: str) -> LossAndGrad:
    """``loss_and_grad`` whose ``cell`` runs ``module``'s source with one line replaced."""
    source = inspect.getsource(module)
    if "mutmut" in source:
        pytest.skip("mutmut has rewritten the source these bugs are planted in")
    assert source.count(original) == 1, f"the line {original!r} is gone from {module.__name__}"
    mutant = types.ModuleType(f"{module.__name__}_mutant")
    mutant.__dict__["__package__"] = "bptt_ref.cells"
    exec(compile(source.replace(original, replacement), "<mutant>", "exec"), mutant.__dict__)
    planted = next(v for v in vars(mutant).values() if getattr(v, "name", None) == cell)

    def loss_and_grad(*args: Any, cell: str, **config: Any) -> Any:
        return _model.loss_and_grad(*args, cell=planted, **config)

    return loss_and_grad


PLANTED = [
    *((cell, bug, lstm, *LSTM_BUGS[bug]) for cell in ("lstm",) for bug in sorted(LSTM_BUGS)),
    *(
        (cell, bug, gru, original, replacement)
        for bug, (cells, original, replacement) in sorted(GRU_BUGS.items())
        for cell in cells
        # Consistent in forward and backward: only a unit saturated past the oracle's
        # float32 noise tells, which the complex-step tests of test_gru_without_jax show.
        if bug != "1 − z by subtraction"
    ),
]


def _failing_case(cell: str, loss_and_grad: LossAndGrad) -> Case:
    def fails(case: Case) -> bool:
        try:
            check_against_oracle(case, loss_and_grad)
        except AssertionError:
            return True
        return False

    search = settings(
        max_examples=300, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    return find(cases(cells=(cell,)), fails, settings=search)


@pytest.mark.parametrize(
    ("cell", "bug", "module", "original", "replacement"),
    PLANTED,
    ids=[f"{cell}: {bug}" for cell, bug, *_ in PLANTED],
)
def test_planted_cell_bug_fails_the_jax_comparison(
    cell: str, bug: str, module: types.ModuleType, original: str, replacement: str
) -> None:
    case = _failing_case(cell, _planted(module, cell, original, replacement))
    assert case.cell == cell


@pytest.mark.parametrize("cell", GATED)
def test_unplanted_cell_source_passes(cell: str) -> None:
    module = lstm if cell == "lstm" else gru
    with pytest.raises(NoSuchExample):
        _failing_case(cell, _planted(module, cell, "import numpy as np", "import numpy as np"))
