"""The ``bptt-ref`` command (extra ``bptt-ref[cli]``).

``bptt-ref verify`` is the main job: for every cell it sweeps each hidden activation the
cell accepts (the rnn's nine, the gated cells' tanh) × output × loss over a few shapes,
every weight regime and both dtypes, judges the NumPy gradients against the JAX oracle
(:mod:`bptt_ref.compare`) and, in float64, against complex-step differentiation of the
forward pass, and prints one table per cell with, per gradient, the largest ratio of its
error to its bound (at most 1 passes). It exits 1 if any comparison fails.
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

import numpy as np

import bptt_ref
from bptt_ref import check
from bptt_ref.cases import REGIMES, Case, make_case
from bptt_ref.cells import CELLS
from bptt_ref.compare import (
    DIRECTIONAL_TOLERANCES,
    NOISE_FACTOR,
    ROUNDING_FACTOR,
    STEPS_PER_RTOL,
    TOLERANCES,
    KeyComparison,
    directional_error,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

SHAPES: dict[str, tuple[dict[str, int], ...]] = {
    "quick": ({"T": 5, "B": 3, "D": 4, "H": 6, "O": 3},),
    "default": (
        {"T": 1, "B": 1, "D": 1, "H": 1, "O": 1},
        {"T": 5, "B": 3, "D": 4, "H": 6, "O": 3},
        {"T": 16, "B": 4, "D": 4, "H": 8, "O": 4},
        {"T": 40, "B": 2, "D": 3, "H": 5, "O": 2},
    ),
}
"""The built-in sweeps: shapes (T, B, D, H, O) crossed with every configuration."""


@dataclass
class _Row:
    """The worst verdicts of one cell, configuration and dtype over the sweep."""

    # Per key, the verdict with the largest err / bound: how near the key came to failing.
    worst: dict[str, KeyComparison] = field(default_factory=dict)
    complex_step: float = 0.0
    failures: list[str] = field(default_factory=list)


def _sweep_cases(
    shapes: Sequence[dict[str, int]], seed: int, cells: Sequence[str] = bptt_ref.CELL_NAMES
) -> list[Case]:
    """Every cell × its hidden activations × every head × ``shapes`` × regime × dtype.

    A case's seed is ``seed`` plus its index in the sweep of every cell, so the cases of
    one cell do not depend on which other cells run (and the rnn's come first, as before
    there were other cells).
    """
    grid = [
        (cell, hidden, head, dims, regime, dtype)
        for cell in bptt_ref.CELL_NAMES
        for hidden, head, dims, regime, dtype in itertools.product(
            CELLS[cell].activations, bptt_ref.VALID_HEADS, shapes, REGIMES, ("float64", "float32")
        )
    ]
    return [
        make_case(
            dims=dims,
            hidden=hidden,
            output=output,
            loss=loss,
            dtype=np.dtype(dtype),
            regime=regime,
            style="normal",
            seed=seed + i,
            cell=cell,
        )
        for i, (cell, hidden, (output, loss), dims, regime, dtype) in enumerate(grid)
        if cell in cells
    ]


STACKS: tuple[tuple[int, bool], ...] = ((2, True),)
"""The stacked networks (num_layers, bidirectional) ``verify`` sweeps for every cell, at the
quick shape, near-critical weights, tanh/identity/mse, both dtypes: two layers, the second
reading both directions of the first, cover every path of :mod:`bptt_ref.stack`."""


def _stack_cases(seed: int, cells: Sequence[str]) -> list[Case]:
    """The cases of :data:`STACKS` for ``cells``, seeded past every single-cell sweep's."""
    grid = itertools.product(bptt_ref.CELL_NAMES, STACKS, ("float64", "float32"))
    return [
        make_case(
            dims=SHAPES["quick"][0],
            hidden="tanh",
            output="identity",
            loss="mse",
            dtype=np.dtype(dtype),
            regime="near_critical",
            style="normal",
            seed=seed + 100_000 + i,
            cell=cell,
            num_layers=layers,
            bidirectional=bidirectional,
        )
        for i, (cell, (layers, bidirectional), dtype) in enumerate(grid)
        if cell in cells
    ]


def _verify_case(case: Case, row: _Row) -> None:
    from bptt_ref import jax_reference, stack
    from bptt_ref.finite_difference import directional_derivative, random_direction
    from bptt_ref.oracle import stack as stack_oracle

    arrays = (case.params, case.xs, case.targets)
    if case.stacked:
        _, grads = stack.loss_and_grad(*arrays, cell=case.cell, **case.network, **case.config)
        _, verdicts = stack_oracle.judge(
            grads, *arrays, cell=case.cell, **case.network, **case.config
        )
    else:
        # Through the namespace, where a test may plant a bug (tests/test_meta.py).
        _, grads = bptt_ref.loss_and_grad(*arrays, cell=case.cell, **case.config)
        _, verdicts = jax_reference.judge(grads, *arrays, cell=case.cell, **case.config)
    for v in verdicts:
        worst = row.worst.get(v.key)
        if worst is None or not _ratio(v) <= _ratio(worst):
            row.worst[v.key] = v
        if not v.ok:
            row.failures.append(f"{case!r}: {v}")
    if case.dtype == np.float64:
        u = random_direction(np.random.default_rng(case.seed), case.params, case.xs)
        numeric = directional_derivative(
            *arrays, u, method="complex", cell=case.cell, **case.network, **case.config
        )
        err = directional_error(grads, u, numeric)
        row.complex_step = max(row.complex_step, err)
        if not err <= DIRECTIONAL_TOLERANCES["complex"].rtol:
            row.failures.append(f"{case!r}: complex step err {err:.3g}")


def _ratio(verdict: KeyComparison) -> float:
    return verdict.err / verdict.bound


def _cell(ratio: float) -> str:
    # Two digits where a ratio nears 1, where the verdict is; an order of magnitude below.
    return f"{ratio:.2g}" if ratio >= 0.01 else f"{ratio:.0e}"


def _caption(cells: Sequence[str]) -> str:
    rtol = ", ".join(f"{t.rtol:.0e} ({d.name})" for d, t in TOLERANCES.items())
    cstep = DIRECTIONAL_TOLERANCES["complex"].rtol
    columns = "; ".join(f"{c}: {' '.join(CELLS[c].grad_names)}" for c in cells)
    return (
        "One table per cell, one row per configuration (hidden/output/loss; the gated cells' "
        "hidden is tanh) and dtype. The gradient columns are the cell's own arrays ("
        f"{columns}): each holds the largest err/bound of that gradient over the row's cases, "
        "as bptt_ref.compare judges it against the JAX oracle: err = max|numpy - oracle| / "
        f"scale, bound = rtol * max(1, T/{STEPS_PER_RTOL}) + ({NOISE_FACTOR:g} N + "
        f"{ROUNDING_FACTOR:g} eps R) / scale with rtol {rtol}; N (a correct peer's noise on "
        "the case) and R (the rounding magnitude of the gradient's sums) widen the bound only "
        "for a key that fails without them, so an err above rtol can pass. "
        "cstep (float64 only): the largest |<g, u> - complex-step derivative| / sum |g_i u_i| "
        "along a random direction u over all the cell's gradient arrays, divided by its bound "
        f"{cstep:g}. ok: yes when every ratio in the row is at most 1."
    )


def _verify(args: argparse.Namespace) -> int:
    from rich import box
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    # The widest table (the LSTM's) needs about 120 columns; a narrower terminal wraps it
    # rather than eliding the numbers, which are the point.
    console = Console(width=max(Console().width, 124))
    cells = [c for c in bptt_ref.CELL_NAMES if args.cell is None or c in args.cell]
    cases = _sweep_cases(SHAPES[args.sweep], args.seed, cells)
    rows: dict[tuple[str, str, str, str, str], _Row] = {}
    stacks = _stack_cases(args.seed, cells)
    stack_rows: dict[tuple[str, int, bool, str], _Row] = {}
    for case in track(cases + stacks, description="verifying", console=console, transient=True):
        if case.stacked:
            row = stack_rows.setdefault(
                (case.cell, case.num_layers, case.bidirectional, case.dtype.name), _Row()
            )
        else:
            row = rows.setdefault(
                (case.cell, case.hidden, case.output, case.loss, case.dtype.name), _Row()
            )
        _verify_case(case, row)

    cstep_bound = DIRECTIONAL_TOLERANCES["complex"].rtol
    for cell in cells:
        table = Table(
            title=f"{cell}: largest err/bound per gradient over the sweep (at most 1 passes)",
            box=box.SIMPLE_HEAD,
            # Two spaces between columns rather than three keep the LSTM's eleven
            # columns of numbers within the width.
            collapse_padding=True,
        )
        table.add_column("hidden/output/loss", no_wrap=True)
        table.add_column("dtype", no_wrap=True, min_width=7)
        for name in (*CELLS[cell].grad_names, "cstep", "ok"):
            table.add_column(name, justify="right")
        for (c, hidden, output, loss, dtype), row in rows.items():
            if c != cell:
                continue
            cs = _cell(row.complex_step / cstep_bound) if dtype == "float64" else "-"
            ratios = [_cell(_ratio(row.worst[k])) for k in CELLS[cell].grad_names]
            ok = "yes" if not row.failures else "NO"
            table.add_row(f"{hidden}/{output}/{loss}", dtype, *ratios, cs, ok)
        console.print(table)
    console.print(_caption(cells), markup=False)
    _stack_table(console, stack_rows)
    (name, dtype), nearest = max(
        (
            ((f"{c} {h}/{o}/{lo}", d), v)
            for (c, h, o, lo, d), row in rows.items()
            for v in row.worst.values()
        ),
        key=lambda item: _ratio(item[1]),
    )
    console.print(
        f"largest err/bound: {_ratio(nearest):.2g}, {nearest.key} of {name} {dtype} "
        f"(err {nearest.err:.1e}, bound {nearest.bound:.1e})",
        markup=False,
    )
    failures = [f for row in (*rows.values(), *stack_rows.values()) for f in row.failures]
    for failure in failures:
        console.print(f"FAIL {failure}", markup=False)
    verdict = "all agree" if not failures else f"{len(failures)} comparisons failed"
    console.print(
        f"{len(cases)} cases and {len(stacks)} of stacked networks ({len(rows)} configurations "
        f"x dtypes, cells {', '.join(cells)}): {verdict}",
        markup=False,
    )
    return 1 if failures else 0


def _stack_table(console: Console, rows: dict[tuple[str, int, bool, str], _Row]) -> None:
    """The stacked networks' verdicts: per row, the gradient nearest its bound."""
    from rich import box
    from rich.table import Table

    if not rows:
        return
    table = Table(
        title="stacked networks (tanh/identity/mse): the gradient nearest its bound",
        box=box.SIMPLE_HEAD,
    )
    for name in ("cell", "layers", "bidirectional", "dtype", "key", "err/bound", "cstep", "ok"):
        table.add_column(name, justify="left" if name in ("cell", "key") else "right")
    cstep_bound = DIRECTIONAL_TOLERANCES["complex"].rtol
    for (cell, layers, bidirectional, dtype), row in rows.items():
        nearest = max(row.worst.values(), key=_ratio)
        cs = _cell(row.complex_step / cstep_bound) if dtype == "float64" else "-"
        ok = "yes" if not row.failures else "NO"
        cells = (cell, str(layers), str(bidirectional), dtype, nearest.key)
        table.add_row(*cells, _cell(_ratio(nearest)), cs, ok)
    console.print(table)
    console.print(
        "Each row: the stacked network of bptt_ref.stack against the oracle of "
        "bptt_ref.oracle.stack (the cells' JAX steps composed anew), judged as above; its "
        "bound has no rounding term R, which the stack oracle does not compute.",
        markup=False,
    )


def progress_bar(console: Console, *fields: str) -> Progress:
    """A progress display on ``console`` (stderr): description, bar, done/total, ``fields``.

    Transient, and silent where stderr is not a terminal, so captured output stays the
    result alone; each update should pass ``refresh=True`` to show a phase the moment it
    starts (a compilation blocks the caller for seconds).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(f) for f in fields),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        # The checked function's prints stay on stdout, where they were written.
        redirect_stdout=False,
        redirect_stderr=False,
    )


def _vectors(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bptt_ref import vectors
    from bptt_ref.jax_reference import compile_clock, time_split

    console = Console(highlight=False)
    bar = progress_bar(Console(stderr=True))
    task = bar.add_task(f"writing golden vectors to {args.out}", total=None)

    def show(done: int, total: int) -> None:
        bar.update(task, description="writing cases", completed=done, total=total, refresh=True)

    def compiling() -> None:
        bar.update(task, description="compiling the oracle", refresh=True)

    started = time.perf_counter()
    try:
        with bar, compile_clock(on_event=compiling) as clock:
            manifest = vectors.write(
                args.out, seed=args.seed, cells=args.cell, progress=show, in_layout=args.layout
            )
    except ValueError as exc:
        console.print(f"bptt-ref vectors: usage error: {exc}", markup=False, soft_wrap=True)
        return 2
    except RuntimeError as exc:
        console.print(f"FAIL {exc}", markup=False, soft_wrap=True)
        return 1
    seconds = time.perf_counter() - started
    console.print(
        f"wrote {len(manifest['cases'])} cases (float64 and float32) and {vectors.MANIFEST} "
        f"to {args.out} in {time_split(seconds, clock.seconds)}; every gradient agrees with "
        "the JAX oracle",
        markup=False,
        soft_wrap=True,
    )
    return 0


def add_cache_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--cache-dir`` and ``--no-cache``: where the compiled oracle is kept."""
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="keep the compiled JAX oracle in DIR (default: $BPTT_REF_CACHE_DIR, else the "
        "user cache directory, ~/.cache/bptt-ref/jax on Linux), so later runs load it instead "
        "of compiling it",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="compile the oracle in this process, neither reading nor writing the cache",
    )


def _add_cell_option(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument(
        "--cell",
        action="append",
        choices=bptt_ref.CELL_NAMES,
        help=f"{verb} only this cell's cases (repeat for several; default every cell)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bptt-ref`` with one sub-command per job."""
    parser = argparse.ArgumentParser(prog="bptt-ref", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"bptt-ref {bptt_ref.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verify = commands.add_parser(
        "verify",
        help="cross-check the NumPy gradients against JAX and complex-step differentiation",
        description=(
            "Sweep every cell x hidden x output x loss configuration over built-in shapes, "
            "every weight regime and both dtypes; print per cell and gradient the largest "
            "ratio of its error to its bound; exit 1 on any failure."
        ),
    )
    verify.add_argument("--sweep", choices=sorted(SHAPES), default="default", help="which shapes")
    _add_cell_option(verify, "verify")
    verify.add_argument("--seed", type=int, default=0, help="seed of the first case (default 0)")
    add_cache_options(verify)
    verify.set_defaults(run=_verify)
    check.add_parser(commands)
    golden = commands.add_parser(
        "vectors",
        help="write the golden vectors: cases with their JAX-verified loss and gradients",
        description=(
            "Write one .npz per case (inputs, loss, every gradient; float64 and float32) and "
            "manifest.json (configuration, shapes, tolerances, sha256) to DIR; read them back "
            "with bptt_ref.vectors.load. Exit 1 if any gradient fails its check."
        ),
    )
    golden.add_argument("--out", required=True, metavar="DIR", help="directory to write")
    golden.add_argument("--seed", type=int, default=0, help="seed of the first case (default 0)")
    _add_cell_option(golden, "write")
    add_cache_options(golden)
    from bptt_ref.layouts import LAYOUTS

    golden.add_argument(
        "--layout",
        choices=tuple(LAYOUTS),
        default=None,
        help="write every array under this framework's names, shapes and batch axis, for the "
        "cells it expresses (default: bptt-ref's own layout)",
    )
    golden.set_defaults(run=_vectors)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bptt-ref`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    from bptt_ref.oracle import cache

    args = build_parser().parse_args(argv)
    with cache.compilation_cache(None if args.no_cache else args.cache_dir or cache.cache_dir()):
        code: int = args.run(args)
    return code


def console() -> NoReturn:
    """The ``bptt-ref`` command: :func:`main` on ``sys.argv``, then the process ends at once.

    Once JAX has run, the interpreter's own teardown (freeing the runtime's objects and
    joining its thread pools, one by one) takes a noticeable share of a warm check's
    wall time (README, "How long a check takes"). Nothing the command made needs it: the
    compilation cache and the stored executables are written, atomically, when made. So
    the registered exit handlers run (the user's module may have some), the output is
    flushed, theirs included, and then ``os._exit`` skips the rest. An exception from
    :func:`main` takes the normal way out, traceback and all.
    """
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    console()
