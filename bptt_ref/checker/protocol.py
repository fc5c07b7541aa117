"""The protocol a checked gradient function follows, for each cell.

``fn(params, xs, targets) -> {key: gradient}`` receives the parameters of the cell
(``CELLS[cell].names``; of a stacked network, :func:`bptt_ref.stack.names`) and returns a
non-empty subset of them and ``xs``, each array of its input's shape. This module checks
the signature and every return, calls ``fn`` on copies of a case, and asks the oracle for
its verdicts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bptt_ref import stack
from bptt_ref.cells import CELLS
from bptt_ref.compare import KeyComparison

if TYPE_CHECKING:
    from bptt_ref.cases import Case
    from bptt_ref.layouts import Layout

GradFn = Callable[[dict[str, NDArray[Any]], NDArray[Any], NDArray[Any]], Mapping[str, Any]]
"""The protocol: ``fn(params, xs, targets) -> {key: gradient}``."""


class ProtocolError(Exception):
    """``fn`` does not follow the protocol (signature, keys, shapes, dtypes); says what to fix."""


class Raised(Exception):
    """``fn`` raised; the original exception is the ``__cause__``."""


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
            value = np.asarray(out[k])
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
                f"(the inputs are {case.dtype})"
            )
        if value.shape != expected:
            source = "xs" if k == "xs" else f"params[{k!r}]"
            raise ProtocolError(
                f"{target} returned {k} of shape {value.shape} {where}; expected {named}, "
                f"the shape of {source}"
            )
        grads[k] = value.astype(np.float64)
    return returned, grads


def call(
    fn: GradFn,
    case: Case,
    keys: tuple[str, ...] | None,
    target: str,
    layout: Layout | None = None,
) -> tuple[tuple[str, ...], dict[str, NDArray[np.float64]]]:
    """Call ``fn`` on ``case`` and check what it returns (see :func:`checked_output`);
    with a ``layout``, ``fn`` gets and returns arrays in it.

    Raises:
        Raised: ``fn`` raised, with its exception as the cause.
        ProtocolError: the return breaks the protocol.
    """
    # fn gets copies, so that an in-place update cannot change the case it is judged on.
    if layout is None:
        args: tuple[Any, ...] = (
            {k: v.copy() for k, v in case.params.items()},
            case.xs.copy(),
            case.targets.copy(),
        )
    else:
        from bptt_ref.checker.in_layout import arguments

        args = arguments(case, layout)
    try:
        out = fn(*args)
    except Exception as exc:
        raise Raised from exc
    return checked_output(out, case, keys, target, layout)


def judge(
    actual: Mapping[str, Any], case: Case, keys: tuple[str, ...], layout: Layout | None = None
) -> list[KeyComparison]:
    """The oracle's verdict on each of ``keys`` of ``actual`` for ``case`` (keys of
    ``layout`` when one is given)."""
    from bptt_ref import jax_reference

    if layout is not None:
        from bptt_ref.checker import in_layout

        return in_layout.judge(actual, case, keys, layout)
    if case.stacked:
        from bptt_ref.oracle import stack as stack_oracle

        _, verdicts = stack_oracle.judge(
            actual,
            case.params,
            case.xs,
            case.targets,
            keys=keys,
            cell=case.cell,
            **case.network,
            **case.config,
        )
        return verdicts
    _, verdicts = jax_reference.judge(
        actual, case.params, case.xs, case.targets, keys=keys, cell=case.cell, **case.config
    )
    return verdicts
