"""``bptt-ref check``: judge a user's gradient function from the command line.

Exit codes: 0 every returned key agrees with the reference on every example; 1 a
mismatch, or an exception raised by the function (each shown on the smallest case);
2 a usage or protocol error (cannot import, wrong signature, unknown or missing keys,
a returned array of the wrong shape or dtype), with a message that says what to fix.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import os
import runpy
import sys
import time
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


CONFIG_KEYWORDS = ("hidden", "output", "loss")
"""The configuration keywords ``fn`` may accept: it is then checked with each passed.

``cell`` is not one of them: a function differentiates one cell's parameters, so a check
runs over the configurations of the cell given with ``--cell``."""

DEFAULTS = {"hidden": "tanh", "output": "identity", "loss": "mse"}
"""The configuration checked when no option names one."""


def accepted_keywords(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The :data:`CONFIG_KEYWORDS` that ``fn`` takes by name (all of them for ``**kwargs``)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return ()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return CONFIG_KEYWORDS
    by_name = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {p.name for p in parameters if p.kind in by_name}
    return tuple(k for k in CONFIG_KEYWORDS if k in names)


def configurations(args: argparse.Namespace) -> list[dict[str, str]]:
    """The configurations to check, in the order of the options' choices.

    Each of ``--hidden``, ``--output``, ``--loss`` given (repeatable) lists its values;
    one not given is its default (tanh, identity, mse), or with ``--all`` every value the
    cell accepts. Of several, those the cell does not accept (a hidden activation, an
    output and loss that are no valid head) are left out; a single one is checked as
    given, so that its error names what is wrong with it.
    """
    import bptt_ref
    from bptt_ref.cells import CELLS

    choices = {
        "hidden": bptt_ref.HIDDEN_ACTIVATIONS,
        "output": bptt_ref.OUTPUT_ACTIVATIONS,
        "loss": bptt_ref.LOSSES,
    }
    every = {**choices, "hidden": CELLS[args.cell].activations}
    given = {k: getattr(args, k) for k in CONFIG_KEYWORDS}
    chosen = {
        k: [v for v in choices[k] if v in given[k]]
        if given[k]
        else every[k]
        if args.all
        else [DEFAULTS[k]]
        for k in CONFIG_KEYWORDS
    }
    combos = [
        {"hidden": hidden, "output": output, "loss": loss}
        for hidden in chosen["hidden"]
        for output in chosen["output"]
        for loss in chosen["loss"]
    ]
    if len(combos) == 1:
        return combos
    valid = [
        c
        for c in combos
        if c["hidden"] in every["hidden"] and (c["output"], c["loss"]) in bptt_ref.VALID_HEADS
    ]
    if not valid:
        heads = ", ".join(f"{o}/{lo}" for o, lo in bptt_ref.VALID_HEADS)
        raise UsageError(
            f"no valid configuration among hidden {', '.join(chosen['hidden'])}, output "
            f"{', '.join(chosen['output'])} and loss {', '.join(chosen['loss'])} for the "
            f"{args.cell} cell; it takes hidden {', '.join(every['hidden'])} and the "
            f"output/loss pairs {heads}"
        )
    return valid


def _label(config: dict[str, str]) -> str:
    return "/".join(config[k] for k in CONFIG_KEYWORDS)


def _bound(
    fn: Callable[..., Any], binding: str, config: dict[str, str], passed: tuple[str, ...]
) -> tuple[Callable[..., Any], str]:
    """``fn`` with the configuration's keywords it accepts bound, and the reproducer's lines."""
    if not passed:
        return fn, binding
    keywords = {k: config[k] for k in passed}
    arguments = ", ".join(f"{k}={v!r}" for k, v in keywords.items())
    return (
        functools.partial(fn, **keywords),
        f"{binding}\nimport functools\nfn = functools.partial(fn, {arguments})",
    )


def run(args: argparse.Namespace) -> int:
    """Run the check described by the parsed arguments; returns the exit code."""
    from rich.console import Console

    from bptt_ref.cli import progress_bar
    from bptt_ref.testing import CheckResult, ProtocolError, check_gradients

    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    bar = progress_bar(err, "{task.fields[calls]} calls of fn")
    task = bar.add_task("importing", total=args.examples, calls=0)
    results: list[tuple[dict[str, str], CheckResult]] = []
    started = time.perf_counter()

    try:
        with importable(args.target), bar:
            fn, binding = load_function(args.target)
            todo = configurations(args)
            passed = accepted_keywords(fn)
            varying = [k for k in CONFIG_KEYWORDS if len({c[k] for c in todo}) > 1]
            missing = [k for k in varying if k not in passed]
            if missing:
                raise UsageError(
                    f"{args.target} takes no keyword {', '.join(missing)}, so it can be checked "
                    f"in one configuration only, not {len(todo)}; give it keyword parameters "
                    f"{', '.join(CONFIG_KEYWORDS)} (it is called with each configuration's "
                    "values) or check one configuration per run"
                )
            bar.update(task, total=args.examples * len(todo))
            for config in todo:
                done = args.examples * len(results)
                label = f" {_label(config)}" if len(todo) > 1 else ""

                def show(
                    phase: str, examples: int, calls: int, done: int = done, label: str = label
                ) -> None:
                    bar.update(
                        task,
                        description=phase + label,
                        completed=done + examples,
                        calls=calls,
                        refresh=True,
                    )

                checked, reproducer = _bound(fn, binding, config, passed)
                # Without a slash: the reproducer's file is named after the last part.
                tag = ",".join(config[k] for k in CONFIG_KEYWORDS)
                name = args.target if len(todo) == 1 else f"{args.target} [{tag}]"
                result = check_gradients(
                    checked,
                    cell=args.cell,
                    hidden=config["hidden"],
                    output=config["output"],
                    loss=config["loss"],
                    dtype=args.dtype,
                    max_examples=args.examples,
                    seed=args.seed,
                    max_T=args.max_T,
                    max_H=args.max_H,
                    **kernel_options(args),
                    save_dir=args.save_dir,
                    name=name,
                    binding=reproducer,
                    progress=show,
                    layout=args.layout,
                    kink=args.kink,
                    num_layers=args.layers,
                    bidirectional=args.bidirectional,
                    specialize=len(todo) == 1,
                )
                results.append((config, result))
    except (UsageError, ValueError) as exc:
        err.print(f"bptt-ref check: usage error: {exc}", markup=False, soft_wrap=True)
        return USAGE
    except ProtocolError as exc:
        err.print(f"bptt-ref check: protocol error: {exc}", markup=False, soft_wrap=True)
        return USAGE

    if len(results) == 1:
        return _one(args, console, *results[0])
    return _many(args, console, results, time.perf_counter() - started)


def _one(args: argparse.Namespace, console: Any, config: dict[str, str], result: Any) -> int:
    """Print the check of one configuration: its failure report, or a table per key."""
    from rich.table import Table

    settings = " ".join(f"{k}={v}" for k, v in {"cell": args.cell, **config}.items())
    if args.layout is not None:
        settings += f" layout={args.layout}"
    if args.kink is not None:
        settings += f" kink={args.kink}"
    if (args.layers, args.bidirectional) != (1, False):
        settings += f" num_layers={args.layers} bidirectional={args.bidirectional}"
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
        f"({settings} dtype={args.dtype}, seed {args.seed}) in {result.time_spent}",
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
        help="calls of fn on each boundary case and one small case in ten that it passes, to "
        "catch nondeterminism (default 2; 1: off)",
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


def _many(
    args: argparse.Namespace,
    console: Any,
    results: list[tuple[dict[str, str], Any]],
    seconds: float,
) -> int:
    """Print one report per failing configuration, then one table of every configuration."""
    from rich.table import Table

    from bptt_ref.jax_reference import time_split

    failed = [(c, r) for c, r in results if r.report is not None]
    for _, result in failed:
        console.print(f"FAIL {result.report}\n", markup=False, soft_wrap=True)
    table = Table(
        title=f"{args.target} ({args.cell}, {args.dtype}): {len(results)} configurations, "
        "largest err / bound over each one's cases (at most 1 passes)"
    )
    labels = [_label(config) for config, _ in results]
    # The configuration and the verdict stay whole at any width: they are what is read.
    table.add_column("hidden/output/loss", no_wrap=True, min_width=max(map(len, labels)))
    table.add_column("cases", justify="right")
    table.add_column("largest err / bound", justify="right")
    table.add_column("ok", no_wrap=True)
    table.add_column("wrong keys")
    for label, (_, result) in zip(labels, results, strict=True):
        report = result.report
        verdicts = list(result.worst.values()) if report is None else report.verdicts
        worst = max(verdicts, key=lambda v: v.err / v.bound, default=None)
        ratio = "-" if worst is None else f"{worst.err / worst.bound:.2g} ({worst.key})"
        if report is None:
            verdict, wrong = "yes", ""
        elif report.error is not None:
            verdict, wrong = "NO", "fn raised"
        else:
            verdict, wrong = "NO", ", ".join(report.wrong_keys)
        table.add_row(label, str(result.examples), ratio, verdict, wrong)
    console.print(table)
    compiling = sum(r.compiling for _, r in results)
    verdict = (
        "every configuration agrees with the reference"
        if not failed
        else f"{len(failed)} of {len(results)} configurations fail: "
        + ", ".join(_label(c) for c, _ in failed)
    )
    console.print(
        f"{verdict} (seed {args.seed}; {time_split(seconds, compiling)})",
        markup=False,
        soft_wrap=True,
    )
    return MISMATCH if failed else OK


def add_parser(commands: Any) -> None:
    """Add the ``check`` sub-command to ``commands`` (an argparse sub-parsers object)."""
    import bptt_ref
    from bptt_ref.cli import add_cache_options

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
        action="append",
        choices=bptt_ref.HIDDEN_ACTIVATIONS,
        help="f_h of the rnn (default tanh); a gated cell takes only tanh. Repeat it, or give "
        "--all, to check several: fn must then accept the keyword hidden",
    )
    check.add_argument(
        "--output",
        action="append",
        choices=bptt_ref.OUTPUT_ACTIVATIONS,
        help="f_y (default identity); repeatable as --hidden",
    )
    check.add_argument(
        "--loss",
        action="append",
        choices=bptt_ref.LOSSES,
        help="the loss (default mse); repeatable as --hidden",
    )
    check.add_argument(
        "--all",
        action="store_true",
        help="check every valid hidden x output x loss configuration of the cell (those of "
        "--hidden, --output, --loss where given) in one run, one table at the end; fn must "
        "accept as keywords what varies (hidden, output, loss) and is called with each "
        "configuration's values",
    )
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
    add_cache_options(check)
    from bptt_ref.layouts import LAYOUTS

    check.add_argument(
        "--layout",
        choices=tuple(LAYOUTS),
        default=None,
        help="the framework layout fn takes and returns: its keys, shapes, gate order and "
        "batch axis (default: bptt-ref's own, PyTorch's with the keys W_ih, W_hh, ...); "
        "with --layers or --bidirectional: torch (nn.LSTM's whole state_dict), or onnx for "
        "one bidirectional layer",
    )
    from bptt_ref.kinks import CONVENTIONS

    check.add_argument(
        "--kink",
        choices=tuple(CONVENTIONS),
        default=None,
        help="the derivative of relu and leaky_relu at exactly a = 0 that fn must take: jax "
        "(relu'(0) = 0, leaky_relu'(0) = 1), torch (0 and 0.01), left or right (the one-sided "
        "derivative from below or above); default: either one-sided derivative, the same at "
        "every kink of a case",
    )
    check.add_argument(
        "--layers",
        type=int,
        default=1,
        help="num_layers of a stacked network (PyTorch's semantics, no dropout); fn receives "
        "W_ih_l0, W_ih_l1, ... as bptt_ref.stack.names lists them (default 1: the single cell)",
    )
    check.add_argument(
        "--bidirectional",
        action="store_true",
        help="a bidirectional network: fn also receives the *_reverse weights; h0 (and c0) "
        "are (layers·2, B, H), row layer·2 + direction",
    )
    check.set_defaults(run=run)
