"""How many JAX-verified examples per second the property suite sustains after warm-up.

Runs the body of ``tests/test_against_jax.py::test_every_gradient_matches_jax`` (for a
gated cell, of ``tests/test_cells_against_jax.py::test_every_gated_cell_matches_jax``:
NumPy gradients, the oracle, the comparison) under Hypothesis with the ``ci`` settings,
over the cases of one cell, after one call per dtype has compiled the oracle, and prints
the rate.

    python benchmarks/oracle_rate.py [EXAMPLES] [--cell CELL]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from hypothesis import HealthCheck, given, settings

import bptt_ref
from bptt_ref import jax_reference
from bptt_ref.cases import Case, make_case
from bptt_ref.cells import CELLS
from bptt_ref.strategies import cases


def main(examples: int, cell: str = "rnn") -> None:
    checked = 0

    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(cases(cells=(cell,)))
    def verify(case: Case) -> None:
        nonlocal checked
        _, grads = bptt_ref.loss_and_grad(
            case.params, case.xs, case.targets, cell=case.cell, **case.config
        )
        jax_reference.assert_matches_oracle(
            grads,
            case.params,
            case.xs,
            case.targets,
            context=repr(case),
            cell=case.cell,
            **case.config,
        )
        checked += 1

    for dtype in (np.float64, np.float32):
        warm = make_case(
            dims={"T": 2, "B": 1, "D": 1, "H": 1, "O": 1},
            hidden="tanh",
            output="identity",
            loss="mse",
            dtype=dtype,
            regime="contracting",
            style="normal",
            seed=0,
            cell=cell,
        )
        jax_reference.reference(warm.params, warm.xs, warm.targets, cell=cell, **warm.config)
    start = time.perf_counter()
    verify()
    elapsed = time.perf_counter() - start
    print(
        f"{cell}: {checked} JAX-verified examples in {elapsed:.2f} s: "
        f"{checked / elapsed:.0f} per second"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("examples", nargs="?", type=int, default=3000)
    parser.add_argument("--cell", choices=list(CELLS), default="rnn")
    args = parser.parse_args()
    main(args.examples, args.cell)
