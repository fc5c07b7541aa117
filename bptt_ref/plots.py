"""Figures (extra ``bptt-ref[plot]``; matplotlib is imported only when a figure is drawn).

Command line::

    python -m bptt_ref.plots lags --out docs/lags.png [--T 40] [--hidden-size 16]
        [--hidden identity] [--seed 0]

``main(argv)`` is the same command, for a ``bptt-ref`` CLI to hook in.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bptt_ref._model import random_params
from bptt_ref.note_form import jacobian_product_norms, lag_contributions

REGIMES: dict[str, float] = {"contracting": 0.8, "expanding": 1.2}
"""Spectral radius of W for the two curves of the lag figure."""


def _by_lag(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, min and max over t of a (T, T, ...) table's entries [t, t - lag], per lag."""
    T = table.shape[0]
    rows = [np.stack([table[t, t - lag] for t in range(lag, T)]).ravel() for lag in range(T)]
    return tuple(np.array([f(r) for r in rows]) for f in (np.median, np.min, np.max))  # type: ignore[return-value]


def lag_figure(
    *, T: int = 40, hidden_size: int = 16, hidden: str = "identity", seed: int = 0
) -> Any:
    """The lag decomposition of ``dL_t/dW`` for a contracting and an expanding ``W``.

    Left: ``‖term k of dL_t/dW‖_F`` (:func:`bptt_ref.lag_contributions`) against the lag
    t - k; right: ``‖Π_{i=k+1..t} ∂h_i/∂h_{i-1}‖_2``
    (:func:`bptt_ref.jacobian_product_norms`). Lines are medians over t (and batch rows),
    bands the min–max. B = 4, D = O = 4, identity output, mse, inputs and targets
    N(0, 1), the same draw for both regimes but for W's scale. The default ``f_h`` is the
    identity, where the products scale as ρ(W)^lag; with ``tanh`` saturation caps the
    expanding case and both curves decay.
    Returns a ``matplotlib.figure.Figure`` (no pyplot state is touched).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2, sharex=True)
    lags = np.arange(T)
    for name, radius in REGIMES.items():
        rng = np.random.default_rng(seed)
        params = random_params(
            rng,
            batch_size=4,
            input_size=4,
            hidden_size=hidden_size,
            output_size=4,
            spectral_radius=radius,
        )
        xs = rng.standard_normal((T, 4, 4))
        targets = rng.standard_normal((T, 4, 4))
        contributions = lag_contributions(params, xs, targets, hidden=hidden)["W"]
        products = jacobian_product_norms(params, xs, hidden=hidden)
        for ax, table in ((left, contributions), (right, products)):
            mid, low, high = _by_lag(table)
            line = ax.semilogy(lags, mid, label=f"{name} (ρ(W) = {radius})")[0]
            ax.fill_between(lags, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    left.set(
        xlabel="lag t − k",
        ylabel="‖term k of dL_t/dW‖_F",
        title="contribution of step k to dL_t/dW",
    )
    right.set(
        xlabel="lag t − k",
        ylabel="‖Π_{i=k+1..t} ∂h_i/∂h_{i−1}‖₂",
        title="Jacobian products",
    )
    left.legend()
    fig.suptitle(f"Lag decomposition of BPTT (f_h = {hidden}, H = {hidden_size}, T = {T})")
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bptt_ref.plots lags --out PATH``: draw the lag figure to a file."""
    parser = argparse.ArgumentParser(prog="python -m bptt_ref.plots", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    lags = commands.add_parser("lags", help="contribution norm and Jacobian products vs lag")
    lags.add_argument("--out", type=Path, required=True, help="image file (.png, .svg, .pdf)")
    lags.add_argument("--T", type=int, default=40, help="sequence length (default 40)")
    lags.add_argument("--hidden-size", type=int, default=16, help="H (default 16)")
    lags.add_argument("--hidden", default="identity", help="f_h (default identity)")
    lags.add_argument("--seed", type=int, default=0, help="seed of the random draw")
    args = parser.parse_args(argv)
    fig = lag_figure(T=args.T, hidden_size=args.hidden_size, hidden=args.hidden, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
