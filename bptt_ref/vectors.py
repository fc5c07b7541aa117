"""Golden vectors: reference cases with their loss and gradients, loadable from any language.

A set is a directory with one ``<name>.npz`` per case and a ``manifest.json`` (UTF-8).
A case's name is ``<index>-<cell>-<hidden>-<output>-<loss>-T<T>-<regime>-<style>``,
e.g. ``081-lstm-tanh-identity-mse-T5-near_critical-normal``; ``<index>`` (three digits)
orders the set and is unique. A stacked or bidirectional network (:mod:`bptt_ref.stack`)
adds ``-L<num_layers>`` and ``-bidirectional`` where it is, e.g.
``149-gru-tanh-identity-mse-T5-near_critical-normal-L2-bidirectional``. Each ``.npz``
holds, for ``<dt>`` in ``float64`` and ``float32``:

- ``<dt>.<key>`` for every parameter of the case's cell, then ``<dt>.xs`` (T, B, D) and
  ``<dt>.targets`` (T, B, O): the inputs, in ``<dt>`` (the float32 ones are the float64
  ones rounded). The parameters are the cell's and the shared head's ``U`` (O, H) and
  ``b_y`` (O,):

  - ``rnn``: ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``h0`` (B, H);
  - ``lstm``: ``W_ih`` (4H, D), ``W_hh`` (4H, H), ``b_ih`` (4H,), ``b_hh`` (4H,),
    ``h0`` (B, H), ``c0`` (B, H), gates stacked i, f, g, o;
  - ``gru`` and ``gru_reset_before``: ``W_ih`` (3H, D), ``W_hh`` (3H, H), ``b_ih`` (3H,),
    ``b_hh`` (3H,), ``h0`` (B, H), gates stacked r, z, n, the reset applied after
    (``gru``: PyTorch, cuDNN, ONNX ``linear_before_reset=1``) or before
    (``gru_reset_before``: Cho et al. 2014, ONNX's default) the recurrent product;

  weights are used as ``x_t W_ihᵀ`` and ``h_{t−1} W_hhᵀ`` (PyTorch's orientation), and
  gate k of hidden unit j is row ``k·H + j`` of ``W_ih``, ``W_hh``, ``b_ih`` and ``b_hh``;
  a stacked network has each of these per layer k and direction, named ``<key>_l<k>``
  and ``<key>_l<k>_reverse`` (PyTorch's ``weight_ih_l0_reverse`` is ``W_ih_l0_reverse``),
  layer k > 0 reading dirs·H inputs, ``U`` (O, dirs·H), and ``h0`` (``c0``)
  (L·dirs, B, H) with row ``k·dirs + d`` for layer k, direction d;
- ``<dt>.loss`` (a 0-d float64) and ``<dt>.grad.<key>`` for every parameter and ``xs``,
  float64: the JAX oracle's loss and gradients *of those very inputs*, each verified
  when written against ``bptt_ref.loss_and_grad(..., cell=)`` in ``<dt>`` by the
  tolerance model of :mod:`bptt_ref.compare`.

The manifest lists each case's cell, ``num_layers`` and ``bidirectional``, its ``layout``
(equations, gate order, reset placement, weight orientation, every array in named dims),
configuration, dims, concrete shapes (the parameters first, in the order above), sha256,
and per dtype and key the
absolute tolerance ``atol``: a result ``a`` of dtype ``<dt>`` is right when
``max_i |a[i] - grad[i]| <= atol``, the bound ``bptt_ref.compare`` applies to that case.
Only :func:`load` is needed to read a set, and it needs NumPy alone.

A set written with a framework layout (``bptt-ref vectors --layout torch``, :mod:`bptt_ref.layouts`)
holds the same cases with every array under that framework's names, shapes and batch
axis (``<dt>.weight_ih_l0``, ``<dt>.grad.weight_ih_l0``; Flax's tree as ``/`` paths, e.g.
``<dt>.cell/hi/kernel``), only for the cells and networks the layout expresses (the
set's 2-layer bidirectional networks only in ``torch``, as ``nn.LSTM``'s whole
``state_dict``, :meth:`bptt_ref.layouts.Layout.stacked`). Its manifest says so
at the top (``"layout": "torch"``) and in each case's ``layout.framework`` (the name, the
framework's class and options, its gate order in its own letters, every array in named
dims). Each gradient is the oracle's converted exactly as :mod:`bptt_ref.layouts` does;
the ``atol`` of an array gathered from several canonical ones (ONNX's ``B``, Keras' (2,
3H) ``bias``) is the smallest of theirs. :func:`load` reads either kind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bptt_ref import stack
from bptt_ref.cells import CELLS, DATA, Cell

__all__ = ["FORMAT_VERSION", "MANIFEST", "GoldenArrays", "GoldenCase", "layout", "load", "write"]

FORMAT_VERSION = 3
"""Bumped whenever the layout of the ``.npz`` files or the manifest changes (2: every cell;
3: stacked and bidirectional networks, ``num_layers`` and ``bidirectional`` per case)."""
MANIFEST = "manifest.json"
DTYPES = ("float64", "float32")

_BASE = {"T": 5, "B": 3, "D": 4, "H": 6, "O": 3}
_LONG = {"T": 64, "B": 2, "D": 3, "H": 5, "O": 2}

# Where the GRU's reset goes, in the words of the frameworks that choose each placement
# (the cells' equations say it in the model's own notation).
_RESET = {
    "gru": (
        "after the recurrent product: n = tanh(x_t W_in^T + b_in + r * (h_{t-1} W_hn^T + "
        "b_hn)) (PyTorch nn.GRU, cuDNN, ONNX linear_before_reset=1, Keras reset_after=True)"
    ),
    "gru_reset_before": (
        "before the recurrent product: n = tanh(x_t W_in^T + b_in + (r * h_{t-1}) W_hn^T + "
        "b_hn) (Cho et al. 2014, ONNX linear_before_reset=0, Keras reset_after=False)"
    ),
}


@dataclass(frozen=True)
class GoldenArrays:
    """One case in one dtype.

    Attributes:
        params: the cell's parameters and the head's (rnn: ``U`` (O, H), ``V`` (H, D),
            ``W`` (H, H), ``b_h`` (H,), ``b_y`` (O,), ``h0`` (B, H); the gated cells: see
            the module docstring), in the dtype, in the manifest's order.
        xs: (T, B, D) and targets: (T, B, O), in the dtype.
        loss: the reference loss L (float64).
        grads: the reference gradient of L for every parameter and ``xs`` (float64),
            shaped like its input.
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
    """One golden case: its labels, its cell's layout and its arrays per dtype name.

    ``arrays`` is keyed by ``"float64"`` and ``"float32"``; ``layout`` is the manifest's
    (:func:`layout`).
    """

    name: str
    cell: str
    hidden: str
    output: str
    loss: str
    regime: str
    style: str
    dims: dict[str, int]
    layout: dict[str, Any]
    arrays: dict[str, GoldenArrays]
    num_layers: int = 1
    bidirectional: bool = False

    @property
    def config(self) -> dict[str, str]:
        """``cell``, ``hidden``, ``output`` and ``loss`` as keyword arguments of
        ``bptt_ref.loss_and_grad``."""
        return {"cell": self.cell, "hidden": self.hidden, "output": self.output, "loss": self.loss}


def layout(cell: Cell, num_layers: int = 1, bidirectional: bool = False) -> dict[str, Any]:
    """How ``cell``'s arrays are laid out, as the manifest states it for each case.

    Keys: ``equations`` (the recurrence), ``gates`` (the order of the gate blocks along
    the first axis, e.g. ``"i,f,g,o"``; empty for the rnn), ``reset`` (the GRUs only:
    where the reset gate goes), ``weights`` (shapes and orientation of the two products)
    and ``named_shapes`` (every array in named dims, e.g. ``["4H", "D"]``; a stacked
    network's, :func:`bptt_ref.stack.names`, with ``"L·dirs"`` the initial states' rows),
    and for a stacked network ``stack`` (how its layers and directions connect).
    """
    w_ih, w_hh, b_ih, b_hh = cell.roles
    rows = "H" if cell.gates == 1 else f"{cell.gates}H"
    biases = " and ".join(f"{b} ({rows},)" for b in (b_ih, b_hh) if b is not None)
    weights = (
        f"{w_ih} ({rows}, D) used as x_t {w_ih}^T, {w_hh} ({rows}, H) used as "
        f"h_{{t-1}} {w_hh}^T, biases {biases}"
    )
    if cell.gates > 1:
        weights += (
            f"; gate k (0-based, in the order of gates) of hidden unit j is row k*H + j "
            f"of {w_ih}, {w_hh}, {b_ih} and {b_hh}"
        )
    out: dict[str, Any] = {"equations": cell.equations, "gates": ",".join(cell.gate_names)}
    if cell.name in _RESET:
        out["reset"] = _RESET[cell.name]
    out["weights"] = weights
    config = stack.configure(cell, num_layers, bidirectional)
    out["named_shapes"] = {k: list(v) for k, v in config.shapes().items()}
    if not config.single:
        out["stack"] = _STACK
    return out


_STACK = (
    "PyTorch's nn.RNN/LSTM/GRU with num_layers and bidirectional, no dropout: layer k "
    "direction d runs the cell with its own <key>_l<k> (d = 0) or <key>_l<k>_reverse (d = 1) "
    "from row k*dirs + d of h0 (and c0); the reverse direction runs t = T-1 ... 0, its state "
    "after step t is its output at t (its final state at output step 0); layer k > 0 reads "
    "the concatenation [forward output, reverse output] (B, dirs*H) at each step, and the "
    "head reads the top layer's"
)


def _stack_specs() -> list[dict[str, Any]]:
    """The stacked networks' cases, after every single cell's: for each cell two
    bidirectional layers (every path of the stack: the second layer reads both directions
    of the first), tanh/identity/mse at T = 5. Each network compiles the oracle anew, so
    they are few."""
    return [
        {
            **_spec(cell, "tanh", ("identity", "mse"), _BASE, "near_critical", "normal"),
            "num_layers": 2,
            "bidirectional": True,
        }
        for cell in CELLS
    ]


def _rnn_specs() -> list[dict[str, Any]]:
    """The rnn's cases, as format 1 had them: every configuration, T = 1, long T, every
    regime, edge inputs (zeros, kinks, large)."""
    from bptt_ref import HIDDEN_ACTIVATIONS, VALID_HEADS

    specs: list[dict[str, Any]] = []

    def add(
        hidden: str, head: tuple[str, str], dims: dict[str, int], regime: str, style: str
    ) -> None:
        specs.append(_spec("rnn", hidden, head, dims, regime, style))

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


def _gated_specs(cell: str) -> list[dict[str, Any]]:
    """A gated cell's cases: every head at T = 5 and at T = 1, T = 64 in every regime, the
    other regimes under a nonlinear head, zeros (in xs, every initial state and the
    targets) under each loss, and large inputs (saturated gates)."""
    from bptt_ref import VALID_HEADS

    mse, ce = ("identity", "mse"), ("softmax", "cross_entropy")
    bce = ("sigmoid", "binary_cross_entropy")
    grid: list[tuple[tuple[str, str], dict[str, int], str, str]] = [
        *((head, _BASE, "near_critical", "normal") for head in VALID_HEADS),
        *((head, {**_BASE, "T": 1}, "near_critical", "normal") for head in VALID_HEADS),
        *(
            (mse, _LONG, regime, "normal")
            for regime in ("contracting", "near_critical", "expanding")
        ),
        *((ce, _BASE, regime, "normal") for regime in ("contracting", "expanding")),
        *((head, _BASE, "near_critical", "zeros") for head in (mse, ce, bce)),
        (mse, _BASE, "near_critical", "large"),
        (ce, _BASE, "expanding", "large"),
    ]
    return [_spec(cell, "tanh", *entry) for entry in grid]


def _spec(
    cell: str, hidden: str, head: tuple[str, str], dims: dict[str, int], regime: str, style: str
) -> dict[str, Any]:
    output, loss = head
    return {
        "cell": cell,
        "hidden": hidden,
        "output": output,
        "loss": loss,
        "dims": dims,
        "regime": regime,
        "style": style,
    }


def _specs() -> list[dict[str, Any]]:
    """Every case of a set, in order: the rnn's (format 1's 81, with their seeds), then
    each gated cell's."""
    single = [
        spec for name in CELLS for spec in (_rnn_specs() if name == "rnn" else _gated_specs(name))
    ]
    return [*single, *_stack_specs()]


def _name(index: int, spec: dict[str, Any]) -> str:
    layers = spec.get("num_layers", 1)
    network = (f"-L{layers}" if layers > 1 else "") + (
        "-bidirectional" if spec.get("bidirectional") else ""
    )
    return (
        f"{index:03d}-{spec['cell']}-{spec['hidden']}-{spec['output']}-{spec['loss']}-"
        f"T{spec['dims']['T']}-{spec['regime']}-{spec['style']}{network}"
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(
    out: str | Path,
    *,
    seed: int = 0,
    cells: Iterable[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    in_layout: str | None = None,
) -> dict[str, Any]:
    """Write the golden set to directory ``out`` and return its manifest.

    Every gradient is computed by the JAX oracle (:mod:`bptt_ref.jax_reference`) and
    verified against ``bptt_ref.loss_and_grad(..., cell=)`` in each dtype before
    anything is written; the manifest goes last, so an interrupted run leaves no valid
    set. ``cells`` (default: every cell) keeps only those cells' cases, each with the
    name and seed it has in the whole set. ``progress(done, total)`` is called before
    the first case and after each one. ``in_layout`` (a name of
    :data:`bptt_ref.layouts.LAYOUTS`) writes every array in that framework's layout and
    keeps the cells it expresses (module docstring); the gradients are verified in the
    canonical layout before they are converted.

    Raises:
        ValueError: an unknown cell in ``cells``, an unknown layout, or a cell in
            ``cells`` that the layout cannot express.
        RuntimeError: the NumPy gradient and the oracle disagree on some case (a bug
            in this package: please report it with the message).
    """
    import bptt_ref
    from bptt_ref import jax_reference
    from bptt_ref.cases import make_case
    from bptt_ref.compare import compare_gradients, scale_and_bound, tolerance_for
    from bptt_ref.oracle import stack as stack_oracle

    wanted = list(CELLS) if cells is None else list(cells)
    unknown = sorted(set(wanted) - set(CELLS))
    if unknown:
        raise ValueError(f"unknown cells {unknown}; expected some of {list(CELLS)}")
    framework = None
    if in_layout is not None:
        from bptt_ref.layouts import layout_named

        framework = layout_named(in_layout)
        if cells is None:
            wanted = [c for c in wanted if c in framework.cells]
        for c in wanted:
            framework.of(c)
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    # A stacked case is written only in a layout that names it (torch's state_dict).
    specs = [
        (i, spec)
        for i, spec in enumerate(_specs())
        if spec["cell"] in wanted
        and (
            framework is None
            or framework.expresses(spec.get("num_layers", 1), spec.get("bidirectional", False))
        )
    ]
    if progress is not None:
        progress(0, len(specs))
    for done, (index, spec) in enumerate(specs, start=1):
        name = _name(index, spec)
        cell = CELLS[spec["cell"]]
        network = (spec.get("num_layers", 1), spec.get("bidirectional", False))
        own = None if framework is None else framework.stacked(*network)
        arrays: dict[str, Any] = {}
        tolerances: dict[str, Any] = {}
        for dtype in DTYPES:
            case = make_case(**spec, dtype=np.dtype(dtype), seed=seed + index)
            given = (case.params, case.xs, case.targets)
            if case.stacked:
                ref = stack_oracle.reference(*given, cell=case.cell, **case.network, **case.config)
                _, grads = stack.loss_and_grad(
                    *given, cell=case.cell, **case.network, **case.config
                )
            else:
                ref = jax_reference.reference(*given, cell=case.cell, **case.config)
                _, grads = bptt_ref.loss_and_grad(*given, cell=case.cell, **case.config)
            grad_names = (*stack.names(case.cell, **case.network), "xs")
            failed = [v for v in compare_gradients(grads, ref) if not v.ok]
            if failed:
                details = "; ".join(str(v) for v in failed)
                raise RuntimeError(f"{name} ({dtype}): NumPy and the oracle disagree: {details}")
            inputs = {**case.params, "xs": case.xs, "targets": case.targets}
            grads = {k: ref.grads[k] for k in grad_names}
            atol = {}
            for k in grad_names:
                scale, bound = scale_and_bound(ref, k)
                atol[k] = bound * scale
            if own is not None:
                inputs, grads, atol = _in_layout(own, cell.name, inputs, grads, atol)
            arrays.update({f"{dtype}.{k}": v for k, v in inputs.items()})
            arrays[f"{dtype}.loss"] = np.float64(ref.loss)
            arrays.update({f"{dtype}.grad.{k}": v for k, v in grads.items()})
            tolerances[dtype] = {"rtol": tolerance_for(dtype), "loss": ref.loss, "atol": atol}
        path = directory / f"{name}.npz"
        np.savez(path, **arrays)
        entries.append(
            {
                "name": name,
                "file": path.name,
                "sha256": _sha256(path),
                **{k: spec[k] for k in ("cell", "hidden", "output", "loss", "regime", "style")},
                "num_layers": spec.get("num_layers", 1),
                "bidirectional": spec.get("bidirectional", False),
                "seed": seed + index,
                "dims": spec["dims"],
                "layout": layout(cell, *network)
                if own is None
                else {**layout(cell, *network), "framework": _framework(own, cell.name)},
                "shapes": {k: list(v.shape) for k, v in inputs.items()},
                "dtypes": tolerances,
            }
        )
        if progress is not None:
            progress(done, len(specs))
    manifest = {
        "format": "bptt-ref golden vectors",
        "format_version": FORMAT_VERSION,
        "bptt_ref_version": bptt_ref.__version__,
        **({} if framework is None else {"layout": framework.name}),
        "model": (
            "the case's cell (layout.equations) maps x_t and h_{t-1} (and c_{t-1}) to h_t from "
            "h0 (and c0), t = 0 ... T-1; then z_t = h_t U^T + b_y, y_hat_t = f_y(z_t), "
            "L = sum_t sum_b loss(y_hat_{t,b}, targets_{t,b}) (a sum, no mean); mse is "
            "0.5 sum_o (y_hat_o - y_o)^2. Row vectors, time-major: xs (T,B,D), targets "
            "(T,B,O), U (O,H), b_y (O,); the cell's arrays in layout.named_shapes. hidden is "
            "the rnn's f_h; the gated cells' nonlinearities are fixed (hidden is tanh). A case "
            "with num_layers > 1 or bidirectional true is a stacked network (layout.stack), "
            "whose head reads the top layer's output: U (O, dirs*H)"
        ),
        "arrays": (
            "<dt>.<name> for the inputs in dtype <dt> (float64 or float32; the float32 inputs "
            "are the float64 ones rounded), named as in shapes; <dt>.loss and <dt>.grad.<key> "
            "(float64) are the loss and gradients of exactly the <dt> inputs, for every key "
            "of dtypes[<dt>].atol"
        ),
        "gradients": (
            "reverse-mode autodiff of the JAX oracle (bptt_ref.jax_reference) in float64, each "
            "verified when written against bptt_ref.loss_and_grad(..., cell=) run in <dt>, by "
            "the tolerance model of bptt_ref.compare"
        ),
        "tolerance": (
            "a gradient a computed in dtype <dt> is right when max_i |a[i] - grad[i]| <= "
            "dtypes[<dt>].atol[key]; atol = bound * scale of bptt_ref.compare for this case: "
            "rtol * scale plus 8 times the rounding noise of a textbook implementation in <dt>"
        ),
        "cases": entries,
    }
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    (directory / MANIFEST).write_text(text, encoding="utf-8")
    return manifest


def _in_layout(
    framework: Any,
    cell: str,
    inputs: dict[str, Any],
    grads: dict[str, Any],
    atol: dict[str, float],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """A case's inputs, gradients and tolerances in ``framework``'s layout (module docstring)."""
    params = {k: v for k, v in inputs.items() if k not in DATA}
    data = {k: framework.data(cell, inputs[k]) for k in DATA}
    spread = {k: np.full(np.shape(grads[k]), v) for k, v in atol.items()}
    tolerances = framework.grads_to_layout(cell, spread)
    return (
        {**framework.to_layout(cell, params), **data},
        framework.grads_to_layout(cell, grads),
        {k: float(np.min(v, initial=np.inf)) for k, v in tolerances.items()},
    )


def _framework(framework: Any, cell: str) -> dict[str, Any]:
    """The ``layout.framework`` entry of a case written in a framework's layout."""
    own = framework.of(cell)
    return {
        "name": framework.name,
        "convention": own.convention,
        "gates": ",".join(own.gates),
        "named_shapes": {e.name: list(e.shape) for e in own.entries},
    }


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
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
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
        # The manifest names every array, so reading needs no knowledge of the cells.
        param_names = [k for k in entry["shapes"] if k not in DATA]
        with np.load(path) as data:
            arrays = {
                dt: GoldenArrays(
                    params={k: data[f"{dt}.{k}"] for k in param_names},
                    xs=data[f"{dt}.xs"],
                    targets=data[f"{dt}.targets"],
                    loss=float(data[f"{dt}.loss"]),
                    grads={k: data[f"{dt}.grad.{k}"] for k in entry["dtypes"][dt]["atol"]},
                    atol={k: float(v) for k, v in entry["dtypes"][dt]["atol"].items()},
                )
                for dt in DTYPES
            }
        cases.append(
            GoldenCase(
                name=entry["name"],
                cell=entry["cell"],
                hidden=entry["hidden"],
                output=entry["output"],
                loss=entry["loss"],
                regime=entry["regime"],
                style=entry["style"],
                dims=dict(entry["dims"]),
                layout=dict(entry["layout"]),
                arrays=arrays,
                num_layers=int(entry["num_layers"]),
                bidirectional=bool(entry["bidirectional"]),
            )
        )
    return cases
