"""Measure the error of the NumPy gradients against the oracle, the basis of docs/tolerances.md.

For random cases over T (log-uniform from 1 to 1000), shapes, every configuration,
weight regime and input style, in both dtypes, it records for each gradient key the
error err_k and the parts of its bound (bptt_ref.compare), then prints quantiles,
the largest err/bound, how often a 1e-6 relative error in one float64 gradient would
be caught, and draws err and bound against T.

    python docs/tolerance_study.py [--cases N] [--seed S] [--out docs/tolerance.png]

Needs the ``cli`` and ``plot`` extras.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

import bptt_ref
from bptt_ref import compare, jax_reference
from bptt_ref.cases import INPUT_STYLES, REGIMES, make_case


def measure(cases: int, seed: int) -> list[dict[str, object]]:
    from rich.progress import track

    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    for _ in track(range(cases), description="measuring"):
        hidden = str(rng.choice(bptt_ref.HIDDEN_ACTIVATIONS))
        output, loss = bptt_ref.VALID_HEADS[rng.integers(len(bptt_ref.VALID_HEADS))]
        styles = [
            s for s in INPUT_STYLES if not (s == "large" and (output, loss) == ("softmax", "mse"))
        ]
        labels = {
            "dims": {
                "T": int(np.exp(rng.uniform(0, np.log(1000)))),
                "B": int(rng.integers(1, 5)),
                "D": int(rng.integers(1, 5)),
                "H": int(rng.integers(1, 9)),
                "O": int(rng.integers(1, 5)),
            },
            "hidden": hidden,
            "output": output,
            "loss": loss,
            "regime": str(rng.choice(list(REGIMES))),
            "style": str(rng.choice(styles)),
            "seed": int(rng.integers(2**32)),
        }
        for dtype in (np.float64, np.float32):
            case = make_case(dtype=dtype, **labels)  # type: ignore[arg-type]
            with warnings.catch_warnings():
                # An expanding W over hundreds of steps overflows; such a case has no
                # finite gradient to judge and is counted as skipped.
                warnings.simplefilter("error")
                try:
                    _, grads = bptt_ref.loss_and_grad(
                        case.params, case.xs, case.targets, **case.config
                    )
                except (FloatingPointError, RuntimeWarning):
                    rows.append(
                        {"dtype": np.dtype(dtype).name, "T": case.dims["T"], "skipped": True}
                    )
                    continue
            if not all(np.isfinite(g).all() for g in grads.values()):
                rows.append({"dtype": np.dtype(dtype).name, "T": case.dims["T"], "skipped": True})
                continue
            ref = jax_reference.reference(case.params, case.xs, case.targets, **case.config)
            eps = float(np.finfo(dtype).eps)
            for verdict in compare.compare_gradients(grads, ref):
                k = verdict.key
                scale, bound = compare.scale_and_bound(ref, k)
                size = float(np.max(np.abs(ref.grads[k]), initial=0.0))
                assert ref.noise is not None
                assert ref.rounding is not None
                rows.append(
                    {
                        "dtype": np.dtype(dtype).name,
                        "T": case.dims["T"],
                        "key": k,
                        "case": repr(case),
                        "err": verdict.err,
                        "ok": verdict.ok,
                        "bound": bound,
                        "noise": compare.NOISE_FACTOR * ref.noise[k] / scale if scale else 0.0,
                        "rounding": compare.ROUNDING_FACTOR * eps * ref.rounding[k] / scale
                        if scale
                        else 0.0,
                        # a 1e-6 relative error in this gradient, as err_k would see it
                        "perturbation": 1e-6 * size / scale if scale else 0.0,
                        "why": "floored"
                        if scale > size
                        else "noise"
                        if compare.NOISE_FACTOR * ref.noise[k]
                        > compare.ROUNDING_FACTOR * eps * ref.rounding[k]
                        else "rounding",
                    }
                )
    return rows


def report(rows: list[dict[str, object]]) -> None:
    for dtype in ("float64", "float32"):
        judged = [r for r in rows if r["dtype"] == dtype and not r.get("skipped")]
        skipped = sum(1 for r in rows if r["dtype"] == dtype and r.get("skipped"))
        err = np.array([r["err"] for r in judged], dtype=float)
        margin = np.array([float(r["err"]) / float(r["bound"]) for r in judged])  # type: ignore[arg-type]
        failing = sum(1 for r in judged if not r["ok"])
        resid = np.array(
            [float(r["err"]) - float(r["noise"]) - float(r["rounding"]) for r in judged]  # type: ignore[arg-type]
        )
        q = np.quantile(err, [0.5, 0.99, 0.999, 1.0])
        print(f"\n{dtype}: {len(judged)} gradients judged, {skipped} overflowing cases skipped")
        print(f"  err       p50 {q[0]:.2e}  p99 {q[1]:.2e}  p99.9 {q[2]:.2e}  max {q[3]:.2e}")
        rtol = compare.tolerance_for(dtype)
        print(f"  err - noise - rounding terms: max {resid.max():.2e} (rtol {rtol:.0e})")
        print(f"  err / bound: max {np.nanmax(margin):.3f}; failing {failing}")
        for r in judged:
            if not r["ok"]:
                print(f"    FAIL {r['key']} err {r['err']:.3g} bound {r['bound']:.3g} {r['case']}")
        for lo, hi in ((1, 10), (10, 100), (100, 1001)):
            sel = np.array([lo <= int(r["T"]) < hi for r in judged])  # type: ignore[call-overload]
            if sel.any():
                top, p99 = err[sel].max(), np.quantile(err[sel], 0.99)
                print(f"  T in [{lo}, {hi}): n {sel.sum():6d}  err max {top:.2e}  p99 {p99:.2e}")
        if dtype == "float64":
            caught = [float(r["perturbation"]) > float(r["bound"]) for r in judged]  # type: ignore[arg-type]
            share = f"{100 * np.mean(caught):.2f}%"
            print(f"  a 1e-6 relative error in one gradient is caught in {share} of (case, key)")
            # Why the rest is not: the gradient is numerically zero (its scale is the
            # eps·|L|/|θ| floor), or the peer's noise or the rounding term widened the bound.
            missed = [r for r, c in zip(judged, caught, strict=True) if not c]
            for part in ("floored", "noise", "rounding"):
                n = sum(1 for r in missed if r["why"] == part)
                print(f"    not caught, {part}: {n}")


def plot(rows: list[dict[str, object]], out: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, dtype in zip(fig.subplots(1, 2), ("float64", "float32"), strict=True):
        judged = [r for r in rows if r["dtype"] == dtype and not r.get("skipped")]
        T = np.array([r["T"] for r in judged], dtype=float)
        err = np.maximum(np.array([r["err"] for r in judged], dtype=float), 1e-18)
        bound = np.array([r["bound"] for r in judged], dtype=float)
        ax.scatter(T, bound, s=3, c="tab:orange", alpha=0.3, label="bound_k")
        ax.scatter(T, err, s=3, c="tab:blue", alpha=0.4, label="err_k")
        ax.axhline(compare.tolerance_for(dtype), color="k", lw=1, ls="--", label="rtol")
        ax.set(xscale="log", yscale="log", xlabel="T", ylabel="relative error", title=dtype)
        ax.legend(loc="lower right", markerscale=4)
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/tolerance.png"))
    args = parser.parse_args()
    rows = measure(args.cases, args.seed)
    report(rows)
    plot(rows, args.out)


if __name__ == "__main__":
    main()
