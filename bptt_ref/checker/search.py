"""The search: Hypothesis draws cases of one cell and configuration, the oracle judges
each returned key, and the first failure is shrunk to the smallest case."""

from __future__ import annotations

import re
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bptt_ref import stack
from bptt_ref._validate import check_names
from bptt_ref.cells import cell_named
from bptt_ref.checker.hints import hints
from bptt_ref.checker.protocol import GradFn, Raised, call, check_signature, judge
from bptt_ref.checker.report import CheckFailed, CheckResult, Report, describe, save, snippet
from bptt_ref.compare import KeyComparison
from bptt_ref.layouts import Layout, layout_named

if TYPE_CHECKING:
    from bptt_ref.cases import Case


@dataclass
class _Search:
    """What the Hypothesis search has seen so far (its test function returns nothing)."""

    keys: tuple[str, ...] | None = None
    calls: int = 0
    examples_to_failure: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_failure: float = 0.0
    compiling_to_failure: float = 0.0
    worst: dict[str, KeyComparison] = field(default_factory=dict)
    # The last failing case: Hypothesis replays the shrunk example last.
    failing: Case | None = None
    actual: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    verdicts: list[KeyComparison] = field(default_factory=list)


class _Mismatch(Exception):
    """Raised inside the search so that Hypothesis shrinks the case."""


def check_gradients(
    fn: GradFn,
    *,
    cell: str = "rnn",
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
    dtype: Any = np.float64,
    max_examples: int = 100,
    seed: int = 0,
    max_T: int = 16,
    max_H: int = 8,
    save_dir: str | Path | None = None,
    name: str | None = None,
    num_layers: int = 1,
    bidirectional: bool = False,
    binding: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    layout: str | None = None,
) -> CheckResult:
    """Run ``fn`` on Hypothesis-drawn cases and judge every returned key against the oracle.

    Cases come from :func:`bptt_ref.strategies.cases` restricted to this cell,
    configuration and ``dtype``: T in [1, max_T], B, D, O in [1, 4], H in [1, max_H],
    every weight regime and input style. The first failure is shrunk to the smallest case, which is
    saved as ``bptt-ref-failure-<name>.npz`` in ``save_dir`` (default: a fresh temporary
    directory) and described in the result's :class:`Report`.

    Args:
        fn: the gradient function, ``fn(params, xs, targets) -> {key: array}`` (see
            :mod:`bptt_ref.testing` for the protocol and the dtype rules).
        cell: the cell ``fn`` differentiates, a name of ``bptt_ref.cells.CELLS``: ``fn``
            receives its parameters (``CELLS[cell].names``) and returns a non-empty
            subset of ``CELLS[cell].grad_names``.
        hidden, output, loss: the configuration ``fn`` implements (a gated cell takes
            only ``hidden="tanh"``, its candidate's nonlinearity).
        dtype: float64 or float32, the dtype of every array ``fn`` receives.
        max_examples: how many cases to try before declaring ``fn`` right.
        seed: seeds the search, so a run is reproducible.
        max_T, max_H: the largest sequence length and hidden size drawn.
        save_dir: where the reproducer goes.
        name: how ``fn`` is named in the report; by default ``module:qualname``.
        binding: Python lines that bind ``fn`` in the reproducer snippet; by default an
            import of ``fn`` from its module.
        num_layers, bidirectional: check the gradient of a stacked network of ``cell``
            (:mod:`bptt_ref.stack`, PyTorch's semantics): ``fn`` receives and returns the
            keys of :func:`bptt_ref.stack.names`. Its report carries no hints: they are
            written for one cell.
        progress: called as ``progress(phase, examples, calls)`` at each case and when
            the phase changes: ``phase`` is ``"searching"``, ``"compiling the oracle"``
            (the first case of a size compiles it), ``"shrinking"`` or ``"explaining the
            failure"`` (the probes behind the hints); ``examples`` counts the cases tried
            until the first failure, ``calls`` every call of ``fn``.
        layout: a name of :data:`bptt_ref.layouts.LAYOUTS` (``"torch"``, ``"keras"``,
            ...): ``fn`` receives the parameters, ``xs`` and ``targets`` in that layout
            and returns gradients under its keys, which the report names;
            ``None`` (the default) is bptt-ref's canonical layout.

    Returns:
        A :class:`CheckResult`; ``result.report`` is ``None`` exactly when every key
        agreed on every case.

    Raises:
        ProtocolError: ``fn`` has the wrong signature, or returned a non-mapping,
            unknown, missing or inconsistent keys, an array of the wrong shape or dtype,
            or a value NumPy cannot read as an array.
        ValueError: an unknown cell, an invalid configuration, dtype or bound, an
            unknown layout or one that cannot express the cell.
    """
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as seeded

    from bptt_ref.jax_reference import compile_clock
    from bptt_ref.strategies import cases

    check_names(hidden, output, loss, cell=cell_named(cell))
    network = stack.configure(cell, num_layers, bidirectional)
    lay = None if layout is None else layout_named(layout)
    if lay is not None:
        lay.of(cell)
        if not network.single:
            raise ValueError(
                "a layout check is of a single cell; check a stacked network "
                "(num_layers > 1 or bidirectional) in bptt-ref's own names"
            )
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype is {np.dtype(dtype)}; expected float32 or float64")
    for label, value in (("max_examples", max_examples), ("max_T", max_T), ("max_H", max_H)):
        if value < 1:
            raise ValueError(f"{label} is {value}; expected at least 1")
    described, default_binding = describe(fn)
    target = name or described
    check_signature(fn, target)
    search = _Search()

    @seeded(seed)
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=False,
        verbosity=Verbosity.quiet,
        phases=(Phase.generate, Phase.shrink),
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        cases(
            cells=[cell],
            hidden=[hidden],
            heads=[(output, loss)],
            dtypes=[np.dtype(dtype)],
            max_T=max_T,
            max_H=max_H,
            layers=[num_layers],
            bidirectional=[bidirectional],
        )
    )
    def run(case: Case) -> None:
        search.failing = case
        if not search.first_failure:
            search.examples_to_failure += 1
        tell("shrinking" if search.first_failure else "searching")
        search.calls += 1
        try:
            search.keys, actual = call(fn, case, search.keys, target, lay)
        except Raised:
            failed()
            raise
        verdicts = judge(actual, case, search.keys, lay)
        if all(v.ok for v in verdicts):
            if not search.first_failure:
                for v in verdicts:
                    worst = search.worst.get(v.key)
                    if worst is None or v.err / v.bound > worst.err / worst.bound:
                        search.worst[v.key] = v
            return
        failed()
        search.actual, search.verdicts = actual, verdicts
        raise _Mismatch

    def tell(phase: str) -> None:
        if progress is not None:
            progress(phase, search.examples_to_failure, search.calls)

    def failed() -> None:
        if not search.first_failure:
            search.first_failure = time.perf_counter()
            search.compiling_to_failure = clock.seconds

    # Tracing ends before the long XLA compilation starts: from then on, say so.
    with compile_clock(on_event=lambda: tell("compiling the oracle")) as clock:
        try:
            run()
        except (_Mismatch, Raised) as exc:
            error = exc
        else:
            seconds = time.perf_counter() - search.started
            keys = search.keys or ()
            return CheckResult(
                keys, search.examples_to_failure, search.worst, None, seconds, clock.seconds
            )

        done, compiled = time.perf_counter(), clock.seconds
        tell("explaining the failure")
        case = search.failing
        assert case is not None
        # fn may have raised before it ever returned, and so before its keys were known.
        keys = search.keys or ()
        stem = re.sub(r"[^\w.-]+", "-", target.rsplit(":", 1)[-1].rsplit("/", 1)[-1]).strip("-")
        directory = Path(tempfile.mkdtemp(prefix="bptt-ref-") if save_dir is None else save_dir)
        path = save(case, keys, directory, stem or "fn", lay)
        raised = isinstance(error, Raised)
        report = Report(
            target=target,
            case=case,
            keys=keys,
            verdicts=[] if raised else search.verdicts,
            error="".join(traceback.format_exception(error.__cause__)) if raised else None,
            hints=[] if raised or case.stacked else _hints(fn, case, keys, search, target, lay),
            reproducer=path,
            snippet=snippet(binding or default_binding, path, keys, cell, lay, **case.network),
            examples=search.examples_to_failure,
            calls=search.calls,
            seconds=(search.first_failure - search.started, done - search.first_failure),
            compiling=(search.compiling_to_failure, compiled - search.compiling_to_failure),
            layout=layout,
        )
    return CheckResult(
        keys, search.examples_to_failure, search.worst, report, done - search.started, compiled
    )


def _hints(
    fn: GradFn, case: Case, keys: tuple[str, ...], search: _Search, target: str, lay: Layout | None
) -> list[str]:
    """The hints on the failing case; in a layout, probed on the canonical gradients its
    return determines, through ``fn`` wrapped to take and give canonical arrays."""
    if lay is None:
        return hints(fn, case, keys, search.actual, search.verdicts, target)
    from bptt_ref.checker import in_layout

    ours, actual = in_layout.canonical(search.actual, case.cell, lay)
    if not ours:
        return []

    def canonical_fn(params: Any, xs: Any, targets: Any) -> dict[str, Any]:
        cell = case.cell
        out = fn(lay.nest(lay.to_layout(cell, params)), lay.data(cell, xs), lay.data(cell, targets))
        return lay.grads_from_layout(cell, lay.flatten(out))

    verdicts = judge(actual, case, ours)
    if all(v.ok for v in verdicts):
        # The wrong arrays are ones the canonical view does not read (PyTorch's
        # bias_hh_l0 of the rnn, which adds into b_h): its probes would describe a
        # right gradient.
        return []
    return hints(canonical_fn, case, ours, actual, verdicts, target, layout=lay)


def assert_bptt_gradients(
    fn: GradFn,
    *,
    cell: str = "rnn",
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
    dtype: Any = np.float64,
    max_examples: int = 100,
    seed: int = 0,
    max_T: int = 16,
    max_H: int = 8,
    save_dir: str | Path | None = None,
    layout: str | None = None,
    num_layers: int = 1,
    bidirectional: bool = False,
) -> None:
    """Assert that ``fn`` computes the BPTT gradient, for use in a pytest suite.

    Arguments as for :func:`check_gradients`. Call it from a plain test function, not
    from inside a Hypothesis ``@given`` test: it runs its own search.

    Raises:
        CheckFailed: an ``AssertionError`` whose message is the :class:`Report` of the
            smallest case where a returned key is wrong or ``fn`` raised (then the
            report holds ``fn``'s traceback).
        ProtocolError: ``fn`` does not follow the protocol; the message says what to fix.
    """
    __tracebackhide__ = True
    result = check_gradients(
        fn,
        cell=cell,
        hidden=hidden,
        output=output,
        loss=loss,
        dtype=dtype,
        max_examples=max_examples,
        seed=seed,
        max_T=max_T,
        max_H=max_H,
        save_dir=save_dir,
        layout=layout,
        num_layers=num_layers,
        bidirectional=bidirectional,
    )
    if result.report is not None:
        raise CheckFailed(result.report)
