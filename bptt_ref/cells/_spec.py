"""What a cell is to the rest of bptt-ref: its parameters in named dims, and its math.

Every generic part of the package (input checks, the model's loss and gradient, case
generation, the oracle's padding, the checker, the golden vectors) reads a cell through
this description and nothing else, so adding a cell is one math module, one oracle step
and one entry in :data:`bptt_ref.cells.CELLS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]

HEAD_PARAMS: dict[str, tuple[str, ...]] = {"U": ("O", "H"), "b_y": ("O",)}
"""The shared output head ``z_t = h_t Uᵀ + b_y``: its parameters in named dims."""

DATA: dict[str, tuple[str, ...]] = {"xs": ("T", "B", "D"), "targets": ("T", "B", "O")}
"""The arrays every cell is run on, in named dims."""


def dim_size(entry: str, dims: Mapping[str, int]) -> int:
    """The size of one named dim: ``"H"`` is ``dims["H"]``, ``"4H"`` is ``4 · dims["H"]``.

    A leading integer is a gate count: G gates of H units are stacked along that axis.
    """
    name, factor = entry[-1], entry[:-1]
    return (int(factor) if factor else 1) * dims[name]


def shape_of(spec: tuple[str, ...], dims: Mapping[str, int]) -> tuple[int, ...]:
    """The concrete shape of ``spec`` (e.g. ``("4H", "D")``) at ``dims``."""
    return tuple(dim_size(entry, dims) for entry in spec)


class CellPass(Protocol):
    """What a cell's forward pass returns: at least its hidden states.

    ``h`` (T, B, H) holds h_t for t = 0 … T−1 (the initial state excluded); a cell with
    more state has one such attribute per initial state, named without its ``0`` (the
    LSTM's ``c`` for ``c0``), from which truncated BPTT restarts its windows. The rest is
    whatever the cell's backward pass needs (the RNN's also has its pre-activations ``a``).
    """

    @property
    def h(self) -> Array: ...


class StepCotangent(Protocol):
    """The head's direct cotangent ∂L/∂h_t by step: ``dh[t]`` (B, H).

    A (T, B, H) array is one; :class:`bptt_ref._model.HeadCotangent` is another, which
    makes a block of steps at a time.
    """

    def __getitem__(self, t: int, /) -> Array: ...


@dataclass(frozen=True)
class Cell:
    """One recurrent cell, described once.

    Attributes:
        name: the ``cell`` argument everywhere (``"rnn"``, ``"lstm"``, ...).
        equations: the recurrence, one equation a line, as the docs and messages show it.
        params: the cell's own parameters and initial states in named dims, in the
            order they are listed (``U`` and ``b_y``, the shared head, are not here).
        names: every parameter key, head included, in the order messages, files and
            gradient dictionaries list them.
        states: the keys of the initial states, e.g. ``("h0", "c0")``.
        hidden_from: the parameter whose shape tells H, named when a shape is wrong.
        roles: the parameters playing ``W_ih``, ``W_hh``, ``b_ih`` and ``b_hh`` in the
            step's two products ``x_t W_ihᵀ + b_ih`` and ``h_{t-1} W_hhᵀ + b_hh`` (the RNN:
            ``V``, ``W``, ``b_h`` and no second bias, ``None``); the oracle's rounding
            magnitudes are sums over these products.
        activations: the ``hidden`` names the cell accepts (gated cells: ``("tanh",)``,
            the nonlinearity of their candidate).
        init: ``init(rng, batch_size=, input_size=, hidden_size=, output_size=,
            spectral_radius=)`` → float64 arrays for every key of ``names``.
        forward: ``forward(params, xs, live, hidden)`` → a :class:`CellPass` (no input
            checks; ``live`` (T, B) bool or ``None``: where False the row holds its states).
        backward: ``backward(params, xs, fw, dh, live)`` → the gradient of L for every
            key of ``params`` and ``"xs"``, given the head's direct ``∂L/∂h_t`` as
            ``dh[t]`` (B, H); the cell adds the recurrence. It reads each ``dh[t]`` once,
            newest first, and is done with it before it reads the next, so that ``dh``
            may be a (T, B, H) array or :class:`bptt_ref._model.HeadCotangent`, which
            makes a block of steps at a time (``loss_and_grad`` then never holds all T
            steps of it).
        fused: the whole ``fused(params, xs, targets, hidden, output, loss)`` → ``(L,
            grads)`` for checked inputs, for a cell whose fast path fuses the head into
            its steps (the vanilla RNN's ``[δ, g] @ [W; U]``) and which brings its own
            masks and truncation (:mod:`bptt_ref.truncation`); ``loss_and_grad`` takes it
            where given. Every cell gives ``backward``, which serves a caller that brings
            its own head (the layers of :mod:`bptt_ref.stack`); a cell without ``fused``
            runs forward, the shared head and backward.
        gate_names: the gates in the order their blocks of H rows are stacked in the
            weights (``("i", "f", "g", "o")`` for the LSTM); empty for the RNN, whose
            weights have one block.
    """

    name: str
    equations: str
    params: Mapping[str, tuple[str, ...]]
    names: tuple[str, ...]
    states: tuple[str, ...]
    hidden_from: str
    roles: tuple[str, str, str, str | None]
    activations: tuple[str, ...]
    init: Callable[..., dict[str, NDArray[np.float64]]]
    forward: Callable[..., CellPass]
    backward: Callable[..., dict[str, Array]] | None = None
    fused: Callable[..., tuple[float, dict[str, Array]]] | None = None
    gate_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        every = {**self.params, **HEAD_PARAMS}
        if sorted(self.names) != sorted(every):
            raise ValueError(
                f"cell {self.name!r} lists names {self.names}; expected the keys of its "
                f"params and of the head, {sorted(every)}"
            )
        if not set(self.states) <= set(self.params) or self.hidden_from not in self.params:
            raise ValueError(f"cell {self.name!r}: states and hidden_from must be params")
        if self.backward is None:
            raise ValueError(f"cell {self.name!r}: give backward (and fused, optionally)")

    @property
    def shapes(self) -> dict[str, tuple[str, ...]]:
        """Every parameter and data array in named dims, in the order of :attr:`names`."""
        every = {**self.params, **HEAD_PARAMS}
        return {**{k: every[k] for k in self.names}, **DATA}

    @property
    def gates(self) -> int:
        """G, the number of gate blocks stacked in the weights."""
        return max(1, len(self.gate_names))

    @property
    def grad_names(self) -> tuple[str, ...]:
        """The keys of the gradient dictionary: every parameter and the inputs."""
        return (*self.names, "xs")


def with_head(init: Callable[..., Mapping[str, Array]]) -> Callable[..., dict[str, Array]]:
    """A cell's ``init`` (its own parameters) completed with the shared head's.

    The head is drawn after the cell: ``U`` (O, H) ~ N(0, 1/H) and ``b_y`` (O,) ~ N(0, 0.1²).
    """

    def complete(
        rng: np.random.Generator,
        *,
        batch_size: int,
        input_size: int,
        hidden_size: int,
        output_size: int,
        spectral_radius: float,
    ) -> dict[str, Array]:
        own = init(
            rng,
            batch_size=batch_size,
            input_size=input_size,
            hidden_size=hidden_size,
            spectral_radius=spectral_radius,
            dtype=np.float64,
        )
        H, O = hidden_size, output_size
        head = {"U": rng.standard_normal((O, H)) / np.sqrt(H), "b_y": 0.1 * rng.standard_normal(O)}
        return {**own, **head}

    return complete


def gated_init(gates: int, states: tuple[str, ...]) -> Callable[..., dict[str, Array]]:
    """``init`` of a cell with ``gates`` blocks in ``W_ih``, ``W_hh``, ``b_ih``, ``b_hh``.

    The returned ``init(rng, *, batch_size, input_size, hidden_size, spectral_radius,
    dtype)`` draws ``W_hh`` (G·H, H) as G Gaussian H×H blocks, each scaled so that
    max |eig| = ``spectral_radius`` (0.5 contracting, 1.0, 1.5 expanding), then
    ``W_ih`` (G·H, D) ~ N(0, 1/D), ``b_ih``, ``b_hh`` (G·H,) ~ N(0, 0.1²), and each of
    ``states`` (B, H) ~ N(0, 0.5²), all in ``dtype``.

    Raises:
        TypeError: if ``rng`` is not a ``numpy.random.Generator`` or ``dtype`` is not
            float32 or float64.
    """

    def init(
        rng: np.random.Generator,
        *,
        batch_size: int,
        input_size: int,
        hidden_size: int,
        spectral_radius: float,
        dtype: Any,
    ) -> dict[str, Array]:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"dtype is {np.dtype(dtype)}; expected float32 or float64")
        B, D, H, G = batch_size, input_size, hidden_size, gates
        blocks = [rng.standard_normal((H, H)) for _ in range(G)]
        params = {
            "W_ih": rng.standard_normal((G * H, D)) / np.sqrt(D),
            "W_hh": np.concatenate(
                [W * (spectral_radius / np.max(np.abs(np.linalg.eigvals(W)))) for W in blocks]
            ),
            "b_ih": 0.1 * rng.standard_normal(G * H),
            "b_hh": 0.1 * rng.standard_normal(G * H),
            **{k: 0.5 * rng.standard_normal((B, H)) for k in states},
        }
        return {k: v.astype(dtype) for k, v in params.items()}

    return init
