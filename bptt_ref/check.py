"""``bptt-ref check``: judge a user's gradient function from the command line.

Exit codes: 0 every returned key agrees with the reference on every example; 1 a
mismatch, or an exception raised by the function (each shown on the smallest case);
2 a usage or protocol error (cannot import, wrong signature, unknown or missing keys,
a returned array of the wrong shape or dtype), with a message that says what to fix.
"""

from __future__ import annotations

import argparse
import importlib
import os
import runpy
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

OK, MISMATCH, USAGE = 0, 1, 2


_MISSING = object()


class UsageError(Exception):
    """The target cannot be loaded or the arguments are invalid; the message says why."""


def _split(spec: str) -> tuple[str, str]:
    """``(PATH.py or package.module, FUNC)`` of a target."""
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise UsageError(
            f"cannot read the target {spec!r}; expected PATH.py:FUNC or package.module:FUNC"
        )
    return where, attr


@contextmanager
def importable(spec: str) -> Iterator[None]:
    """Let the target import what it could import when run by ``python``, while inside.

    For ``PATH.py:FUNC`` the file's folder (symlinks resolved) goes first on
    ``sys.path``, as ``python PATH.py`` and pytest's rootdir insertion put it, so the
    file can import its neighbours; for ``package.module:FUNC`` the current directory
    goes first, as ``python -m package.module`` puts it. ``python`` keeps that entry for
    the life of the program; here the program is the check, loading the file and every
    call of ``fn`` (which may import lazily), so ``sys.path`` is restored on leaving.
    """
    where, _ = _split(spec)
    first = str(Path(where).resolve().parent) if where.endswith(".py") else os.getcwd()
    saved = list(sys.path)
    sys.path.insert(0, first)
    try:
        yield
    finally:
        sys.path[:] = saved


def load_function(spec: str) -> tuple[Callable[..., Any], str]:
    """Load ``PATH.py:FUNC`` or ``package.module:FUNC``; returns ``(fn, lines that bind fn)``.

    ``FUNC`` may be dotted (``Class.method``). A file is run with ``__name__`` set to
    its stem, so its ``if __name__ == "__main__":`` block does not run. Imports resolve
    against ``sys.path`` as it is: call this inside :func:`importable` for the rule of
    ``bptt-ref check``.
    """
    where, attr = _split(spec)
    head, *rest = attr.split(".")
    if where.endswith(".py"):
        path = Path(where).resolve()
        if not path.is_file():
            raise UsageError(f"no file {where} (from the target {spec!r}); check the path")
        try:
            namespace = runpy.run_path(str(path), run_name=path.stem)
        except Exception as exc:
            raise UsageError(
                f"running {where} raised {type(exc).__name__}: {exc}; fix the file so that it runs"
            ) from exc
        obj = namespace.get(head, _MISSING)
        # The reproducer runs the file as the check did: with its folder importable.
        binding = (
            f"import runpy\nimport sys\nsys.path.insert(0, {str(path.parent)!r})\n"
            f"{head} = runpy.run_path({str(path)!r})[{head!r}]"
        )
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise UsageError(
                f"importing {where} raised {type(exc).__name__}: {exc}; run from the directory "
                "that holds it, install the package, or put its directory on PYTHONPATH"
            ) from exc
        obj = getattr(module, head, _MISSING)
        binding = f"from {where} import {head}"
    if obj is _MISSING:
        raise UsageError(f"{where} defines no {head!r}; check the name after the colon")
    for name in rest:
        obj = getattr(obj, name, _MISSING)
        if obj is _MISSING:
            raise UsageError(f"{spec}: {head} has no attribute {name!r}")
    if not callable(obj):
        raise UsageError(f"{spec} is a {type(obj).__name__}, not a function")
    return obj, f"{binding}\nfn = {attr}"


def run(args: argparse.Namespace) -> int:
    """Run the check described by the parsed arguments; returns the exit code."""
    from rich.console import Console
    from rich.table import Table

    from bptt_ref.cli import progress_bar
    from bptt_ref.testing import ProtocolError, check_gradients

    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    bar = progress_bar(err, "{task.fields[calls]} calls of fn")
    task = bar.add_task("importing", total=args.examples, calls=0)

    def show(phase: str, examples: int, calls: int) -> None:
        bar.update(task, description=phase, completed=examples, calls=calls, refresh=True)

    try:
        with importable(args.target), bar:
            fn, binding = load_function(args.target)
            result = check_gradients(
                fn,
                cell=args.cell,
                hidden=args.hidden,
                output=args.output,
                loss=args.loss,
                dtype=args.dtype,
                max_examples=args.examples,
                seed=args.seed,
                max_T=args.max_T,
                max_H=args.max_H,
                **kernel_options(args),
                save_dir=args.save_dir,
                name=args.target,
                binding=binding,
                progress=show,
            )
    except (UsageError, ValueError) as exc:
        err.print(f"bptt-ref check: usage error: {exc}", markup=False, soft_wrap=True)
        return USAGE
    except ProtocolError as exc:
        err.print(f"bptt-ref check: protocol error: {exc}", markup=False, soft_wrap=True)
        return USAGE

    config = (
        f"cell={args.cell} hidden={args.hidden} output={args.output} loss={args.loss} "
        f"dtype={args.dtype}"
    )
    if result.report is not None:
        console.print(f"FAIL {result.report}", markup=False, soft_wrap=True)
        return MISMATCH
    table = Table(
        title=f"{args.target} ({args.cell}): largest err / bound per key over "
        f"{result.examples} cases"
    )
    for column in ("key", "err", "bound", "err / bound"):
        table.add_column(column, justify="right")
    for key in result.keys:
        v = result.worst[key]
        table.add_row(key, f"{v.err:.2g}", f"{v.bound:.2g}", f"{v.err / v.bound:.2g}")
    console.print(table)
    if any(result.spread.values()):
        differ = ", ".join(f"{k} {r:.2g}" for k, r in result.spread.items() if r)
        console.print(
            f"note: fn gave different gradients on two calls of one case, within the "
            f"tolerance (largest difference / tolerance: {differ})",
            markup=False,
            soft_wrap=True,
        )
    console.print(
        f"ok: {', '.join(result.keys)} agree with the reference on {result.examples} cases "
        f"({config}, seed {args.seed}) in {result.time_spent}",
        markup=False,
        soft_wrap=True,
    )
    return OK


def _sizes(text: str) -> str | list[int]:
    if text in ("small", "kernel"):
        return text
    try:
        edges = [int(e) for e in text.split(",")]
    except ValueError:
        edges = []
    if not edges or min(edges) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not small, kernel or a comma-separated list of positive edges"
        )
    return edges


def add_kernel_options(check: argparse.ArgumentParser) -> None:
    """The options of the shapes drawn and of the faults of real kernels checked besides."""
    check.add_argument(
        "--sizes",
        type=_sizes,
        default="kernel",
        metavar="small|kernel|E1,E2,...",
        help="kernel (default): after the small cases, one case at each boundary size of "
        "each dim (T at 63, 64, 65, 127, ... 257; B, D, H, O at 7, 8, 9, 15, ... 129), a "
        "failure shrunk to the boundary; small: no boundary cases, every dim uniform up to "
        "its --max; a list such as 24,48: the boundaries e-1, e, e+1 of those edges for "
        "every dim",
    )
    for dim, what, kernel, small in (
        ("T", "longest sequence", 257, 16),
        ("H", "largest hidden size", 129, 8),
        ("B", "largest batch", 129, 4),
    ):
        check.add_argument(
            f"--max-{dim}",
            dest=f"max_{dim}",
            type=int,
            default=None,
            help=f"{what} (default {kernel} with --sizes kernel, {small} with small)",
        )
    check.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="fail, naming the case, when one call of fn takes longer (default 60; 0: none)",
    )
    check.add_argument(
        "--repeat",
        type=int,
        default=2,
        metavar="N",
        help="calls of fn on each case it passes, to catch nondeterminism (default 2; 1: off)",
    )


def kernel_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``check_gradients`` that :func:`add_kernel_options` sets
    (``--max-T`` and ``--max-H`` are passed with the others)."""
    return {
        "sizes": args.sizes,
        "max_B": args.max_B,
        "timeout": args.timeout or None,
        "repeat": args.repeat,
    }


def add_parser(commands: Any) -> None:
    """Add the ``check`` sub-command to ``commands`` (an argparse sub-parsers object)."""
    import bptt_ref

    check = commands.add_parser(
        "check",
        help="check your own gradient function against the reference",
        description=(
            "Judge fn(params, xs, targets) -> {key: gradient} on Hypothesis-drawn cases; "
            "shrink a failure to the smallest case, save it as .npz and explain it. "
            "Exit 0: all keys agree; 1: a mismatch or fn raised; 2: usage or protocol error. "
            "Imports resolve as under python: a PATH.py target runs with its own folder first "
            "on sys.path (as `python PATH.py` does), so it can import the files beside it; a "
            "package.module target is imported with the current directory first on sys.path "
            "(as `python -m` does)."
        ),
    )
    check.add_argument(
        "target",
        help="PATH.py:FUNC (the file's folder is importable) or package.module:FUNC (found "
        "from the current directory, PYTHONPATH or the installed packages)",
    )
    check.add_argument(
        "--cell",
        choices=bptt_ref.CELL_NAMES,
        default="rnn",
        help="the cell fn differentiates; fn receives its parameters (default rnn)",
    )
    check.add_argument(
        "--hidden",
        choices=bptt_ref.HIDDEN_ACTIVATIONS,
        default="tanh",
        help="f_h of the rnn (default tanh); a gated cell takes only tanh",
    )
    check.add_argument("--output", choices=bptt_ref.OUTPUT_ACTIVATIONS, default="identity")
    check.add_argument("--loss", choices=bptt_ref.LOSSES, default="mse")
    check.add_argument(
        "--dtype", choices=("float64", "float32"), default="float64", help="dtype fn receives"
    )
    check.add_argument("--examples", type=int, default=100, help="cases to try (default 100)")
    check.add_argument("--seed", type=int, default=0, help="seed of the search (default 0)")
    add_kernel_options(check)
    check.add_argument(
        "--save-dir",
        default=None,
        help="where the failing case's .npz goes (default: a new temporary directory)",
    )
    check.set_defaults(run=run)
