"""Gradient test cases for every cell, built by NumPy from a few labels (NumPy only).

A :class:`Case` is the arrays of one problem plus the labels that made them: cell, shape,
configuration, dtype, weight regime, input style and an RNG seed. :func:`make_case`
builds the arrays deterministically from the labels, so a case is reproduced from its
``repr``. The Hypothesis strategies that draw these labels are in
:mod:`bptt_ref.strategies` (extra ``bptt-ref[hypothesis]``); this module needs NumPy
alone, so the benchmarks and the ``bptt-ref`` command's fixed sweeps can build cases
without Hypothesis.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
from numpy.typing import NDArray

from bptt_ref import stack
from bptt_ref._activations import softmax
from bptt_ref.cells import CELLS

__all__ = [
    "INPUT_STYLES",
    "KERNEL_STEPS",
    "KERNEL_WIDTHS",
    "REGIMES",
    "SMALL_DIMS",
    "Case",
    "Config",
    "Network",
    "boundary_sizes",
    "make_case",
    "size_plan",
]

SMALL_DIMS: dict[str, int] = {"T": 16, "B": 4, "D": 4, "H": 8, "O": 4}
"""The largest T, B, D, H, O of a small case: every small case fits the JAX oracle's
smallest compilation bucket, so one compilation serves them all."""

KERNEL_WIDTHS: tuple[int, ...] = (8, 16, 32, 64, 128)
"""The vector and tile widths kernels block B, D, H and O by (SIMD lanes, warps, tiles)."""

KERNEL_STEPS: tuple[int, ...] = (64, 128, 256)
"""The chunk lengths kernels block the time steps by."""


def boundary_sizes(edges: Iterable[int]) -> tuple[int, ...]:
    """The sizes on and around each edge e, ``e - 1, e, e + 1`` (those >= 1), ascending.

    A kernel's bug in its last partial tile or chunk shows first at ``e + 1``, one in a
    full tile's last lane at ``e``, and one that assumes a tail at ``e - 1``.
    """
    return tuple(sorted({n for e in edges for n in (e - 1, e, e + 1) if n >= 1}))


def size_plan(
    sizes: str | Sequence[int], bounds: Mapping[str, int | None], min_T: int = 1
) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, ...]]]:
    """``(small, boundary)``: per dim T, B, D, H, O the range ``(low, high)`` of its small
    sizes and the boundary sizes within its bounds.

    ``sizes``: ``"small"`` (no boundary sizes; the range runs to the bound, by default
    ``SMALL_DIMS``), ``"kernel"`` (T around ``KERNEL_STEPS``, B, D, H, O around
    ``KERNEL_WIDTHS``) or a list of edges for every dim; then the small range stops at
    ``SMALL_DIMS`` and an unset bound is the largest boundary size. ``bounds`` maps a
    dim to its largest size (``None`` or absent: the default); T starts at ``min_T``,
    every other dim at 1.

    Raises:
        ValueError: an unknown ``sizes``, a non-positive edge, or a bound below its start.
    """
    edges: dict[str, tuple[int, ...]]
    if sizes == "small":
        edges = dict.fromkeys(SMALL_DIMS, ())
    elif sizes == "kernel":
        edges = {d: KERNEL_STEPS if d == "T" else KERNEL_WIDTHS for d in SMALL_DIMS}
    elif isinstance(sizes, str):
        raise ValueError(f"sizes={sizes!r}; expected 'small', 'kernel' or a list of edges")
    else:
        listed = tuple(sizes)
        if not listed or not all(isinstance(e, int) and e >= 1 for e in listed):
            raise ValueError(f"sizes={sizes!r}; a list of edges needs positive integers")
        edges = dict.fromkeys(SMALL_DIMS, listed)
    small, boundary = {}, {}
    for d, small_max in SMALL_DIMS.items():
        low, bound = (min_T if d == "T" else 1), bounds.get(d)
        around = boundary_sizes(edges[d])
        high = bound if bound is not None else max(around, default=small_max)
        if not 0 <= low <= high:
            raise ValueError(f"need 0 <= min_{d} <= max_{d}; got {low} and {high}")
        small[d] = (low, high if not around else max(low, min(small_max, high)))
        boundary[d] = tuple(n for n in around if low <= n <= high)
    return small, boundary


REGIMES: dict[str, float] = {"contracting": 0.5, "near_critical": 1.0, "expanding": 1.5}
"""Weight regimes: the spectral radius of ``W`` (each gate's block of ``W_hh``) each one sets."""

INPUT_STYLES: tuple[str, ...] = ("normal", "zeros", "large", "kink")
"""How inputs are drawn: standard normal; with exact zeros in ``xs``, ``h0`` and the
targets (and every initial state); ``xs`` scaled by 30; or with some hidden units held
exactly at the kink ``a = 0`` (their rows of ``V``, ``W`` and ``b_h`` zeroed; in a gated
cell, their rows in every gate block of ``W_ih``, ``W_hh``, ``b_ih`` and ``b_hh``, which
puts every gate of the unit at a pre-activation of exactly 0).

``bptt_ref.strategies.cases`` never pairs "large" with softmax + mse: squared error on a
saturated softmax (logits in the hundreds) computes a vanishing gradient as the
difference of O(1) terms, so every float implementation, the oracle's autodiff
included, keeps only eps·|logits|/|gradient| of relative precision there, and no two
agree."""


class Network(TypedDict):
    """The shape of a stacked network, as keyword arguments of :mod:`bptt_ref.stack`."""

    num_layers: int
    bidirectional: bool


class Config(TypedDict):
    """The names that configure the model, as keyword arguments of ``loss_and_grad``."""

    hidden: str
    output: str
    loss: str


@dataclass(frozen=True)
class Case:
    """One drawn test case: arrays plus the configuration that goes with them.

    ``params`` holds the parameters of ``cell`` (``bptt_ref.cells.CELLS[cell].names``; for
    the RNN ``U`` (O, H), ``V`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``b_y`` (O,), ``h0``
    (B, H)); ``xs`` is (T, B, D) and ``targets`` (T, B, O), all of ``dtype``. With
    ``num_layers`` > 1 or ``bidirectional``, ``params`` are those of the stacked network
    (:func:`bptt_ref.stack.names`).
    """

    params: dict[str, NDArray[np.floating]]
    xs: NDArray[np.floating]
    targets: NDArray[np.floating]
    hidden: str
    output: str
    loss: str
    regime: str
    style: str
    seed: int
    cell: str = "rnn"
    num_layers: int = 1
    bidirectional: bool = False

    @property
    def dims(self) -> dict[str, int]:
        """``{"T", "B", "D", "H", "O"}`` sizes of this case."""
        T, B, D = self.xs.shape
        H = self.params["h0"].shape[-1]
        return {"T": T, "B": B, "D": D, "H": H, "O": self.targets.shape[-1]}

    @property
    def dtype(self) -> np.dtype[Any]:
        """The one dtype shared by every array."""
        return self.xs.dtype

    @property
    def config(self) -> Config:
        """``hidden``, ``output`` and ``loss`` as keyword arguments."""
        return {"hidden": self.hidden, "output": self.output, "loss": self.loss}

    @property
    def network(self) -> Network:
        """``num_layers`` and ``bidirectional`` as keyword arguments of :mod:`bptt_ref.stack`."""
        return {"num_layers": self.num_layers, "bidirectional": self.bidirectional}

    @property
    def stacked(self) -> bool:
        """Whether this is a stacked or bidirectional network rather than one cell."""
        return self.num_layers > 1 or self.bidirectional

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints falsifying examples with this hook; the arrays would drown
        # the labels that reproduce them.
        printer.text(repr(self))

    def __repr__(self) -> str:
        dims = " ".join(f"{k}={v}" for k, v in self.dims.items())
        cell = "" if self.cell == "rnn" else f"cell={self.cell} "
        if self.stacked:
            cell += f"num_layers={self.num_layers} bidirectional={self.bidirectional} "
        return (
            f"Case({cell}{dims} dtype={self.dtype} hidden={self.hidden} output={self.output} "
            f"loss={self.loss} regime={self.regime} style={self.style} seed={self.seed})"
        )


def _targets(
    rng: np.random.Generator, loss: str, shape: tuple[int, ...], style: str
) -> NDArray[Any]:
    if loss == "cross_entropy":
        if style == "zeros":  # one-hot rows: the exact zeros live in the targets
            return np.eye(shape[-1])[rng.integers(0, shape[-1], size=shape[:-1])]
        return softmax(rng.standard_normal(shape))
    if loss == "binary_cross_entropy":
        return (
            rng.integers(0, 2, size=shape).astype(float) if style == "zeros" else rng.random(shape)
        )
    return rng.standard_normal(shape)


def make_case(
    *,
    dims: dict[str, int],
    hidden: str,
    output: str,
    loss: str,
    dtype: Any,
    regime: str,
    style: str,
    seed: int,
    large_scale: float = 30.0,
    cell: str = "rnn",
    num_layers: int = 1,
    bidirectional: bool = False,
) -> Case:
    """Build the arrays of a :class:`Case` deterministically from its labels and seed.

    A stacked network (``num_layers`` > 1 or ``bidirectional``) draws its parameters with
    :func:`bptt_ref.stack.random_params`; the styles treat every layer and direction as
    the single cell: "zeros" zeroes about half of every initial state's entries, "kink"
    the rows of the same units in every layer's weights.
    """
    rng = np.random.default_rng(seed)
    spec = CELLS[cell]
    T, B, D, H, O = (dims[d] for d in "TBDHO")
    params = stack.random_params(
        rng,
        batch_size=B,
        input_size=D,
        hidden_size=H,
        output_size=O,
        spectral_radius=REGIMES[regime],
        cell=spec,
        num_layers=num_layers,
        bidirectional=bidirectional,
    )
    xs = rng.standard_normal((T, B, D))
    if style == "zeros":
        xs[rng.random(xs.shape) < 0.5] = 0.0
        for state in spec.states:
            params[state][rng.random(params[state].shape) < 0.5] = 0.0
    elif style == "large":
        xs *= large_scale
    elif style == "kink":
        at_kink = rng.random(H) < 0.5
        for name in stack.names(spec, num_layers=num_layers, bidirectional=bidirectional):
            if name in ("U", "b_y"):
                continue
            if name in spec.states:
                params[name][..., at_kink] = 0.0
            else:  # rows of unit j in every gate block: j, H + j, 2H + j, ...
                gates = params[name].shape[0] // H
                params[name][np.tile(at_kink, gates)] = 0.0
    targets = _targets(rng, loss, (T, B, O), style)
    cast = {k: v.astype(dtype) for k, v in params.items()}
    return Case(
        cast,
        xs.astype(dtype),
        targets.astype(dtype),
        hidden,
        output,
        loss,
        regime,
        style,
        seed,
        cell,
        num_layers,
        bidirectional,
    )
