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

PARAM_NAMES: tuple[str, ...] = ("U", "V", "W", "b_h", "b_y", "h0")
"""The parameter names, as in the seed note (plus the initial state ``h0``)."""

GRAD_NAMES: tuple[str, ...] = (*PARAM_NAMES, "xs")
"""The keys of the gradient dictionary: every parameter and the inputs."""

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_SHAPES: dict[str, tuple[str, ...]] = {
    "U": ("O", "H"),
    "V": ("H", "D"),
    "W": ("H", "H"),
    "b_h": ("H",),
    "b_y": ("O",),
    "h0": ("B", "H"),
    "xs": ("T", "B", "D"),
    "targets": ("T", "B", "O"),
}


def check_names(hidden: str, output: str, loss: str | None = None) -> None:
    """Raise ``ValueError`` listing the valid choices for an unknown or invalid name."""
    for kind, name, valid in (("hidden", hidden, HIDDEN), ("output", output, OUTPUT)):
        if name not in valid:
            raise ValueError(f"unknown {kind} activation {name!r}; expected one of {sorted(valid)}")
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
) -> tuple[dict[str, NDArray[np.floating]], NDArray[np.floating], NDArray[np.floating] | None]:
    """Validate and return ``(params, xs, targets)`` as C-contiguous NumPy arrays.

    Arrays already C-contiguous are returned as they are (never written to); others
    are copied.

    Dims are read off ``xs`` (T, B, D), ``W`` (H, H) and ``targets`` (T, B, O), or
    ``U`` (O, H) when there are no targets; every other shape must agree with them.
    T = 0 and B = 0 are allowed; D, H and O must be at least 1.
    """
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params must be a mapping with keys {', '.join(PARAM_NAMES)}; "
            f"got {type(params).__name__}"
        )
    missing = [k for k in PARAM_NAMES if k not in params]
    extra = sorted(str(k) for k in params if k not in PARAM_NAMES)
    if missing or extra:
        found = " and ".join(
            f"{what} keys {keys}"
            for what, keys in (("missing", missing), ("unexpected", extra))
            if keys
        )
        raise ValueError(f"params has {found}; expected exactly {', '.join(PARAM_NAMES)}")
    arrays = {k: _as_float_array(k, params[k]) for k in PARAM_NAMES}
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
        if arr.ndim != len(_SHAPES[name]):
            raise ValueError(
                f"{name} has shape {arr.shape}; expected {len(_SHAPES[name])} "
                f"{'dim' if len(_SHAPES[name]) == 1 else 'dims'} "
                f"({', '.join(_SHAPES[name])})"
            )

    dims = dict(zip("TBD", arrays["xs"].shape, strict=True))
    dims["H"] = arrays["W"].shape[0]
    dims["O"] = arrays["targets"].shape[-1] if targets is not None else arrays["U"].shape[0]
    source = {
        "T": "xs",
        "B": "xs",
        "D": "xs",
        "H": "W",
        "O": "targets" if targets is not None else "U",
    }
    for dim in "DHO":
        if dims[dim] < 1:
            raise ValueError(f"{source[dim]} gives {dim} = {dims[dim]}; expected {dim} >= 1")
    for name, arr in arrays.items():
        expected = tuple(dims[d] for d in _SHAPES[name])
        if arr.shape != expected:
            names = ", ".join(_SHAPES[name])
            origin = ", ".join(sorted({f"{d} from {source[d]}" for d in _SHAPES[name]}))
            raise ValueError(
                f"{name} has shape {arr.shape}; expected ({names}) = {expected} ({origin})"
            )
    for name, arr in arrays.items():
        _check_finite(name, arr)
    if targets is not None:
        _check_target_domain(loss, arrays["targets"])
    xs_arr = arrays.pop("xs")
    targets_arr = arrays.pop("targets", None)
    return arrays, xs_arr, targets_arr


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
