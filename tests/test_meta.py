"""Test the tester: every comparison the suite makes must fail on a planted wrong gradient.

Each planted bug is a one-line edit of the real ``bptt_ref/_rnn.py`` source, loaded as a
separate module, so the mutant differs from the reference in exactly that line. For each
comparison in ``checks.ORACLES`` and each bug that comparison is meant to see,
Hypothesis must find (and shrink) a case on which the check fails.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from typing import Any

import pytest
from checks import ORACLES, LossAndGrad
from hypothesis import HealthCheck, find, settings
from hypothesis.errors import NoSuchExample

import bptt_ref
from bptt_ref import _model, _rnn, cli
from bptt_ref.cases import Case
from bptt_ref.cells import CELLS

# name: (line as written in _rnn.py, the planted replacement)
BUGS: dict[str, tuple[str, str]] = {
    "dW scaled by 1.001": (
        '"W": rows_h.T @ states[:-1].reshape(T * B, H),',
        '"W": 1.001 * (rows_h.T @ states[:-1].reshape(T * B, H)),',
    ),
    "f' dropped": ("delta[t] *= joint[t + 1] @ WU", "delta[t] = joint[t + 1] @ WU"),
    "h_t used where h_{t-1} belongs": (
        '"W": rows_h.T @ states[:-1].reshape(T * B, H),',
        '"W": rows_h.T @ states[1:].reshape(T * B, H),',
    ),
    "first time step skipped": ("for t in range(T - 1, -1, -1):", "for t in range(T - 1, 0, -1):"),
    "loss off by 1e-6": (
        "value = float(loss_sum(loss, fw.z, fw.y_hat, y))",
        "value = float(loss_sum(loss, fw.z, fw.y_hat, y)) * (1 + 1e-6)",
    ),
}

# Which bugs each comparison is meant to see. The loss value is compared with the
# oracle's only; central differences are a coarse instrument (bound 1e-6 relative to
# the terms of <g, u>), and a 0.1% error in one gradient is below what they resolve.
PAIRS = [
    (oracle, bug)
    for oracle in sorted(ORACLES)
    for bug in sorted(BUGS)
    if not (bug == "loss off by 1e-6" and oracle != "jax")
    and not (bug == "dW scaled by 1.001" and oracle == "central_difference")
]


def mutant(original: str, replacement: str) -> LossAndGrad:
    """``loss_and_grad`` whose RNN runs the source of ``bptt_ref._rnn`` with one line replaced."""
    source = inspect.getsource(_rnn)
    assert source.count(original) == 1, f"the line {original!r} is gone from _rnn.py"
    module = types.ModuleType("bptt_ref._rnn_mutant")
    module.__dict__["__package__"] = "bptt_ref"
    exec(compile(source.replace(original, replacement), "<mutant>", "exec"), module.__dict__)
    planted = dataclasses.replace(CELLS["rnn"], fused=module.fused_loss_and_grad)

    def loss_and_grad(*args: Any, cell: str = "rnn", **config: Any) -> Any:
        assert cell == "rnn", cell  # the planted bugs are in the RNN's source
        # Through _model, not the bptt_ref namespace, which a test may have patched to this.
        return _model.loss_and_grad(*args, cell=planted, **config)

    return loss_and_grad


def planted(bug: str) -> LossAndGrad:
    return mutant(*BUGS[bug])


def failing_case(oracle: str, loss_and_grad: LossAndGrad) -> Case:
    strategy, check = ORACLES[oracle]

    def fails(case: Case) -> bool:
        try:
            check(case, loss_and_grad)
        except AssertionError:
            return True
        return False

    search = settings(
        max_examples=300, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    return find(strategy, fails, settings=search)


@pytest.mark.parametrize(("oracle", "bug"), PAIRS)
def test_planted_bug_fails_the_comparison(oracle: str, bug: str) -> None:
    case = failing_case(oracle, planted(bug))
    # Hypothesis shrinks towards the smallest failing case; it must be a real case.
    assert case.dims["T"] >= 1


@pytest.mark.parametrize("oracle", sorted(ORACLES))
def test_unmutated_source_passes(oracle: str) -> None:
    # The control: the same loading path with no edit finds no failing case.
    with pytest.raises(NoSuchExample):
        failing_case(oracle, mutant("import numpy as np", "import numpy as np"))


# The planted bugs are in the RNN's source (the mutant refuses other cells), so these two
# sweep the rnn alone; tests/test_verify_table.py plants a bug in another cell.
def test_verify_fails_on_a_planted_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bptt_ref, "loss_and_grad", planted("h_t used where h_{t-1} belongs"))
    assert cli.main(["verify", "--sweep", "quick", "--cell", "rnn"]) == 1


def test_verify_passes_unmutated() -> None:
    assert cli.main(["verify", "--sweep", "quick", "--cell", "rnn"]) == 0
