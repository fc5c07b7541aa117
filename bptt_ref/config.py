"""The one configuration value: which cell, hidden activation, output and loss.

Every function that computes or checks a gradient of the model takes these four as
keyword arguments (``**config``, typed by :class:`Config`) and reads them through
:func:`model_of`, the one place that fills in the defaults, refuses unknown keywords and
checks the names. Inside the package the checked :class:`Model` is passed on whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, TypedDict

from bptt_ref._validate import check_names
from bptt_ref.cells import Cell, cell_named

__all__ = ["DEFAULTS", "Config", "Model", "model_of"]


class Config(TypedDict, total=False):
    """The model's configuration as keyword arguments; each one left out takes its default.

    Attributes:
        cell: ``"rnn"`` (default), ``"lstm"``, ``"gru"``, ``"gru_reset_before"`` (the keys
            of ``bptt_ref.cells.CELLS``) or a :class:`~bptt_ref.cells.Cell`.
        hidden: the rnn's ``f_h`` (default ``"tanh"``, the only choice of a gated cell).
        output: ``f_y`` (default ``"identity"``).
        loss: the loss (default ``"mse"``; ``VALID_HEADS`` lists the output/loss pairs).
    """

    cell: str | Cell
    hidden: str
    output: str
    loss: str


DEFAULTS: Config = {"cell": "rnn", "hidden": "tanh", "output": "identity", "loss": "mse"}
"""The value of each configuration keyword left out."""


class Model(NamedTuple):
    """A checked configuration: the cell's description and the three names."""

    cell: Cell
    hidden: str
    output: str
    loss: str


def model_of(config: Mapping[str, Any], *, cells: tuple[str, ...] | None = None) -> Model:
    """The :class:`Model` that ``config`` (keyword arguments of :class:`Config`) names.

    Raises ``TypeError`` for a keyword that is not a configuration name (a typo must not
    fall back to a default silently) and ``ValueError`` for an unknown or invalid name,
    or a cell outside ``cells`` when given.
    """
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise TypeError(
            f"unexpected keyword argument {unknown[0]!r}; the model is configured by "
            f"{', '.join(DEFAULTS)}"
        )
    full = {**DEFAULTS, **config}
    spec = cell_named(full["cell"])
    if cells is not None and spec.name not in cells:
        raise ValueError(f"cell {spec.name!r} is not supported here; expected one of {list(cells)}")
    check_names(full["hidden"], full["output"], full["loss"], cell=spec)
    return Model(spec, full["hidden"], full["output"], full["loss"])
