"""Golden vectors: reference cases with their loss and gradients, loadable from any language.

A set is a directory with one ``<name>.npz`` per case and a ``manifest.json``. Each
``.npz`` holds, for ``<dt>`` in ``float64`` and ``float32``:

- ``<dt>.U`` (O, H), ``<dt>.V`` (H, D), ``<dt>.W`` (H, H), ``<dt>.b_h`` (H,),
  ``<dt>.b_y`` (O,), ``<dt>.h0`` (B, H), ``<dt>.xs`` (T, B, D), ``<dt>.targets``
  (T, B, O): the inputs, in ``<dt>`` (the float32 ones are the float64 ones rounded);
- ``<dt>.loss`` (a 0-d float64) and ``<dt>.grad.<key>`` for every key ``U, V, W, b_h,
  b_y, h0, xs``, float64: the JAX oracle's loss and gradients *of those very inputs*,
  each verified when written against ``bptt_ref.loss_and_grad`` in ``<dt>`` by the
  tolerance model of :mod:`bptt_ref.compare`.

The manifest lists each case's configuration, dims, shapes, sha256, and per dtype and
key the absolute tolerance ``atol``: a result ``a`` of dtype ``<dt>`` is right when
``max_i |a[i] - grad[i]| <= atol``, the bound ``bptt_ref.compare`` applies to that case.
Only :func:`load` is needed to read a set, and it needs NumPy alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bptt_ref._validate import GRAD_NAMES, PARAM_NAMES

__all__ = ["FORMAT_VERSION", "MANIFEST", "GoldenArrays", "GoldenCase", "load", "write"]

FORMAT_VERSION = 1
"""Bumped whenever the layout of the ``.npz`` files or the manifest changes."""
MANIFEST = "manifest.json"
DTYPES = ("float64", "float32")

_BASE = {"T": 5, "B": 3, "D": 4, "H": 6, "O": 3}
_LONG = {"T": 64, "B": 2, "D": 3, "H": 5, "O": 2}


@dataclass(frozen=True)
class GoldenArrays:
    """One case in one dtype.

    Attributes:
        params: ``U`` (O, H), ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``b_y`` (O,),
            ``h0`` (B, H), in the dtype.
        xs: (T, B, D) and targets: (T, B, O), in the dtype.
        loss: the reference loss L (float64).
        grads: the reference gradient of L for every key (float64), shaped like its input.
        atol: per key, the largest ``max |a - grad|`` a right result in this dtype may have.
    """

    params: dict[str, NDArray[np.floating]]
    xs: NDArray[np.floating]
    targets: NDArray[np.floating]
    loss: float
    grads: dict[str, NDArray[np.float64]]
    atol: dict[str, float]


@dataclass(frozen=True)
class GoldenCase:
    """One golden case: its labels and its arrays per dtype name (``"float64"``, ``"float32"``)."""

    name: str
    hidden: str
    output: str
    loss: str
    regime: str
    style: str
    dims: dict[str, int]
    arrays: dict[str, GoldenArrays]

    @property
    def config(self) -> dict[str, str]:
        """``hidden``, ``output`` and ``loss`` as keyword arguments of ``loss_and_grad``."""
        return {"hidden": self.hidden, "output": self.output, "loss": self.loss}


def _specs() -> list[dict[str, Any]]:
    """The cases of a set: every configuration, T = 1, long T, every regime, edge inputs."""
    from bptt_ref import HIDDEN_ACTIVATIONS, VALID_HEADS

    specs: list[dict[str, Any]] = []

    def add(
        hidden: str, head: tuple[str, str], dims: dict[str, int], regime: str, style: str
    ) -> None:
        specs.append(
            {
                "hidden": hidden,
                "output": head[0],
                "loss": head[1],
                "dims": dims,
                "regime": regime,
                "style": style,
            }
        )

    for hidden in HIDDEN_ACTIVATIONS:
        for head in VALID_HEADS:
            add(hidden, head, _BASE, "near_critical", "normal")
    for head in VALID_HEADS:
        add("tanh", head, {**_BASE, "T": 1}, "near_critical", "normal")
    for regime in ("contracting", "near_critical", "expanding"):
        add("tanh", ("identity", "mse"), _LONG, regime, "normal")
        add("relu", ("identity", "mse"), _BASE, regime, "normal")
    for style in ("zeros", "kink", "large"):
        for hidden in ("tanh", "relu", "leaky_relu", "elu"):
            add(hidden, ("identity", "mse"), _BASE, "near_critical", style)
    add("tanh", ("softmax", "cross_entropy"), _BASE, "near_critical", "zeros")
    add("tanh", ("sigmoid", "binary_cross_entropy"), _BASE, "near_critical", "zeros")
    add("tanh", ("softmax", "cross_entropy"), _BASE, "expanding", "large")
    return specs


def _name(index: int, spec: dict[str, Any]) -> str:
    return (
        f"{index:03d}-{spec['hidden']}-{spec['output']}-{spec['loss']}-T{spec['dims']['T']}-"
        f"{spec['regime']}-{spec['style']}"
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(
    out: str | Path, *, seed: int = 0, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Write the golden set to directory ``out`` and return its manifest.

    Every gradient is computed by the JAX oracle (:mod:`bptt_ref.jax_reference`) and
    verified against ``bptt_ref.loss_and_grad`` in each dtype before anything is
    written; the manifest goes last, so an interrupted run leaves no valid set.
    ``progress(done, total)`` is called before the first case and after each one.

    Raises:
        RuntimeError: the NumPy gradient and the oracle disagree on some case (a bug
            in this package: please report it with the message).
    """
    import bptt_ref
    from bptt_ref import jax_reference
    from bptt_ref.compare import compare_gradients, scale_and_bound, tolerance_for
    from bptt_ref.strategies import make_case

    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    specs = _specs()
    if progress is not None:
        progress(0, len(specs))
    for index, spec in enumerate(specs):
        name = _name(index, spec)
        arrays: dict[str, Any] = {}
        tolerances: dict[str, Any] = {}
        for dtype in DTYPES:
            case = make_case(**spec, dtype=np.dtype(dtype), seed=seed + index)
            ref = jax_reference.reference(
                case.params,
                case.xs,
                case.targets,
                hidden=case.hidden,
                output=case.output,
                loss=case.loss,
            )
            _, grads = bptt_ref.loss_and_grad(case.params, case.xs, case.targets, **case.config)
            failed = [v for v in compare_gradients(grads, ref) if not v.ok]
            if failed:
                details = "; ".join(str(v) for v in failed)
                raise RuntimeError(f"{name} ({dtype}): NumPy and the oracle disagree: {details}")
            inputs = {**case.params, "xs": case.xs, "targets": case.targets}
            arrays.update({f"{dtype}.{k}": v for k, v in inputs.items()})
            arrays[f"{dtype}.loss"] = np.float64(ref.loss)
            arrays.update({f"{dtype}.grad.{k}": g for k, g in ref.grads.items()})
            atol = {}
            for k in GRAD_NAMES:
                scale, bound = scale_and_bound(ref, k)
                atol[k] = bound * scale
            tolerances[dtype] = {"rtol": tolerance_for(dtype), "loss": ref.loss, "atol": atol}
        path = directory / f"{name}.npz"
        np.savez(path, **arrays)
        entries.append(
            {
                "name": name,
                "file": path.name,
                "sha256": _sha256(path),
                **{k: spec[k] for k in ("hidden", "output", "loss", "regime", "style")},
                "seed": seed + index,
                "dims": spec["dims"],
                "shapes": {k: list(v.shape) for k, v in inputs.items()},
                "dtypes": tolerances,
            }
        )
        if progress is not None:
            progress(index + 1, len(specs))
    manifest = {
        "format": "bptt-ref golden vectors",
        "format_version": FORMAT_VERSION,
        "bptt_ref_version": bptt_ref.__version__,
        "model": (
            "a_t = x_t V^T + h_{t-1} W^T + b_h, h_t = f_h(a_t), z_t = h_t U^T + b_y, "
            "y_hat_t = f_y(z_t), L = sum_t sum_b loss(y_hat_{t,b}, targets_{t,b}) (a sum, no "
            "mean); mse is 0.5 sum_o (y_hat_o - y_o)^2. Shapes: xs (T,B,D), targets (T,B,O), "
            "U (O,H), V (H,D), W (H,H), b_h (H,), b_y (O,), h0 (B,H)."
        ),
        "arrays": (
            "<dt>.<name> for the inputs in dtype <dt> (float64 or float32; the float32 inputs "
            "are the float64 ones rounded); <dt>.loss and <dt>.grad.<key> (float64) are the "
            "loss and gradients of exactly the <dt> inputs"
        ),
        "gradients": (
            "reverse-mode autodiff of the JAX oracle (bptt_ref.jax_reference) in float64, each "
            "verified when written against bptt_ref.loss_and_grad run in <dt>, by the "
            "tolerance model of bptt_ref.compare"
        ),
        "tolerance": (
            "a gradient a computed in dtype <dt> is right when max_i |a[i] - grad[i]| <= "
            "dtypes[<dt>].atol[key]; atol = bound * scale of bptt_ref.compare for this case: "
            "rtol * scale plus 8 times the rounding noise of a textbook implementation in <dt>"
        ),
        "cases": entries,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def load(directory: str | Path) -> list[GoldenCase]:
    """Read a golden set written by :func:`write`, verifying every file's sha256.

    Raises:
        FileNotFoundError: no manifest, or a file it lists is missing.
        ValueError: an unknown format version, or a file whose sha256 differs from the
            manifest's (the file was changed after it was written).
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST} in {directory}; expected a set written by `bptt-ref vectors --out`"
        )
    manifest = json.loads(manifest_path.read_text())
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{manifest_path} has format_version {version!r}; this bptt-ref reads "
            f"{FORMAT_VERSION}: regenerate the set or use a matching bptt-ref"
        )
    cases = []
    for entry in manifest["cases"]:
        path = directory / entry["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in {MANIFEST} but missing")
        digest = _sha256(path)
        if digest != entry["sha256"]:
            raise ValueError(
                f"{path} has sha256 {digest}, but {MANIFEST} says {entry['sha256']}: the file "
                "was changed after it was written; regenerate or re-download the set"
            )
        with np.load(path) as data:
            arrays = {
                dt: GoldenArrays(
                    params={k: data[f"{dt}.{k}"] for k in PARAM_NAMES},
                    xs=data[f"{dt}.xs"],
                    targets=data[f"{dt}.targets"],
                    loss=float(data[f"{dt}.loss"]),
                    grads={k: data[f"{dt}.grad.{k}"] for k in GRAD_NAMES},
                    atol={k: float(v) for k, v in entry["dtypes"][dt]["atol"].items()},
                )
                for dt in DTYPES
            }
        cases.append(
            GoldenCase(
                name=entry["name"],
                hidden=entry["hidden"],
                output=entry["output"],
                loss=entry["loss"],
                regime=entry["regime"],
                style=entry["style"],
                dims=dict(entry["dims"]),
                arrays=arrays,
            )
        )
    return cases
