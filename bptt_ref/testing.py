"""Check someone else's BPTT gradient against the oracle (extras ``bptt-ref[jax,hypothesis]``).

The protocol: the function under test is a Python callable

    fn(params: Mapping[str, ndarray], xs: ndarray, targets: ndarray) -> Mapping[str, ndarray]

receiving ``params`` with ``U`` (O, H), ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,),
``b_y`` (O,), ``h0`` (B, H), and ``xs`` (T, B, D), ``targets`` (T, B, O), all of one
dtype (the ``dtype`` of the check). It returns the gradient of

    L = Σ_t Σ_b loss(ŷ_{t,b}, target_{t,b})     (a sum, not a mean)

for the RNN ``a_t = x_t Vᵀ + h_{t-1} Wᵀ + b_h``, ``h_t = f_h(a_t)``, ``z_t = h_t Uᵀ + b_y``,
``ŷ_t = f_y(z_t)``, t = 0 … T-1, for any non-empty subset of the keys
``U, V, W, b_h, b_y, h0, xs``, each array with the shape of what it differentiates
against. h_{t-1} is the state step t starts from: ``h0`` for t = 0 (h_0 is the state step
0 computes). The keys returned on the first case are the keys checked, and every later
case must return the same keys. ``f_h``, ``f_y`` and the loss are told to the checker,
not to ``fn``.

Dtypes: with ``dtype=float64`` every returned array must be float64; with
``dtype=float32`` it may be float32 or float64, and is judged with the float32 bound
of :mod:`bptt_ref.compare` either way (a float64 computation from float32 inputs is
welcome; it is simply more accurate than it needs to be).

Each case is judged by :func:`bptt_ref.jax_reference.judge`, the tolerance model of
:mod:`bptt_ref.compare` and nothing else. A failure is shrunk by Hypothesis to the
smallest case; the :class:`Report` names the wrong keys with their errors, saves the
case as an ``.npz`` reproducer, and adds hints where the evidence is clear.
"""

from __future__ import annotations

import inspect
import math
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bptt_ref._validate import GRAD_NAMES, PARAM_NAMES, check_names
from bptt_ref.compare import KeyComparison, tolerance_for

if TYPE_CHECKING:
    from bptt_ref.cases import Case

__all__ = [
    "CheckFailed",
    "CheckResult",
    "GradFn",
    "ProtocolError",
    "Report",
    "assert_bptt_gradients",
    "check_gradients",
]

GradFn = Callable[[dict[str, NDArray[Any]], NDArray[Any], NDArray[Any]], Mapping[str, Any]]
"""The protocol: ``fn(params, xs, targets) -> {key: gradient}``."""

_INPUTS = {**{k: f"params[{k!r}]" for k in PARAM_NAMES}, "xs": "xs"}
_SHAPE_NAMES = {
    "U": "(O, H)",
    "V": "(H, D)",
    "W": "(H, H)",
    "b_h": "(H,)",
    "b_y": "(O,)",
    "h0": "(B, H)",
    "xs": "(T, B, D)",
}
_FORMULAS = {
    "U": "∂L/∂U = Σ_t g_tᵀ h_t",
    "V": "∂L/∂V = Σ_t δ_tᵀ x_t",
    "W": (
        "∂L/∂W = Σ_t δ_tᵀ h_{t-1}, with h_{t-1} the state step t starts from (h0 at t = 0), "
        "not h_t = f_h(a_t), the state step t computes"
    ),
    "b_h": "∂L/∂b_h = Σ_t Σ_b δ_{t,b}",
    "b_y": "∂L/∂b_y = Σ_t Σ_b g_{t,b}",
    "h0": "∂L/∂h0 = δ_0 W (with the factor W)",
    "xs": "∂L/∂x_t = δ_t V",
}
"""Each gradient in terms of g_t = ∂L/∂z_t (T, B, O) and δ_t = ∂L/∂a_t (T, B, H), t = 0 … T-1.

The state that step t reads is h_{t-1}; before the first step that is the parameter ``h0``,
which is never called h_0 or h_{-1} here: h_0 = f_h(a_0) would read as the first computed state.
"""
_STYLE_MEANING = {
    "normal": "standard normal inputs",
    "zeros": "exact zeros in xs, h0 and the targets",
    "large": "inputs xs scaled by 30, which saturates the activations",
    "kink": "hidden units held exactly at a = 0, the kink of relu-like activations",
}


class ProtocolError(Exception):
    """``fn`` does not follow the protocol (signature, keys, shapes, dtypes); says what to fix."""


@dataclass(frozen=True)
class Report:
    """Evidence for the smallest failing case found.

    Attributes:
        target: how ``fn`` is called in the text (``module:name``).
        case: the shrunk case (``case.dims`` gives T, B, D, H, O).
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

    @property
    def wrong_keys(self) -> list[str]:
        """The keys whose gradient is outside its bound on :attr:`case`."""
        return [v.key for v in self.verdicts if not v.ok]

    def __str__(self) -> str:
        from bptt_ref.jax_reference import time_split

        case = self.case
        dims = case.dims
        what = "raised an exception" if self.error else "disagrees with the reference"
        lines = [
            f"{self.target} {what}",
            f"  configuration: hidden={case.hidden} output={case.output} loss={case.loss} "
            f"dtype={case.dtype}; keys checked: {', '.join(self.keys)}",
            f"  first failure after {self.examples} example(s) in "
            f"{time_split(self.seconds[0], self.compiling[0])};",
            f"  shrunk in {self.calls} calls of fn in "
            f"{time_split(self.seconds[1], self.compiling[1])} to the smallest failing case:",
            f"    T={dims['T']} B={dims['B']} H={dims['H']} (D={dims['D']} O={dims['O']}), "
            f"regime={case.regime} style={case.style} ({_STYLE_MEANING[case.style]}) "
            f"seed={case.seed}",
        ]
        if self.error is not None:
            lines += ["", "fn raised on this case:", *_indent(self.error.rstrip())]
        else:
            right = [v.key for v in self.verdicts if v.ok]
            lines += [
                "",
                f"wrong keys: {', '.join(self.wrong_keys)}   (right: {', '.join(right) or 'none'})",
                f"  {'key':<4} {'max abs err':>11} {'rel err':>9} {'bound':>9}  "
                f"{'largest at':<12} {'actual':>12} {'expected':>12}",
            ]
            for v in self.verdicts:
                if not v.ok:
                    lines.append(
                        f"  {v.key:<4} {v.max_abs:>11.3g} {v.err:>9.3g} {v.bound:>9.3g}  "
                        f"{v.key + str(list(v.index)):<12} {v.actual:>12.6g} {v.expected:>12.6g}"
                    )
        if self.hints:
            lines += ["", "hints:", *(f"  - {h}" for h in self.hints)]
        lines += ["", f"reproducer: {self.reproducer}", *_indent(self.snippet)]
        return "\n".join(lines)


class CheckFailed(AssertionError):
    """``fn`` returned a wrong gradient, or raised, on some case; :attr:`report` says which."""

    def __init__(self, report: Report) -> None:
        super().__init__(str(report))
        self.report = report


@dataclass(frozen=True)
class CheckResult:
    """The outcome of :func:`check_gradients`.

    Attributes:
        keys: the keys ``fn`` returns, which were checked.
        examples: the number of cases ``fn`` was called on in the search.
        worst: per key, the verdict with the largest ``err / bound`` seen; on a
            failure, the verdicts of the cases before it.
        report: ``None`` when every key agreed on every case.
        seconds: wall time of the search (with the shrinking, on a failure).
        compiling: the part of :attr:`seconds` that JAX spent compiling the oracle.
    """

    keys: tuple[str, ...]
    examples: int
    worst: dict[str, KeyComparison]
    report: Report | None
    seconds: float
    compiling: float

    @property
    def ok(self) -> bool:
        """Whether every key agreed with the reference on every case."""
        return self.report is None

    @property
    def time_spent(self) -> str:
        """Where :attr:`seconds` went, in words: compiling the oracle, and the cases."""
        from bptt_ref.jax_reference import time_split

        return time_split(self.seconds, self.compiling)


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


class _Raised(Exception):
    """``fn`` raised; the original exception is the ``__cause__``."""


def _indent(text: str) -> list[str]:
    return [f"    {line}" for line in text.splitlines()]


def _describe(fn: Callable[..., Any]) -> tuple[str, str]:
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


def _check_signature(fn: Callable[..., Any], target: str) -> None:
    if not callable(fn):
        raise ProtocolError(f"{target} is a {type(fn).__name__}, not a callable")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins and extension functions may not expose one; the call will tell
    try:
        signature.bind(None, None, None)
    except TypeError:
        raise ProtocolError(
            f"{target}{signature} cannot be called as fn(params, xs, targets); "
            "give it exactly three positional parameters (activation, output and loss are "
            "chosen by the checker, so bind them with functools.partial if fn takes them)"
        ) from None


def _checked_output(
    out: Any, case: Case, search: _Search, target: str
) -> dict[str, NDArray[np.float64]]:
    """The returned gradients as float64 arrays, after checking keys, shapes and dtypes."""
    where = f"on {case!r}"
    if not isinstance(out, Mapping):
        raise ProtocolError(
            f"{target} returned a {type(out).__name__} {where}; return a mapping from gradient "
            f"names ({', '.join(GRAD_NAMES)}) to arrays"
        )
    # A key that is not a string is unknown even when it prints as a gradient name:
    # str() would let it pass as "W", to be ignored beside the real "W" or to fail the
    # lookup below with a KeyError.
    names = [k if isinstance(k, str) else repr(k) for k in out]
    unknown = sorted(set(names) - set(GRAD_NAMES))
    if unknown:
        raise ProtocolError(
            f"{target} returned unknown keys {unknown} {where}; the keys are "
            f"{', '.join(GRAD_NAMES)} (the gradient of L with respect to each)"
        )
    if not names:
        raise ProtocolError(
            f"{target} returned no gradients {where}; "
            f"return at least one of {', '.join(GRAD_NAMES)}"
        )
    keys = tuple(k for k in GRAD_NAMES if k in names)
    if search.keys is None:
        search.keys = keys
    elif keys != search.keys:
        changes = ", ".join(
            f"{what} {names}"
            for what, names in (
                ("missing", sorted(set(search.keys) - set(keys))),
                ("new", sorted(set(keys) - set(search.keys))),
            )
            if names
        )
        raise ProtocolError(
            f"{target} returned keys {list(search.keys)} on the first case but {list(keys)} "
            f"{where} ({changes}); return the same keys every time"
        )
    inputs = {**case.params, "xs": case.xs}
    # float32 inputs may get a float64 answer (more accurate than needed); float64
    # inputs may not get float32, which would lose the precision being checked.
    allowed = [case.dtype] if case.dtype == np.float64 else [case.dtype, np.dtype(np.float64)]
    grads = {}
    need = " or ".join(str(d) for d in allowed)
    for k in keys:
        expected = inputs[k].shape
        try:
            value = np.asarray(out[k])
        except Exception as exc:
            # A ragged list, or a tensor that refuses NumPy (torch that requires grad or
            # is on a GPU): a protocol error naming the key, not a bare ValueError that
            # the command calls a usage error, nor a traceback that exits 1 like a mismatch.
            raise ProtocolError(
                f"{target} returned {k} that NumPy cannot read as an array {where} "
                f"({type(exc).__name__}: {exc}); expected a {need} array of shape "
                f"{_SHAPE_NAMES[k]} = {expected}"
            ) from exc
        if value.dtype not in allowed:
            raise ProtocolError(
                f"{target} returned {k} with dtype {value.dtype} {where}; expected {need} "
                f"(the inputs are {case.dtype})"
            )
        if value.shape != expected:
            raise ProtocolError(
                f"{target} returned {k} of shape {value.shape} {where}; expected "
                f"{_SHAPE_NAMES[k]} = {expected}, the shape of {_INPUTS[k]}"
            )
        grads[k] = value.astype(np.float64)
    return grads


def _call(fn: GradFn, case: Case, search: _Search, target: str) -> dict[str, NDArray[np.float64]]:
    search.calls += 1
    # fn gets copies, so that an in-place update cannot change the case it is judged on.
    params = {k: v.copy() for k, v in case.params.items()}
    try:
        out = fn(params, case.xs.copy(), case.targets.copy())
    except Exception as exc:
        raise _Raised from exc
    return _checked_output(out, case, search, target)


def _judge(actual: Mapping[str, Any], case: Case, keys: tuple[str, ...]) -> list[KeyComparison]:
    from bptt_ref import jax_reference

    _, verdicts = jax_reference.judge(
        actual, case.params, case.xs, case.targets, keys=keys, **case.config
    )
    return verdicts


def _sliced(case: Case, *, T: int | None = None, B: int | None = None) -> Case:
    """The same case cut to its first T steps or first B batch rows."""
    t, b = slice(T), slice(B)
    params = {**case.params, "h0": case.params["h0"][b]}
    return replace(case, params=params, xs=case.xs[t, b], targets=case.targets[t, b])


def _passes(fn: GradFn, case: Case, keys: tuple[str, ...], target: str) -> bool | None:
    """Whether fn is right on ``case``; ``None`` when it raises or breaks the protocol there."""
    try:
        actual = _call(fn, case, _Search(keys=keys), target)
    except (_Raised, ProtocolError):
        return None
    return all(v.ok for v in _judge(actual, case, keys))


def _common_factor(
    actual: Mapping[str, NDArray[np.float64]],
    expected: Mapping[str, NDArray[np.float64]],
    keys: list[str],
    rtol: float,
) -> float | None:
    """``c`` when every key in ``keys`` is ``c × expected`` to within ``rtol``, else ``None``."""
    factors = []
    for k in keys:
        a, e = actual[k], expected[k]
        size = float(np.max(np.abs(e), initial=0.0))
        if size == 0.0 or not np.all(np.isfinite(a)):
            return None
        c = float(np.vdot(a, e) / np.vdot(e, e))
        if np.max(np.abs(a - c * e)) > rtol * abs(c) * size:
            return None
        factors.append(c)
    if not factors or any(not math.isclose(c, factors[0], rel_tol=rtol) for c in factors):
        return None
    return factors[0]


def _factor_hint(
    c: float, wrong: list[str], keys: tuple[str, ...], dims: Mapping[str, int], rtol: float
) -> str | None:
    """What a common factor ``c`` of the ``wrong`` keys says, if it says anything."""
    T, B, O = dims["T"], dims["B"], dims["O"]
    candidates = {
        "1/T": 1 / T,
        "1/B": 1 / B,
        "1/(T·B)": 1 / (T * B),
        "2": 2.0,
        "1/2": 0.5,
        "-1": -1.0,
        "0": 0.0,
    }
    named = [n for n, v in candidates.items() if math.isclose(c, v, rel_tol=rtol)]
    if not named and (len(wrong) < 3 or T * B * O == 1):
        # One or two arrays, possibly of one element, fit any factor; and with a single
        # logit every key is a multiple of its one ∂L/∂z, whatever is wrong with it.
        return None
    every = set(wrong) == set(keys)
    subject = "every wrong gradient is" if every or len(wrong) == 1 else "are"
    if not every:
        subject = f"{', '.join(wrong)} {subject.rsplit(' ', 1)[-1]}"
    head = f"{subject} {c:.6g} × the reference"
    if named and named[0] in ("1/T", "1/B", "1/(T·B)"):
        dim = {"1/T": "time steps", "1/B": "batch rows", "1/(T·B)": "time steps and rows"}
        what = "the loss is a mean" if every else f"{', '.join(wrong)} averaged"
        return (
            f"{head} = {named[0]} (T={T}, B={B}): {what} over {dim[named[0]]}; "
            "the contract's L = Σ_t Σ_b loss(ŷ_{t,b}, y_{t,b}) is a sum"
        )
    if named and named[0] in ("2", "1/2") and every:
        return (
            f"{head}: a factor {named[0]} in the loss; mse is ½ Σ_o (ŷ_o - y_o)², "
            "whose gradient is ŷ - y"
        )
    if named and named[0] == "0":
        return f"{head}: zeros where the reference is not; a time step (t = 0?) is skipped"
    if named and named[0] == "-1":
        if every:
            return f"{head}: a sign error in ∂L/∂z, e.g. y - ŷ for ŷ - y"
        return f"{head}: a sign error in what they share (for V, W, b_h, h0, xs: δ_t, e.g. f_h')"
    if not every:
        return None  # a factor on some keys only: the per-key hints say more
    return f"{head}: a constant factor in the loss or in ∂L/∂z"


def _clip_level(
    actual: Mapping[str, NDArray[np.float64]],
    expected: Mapping[str, NDArray[np.float64]],
    wrong: list[str],
    rtol: float,
) -> tuple[float, int, str] | None:
    """``(c, n, example)`` when the wrong keys look clipped to ±c, else ``None``.

    Clipped means: each of the n wrong entries (off by more than ``rtol`` of its key's
    largest reference entry) is ±c with the reference's sign, where the reference is
    larger than c in magnitude; no returned entry of any key exceeds c; and c is a
    threshold someone chose, of at most two significant digits. Without that last test a
    single wrong entry that is merely too small (a mean for a sum) would look clipped.
    ``example`` names one such entry with its two values.
    """
    pinned, off = [], []
    for k in wrong:
        a, e = actual[k], expected[k]
        bad = np.abs(a - e) > rtol * np.max(np.abs(e), initial=0.0)
        pinned.append(np.abs(a[bad]))
        off.append((k, a, e, bad))
    levels = np.concatenate(pinned)
    if levels.size == 0 or not np.all(np.isfinite(levels)):
        return None
    c = float(levels.max())
    largest = max(float(np.max(np.abs(a), initial=0.0)) for a in actual.values())
    for _, a, e, bad in off:
        held = np.abs(np.abs(a[bad]) - c) <= rtol * c
        beyond = np.abs(e[bad]) > c * (1 + rtol)
        if not (np.all(held) and np.all(beyond) and np.all(np.sign(a[bad]) == np.sign(e[bad]))):
            return None
    if c == 0.0 or largest > c * (1 + rtol) or not math.isclose(c, float(f"{c:.2g}"), rel_tol=rtol):
        return None
    k, a, e, bad = next(item for item in off if item[3].any())
    i = tuple(int(j) for j in np.argwhere(bad)[0])
    return c, int(levels.size), f"{k}{list(i)}: actual {a[i]:.6g}, expected {e[i]:.6g}"


def _dW_with_h_t(case: Case) -> NDArray[np.float64]:
    """Σ_t δ_tᵀ h_t (H, H): ∂L/∂W with each δ_t paired with the state its step computes.

    Appending h_t to x_t as D extra inputs with zero weights leaves the RNN as it is, and
    the gradient of those weights is Σ_t δ_tᵀ h_t.
    """
    from bptt_ref import forward, loss_and_grad

    params = {k: v.astype(np.float64) for k, v in case.params.items()}
    xs, targets = case.xs.astype(np.float64), case.targets.astype(np.float64)
    h = forward(params, xs, hidden=case.hidden, output=case.output).h
    H = params["W"].shape[0]
    widened = {**params, "V": np.concatenate([params["V"], np.zeros((H, H))], axis=1)}
    _, grads = loss_and_grad(widened, np.concatenate([xs, h], axis=-1), targets, **case.config)
    return grads["V"][:, -H:].astype(np.float64, copy=False)


def _hints(
    fn: GradFn,
    case: Case,
    keys: tuple[str, ...],
    actual: Mapping[str, NDArray[np.float64]],
    verdicts: list[KeyComparison],
    target: str,
) -> list[str]:
    """Likely causes, each stated only when the evidence on ``case`` singles it out."""
    from bptt_ref import jax_reference

    wrong = [v.key for v in verdicts if not v.ok]
    dims = case.dims
    T, B = dims["T"], dims["B"]
    hints = []
    nonfinite = [k for k in wrong if not np.all(np.isfinite(actual[k]))]
    if nonfinite:
        hints.append(
            f"{', '.join(nonfinite)} {'contains' if len(nonfinite) == 1 else 'contain'} NaN or inf "
            "on finite inputs: an edge case of "
            f"this case's inputs ({_STYLE_MEANING[case.style]}), e.g. 0/0, log(0) or an "
            "overflowing exp"
        )
    expected = jax_reference.loss_and_grad(case.params, case.xs, case.targets, **case.config)[1]
    rtol = 10 * tolerance_for(case.dtype)
    clipped = _clip_level(actual, expected, wrong, rtol)
    if clipped is not None:
        # Clipping explains every wrong entry; the formula and probe hints would blame the math.
        c, n, example = clipped
        return [
            *hints,
            f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} ±{c:.6g}, with the "
            f"reference's sign, wherever {'it is' if len(wrong) == 1 else 'they are'} wrong, "
            f"and there the reference is larger ({n} {'entry' if n == 1 else 'entries'}; "
            f"{example}); no returned entry exceeds {c:.6g} in magnitude: the gradients look "
            f"clipped, as np.clip(dθ, -{c:g}, {c:g}) does. The check wants the gradient "
            "itself: clip after checking, in the update step",
        ]
    if "W" in wrong and np.all(np.isfinite(actual["W"])):
        with_h_t = _dW_with_h_t(case)
        size = float(np.max(np.abs(with_h_t), initial=0.0))
        if size > 0 and np.max(np.abs(actual["W"] - with_h_t)) <= rtol * size:
            only = "only W is wrong, and it" if wrong == ["W"] else "W"
            hints.append(
                f"{only} equals Σ_t δ_tᵀ h_t on this case: δ_t is paired with h_t = f_h(a_t), "
                "the state step t computes; ∂L/∂W = Σ_t δ_tᵀ h_{t-1} needs h_{t-1}, the "
                "state step t starts from (h0 at t = 0)"
            )
            if wrong == ["W"]:
                return hints
    factor = _common_factor(actual, expected, wrong, rtol)
    explained = None if factor is None else _factor_hint(factor, wrong, keys, dims, rtol)
    if explained is not None:
        # A constant factor explains every symptom; the probes below would only echo it.
        return [*hints, explained]

    prefix = [_passes(fn, _sliced(case, T=k), keys, target) for k in range(1, T)]
    right_until = next((k for k, ok in enumerate(prefix, start=1) if not ok), T) - 1
    if T >= 2 and right_until >= 1 and not any(prefix[right_until:]):
        if right_until == 1 and wrong == ["W"]:
            hints.append(
                "only W is wrong, and only from T = 2 (T = 1 of this case is right): "
                "∂L/∂W = Σ_t δ_tᵀ h_{t-1} pairs δ_t with the state step t starts from; check "
                "h_{t-1} (h0 at t = 0, not h_t = f_h(a_t)) and that every step is summed"
            )
        elif right_until == 1:
            hints.append(
                f"right for T = 1 of this case, wrong from T = 2 in {', '.join(wrong)}: the "
                "error is in what crosses time steps, the recurrent term of "
                "δ_t = (g_t U + δ_{t+1} W) ⊙ f_h'(a_t) (W, not Wᵀ; every step)"
            )
        else:
            hints.append(
                f"right for T ≤ {right_until} of this case, wrong from T = {right_until + 1}: "
                f"the backward pass looks truncated after {right_until} steps; BPTT runs δ "
                "back to t = 0 from every step"
            )
    if B >= 2 and _passes(fn, _sliced(case, B=1), keys, target):
        hints.append(
            f"right for B = 1 (the first row of this case), wrong for B = {B} in "
            f"{', '.join(wrong)}: a sum over the batch is missing or runs over the wrong axis "
            "(bias gradients are Σ_t Σ_b)"
        )
    through_delta = [k for k in ("V", "W", "b_h", "h0", "xs") if k in keys]
    output_side = [k for k in ("U", "b_y") if k in keys]
    single_step_wrong = T == 1 or (bool(prefix) and prefix[0] is False)
    if single_step_wrong and output_side and set(wrong) == set(through_delta):
        hints.append(
            f"{', '.join(output_side)} (which need only ∂L/∂z) are right, but every key "
            "through δ is wrong even at a single step: check δ_t = (g_t U) ⊙ f_h'(a_t), "
            f"in particular f_h' of {case.hidden}"
        )
    if single_step_wrong and "b_y" in wrong:
        hints.append(
            f"b_y = Σ_t Σ_b ∂L/∂z_{{t,b}} is wrong even at a single step: check the gradient "
            f"of {case.loss} after {case.output} with respect to the logits z"
        )
    if len(wrong) == 1 and len(keys) > 1 and not hints:
        hints.append(
            f"only {wrong[0]} is wrong, so what it shares with the right keys is right: "
            f"check {_FORMULAS[wrong[0]]}"
        )
    return hints


def _save(case: Case, keys: tuple[str, ...], directory: Path, name: str) -> Path:
    """Write the case and its reference gradients (``expected_<key>``) as one ``.npz``."""
    from bptt_ref import jax_reference

    _, expected = jax_reference.loss_and_grad(case.params, case.xs, case.targets, **case.config)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bptt-ref-failure-{name}.npz"
    arrays: dict[str, Any] = {
        **case.params,
        "xs": case.xs,
        "targets": case.targets,
        **{f"expected_{k}": expected[k] for k in keys},
        **{k: np.str_(v) for k, v in case.config.items()},
    }
    np.savez(path, **arrays)
    return path


def _snippet(binding: str, path: Path, keys: tuple[str, ...]) -> str:
    names = ", ".join(repr(k) for k in PARAM_NAMES)
    return "\n".join(
        [
            "import numpy as np",
            binding,
            f"case = np.load({str(path)!r})",
            f"params = {{k: case[k] for k in ({names})}}",
            'grads = fn(params, case["xs"], case["targets"])',
            f"for k in {list(keys)!r}:",
            '    print(k, np.max(np.abs(grads[k] - case["expected_" + k])))',
        ]
    )


def check_gradients(
    fn: GradFn,
    *,
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
    binding: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> CheckResult:
    """Run ``fn`` on Hypothesis-drawn cases and judge every returned key against the oracle.

    Cases come from :func:`bptt_ref.strategies.cases` restricted to this configuration
    and ``dtype``: T in [1, max_T], B, D, O in [1, 4], H in [1, max_H], every weight
    regime and input style. The first failure is shrunk to the smallest case, which is
    saved as ``bptt-ref-failure-<name>.npz`` in ``save_dir`` (default: a fresh temporary
    directory) and described in the result's :class:`Report`.

    Args:
        fn: the gradient function, ``fn(params, xs, targets) -> {key: array}`` (see the
            module docstring for the protocol and the dtype rules).
        hidden, output, loss: the configuration ``fn`` implements.
        dtype: float64 or float32, the dtype of every array ``fn`` receives.
        max_examples: how many cases to try before declaring ``fn`` right.
        seed: seeds the search, so a run is reproducible.
        max_T, max_H: the largest sequence length and hidden size drawn.
        save_dir: where the reproducer goes.
        name: how ``fn`` is named in the report; by default ``module:qualname``.
        binding: Python lines that bind ``fn`` in the reproducer snippet; by default an
            import of ``fn`` from its module.
        progress: called as ``progress(phase, examples, calls)`` at each case and when
            the phase changes: ``phase`` is ``"searching"``, ``"compiling the oracle"``
            (the first case of a size compiles it), ``"shrinking"`` or ``"explaining the
            failure"`` (the probes behind the hints); ``examples`` counts the cases tried
            until the first failure, ``calls`` every call of ``fn``.

    Returns:
        A :class:`CheckResult`; ``result.report`` is ``None`` exactly when every key
        agreed on every case.

    Raises:
        ProtocolError: ``fn`` has the wrong signature, or returned a non-mapping,
            unknown, missing or inconsistent keys, an array of the wrong shape or dtype,
            or a value NumPy cannot read as an array.
        ValueError: an invalid configuration, dtype or bound.
    """
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as seeded

    from bptt_ref.jax_reference import compile_clock
    from bptt_ref.strategies import cases

    check_names(hidden, output, loss)
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype is {np.dtype(dtype)}; expected float32 or float64")
    for label, value in (("max_examples", max_examples), ("max_T", max_T), ("max_H", max_H)):
        if value < 1:
            raise ValueError(f"{label} is {value}; expected at least 1")
    described, default_binding = _describe(fn)
    target = name or described
    _check_signature(fn, target)
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
            hidden=[hidden],
            heads=[(output, loss)],
            dtypes=[np.dtype(dtype)],
            max_T=max_T,
            max_H=max_H,
        )
    )
    def run(case: Case) -> None:
        search.failing = case
        if not search.first_failure:
            search.examples_to_failure += 1
        tell("shrinking" if search.first_failure else "searching")
        try:
            actual = _call(fn, case, search, target)
        except _Raised:
            failed()
            raise
        verdicts = _judge(actual, case, search.keys or ())
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
        except (_Mismatch, _Raised) as exc:
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
        path = _save(case, keys, directory, stem or "fn")
        raised = isinstance(error, _Raised)
        report = Report(
            target=target,
            case=case,
            keys=keys,
            verdicts=[] if raised else search.verdicts,
            error="".join(traceback.format_exception(error.__cause__)) if raised else None,
            hints=[] if raised else _hints(fn, case, keys, search.actual, search.verdicts, target),
            reproducer=path,
            snippet=_snippet(binding or default_binding, path, keys),
            examples=search.examples_to_failure,
            calls=search.calls,
            seconds=(search.first_failure - search.started, done - search.first_failure),
            compiling=(search.compiling_to_failure, compiled - search.compiling_to_failure),
        )
    return CheckResult(
        keys, search.examples_to_failure, search.worst, report, done - search.started, compiled
    )


def assert_bptt_gradients(
    fn: GradFn,
    *,
    hidden: str = "tanh",
    output: str = "identity",
    loss: str = "mse",
    dtype: Any = np.float64,
    max_examples: int = 100,
    seed: int = 0,
    max_T: int = 16,
    max_H: int = 8,
    save_dir: str | Path | None = None,
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
        hidden=hidden,
        output=output,
        loss=loss,
        dtype=dtype,
        max_examples=max_examples,
        seed=seed,
        max_T=max_T,
        max_H=max_H,
        save_dir=save_dir,
    )
    if result.report is not None:
        raise CheckFailed(result.report)
