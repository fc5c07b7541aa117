"""The plots of ``bench_bptt.py``, from its result dictionary (the JSON it writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter


def _series(
    result: dict[str, Any], section: str, dim: str, dtype: str
) -> dict[str, tuple[list[int], list[float]]]:
    """Per row, the sweep's ``dim`` values and fwd+bwd medians in seconds."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    groups = [g for g in result["groups"] if section in g["sections"] and g["dtype"] == dtype]
    for group in sorted(groups, key=lambda g: g["size"][dim]):
        for name, row in group["rows"].items():
            if "time_fwd_bwd" in row:
                xs, ys = out.setdefault(name, ([], []))
                xs.append(group["size"][dim])
                ys.append(row["time_fwd_bwd"]["median_s"])
    return out


def _guides(ax: Axes, xs: list[int], y0: float, dim: str) -> None:
    # Lines through the floor's first point: cost ∝ dim and ∝ dim².
    x0 = xs[0]
    for power, style in ((1, ":"), (2, "--")):
        label = f"∝ {dim}" if power == 1 else f"∝ {dim}²"
        ax.plot(xs, [y0 * (x / x0) ** power for x in xs], "k" + style, lw=0.8, label=label)


def _label_sizes(ax: Axes, values: set[int]) -> None:
    # The swept sizes as plain numbers; a log axis would label its minor ticks 2×10¹, 3×10¹…
    ax.set_xticks(sorted(values), labels=[str(v) for v in sorted(values)])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _save(fig: Figure, path: Path) -> None:
    """Grid and legend on every panel, then write the PNG and free the figure."""
    for ax in fig.axes:
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _sweep(result: dict[str, Any], section: str, dim: str, path: Path) -> None:
    dtypes = sorted({g["dtype"] for g in result["groups"]})
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.5), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        series = _series(result, section, dim, dtype)
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, "o-", label=name)
        anchor = series.get("blas_floor") or next(iter(series.values()), None)
        if anchor:
            _guides(ax, anchor[0], anchor[1][0], dim)
        ax.set(xscale="log", yscale="log", xlabel=dim, ylabel="fwd+bwd time (s)", title=dtype)
        _label_sizes(ax, {x for xs, _ in series.values() for x in xs})
    _save(fig, path)


def _ratio_to_floor(result: dict[str, Any], path: Path) -> None:
    dtypes = sorted({g["dtype"] for g in result["groups"]})
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.5), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        series = _series(result, "H", "H", dtype)
        floor = dict(zip(*series.pop("blas_floor", ([], [])), strict=True))
        for name, (hs, ys) in series.items():
            pts = [(h, y / floor[h]) for h, y in zip(hs, ys, strict=True) if h in floor]
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", label=name)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="H", ylabel="time / blas_floor", title=dtype)
        _label_sizes(ax, set(floor))
    _save(fig, path)


def plot_all(result: dict[str, Any], out: Path) -> list[Path]:
    """Write ``time_vs_T.png``, ``time_vs_H.png`` and ``ratio_to_floor.png`` into ``out``."""
    paths = [out / "time_vs_T.png", out / "time_vs_H.png", out / "ratio_to_floor.png"]
    _sweep(result, "T", "T", paths[0])
    _sweep(result, "H", "H", paths[1])
    _ratio_to_floor(result, paths[2])
    return paths
