"""How long JAX spends compiling: the oracle's fixed cost, told apart from the cases'.

The first case of a bucket compiles the oracle (and, on a failure, its textbook peer), which
takes seconds; every later case of the bucket takes milliseconds. :func:`compile_clock`
measures the first part from JAX's own compile events, so a report can say where a run's
time went.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache

import jax

from bptt_ref.oracle.cache import LOAD_EVENT

__all__ = ["CompileClock", "compile_clock", "time_split"]


_COMPILE_EVENTS = frozenset(
    {
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
        LOAD_EVENT,
    }
)
"""The ``jax.monitoring`` duration events of turning a function into an executable: tracing
to a jaxpr, lowering to MLIR, XLA compilation (or a read of the persistent cache), or
loading a stored executable instead (:func:`bptt_ref.oracle.cache.stored`)."""


@dataclass
class CompileClock:
    """The spans JAX spent compiling while :func:`compile_clock` ran.

    Attributes:
        on_event: called when a compilation step ends (the first, tracing, ends before
            the long XLA compilation starts, so a caller can say "compiling" then).
        spans: ``(start, end)`` of each step on the ``time.perf_counter`` clock.
    """

    on_event: Callable[[], None] | None = None
    spans: list[tuple[float, float]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """The length of the union of :attr:`spans`.

        A union, not a sum: tracing a function traces the jitted functions it calls
        within its own span, and those nested spans must count once.
        """
        total, reach = 0.0, -math.inf
        for start, end in sorted(self.spans):
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total


_RUNNING: list[CompileClock] = []


def _record(event: str, duration_secs: float, **_: str | int) -> None:
    if event not in _COMPILE_EVENTS:
        return
    end = time.perf_counter()
    for clock in _RUNNING:
        clock.spans.append((end - duration_secs, end))
        if clock.on_event is not None:
            clock.on_event()


@cache
def _listen() -> None:
    # One listener for the life of the process, registered on first use: the public
    # jax.monitoring of older JAX releases has no way to take a listener off again.
    jax.monitoring.register_event_duration_secs_listener(_record)


@contextmanager
def compile_clock(on_event: Callable[[], None] | None = None) -> Iterator[CompileClock]:
    """Measure the wall time JAX spends compiling (any function, the oracle's included)
    inside the block, from JAX's own compile events; ``on_event`` as in :class:`CompileClock`.

    What runs outside a compilation, executing the compiled functions included, is not
    counted, so ``clock.seconds`` is the part of a block's time that a second run of the
    same shapes in the same process would not spend.
    """
    _listen()
    clock = CompileClock(on_event)
    _RUNNING.append(clock)
    try:
        yield clock
    finally:
        _RUNNING.remove(clock)


def time_split(seconds: float, compiling: float) -> str:
    """``seconds`` of wall time in words, ``compiling`` of them measured by a
    :class:`CompileClock`: ``"6.7 s (6.5 s compiling the oracle, 0.2 s on the cases)"``."""
    return (
        f"{seconds:.1f} s ({compiling:.1f} s compiling the oracle, "
        f"{seconds - compiling:.1f} s on the cases)"
    )
