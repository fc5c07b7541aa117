"""The search: Hypothesis draws cases of one cell and configuration, the oracle judges
each returned key, and the first failure is shrunk to the smallest case."""

from __future__ import annotations

import re
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bptt_ref import kinks, stack
from bptt_ref._validate import check_names
from bptt_ref.cases import REGIMES, make_case, size_plan
from bptt_ref.cells import cell_named
from bptt_ref.checker.hints import hints, kink_hint
from bptt_ref.checker.protocol import (
    GradFn,
    Hung,
    Raised,
    Scribbled,
    call,
    check_signature,
    judge,
    plain_oracle,
    spread,
)
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
    # Per key, the largest difference between two calls on one case / its tolerance.
    spread: dict[str, float] = field(default_factory=dict)


_SWEEP_ORDER = ("H", "B", "T", "D", "O")
"""The dims whose boundary sizes are tried, in order: where kernels block most (hidden-unit
tiles, batch lanes, chunks of steps) first."""


_REPEAT_EVERY = 10
"""One small case in this many is called ``repeat`` times (and every boundary case): a
second call costs as much as the first, and a kernel's nondeterminism (the order of its
atomic or split reductions) shows on any case it touches, more often on the large
boundary cases, whose reductions span several threads or blocks."""


class _Mismatch(Exception):
    """Raised inside the search so that Hypothesis shrinks the case."""


class _Stop(BaseException):
    """Ends the search at once, without shrinking: Hypothesis lets a BaseException through.

    For a hang (each shrinking step could wait the whole timeout again) and for a result
    that differs between calls (a replay need not reproduce it, so shrinking cannot work).
    """

    def __init__(self, headline: str, evidence: str) -> None:
        super().__init__(headline)
        self.headline, self.evidence = headline, evidence


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
    sizes: str | Sequence[int] = "kernel",
    max_T: int | None = None,
    max_H: int | None = None,
    max_B: int | None = None,
    timeout: float | None = 60.0,
    repeat: int = 2,
    save_dir: str | Path | None = None,
    name: str | None = None,
    num_layers: int = 1,
    bidirectional: bool = False,
    binding: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    layout: str | None = None,
    kink: str | None = None,
    specialize: bool = True,
) -> CheckResult:
    """Run ``fn`` on Hypothesis-drawn cases and judge every returned key against the oracle.

    First ``max_examples`` small cases drawn by Hypothesis (:func:`bptt_ref.strategies.cases`
    restricted to this cell, configuration and ``dtype``: T ≤ 16, B, D, O ≤ 4, H ≤ 8, all
    in the oracle's smallest compilation bucket; every weight regime and input style). Then,
    unless ``sizes="small"``, one case at each boundary size of each dim, the others small:
    by default T at 63, 64, 65, 127, 128, 129, 255, 256, 257 and each of B, D, H, O at
    7, 8, 9, 15, 16, 17 … 127, 128, 129, 69 cases in all (four compilations of the oracle:
    H, B, T, and D with O; five without ``specialize``; Hypothesis alone, drawing the same shape for
    several cases in a row, would leave most boundaries untried in a short run). A failure
    there is shrunk first to the smallest boundary size of that dim that fails (the
    boundary the bug lives past), then by Hypothesis over small cases with that dim held
    there. Any failure is shrunk to the
    smallest case, which is saved as ``bptt-ref-failure-<name>.npz`` in ``save_dir``
    (default: a fresh temporary directory) and described in the result's :class:`Report`.

    Besides the gradients, every call is checked for three faults of real kernels, each
    a failure of the check: ``fn`` not returning within ``timeout`` seconds (reported on
    the case where it hung, unshrunk), ``fn`` writing into the arrays it was given
    (reported with the array and the first entry changed), and ``fn`` giving different
    answers to the same case: every boundary case and one small case in ten (the first,
    the eleventh, ...) that pass are run ``repeat`` times in all, and the check fails
    when two answers differ by more than the tolerance a right answer has on that case
    (a smaller difference is only reported, in ``CheckResult.spread``). The oracle judges
    each case in a second thread while ``fn`` runs.

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
        sizes: ``"kernel"``, ``"small"`` (no boundary cases; T ≤ max_T, B ≤ max_B,
            H ≤ max_H, D, O ≤ 4, uniformly) or a list of edges e, whose boundaries
            e − 1, e, e + 1 replace the kernel widths and chunk lengths for every dim.
        max_T, max_H, max_B: the largest T, H and B of any case (``None``: 257, 129, 129
            for ``"kernel"``, the largest boundary size of a list, 16, 8, 4 for
            ``"small"``); a boundary size above it is not tried.
        timeout: seconds each call of ``fn`` may take (``None``: no limit, and ``fn`` is
            called in the caller's thread).
        repeat: calls of ``fn`` on each repeated case that passes (1: no nondeterminism
            check).
        save_dir: where the reproducer goes.
        name: how ``fn`` is named in the report; by default ``module:qualname``.
        binding: Python lines that bind ``fn`` in the reproducer snippet; by default an
            import of ``fn`` from its module.
        num_layers, bidirectional: check the gradient of a stacked network of ``cell``
            (:mod:`bptt_ref.stack`, PyTorch's semantics): ``fn`` receives and returns the
            keys of :func:`bptt_ref.stack.names`. Its report carries no hints but the one
            on ``kink``: they are written for one cell; and its cases are small
            (``sizes="kernel"`` is taken as ``"small"``: the stack's oracle has no wide
            padding to share one compilation between boundary sizes).
        progress: called as ``progress(phase, examples, calls)`` at each case and when
            the phase changes: ``phase`` is ``"searching"``, ``"compiling the oracle"``
            (the first case of a size compiles it), ``"shrinking"`` or ``"explaining the
            failure"`` (the probes behind the hints); ``examples`` counts the cases tried
            until the first failure, ``calls`` every call of ``fn``.
        layout: a name of :data:`bptt_ref.layouts.LAYOUTS` (``"torch"``, ``"keras"``,
            ...): ``fn`` receives the parameters, ``xs`` and ``targets`` in that layout
            and returns gradients under its keys, which the report names;
            ``None`` (the default) is bptt-ref's canonical layout. With
            ``num_layers`` > 1 or ``bidirectional``, ``"torch"`` is ``nn.LSTM``'s whole
            ``state_dict`` (``weight_hh_l1_reverse``, ``h_0`` (L·dirs, B, H), ``fc.weight``
            (O, dirs·H)), ``"onnx"`` one operator with ``direction="bidirectional"``
            (one layer only); the other layouts cannot express a stack.
        kink: the derivative of a kinked ``f_h`` (relu, leaky_relu) at an exact ``a = 0``
            that ``fn`` is held to: ``"jax"`` (relu'(0) = 0, leaky_relu'(0) = 1),
            ``"torch"`` (0 and 0.01), ``"left"`` or ``"right"`` (the one-sided derivative
            from below or above at every kink; :mod:`bptt_ref.kinks`). ``None`` (the
            default) accepts either one-sided derivative, the same at every kink of a case.
        specialize: compile the oracle for this one configuration (the default: a
            cold check compiles several times faster); ``False`` compiles one program
            for every configuration of the cell, which later checks of other
            configurations in the same process reuse (``bptt-ref check --all``).

    Returns:
        A :class:`CheckResult`; ``result.report`` is ``None`` exactly when every key
        agreed on every case.

    Raises:
        ProtocolError: ``fn`` has the wrong signature, or returned a non-mapping,
            unknown, missing or inconsistent keys, an array of the wrong shape or dtype,
            or a value NumPy cannot read as an array.
        ValueError: an unknown cell, an invalid configuration, dtype, bound, ``sizes``,
            ``timeout`` or ``repeat``, an unknown layout or one that cannot express the
            cell or the stack (only ``torch`` expresses ``num_layers`` > 1, PyTorch's
            whole ``state_dict``; ``onnx`` also one bidirectional layer).
    """
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as seeded
    from hypothesis import strategies as st

    from bptt_ref.jax_reference import compile_clock
    from bptt_ref.strategies import cases

    check_names(hidden, output, loss, cell=cell_named(cell))
    if kink is not None:
        kinks.side(kink, hidden)
    network = stack.configure(cell, num_layers, bidirectional)
    lay = None if layout is None else layout_named(layout)
    if lay is not None:
        lay.of(cell)
        # A stack in the layout's names (PyTorch's state_dict, ONNX's bidirectional
        # operator); other layouts refuse one.
        lay = lay.stacked(network.num_layers, network.bidirectional)
    if not network.single and sizes == "kernel":
        # The stack's oracle pads each case to its own bucket, so a boundary sweep would
        # compile it once per size: a stacked network is checked on small sizes.
        sizes = "small"
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype is {np.dtype(dtype)}; expected float32 or float64")
    for label, value in (
        ("max_examples", max_examples),
        ("repeat", repeat),
        ("max_T", max_T),
        ("max_H", max_H),
        ("max_B", max_B),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{label} is {value}; expected at least 1")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout is {timeout}; expected a positive number of seconds or None")
    small, boundary = size_plan(sizes, {"T": max_T, "H": max_H, "B": max_B})
    described, default_binding = describe(fn)
    target = name or described
    check_signature(fn, target)
    search = _Search()
    config = {"hidden": hidden, "output": output, "loss": loss, "dtype": np.dtype(dtype)}
    small_cases = cases(
        cells=[cell],
        hidden=[hidden],
        heads=[(output, loss)],
        dtypes=[np.dtype(dtype)],
        min_T=small["T"][0],
        max_T=small["T"][1],
        max_B=small["B"][1],
        max_D=small["D"][1],
        max_H=small["H"][1],
        max_O=small["O"][1],
        layers=[num_layers],
        bidirectional=[bidirectional],
    )

    def searched(strategy: st.SearchStrategy[Case]) -> None:
        """Run the Hypothesis search over ``strategy``, shrinking the first failure."""

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
        @given(strategy)
        def run(case: Case) -> None:
            counted(case)
            attempt(case, again_too=search.examples_to_failure % _REPEAT_EVERY == 1)

        run()

    def counted(case: Case) -> None:
        search.failing = case
        if not search.first_failure:
            search.examples_to_failure += 1
        tell("shrinking" if search.first_failure else "searching")

    def attempt(case: Case, again_too: bool = False) -> None:
        """Judge fn on ``case``; raise what makes it a failure (see the module's classes).
        ``again_too``: while no case has failed, call fn ``repeat`` times on it in all."""
        search.calls += 1
        # The oracle runs while fn does: a fn that waits (on its device, GIL released)
        # hides the oracle's time; one that computes on these two cores gains nothing
        # measurable (README, "How long a check takes").
        early = None
        if lay is None and not case.stacked:
            early = ahead.submit(plain_oracle(case, kink or "jax", specialize), False)
        try:
            search.keys, actual = call(fn, case, search.keys, target, lay, timeout=timeout)
        except Hung as exc:
            failed()
            raise _Stop(
                f"hung: no return within --timeout {timeout:g} s",
                f"{exc}\n(raise the timeout if fn is merely this slow on this case)",
            ) from None
        except Scribbled as exc:
            search.keys = search.keys or exc.keys or None
            failed()
            raise
        except Raised:
            failed()
            raise
        finally:
            # No second oracle call may start while this one runs (see cache.stored).
            if early is not None:
                wait([early])
        reference, verdicts = judge(
            actual, case, search.keys, lay, kink=kink, specialize=specialize, early=early
        )
        if not all(v.ok for v in verdicts):
            failed()
            search.actual, search.verdicts = actual, verdicts
            raise _Mismatch
        if search.first_failure:
            return
        # In a layout, the verdicts come from canonical arrays and there is no reference
        # in the layout's keys to measure a second answer against.
        for _ in range(repeat - 1 if again_too and reference is not None else 0):
            again(case, actual, reference)
        for v in verdicts:
            worst = search.worst.get(v.key)
            if worst is None or v.err / v.bound > worst.err / worst.bound:
                search.worst[v.key] = v

    def again(case: Case, first: dict[str, NDArray[np.float64]], reference: Any) -> None:
        """Call fn on ``case`` once more; stop the search if it answers differently."""
        search.calls += 1
        try:
            _, actual = call(fn, case, search.keys, target, lay, timeout=timeout)
        except Hung as exc:
            failed()
            raise _Stop(
                f"hung on a repeated call: no return within {timeout:g} s", str(exc)
            ) from None
        except (Raised, Scribbled) as exc:
            failed()
            cause = exc.__cause__ if isinstance(exc, Raised) else exc
            raise _Stop(
                "failed on a repeated call of a case it had answered rightly",
                "".join(traceback.format_exception(cause)),
            ) from None
        ratios = spread(first, actual, reference)
        for k, r in ratios.items():
            search.spread[k] = max(search.spread.get(k, 0.0), r)
        if any(r > 1 for r in ratios.values()):
            failed()
            raise _Stop(
                "gave different gradients on two calls of one case, by more than the "
                "tolerance (nondeterministic beyond the bound)",
                "\n".join(
                    f"{k}: two calls differ by {r:.3g} × the tolerance of {k} on this case"
                    for k, r in ratios.items()
                    if r > 0
                ),
            )

    def at(case: Case, dim: str, size: int) -> Case:
        """``case`` with ``dim`` at ``size``: the same labels, new arrays."""
        return make_case(
            dims={**case.dims, dim: size},
            **config,
            regime=case.regime,
            style=case.style,
            seed=case.seed,
            cell=case.cell,
            **case.network,
        )

    def swept() -> tuple[str, int, BaseException] | None:
        """Every boundary size of every dim, once each; on a failure, the dim, its smallest
        failing boundary size (the boundary the bug lives past) and the failure there."""
        rng = np.random.default_rng(seed)
        for dim in _SWEEP_ORDER:
            sizes_of_dim = boundary[dim]
            for size in sizes_of_dim:
                shape = {d: int(rng.integers(low, high + 1)) for d, (low, high) in small.items()}
                case = make_case(
                    dims={**shape, dim: size},
                    **config,
                    regime=str(rng.choice(list(REGIMES))),
                    style="normal",
                    seed=int(rng.integers(2**32)),
                    cell=cell,
                    num_layers=num_layers,
                    bidirectional=bidirectional,
                )
                counted(case)
                try:
                    attempt(case, again_too=True)
                except (_Mismatch, Raised, Scribbled) as exc:
                    failure: tuple[str, int, BaseException] = (dim, size, exc)
                else:
                    continue
                tell("shrinking")
                seen = (search.actual, search.verdicts)
                for smaller in sizes_of_dim[: sizes_of_dim.index(size)]:
                    search.failing = at(case, dim, smaller)
                    try:
                        attempt(search.failing)
                    except (_Mismatch, Raised, Scribbled) as exc:
                        return dim, smaller, exc
                search.failing, (search.actual, search.verdicts) = case, seen
                return failure
        return None

    def tell(phase: str) -> None:
        if progress is not None:
            progress(phase, search.examples_to_failure, search.calls)

    def failed() -> None:
        if not search.first_failure:
            search.first_failure = time.perf_counter()
            search.compiling_to_failure = clock.seconds

    # Tracing ends before the long XLA compilation starts: from then on, say so.
    with (
        ThreadPoolExecutor(1, thread_name_prefix="bptt-ref check: oracle") as ahead,
        compile_clock(on_event=lambda: tell("compiling the oracle")) as clock,
    ):
        error: BaseException | None = None
        try:
            # Small cases first: most bugs show there, after one compilation of the oracle;
            # the boundary sizes cost four more (see protocol.pad_to).
            searched(small_cases)
            found = swept()
            if found is not None:
                # Shrink the rest of the case with the dim held at its boundary; should no
                # drawn case fail there, the sweep's own case is the evidence.
                dim, size, error = found
                seen = (search.failing, search.actual, search.verdicts)
                searched(small_cases.map(lambda case: at(case, dim, size)))
                search.failing, search.actual, search.verdicts = seen
        except (_Mismatch, Raised, Scribbled, _Stop) as exc:
            error = exc
        if error is None:
            seconds = time.perf_counter() - search.started
            keys = search.keys or ()
            return CheckResult(
                keys,
                search.examples_to_failure,
                search.worst,
                None,
                seconds,
                clock.seconds,
                search.spread,
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
        mismatch = isinstance(error, _Mismatch)
        if isinstance(error, Raised):
            headline, evidence = None, "".join(traceback.format_exception(error.__cause__))
        elif isinstance(error, Scribbled):
            headline, evidence = "wrote into its inputs", str(error)
        elif isinstance(error, _Stop):
            headline, evidence = error.headline, error.evidence
        else:
            headline, evidence = None, None
        report = Report(
            target=target,
            case=case,
            keys=keys,
            verdicts=search.verdicts if mismatch else [],
            error=evidence,
            hints=(
                _hints(fn, case, keys, search, target, lay, timeout, kink)
                if mismatch and not case.stacked
                else _stacked_hints(case, keys, search, kink)
                if mismatch
                else []
            ),
            reproducer=path,
            snippet=snippet(binding or default_binding, path, keys, cell, lay, **case.network),
            examples=search.examples_to_failure,
            calls=search.calls,
            seconds=(search.first_failure - search.started, done - search.first_failure),
            compiling=(search.compiling_to_failure, compiled - search.compiling_to_failure),
            layout=layout,
            headline=headline,
            shrunk=not isinstance(error, _Stop),
        )
    return CheckResult(
        keys,
        search.examples_to_failure,
        search.worst,
        report,
        done - search.started,
        compiled,
        search.spread,
    )


def _stacked_hints(
    case: Case, keys: tuple[str, ...], search: _Search, kink: str | None
) -> list[str]:
    """A stacked network's hints: the others are written for one cell, but a convention at
    the kinks of its layers is the stack's as much as one cell's."""
    hint = kink_hint(case, keys, search.actual, kink)
    return [] if hint is None else [hint]


def _hints(
    fn: GradFn,
    case: Case,
    keys: tuple[str, ...],
    search: _Search,
    target: str,
    lay: Layout | None,
    timeout: float | None,
    kink: str | None = None,
) -> list[str]:
    """The hints on the failing case; in a layout, probed on the canonical gradients its
    return determines, through ``fn`` wrapped to take and give canonical arrays."""
    if lay is None:
        return hints(
            fn, case, keys, search.actual, search.verdicts, target, timeout=timeout, kink=kink
        )
    from bptt_ref.checker import in_layout

    ours, actual = in_layout.canonical(search.actual, case.cell, lay)
    if not ours:
        return []

    def canonical_fn(params: Any, xs: Any, targets: Any) -> dict[str, Any]:
        cell = case.cell
        out = fn(lay.nest(lay.to_layout(cell, params)), lay.data(cell, xs), lay.data(cell, targets))
        return lay.grads_from_layout(cell, lay.flatten(out))

    verdicts = judge(actual, case, ours, kink=kink)[1]
    if all(v.ok for v in verdicts):
        # The wrong arrays are ones the canonical view does not read (PyTorch's
        # bias_hh_l0 of the rnn, which adds into b_h): its probes would describe a
        # right gradient.
        return []
    return hints(
        canonical_fn, case, ours, actual, verdicts, target, layout=lay, timeout=timeout, kink=kink
    )


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
    sizes: str | Sequence[int] = "kernel",
    max_T: int | None = None,
    max_H: int | None = None,
    max_B: int | None = None,
    timeout: float | None = 60.0,
    repeat: int = 2,
    save_dir: str | Path | None = None,
    layout: str | None = None,
    num_layers: int = 1,
    bidirectional: bool = False,
    kink: str | None = None,
) -> None:
    """Assert that ``fn`` computes the BPTT gradient, for use in a pytest suite.

    Arguments as for :func:`check_gradients`. Call it from a plain test function, not
    from inside a Hypothesis ``@given`` test: it runs its own search.

    Raises:
        CheckFailed: an ``AssertionError`` whose message is the :class:`Report` of the
            smallest case where a returned key is wrong or ``fn`` raised (then the
            report holds ``fn``'s traceback), or of the case where ``fn`` hung, wrote
            into its inputs or answered differently on a second call.
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
        sizes=sizes,
        max_T=max_T,
        max_H=max_H,
        max_B=max_B,
        timeout=timeout,
        repeat=repeat,
        save_dir=save_dir,
        layout=layout,
        num_layers=num_layers,
        bidirectional=bidirectional,
        kink=kink,
    )
    if result.report is not None:
        raise CheckFailed(result.report)
