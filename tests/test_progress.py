"""What a long run shows while it runs, and where its time went: compiling vs. the cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from planted import batched

from bptt_ref.jax_reference import CompileClock, compile_clock
from bptt_ref.oracle import cache
from bptt_ref.testing import check_gradients


def test_compile_clock_sees_a_compilation_and_not_a_cached_call() -> None:
    def f(x: jax.Array) -> jax.Array:
        return jnp.sin(x) * 2

    jitted = jax.jit(f)
    x = np.ones(3, dtype=np.float32)
    with compile_clock() as first:
        jitted(x).block_until_ready()
    with compile_clock() as second:
        jitted(x).block_until_ready()
    # Tracing, lowering and XLA compilation: each reports a span.
    assert len(first.spans) >= 3, first.spans
    assert first.seconds > 0
    assert second.spans == []
    assert second.seconds == 0


def test_nested_spans_count_once() -> None:
    # A trace of an outer function holds the traces of the jitted functions it calls.
    clock = CompileClock(spans=[(0.0, 2.0), (0.5, 1.0), (1.5, 3.0), (5.0, 6.0)])
    assert clock.seconds == 4.0


def test_check_tells_its_phase_and_splits_its_time() -> None:
    # A fresh process compiles (or loads) the oracle on its first case; so must this test.
    jax.clear_caches()  # type: ignore[no-untyped-call]
    cache._LOADED.clear()
    told: list[tuple[str, int, int]] = []
    result = check_gradients(
        batched.mean_over_time,
        max_examples=40,
        progress=lambda *args: told.append(args),
    )
    report = result.report
    assert report is not None
    phases = [phase for phase, _, _ in told]
    first_shrink = phases.index("shrinking")
    searched = told[:first_shrink]
    assert searched[0] == ("searching", 1, 0)
    assert "compiling the oracle" in phases[:first_shrink]
    assert [e for p, e, _ in searched if p == "searching"] == list(range(1, report.examples + 1))
    assert set(phases[first_shrink:]) <= {
        "shrinking",
        "compiling the oracle",
        "explaining the failure",
    }
    assert told[-1] == ("explaining the failure", report.examples, report.calls)
    # The clock saw the compilation, and the split adds up.
    assert 0 < report.compiling[0] <= report.seconds[0]
    assert 0 <= report.compiling[1] <= report.seconds[1]
    assert result.seconds == pytest.approx(sum(report.seconds))
    assert result.compiling == pytest.approx(sum(report.compiling))
    text = str(report)
    assert (
        f"in {report.seconds[0]:.1f} s ({report.compiling[0]:.1f} s compiling the oracle, " in text
    )


def test_passing_check_splits_its_time() -> None:
    told: list[tuple[str, int, int]] = []
    result = check_gradients(
        batched.grad, max_examples=10, sizes="small", progress=lambda *a: told.append(a)
    )
    assert result.ok
    assert [e for p, e, _ in told if p == "searching"] == list(range(1, 11))
    assert 0 <= result.compiling <= result.seconds
    assert result.time_spent.startswith(f"{result.seconds:.1f} s (")
    assert "s compiling the oracle, " in result.time_spent
