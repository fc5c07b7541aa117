"""The protocol a checked gradient function follows, for each cell.

``fn(params, xs, targets) -> {key: gradient}`` receives the parameters of the cell
(``CELLS[cell].names``; of a stacked network, :func:`bptt_ref.stack.names`) and returns a
non-empty subset of them and ``xs``, each array of its input's shape. This module checks
the signature and every return, calls ``fn`` on copies of a case (within a time limit,
and checking that it left its inputs alone), reads what it returns (NumPy arrays or
anything with ``__array__`` or ``__dlpack__``), and asks the oracle for its verdicts.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bptt_ref import kinks, stack
from bptt_ref.cases import KERNEL_STEPS, KERNEL_WIDTHS, SMALL_DIMS, boundary_sizes
from bptt_ref.cells import CELLS
from bptt_ref.compare import KeyComparison, Reference, judge_against, scale_and_bound

if TYPE_CHECKING:
    from concurrent.futures import Future

    from bptt_ref.cases import Case
    from bptt_ref.layouts import Layout

GradFn = Callable[[dict[str, NDArray[Any]], NDArray[Any], NDArray[Any]], Mapping[str, Any]]
"""The protocol: ``fn(params, xs, targets) -> {key: gradient}``."""


class ProtocolError(Exception):
    """``fn`` does not follow the protocol (signature, keys, shapes, dtypes); says what to fix."""


class Raised(Exception):
    """``fn`` raised; the original exception is the ``__cause__``."""


class Hung(Exception):
    """``fn`` did not return within the time limit; the message names the case."""


class Scribbled(Exception):
    """``fn`` wrote into its inputs; the message names each array changed and where, and
    ``keys`` the keys ``fn`` returned (empty if its return broke the protocol)."""

    def __init__(self, message: str, keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.keys = keys


def _producer(value: Any) -> str:
    """The top-level package of ``value``'s type: ``"numpy"``, ``"torch"``, ``"jaxlib"``..."""
    return type(value).__module__.split(".")[0]


def as_array(value: Any) -> NDArray[Any]:
    """``value`` as a NumPy array on the host: through ``__array__`` (NumPy arrays,
    torch CPU tensors, JAX arrays, lists), else through ``__dlpack__`` (any array-API
    library; a device array is copied to the host where its library can do that).

    Raises:
        Exception: whatever the conversion raised, when neither route works.
    """
    if hasattr(value, "__dlpack__") and not hasattr(value, "__array__"):
        return _from_dlpack(value)
    try:
        return np.asarray(value)
    except Exception:
        # A torch tensor on a GPU refuses __array__ but may copy itself to the host
        # through DLPack; anything else keeps the first error, which names its cause.
        if hasattr(value, "__dlpack__"):
            with contextlib.suppress(Exception):
                return _from_dlpack(value)
        raise


def _from_dlpack(value: Any) -> NDArray[Any]:
    if np.lib.NumpyVersion(np.__version__) < "2.1.0":
        return np.from_dlpack(value)  # no device argument yet: host arrays only
    return np.from_dlpack(value, device="cpu")


def shape_name(key: str, cell: str, num_layers: int = 1, bidirectional: bool = False) -> str:
    """The shape of ``key`` in named dims, as a tuple prints: ``"(4H, D)"``, ``"(H,)"``;
    ``num_layers`` and ``bidirectional`` name a stacked network's (:mod:`bptt_ref.stack`)."""
    spec = (
        CELLS[cell].shapes
        if (num_layers, bidirectional) == (1, False)
        else stack.configure(cell, num_layers, bidirectional).shapes()
    )[key]
    return f"({spec[0]},)" if len(spec) == 1 else f"({', '.join(spec)})"


def check_signature(fn: Callable[..., Any], target: str) -> None:
    """Raise :class:`ProtocolError` unless ``fn(params, xs, targets)`` can be called."""
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


def checked_output(
    out: Any,
    case: Case,
    keys: tuple[str, ...] | None,
    target: str,
    layout: Layout | None = None,
) -> tuple[tuple[str, ...], dict[str, NDArray[np.float64]]]:
    """``(keys, gradients as float64 arrays)`` of a return, after checking it.

    ``keys`` are those of the first return (``None`` before it): every later return must
    have the same. The keys, shapes and names are those of ``case.cell``, in ``layout``
    when one is given (a Flax tree is flattened to its ``/`` paths).
    """
    where = f"on {case!r}"
    if layout is None:
        every = (*stack.names(case.cell, **case.network), "xs")
    else:
        every = layout.of(case.cell).grad_names
    of_cell = f"the gradient of L with respect to each, for cell {case.cell!r}"
    if case.stacked:
        of_cell += f" with num_layers={case.num_layers}, bidirectional={case.bidirectional}"
    if layout is not None:
        of_cell += f" in layout {layout.name!r}"
        if isinstance(out, Mapping):
            out = layout.flatten(out)
    if not isinstance(out, Mapping):
        raise ProtocolError(
            f"{target} returned a {type(out).__name__} {where}; return a mapping from gradient "
            f"names ({', '.join(every)}) to arrays"
        )
    # A key that is not a string is unknown even when it prints as a gradient name:
    # str() would let it pass as "W", to be ignored beside the real "W" or to fail the
    # lookup below with a KeyError.
    names = [k if isinstance(k, str) else repr(k) for k in out]
    unknown = sorted(set(names) - set(every))
    if unknown:
        raise ProtocolError(
            f"{target} returned unknown keys {unknown} {where}; the keys are "
            f"{', '.join(every)} ({of_cell})"
        )
    if not names:
        raise ProtocolError(
            f"{target} returned no gradients {where}; return at least one of {', '.join(every)}"
        )
    returned = tuple(k for k in every if k in names)
    if keys is not None and returned != keys:
        changes = ", ".join(
            f"{what} {names}"
            for what, names in (
                ("missing", sorted(set(keys) - set(returned))),
                ("new", sorted(set(returned) - set(keys))),
            )
            if names
        )
        raise ProtocolError(
            f"{target} returned keys {list(keys)} on the first case but {list(returned)} "
            f"{where} ({changes}); return the same keys every time"
        )
    if layout is None:
        inputs = {**case.params, "xs": case.xs}
    else:
        from bptt_ref.checker.in_layout import inputs as in_layout

        inputs = in_layout(case, layout)
    # float32 inputs may get a float64 answer (more accurate than needed); float64
    # inputs may not get float32, which would lose the precision being checked.
    allowed = [case.dtype] if case.dtype == np.float64 else [case.dtype, np.dtype(np.float64)]
    grads = {}
    need = " or ".join(str(d) for d in allowed)
    for k in returned:
        expected = inputs[k].shape
        if layout is None:
            spec = shape_name(k, case.cell, **case.network)
        else:
            spec = layout.shape_text(case.cell, k)
        named = f"{spec} = {expected}"
        try:
            value = as_array(out[k])
        except Exception as exc:
            # A ragged list, or a tensor that refuses NumPy (torch that requires grad or
            # is on a GPU): a protocol error naming the key, not a bare ValueError that
            # the command calls a usage error, nor a traceback that exits 1 like a mismatch.
            raise ProtocolError(
                f"{target} returned {k} that NumPy cannot read as an array {where} "
                f"({type(exc).__name__}: {exc}); expected a {need} array of shape {named}"
            ) from exc
        if value.dtype not in allowed:
            raise ProtocolError(
                f"{target} returned {k} with dtype {value.dtype} {where}; expected {need} "
                f"(the inputs are {case.dtype}){_x64_advice(out[k], value.dtype)}"
            )
        if value.shape != expected:
            source = "xs" if k == "xs" else f"params[{k!r}]"
            raise ProtocolError(
                f"{target} returned {k} of shape {value.shape} {where}; expected {named}, "
                f"the shape of {source}"
            )
        grads[k] = value.astype(np.float64)
    return returned, grads


def _x64_advice(value: Any, dtype: np.dtype[Any]) -> str:
    """For a float32 JAX array, how to make JAX compute in float64; otherwise nothing."""
    if _producer(value) not in ("jax", "jaxlib") or dtype != np.float32:
        return ""
    return (
        ". It is a JAX array: JAX computes in float32 unless 64-bit mode is on; call "
        'jax.config.update("jax_enable_x64", True) before fn creates its arrays, or set '
        "JAX_ENABLE_X64=1 in the environment"
    )


def _run(fn: GradFn, args: tuple[Any, ...], timeout: float | None) -> Any:
    """``fn(*args)``, raising :class:`Hung` if it has not returned after ``timeout`` s.

    The call runs in a daemon thread that the caller waits for. A thread cannot be
    killed, so a hung call is abandoned, not stopped: it sleeps or spins on until the
    process ends, and the check ends at once with the report. That covers the hangs of
    real kernels (a device synchronisation that never completes, a deadlock, a Python
    loop), which wait with the GIL released or yield it. A C loop that spins holding the
    GIL would stall the waiting thread too; only a child process could escape that, at
    the price of pickling ``fn`` (a function loaded from a file is not picklable by
    reference), copying every case across, re-creating GPU contexts, and forking a
    process that already runs JAX's threads, which JAX warns may deadlock. SIGALRM
    cannot help either: Python runs signal handlers in the main thread only, between
    bytecodes, so never inside the C call that hangs.
    """
    if timeout is None:
        return fn(*args)
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["out"] = fn(*args)
        except BaseException as exc:  # handed to the caller's thread, raised there
            box["exc"] = exc

    worker = threading.Thread(target=work, name="bptt-ref check: fn", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise Hung(f"fn has not returned after {timeout:g} s")
    if "exc" in box:
        raise box["exc"]
    return box["out"]


def _changes(name: str, before: NDArray[Any], after: NDArray[Any]) -> str | None:
    """Where ``after`` differs from ``before`` (NaN equal to NaN), in words; ``None`` if nowhere."""
    if after.shape != before.shape or after.dtype != before.dtype:
        return f"{name} became {after.dtype} {after.shape} (was {before.dtype} {before.shape})"
    same = (after == before) | (np.isnan(after) & np.isnan(before))
    if same.all():
        return None
    where = tuple(int(i) for i in np.argwhere(~same)[0])
    return (
        f"{name}: {int((~same).sum())} of {same.size} entries changed, the first at "
        f"{list(where)}: {float(before[where]):.6g} became {float(after[where]):.6g}"
    )


def call(
    fn: GradFn,
    case: Case,
    keys: tuple[str, ...] | None,
    target: str,
    layout: Layout | None = None,
    *,
    timeout: float | None = None,
) -> tuple[tuple[str, ...], dict[str, NDArray[np.float64]]]:
    """Call ``fn`` on copies of ``case`` (in ``layout`` when given: ``fn`` gets and returns
    arrays in it), check that it left them alone, and check what it returns (see
    :func:`checked_output`). ``timeout``: seconds to wait (``None``: forever).

    Raises:
        Raised: ``fn`` raised, with its exception as the cause.
        Hung: ``fn`` did not return within ``timeout`` seconds.
        Scribbled: ``fn`` changed an array it was given (in training code that corrupts
            the weights or the data).
        ProtocolError: the return breaks the protocol.
    """
    # fn gets copies, so that an in-place update cannot change the case it is judged on,
    # and the copies are compared afterwards with what they were, to catch that update.
    args: tuple[Any, ...]
    if layout is None:
        args = ({k: v.copy() for k, v in case.params.items()}, case.xs.copy(), case.targets.copy())
    else:
        from bptt_ref.checker.in_layout import arguments

        args = arguments(case, layout)
    before = {k: np.array(v, copy=True) for k, v in _named(args, layout).items()}
    try:
        out = _run(fn, args, timeout)
    except Hung as exc:
        raise Hung(f"{target} {exc} on {case!r}") from None
    except Exception as exc:
        raise Raised from exc
    after = _named(args, layout)
    changed = [
        f"{name} was removed" if name not in after else _changes(name, was, after[name])
        for name, was in before.items()
    ]
    if any(changed):
        # The report names the keys fn returns, even when the first call scribbled.
        try:
            returned = checked_output(out, case, keys, target, layout)[0]
        except ProtocolError:
            returned = ()
        raise Scribbled(
            f"{target} wrote into its inputs on {case!r} (the arrays it was given differ "
            "from copies taken before the call; in training code that corrupts the weights "
            "or the data): " + "; ".join(c for c in changed if c),
            returned,
        )
    return checked_output(out, case, keys, target, layout)


def _named(args: tuple[Any, ...], layout: Layout | None) -> dict[str, Any]:
    """fn's arguments by the names a report gives them: ``params['U']``, ``xs``, ``targets``."""
    params, xs, targets = args
    flat = params if layout is None else layout.flatten(params)
    return {**{f"params[{k!r}]": v for k, v in flat.items()}, "xs": xs, "targets": targets}


_PADDED_TOGETHER = (("H",), ("B",), ("T",), ("D", "O"))
"""Dims padded wide together in a program for one configuration: a case with one of a
group above its small size pads the whole group. There wide D and O cost a case nothing
measurable (2.3 to 2.7 ms a case, either alone or both); a wide H with them, or B with
T, made each case several times dearer, more than the compilation saved. In the program
shared by every configuration, whose heads all sit behind ``lax.switch``, wide D with O
did cost: ``check --all --examples 20`` spent 77.8 s on its cases against 48.8 s with
each dim alone, so there every dim pads alone."""


def pad_to(dims: Mapping[str, int], specialize: bool = True) -> dict[str, int]:
    """The size the oracle pads each large dim of a case to, so that few compilations serve
    every size: a dim above its small size (``SMALL_DIMS``) pads to the bucket of the
    largest kernel boundary size (T 257, widths 129), whatever its own size, and so do
    the dims padded together with it in a program for one configuration (``specialize``):
    a boundary sweep then costs four compilations, five in the shared program."""
    from bptt_ref.jax_reference import bucket

    largest = {d: max(boundary_sizes(KERNEL_STEPS if d == "T" else KERNEL_WIDTHS)) for d in dims}
    wide = bucket(largest)
    large = {d for d, n in dims.items() if n > SMALL_DIMS[d]}
    groups = _PADDED_TOGETHER if specialize else tuple((d,) for d in dims)
    return {d: wide[d] for group in groups if large & set(group) for d in group}


def judge(
    actual: Mapping[str, Any],
    case: Case,
    keys: tuple[str, ...],
    layout: Layout | None = None,
    kink: str | None = None,
    specialize: bool = True,
    early: Future[Reference] | None = None,
) -> tuple[Reference | None, list[KeyComparison]]:
    """The oracle's reference for ``case`` and its verdict on each of ``keys`` of ``actual``
    (keys of ``layout`` when one is given; then the reference is ``None``: the verdicts
    come from the canonical arrays each entry holds). ``specialize`` (the default) compiles
    the oracle for the case's configuration alone; ``False``, one program for all (see
    :func:`bptt_ref.jax_reference.reference`).

    ``kink`` (a key of :data:`bptt_ref.kinks.CONVENTIONS`) pins the derivative of a kinked
    ``f_h`` at an exact ``a = 0``. By default (``None``) a gradient is right when it is right
    under either one-sided derivative, the same side at every kink of the case: first
    under JAX's convention (one of the two sides for each ``f_h``, and ``loss_and_grad``'s),
    then, only when that fails and the case has an exact kink, under the other side; when
    both fail the verdicts are JAX's.

    ``early``: the reference of :func:`plain_oracle` (no noise) under ``kink`` or JAX's
    convention, started before ``fn`` was called, for a case of one cell in the
    canonical layout.
    """
    first = judged_under(actual, case, keys, layout, kink or "jax", specialize, early)
    if (
        kink is not None
        or all(v.ok for v in first[1])
        or not kinks.at_kink(case.params, case.xs, case.hidden, cell=case.cell, **case.network)
    ):
        return first
    second = judged_under(actual, case, keys, layout, kinks.other_side(case.hidden), specialize)
    return second if all(v.ok for v in second[1]) else first


def judged_under(
    actual: Mapping[str, Any],
    case: Case,
    keys: tuple[str, ...],
    layout: Layout | None,
    kink: str,
    specialize: bool = True,
    early: Future[Reference] | None = None,
) -> tuple[Reference | None, list[KeyComparison]]:
    """:func:`judge` under the one convention ``kink``."""
    if layout is not None:
        from bptt_ref.checker import in_layout

        return None, in_layout.judge(actual, case, keys, layout, kink)
    if case.stacked:
        from bptt_ref.oracle import stack as stack_oracle

        return stack_oracle.judge(
            actual,
            case.params,
            case.xs,
            case.targets,
            keys=keys,
            cell=case.cell,
            **case.network,
            **case.config,
            kink=kink,
        )
    oracle = plain_oracle(case, kink, specialize)
    if early is None:
        return judge_against(actual, oracle, keys=keys)
    return judge_against(actual, lambda noise: oracle(True) if noise else early.result(), keys=keys)


def plain_oracle(case: Case, kink: str, specialize: bool = True) -> Callable[[bool], Reference]:
    """The oracle of a case of one cell, ``noise -> Reference``
    (:func:`bptt_ref.jax_reference.reference` under ``kink``, padded by :func:`pad_to`)."""
    from bptt_ref import jax_reference

    def of(noise: bool) -> Reference:
        return jax_reference.reference(
            case.params,
            case.xs,
            case.targets,
            noise=noise,
            cell=case.cell,
            pad_to=pad_to(case.dims, specialize),
            specialize=specialize,
            kink=kink,
            **case.config,
        )

    return of


def spread(
    first: Mapping[str, NDArray[np.float64]],
    again: Mapping[str, NDArray[np.float64]],
    reference: Reference,
) -> dict[str, float]:
    """Per key, ``max |again - first|`` as a fraction of the key's absolute tolerance on the
    case (``bound · scale`` of :func:`bptt_ref.compare.scale_and_bound`): above 1, the
    difference between two calls alone is more than a right answer may be off."""
    ratios = {}
    for k, a in first.items():
        scale, bound = scale_and_bound(reference, k)
        gap = np.abs(again[k] - a)
        gap[np.isnan(a) & np.isnan(again[k])] = 0.0  # NaN twice at one place is the same answer
        diff = float(np.max(np.nan_to_num(gap, nan=np.inf), initial=0.0))
        tolerance = bound * scale
        ratios[k] = diff / tolerance if tolerance > 0 else (np.inf if diff else 0.0)
    return ratios
