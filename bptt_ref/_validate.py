"""Input checking shared by every public entry point.

Each error names the array, what it has (shape or dtype) and what was expected, so a
caller can fix the call without reading this package's source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bptt_ref._activations import HIDDEN, OUTPUT
from bptt_ref._losses import LOSS_OUTPUTS, VALID_HEADS
from bptt_ref.cells._spec import Cell, shape_of

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_names(
    hidden: str, output: str, loss: str | None = None, *, cell: Cell | None = None
) -> None:
    """Raise ``ValueError`` listing the valid choices for an unknown or invalid name.

    ``cell`` (default: the vanilla RNN) says which hidden activations are allowed.
    """
    activations = HIDDEN if cell is None else cell.activations
    if hidden not in activations:
        of_cell = "" if cell is None or cell.name == "rnn" else f" for cell {cell.name!r}"
        raise ValueError(
            f"unknown hidden activation {hidden!r}{of_cell}; expected one of {sorted(activations)}"
        )
    if output not in OUTPUT:
        raise ValueError(f"unknown output activation {output!r}; expected one of {sorted(OUTPUT)}")
    if loss is None:
        return
    if loss not in LOSS_OUTPUTS:
        raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSS_OUTPUTS)}")
    if (output, loss) not in VALID_HEADS:
        pairs = ", ".join(f"{out}+{name}" for out, name in VALID_HEADS)
        raise ValueError(
            f"loss {loss!r} cannot follow output {output!r}; valid output+loss pairs: {pairs}"
        )


def _as_float_array(name: str, value: Any) -> NDArray[np.floating]:
    arr = np.asarray(value)
    if arr.dtype not in DTYPES:
        raise TypeError(f"{name} has dtype {arr.dtype}; expected float32 or float64")
    # BLAS takes different paths for other layouts, and the answer must not depend on
    # how the caller's arrays happen to be laid out in memory.
    return np.ascontiguousarray(arr)


def _check_finite(name: str, arr: NDArray[np.floating]) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s), the first at index {first}; "
            "expected all finite"
        )


def check_inputs(
    params: Mapping[str, Any],
    xs: Any,
    targets: Any = None,
    *,
    loss: str | None = None,
    cell: Cell | None = None,
) -> tuple[dict[str, NDArray[np.floating]], NDArray[np.floating], NDArray[np.floating] | None]:
    """Validate and return ``(params, xs, targets)`` as C-contiguous NumPy arrays.

    Arrays already C-contiguous are returned as they are (never written to); others
    are copied. ``cell`` (default: the vanilla RNN) says which keys and shapes
    ``params`` must have, in named dims (:attr:`bptt_ref.cells.Cell.shapes`).

    Dims are read off ``xs`` (T, B, D), the cell's ``hidden_from`` parameter (H; ``W``
    for the RNN) and ``targets`` (T, B, O), or ``U`` (O, H) when there are no targets;
    every other shape must agree with them. T = 0 and B = 0 are allowed; D, H and O
    must be at least 1.
    """
    from bptt_ref.cells import CELLS

    cell = CELLS["rnn"] if cell is None else cell
    names = cell.names
    of_cell = "" if cell.name == "rnn" else f" for cell {cell.name!r}"
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params must be a mapping with keys {', '.join(names)}{of_cell}; "
            f"got {type(params).__name__}"
        )
    missing = [k for k in names if k not in params]
    extra = sorted(str(k) for k in params if k not in names)
    if missing or extra:
        listed = " and ".join(
            f"{what} keys {keys}"
            for what, keys in (("missing", missing), ("unexpected", extra))
            if keys
        )
        found = [
            other.name
            for other in CELLS.values()
            if other is not cell and {str(k) for k in params} == set(other.names)
        ]
        whose = f" (these are the keys of cell {found[0]!r})" if found else ""
        raise ValueError(
            f"params has {listed}{whose}; expected exactly {', '.join(names)}{of_cell}"
        )
    shapes = cell.shapes
    arrays = {k: _as_float_array(k, params[k]) for k in names}
    arrays["xs"] = _as_float_array("xs", xs)
    if targets is not None:
        arrays["targets"] = _as_float_array("targets", targets)

    dtype = arrays["xs"].dtype
    for name, arr in arrays.items():
        if arr.dtype != dtype:
            raise TypeError(
                f"{name} has dtype {arr.dtype} but xs has {dtype}; "
                "expected all arrays to share one dtype"
            )
    for name, arr in arrays.items():
        if arr.ndim != len(shapes[name]):
            raise ValueError(
                f"{name} has shape {arr.shape}; expected {len(shapes[name])} "
                f"{'dim' if len(shapes[name]) == 1 else 'dims'} "
                f"({', '.join(shapes[name])}){of_cell}"
            )

    dims = dict(zip("TBD", arrays["xs"].shape, strict=True))
    dims["H"] = arrays[cell.hidden_from].shape[shapes[cell.hidden_from].index("H")]
    dims["O"] = arrays["targets"].shape[-1] if targets is not None else arrays["U"].shape[0]
    source = {
        "T": "xs",
        "B": "xs",
        "D": "xs",
        "H": cell.hidden_from,
        "O": "targets" if targets is not None else "U",
    }
    for dim in "DHO":
        if dims[dim] < 1:
            raise ValueError(f"{source[dim]} gives {dim} = {dims[dim]}; expected {dim} >= 1")
    for name, arr in arrays.items():
        expected = shape_of(shapes[name], dims)
        if arr.shape != expected:
            named = ", ".join(shapes[name])
            origin = ", ".join(sorted({f"{e[-1]} from {source[e[-1]]}" for e in shapes[name]}))
            raise ValueError(
                f"{name} has shape {arr.shape}; expected ({named}) = {expected} ({origin}){of_cell}"
                f"{_batch_major_note(arrays) if name in ('h0', 'xs', 'targets') else ''}"
            )
    for name, arr in arrays.items():
        _check_finite(name, arr)
    if targets is not None:
        _check_target_domain(loss, arrays["targets"])
    xs_arr = arrays.pop("xs")
    targets_arr = arrays.pop("targets", None)
    return arrays, xs_arr, targets_arr


def _batch_major_note(arrays: Mapping[str, NDArray[np.floating]]) -> str:
    """A note that xs (and targets) may be batch-major, when the shapes say so, else ``""``.

    Batch-major xs (B, T, D) is read as T = B and B = T, and the first array to disagree
    is then h0 (B, H). xs looks batch-major when swapping its first two dims makes h0 fit
    and the targets, if given, fit that swap too. Targets that fit xs as it is may be
    batch-major as well, or h0 may be plainly wrong: the shapes cannot tell, so the note
    says "if".
    """
    xs, h0 = arrays["xs"], arrays["h0"]
    first, second = xs.shape[:2]
    if first == second or h0.shape[0] != first:
        return ""
    targets = arrays.get("targets")
    if targets is None or targets.shape[:2] == (second, first):
        D = xs.shape[2]
        return (
            f"; xs looks batch-major, (B, T, D) = {xs.shape} with B = {first} as in h0: "
            f"bptt_ref takes time-major xs (T, B, D) = ({second}, {first}, {D}), "
            "e.g. xs.transpose(1, 0, 2)"
        )
    if targets.shape[:2] == (first, second):
        return (
            f"; if xs and targets are batch-major, (B, T, ...) with B = {first} as in h0, "
            "pass them time-major (T, B, ...): xs.transpose(1, 0, 2), targets.transpose(1, 0, 2)"
        )
    return ""


def _check_target_domain(loss: str | None, targets: NDArray[np.floating]) -> None:
    if loss == "binary_cross_entropy" and ((targets < 0).any() or (targets > 1).any()):
        raise ValueError(
            "targets has values outside [0, 1]; expected 0 <= y <= 1 for binary_cross_entropy"
        )
    if loss == "cross_entropy":
        # Rows are probability distributions up to the rounding of their own dtype.
        slack = np.sqrt(np.finfo(targets.dtype).eps) * targets.shape[-1]
        if (targets < 0).any() or (np.abs(targets.sum(axis=-1) - 1) > slack).any():
            raise ValueError(
                "targets has rows that are not probability distributions; expected "
                f"non-negative rows (over O) that sum to 1 within {slack:.1e} for cross_entropy"
            )
