"""What a check hands back: the failure :class:`Report`, its reproducer, the results."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bptt_ref import stack
from bptt_ref.compare import KeyComparison

if TYPE_CHECKING:
    from bptt_ref.cases import Case
    from bptt_ref.layouts import Layout

STYLE_MEANING = {
    "normal": "standard normal inputs",
    "zeros": "exact zeros in xs, h0 and the targets",
    "large": "inputs xs scaled by 30, which saturates the activations",
    "kink": "hidden units held exactly at a = 0, the kink of relu-like activations",
}
"""Each input style of :data:`bptt_ref.cases.INPUT_STYLES`, in words for the report."""


@dataclass(frozen=True)
class Report:
    """Evidence for the smallest failing case found.

    Attributes:
        target: how ``fn`` is called in the text (``module:name``).
        case: the shrunk case (``case.dims`` gives T, B, D, H, O; ``case.cell`` the cell).
        keys: the keys ``fn`` returns, which were checked.
        verdicts: one per checked key on ``case``; empty when ``fn`` raised.
        error: the exception ``fn`` raised on ``case`` with its traceback, or ``None``.
        hints: likely causes read off the evidence; empty when nothing is clear.
        reproducer: the ``.npz`` holding the case and the reference gradients.
        snippet: Python lines that reload the reproducer and call ``fn`` on it.
        examples: cases tried until the first failure.
        calls: every call of ``fn`` during the search and the shrinking.
        seconds: wall time ``(to the first failure, of the shrinking)``.
        compiling: the part of each of :attr:`seconds` that JAX spent compiling the
            oracle (once per bucket of shapes and per dtype, by
            :func:`bptt_ref.jax_reference.compile_clock`); the rest went to running
            ``fn`` and judging its results.
        headline: for a failure other than a wrong gradient or an exception (``fn``
            hung, wrote into its inputs, or differs from itself), what it did; then
            :attr:`error` holds the evidence.
        shrunk: whether :attr:`case` was shrunk (a hang or a nondeterministic result
            is reported on the case where it was seen).
    """

    target: str
    case: Case
    keys: tuple[str, ...]
    verdicts: list[KeyComparison]
    error: str | None
    hints: list[str]
    reproducer: Path
    snippet: str
    examples: int
    calls: int
    seconds: tuple[float, float]
    compiling: tuple[float, float]
    layout: str | None = None
    headline: str | None = None
    shrunk: bool = True

    @property
    def wrong_keys(self) -> list[str]:
        """The keys whose gradient is outside its bound on :attr:`case`."""
        return [v.key for v in self.verdicts if not v.ok]

    def __str__(self) -> str:
        from bptt_ref.jax_reference import time_split

        case = self.case
        dims = case.dims
        what = self.headline or (
            "raised an exception" if self.error else "disagrees with the reference"
        )
        shrunk = (
            f"  shrunk in {self.calls} calls of fn in "
            f"{time_split(self.seconds[1], self.compiling[1])} to the smallest failing case:"
            if self.shrunk
            else f"  not shrunk ({self.calls} calls of fn); the case:"
        )
        lines = [
            f"{self.target} {what}",
            f"  configuration: cell={case.cell} hidden={case.hidden} output={case.output} "
            f"loss={case.loss} dtype={case.dtype}"
            + ("" if self.layout is None else f" layout={self.layout}")
            + (
                f" num_layers={case.num_layers} bidirectional={case.bidirectional}"
                if case.stacked
                else ""
            )
            + f"; keys checked: {', '.join(self.keys)}",
            f"  first failure after {self.examples} example(s) in "
            f"{time_split(self.seconds[0], self.compiling[0])};",
            shrunk,
            f"    T={dims['T']} B={dims['B']} H={dims['H']} (D={dims['D']} O={dims['O']}), "
            f"regime={case.regime} style={case.style} ({STYLE_MEANING[case.style]}) "
            f"seed={case.seed}",
        ]
        if self.error is not None:
            label = "on this case" if self.headline else "fn raised on this case"
            lines += ["", f"{label}:", *indent(self.error.rstrip())]
        else:
            right = [v.key for v in self.verdicts if v.ok]
            # Layout keys (recurrent_kernel, cell/hi/kernel) are longer than W_ih.
            width = max([4, *(len(v.key) for v in self.verdicts if not v.ok)])
            lines += [
                "",
                f"wrong keys: {', '.join(self.wrong_keys)}   (right: {', '.join(right) or 'none'})",
                f"  {'key':<{width}} {'max abs err':>11} {'rel err':>9} {'bound':>9}  "
                f"{'largest at':<{width + 8}} {'actual':>12} {'expected':>12}",
            ]
            for v in self.verdicts:
                if not v.ok:
                    lines.append(
                        f"  {v.key:<{width}} {v.max_abs:>11.3g} {v.err:>9.3g} {v.bound:>9.3g}  "
                        f"{v.key + str(list(v.index)):<{width + 8}} {v.actual:>12.6g} "
                        f"{v.expected:>12.6g}"
                    )
        if self.hints:
            lines += ["", "hints:", *(f"  - {h}" for h in self.hints)]
        lines += ["", f"reproducer: {self.reproducer}", *indent(self.snippet)]
        return "\n".join(lines)


class CheckFailed(AssertionError):
    """``fn`` returned a wrong gradient, or raised, on some case; :attr:`report` says which."""

    def __init__(self, report: Report) -> None:
        super().__init__(str(report))
        self.report = report


@dataclass(frozen=True)
class CheckResult:
    """The outcome of :func:`bptt_ref.testing.check_gradients`.

    Attributes:
        keys: the keys ``fn`` returns, which were checked.
        examples: the number of cases ``fn`` was called on in the search.
        worst: per key, the verdict with the largest ``err / bound`` seen; on a
            failure, the verdicts of the cases before it.
        report: ``None`` when every key agreed on every case.
        seconds: wall time of the search (with the shrinking, on a failure).
        compiling: the part of :attr:`seconds` that JAX spent compiling the oracle.
        spread: per key, the largest difference seen between two calls of ``fn`` on
            one case, as a fraction of the key's tolerance there (0: ``fn`` gave the
            same answer every time; see ``repeat`` of ``check_gradients``).
    """

    keys: tuple[str, ...]
    examples: int
    worst: dict[str, KeyComparison]
    report: Report | None
    seconds: float
    compiling: float
    spread: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every key agreed with the reference on every case."""
        return self.report is None

    @property
    def time_spent(self) -> str:
        """Where :attr:`seconds` went, in words: compiling the oracle, and the cases."""
        from bptt_ref.jax_reference import time_split

        return time_split(self.seconds, self.compiling)


def indent(text: str) -> list[str]:
    """The lines of ``text``, each indented by four spaces."""
    return [f"    {line}" for line in text.splitlines()]


def describe(fn: Callable[..., Any]) -> tuple[str, str]:
    """``(name for the report, Python lines that bind it as fn)``."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if module and qualname and "<" in qualname:
        # A function made by a factory is importable under the name it was bound to.
        namespace = vars(sys.modules[module]) if module in sys.modules else {}
        qualname = next((n for n, v in namespace.items() if v is fn), None)
    if module and qualname and module != "__main__":
        head = qualname.split(".")[0]
        return f"{module}:{qualname}", f"from {module} import {head}\nfn = {qualname}"
    return repr(fn), "fn = ...  # your gradient function"


def save(
    case: Case, keys: tuple[str, ...], directory: Path, name: str, layout: Layout | None = None
) -> Path:
    """Write the case, its cell and configuration and its reference gradients
    (``expected_<key>``, in ``layout`` when given, whose name is stored as ``layout``) as
    one ``bptt-ref-failure-<name>.npz`` in ``directory``; the inputs stay canonical."""
    from bptt_ref import jax_reference
    from bptt_ref.checker.protocol import pad_to
    from bptt_ref.oracle import stack as stack_oracle

    if case.stacked:
        _, expected = stack_oracle.loss_and_grad(
            case.params, case.xs, case.targets, cell=case.cell, **case.network, **case.config
        )
    else:
        _, expected = jax_reference.loss_and_grad(
            case.params,
            case.xs,
            case.targets,
            cell=case.cell,
            pad_to=pad_to(case.dims),
            specialize=True,
            **case.config,
        )
    if layout is not None:
        expected = layout.grads_to_layout(case.cell, expected)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bptt-ref-failure-{name}.npz"
    arrays: dict[str, Any] = {
        **case.params,
        "xs": case.xs,
        "targets": case.targets,
        **{f"expected_{k}": expected[k] for k in keys},
        "cell": np.str_(case.cell),
        **{k: np.str_(v) for k, v in case.config.items()},
        **({} if layout is None else {"layout": np.str_(layout.name)}),
        **({k: np.asarray(v) for k, v in case.network.items()} if case.stacked else {}),
    }
    np.savez(path, **arrays)
    return path


def snippet(
    binding: str,
    path: Path,
    keys: tuple[str, ...],
    cell: str,
    layout: Layout | None = None,
    num_layers: int = 1,
    bidirectional: bool = False,
) -> str:
    """Python lines that reload the reproducer at ``path``, call ``fn`` (in ``layout``
    when given) and print each key's largest error against the reference
    (``num_layers``, ``bidirectional``: a stacked network's keys,
    :func:`bptt_ref.stack.names`)."""
    every = stack.names(cell, num_layers=num_layers, bidirectional=bidirectional)
    names = ", ".join(repr(k) for k in every)
    load = [
        # A with-block: an .npz left open is a ResourceWarning when it is collected.
        f"with np.load({str(path)!r}) as case:",
        f"    params = {{k: case[k] for k in ({names})}}",
    ]
    if layout is None:
        call = ['    grads = fn(params, case["xs"], case["targets"])']
    else:
        network = f", num_layers={num_layers}, bidirectional={bidirectional}"
        stacked = network if (num_layers, bidirectional) != (1, False) else ""
        load.insert(0, f"layout = layout_named({layout.name!r}{stacked})")
        call = [
            f"    tree = layout.nest(layout.to_layout({cell!r}, params))",
            f'    xs, targets = (layout.data({cell!r}, case[k]) for k in ("xs", "targets"))',
            "    grads = layout.flatten(fn(tree, xs, targets))",
        ]
    head = ["import numpy as np"]
    if layout is not None:
        head.append("from bptt_ref.layouts import layout_named")
    return "\n".join(
        [
            *head,
            binding,
            *load,
            *call,
            f"    for k in {list(keys)!r}:",
            '        print(k, np.max(np.abs(grads[k] - case["expected_" + k])))',
        ]
    )
