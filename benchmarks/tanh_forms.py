"""Prototype: the RNN's two tanh passes in forms built on ``exp``, against the library's.

Not part of the library or of ``nox -s bench``: a measurement behind the README's "Both
floors, with and without AVX-512". The forms, for f_h = tanh:

- f_h: ``tanh`` is ``np.tanh`` (the library's); ``exp`` is σ(2a) − σ(−2a), the pair
  from one exponential (``bptt_ref._activations.logistic_pair``), which cancels where
  |a| is small: its error there is a few eps absolute, not relative.
- f_h′: ``cosh`` is 1/cosh²(a) (the library's); ``exp`` is 4 σ(2a) σ(−2a) from the same
  pair, as the LSTM computes tanh′(a_g): no cancellation.

For each size of the harness's ``sizes`` section (``--sizes`` picks them by index) and
each dtype, every variant of ``loss_and_grad`` (the library's hidden ``tanh`` swapped
for the variant's forms while it runs) is judged against the float64 reference as the
harness judges a row, then timed interleaved with ``jax_grad``. ``--cpu-features avx2``
first re-runs this script in the environment the harness's ``--cpu-features avx2``
gives its child (``bench_bptt.avx2_env``). Before timing, the script prints each form's
largest error against ``np.longdouble`` over a grid of a, in eps of the dtype:
relative, and absolute (f_h) where the relative error is not meaningful.

    python benchmarks/tanh_forms.py [--cpu-features avx2] [--sizes 1 2 3] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from unittest import mock

import numpy as np
from bench_bptt import SIZES, Settings, avx2_env, reference_for, simd_targets, time_interleaved
from bench_rows import _jax_grad, make_problem
from numpy.typing import NDArray

import bptt_ref
from bptt_ref import _activations
from bptt_ref._activations import Activation, Array, logistic_pair
from bptt_ref.compare import compare_gradients


def tanh_exp(a: Array) -> Array:
    """tanh(a) = σ(2a) − σ(−2a), shape of ``a``."""
    value, complement = logistic_pair(a, 2.0)
    return np.subtract(value, complement, out=value)


def sech2_exp(a: Array, h: Array) -> Array:
    """tanh′(a) = sech²(a) = 4 σ(2a) σ(−2a), shape of ``a``; ``h`` is unused."""
    value, complement = logistic_pair(a, 2.0)
    value *= complement
    value *= 4
    return value


LIBRARY = _activations.HIDDEN["tanh"]
FORWARD: dict[str, Callable[[Array], Array]] = {"tanh": LIBRARY.f, "exp": tanh_exp}
SLOPE: dict[str, Callable[[Array, Array], Array]] = {"cosh": LIBRARY.df, "exp": sech2_exp}
VARIANTS = {
    "library (tanh, cosh)": LIBRARY,
    "f_h′ exp": Activation(LIBRARY.f, sech2_exp),
    "f_h and f_h′ exp": Activation(tanh_exp, sech2_exp),
}


@contextlib.contextmanager
def hidden_tanh(activation: Activation) -> Iterator[None]:
    """``bptt_ref`` computing its hidden ``tanh`` with ``activation`` while inside."""
    with mock.patch.dict(_activations.HIDDEN, {"tanh": activation}):
        yield


def accuracy(dtype: str) -> dict[str, tuple[float, float]]:
    """Largest (relative, absolute) error of each form in eps, on ±a with a from 1e-6 to 40.

    The reference is the same function in ``np.longdouble`` (x87 extended on x86-64)
    of the same rounded argument.
    """
    eps = float(np.finfo(dtype).eps)
    grid = np.geomspace(1e-6, 40.0, 20_001)
    a = np.concatenate([-grid[::-1], grid]).astype(dtype)
    wide = a.astype(np.longdouble)
    exact_f = np.tanh(wide)
    exact_df = 1 / np.cosh(wide) ** 2
    out = {}
    for name, f in FORWARD.items():
        err = np.abs(f(a).astype(np.longdouble) - exact_f)
        out[f"f_h {name}"] = (float(np.max(err / np.abs(exact_f))) / eps, float(err.max()) / eps)
    for name, df in SLOPE.items():
        err = np.abs(df(a.copy(), np.tanh(a)).astype(np.longdouble) - exact_df)
        out[f"f_h′ {name}"] = (float(np.max(err / exact_df)) / eps, float(err.max()) / eps)
    return out


def measure(size_index: int, dtype: str, settings: Settings) -> dict[str, float]:
    """Median seconds of each variant and of ``jax_grad`` on one problem, interleaved."""
    problem = make_problem(SIZES[size_index], dtype)
    c = problem.case
    ref = reference_for(problem)
    benches: dict[tuple[str, str], Callable[[], object]] = {}
    for name, activation in VARIANTS.items():

        def run(activation: Activation = activation) -> tuple[float, dict[str, NDArray[Any]]]:
            with hidden_tanh(activation):
                return bptt_ref.loss_and_grad(c.params, c.xs, c.targets)

        failed = [str(v) for v in compare_gradients(run()[1], ref) if not v.ok]
        if failed:
            raise AssertionError(f"{name} at {problem.size} {dtype}: {failed}")
        benches[name, "fwd_bwd"] = run
    jax_bench = _jax_grad(problem)
    benches["jax_grad", "fwd_bwd"] = jax_bench.run
    unlimited: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    limits = dict.fromkeys((key[0] for key in benches), unlimited)
    timings = time_interleaved(benches, limits, settings, lambda text: None)
    return {key[0]: float(np.median(t.samples)) for key, t in timings.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-features", choices=["avx2"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.cpu_features == "avx2":
        # None: NumPy uses no AVX-512 target, on such a CPU or in the re-run itself.
        env = avx2_env()
        if env is not None:
            os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)
    import jax

    jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]
    simd = simd_targets()["found"]
    print(f"NumPy dispatched targets in use: {' '.join(simd)}; load {os.getloadavg()[0]:.2f}")
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS')}")
    for dtype in args.dtypes:
        for form, (rel, ab) in accuracy(dtype).items():
            print(f"{dtype} {form}: largest error {rel:.3g} eps relative, {ab:.3g} eps absolute")
    settings = Settings(repeats=args.repeats, warmup=1, min_sample=0.05)
    names = [*VARIANTS, "jax_grad"]
    print("| size | dtype | " + " | ".join(f"{n} ms" for n in names) + " | × jax_grad |")
    print("|---" * (len(names) + 3) + "|")
    for index in args.sizes:
        for dtype in args.dtypes:
            t = measure(index, dtype, settings)
            ratios = ", ".join(f"{t[n] / t['jax_grad']:.2f}" for n in VARIANTS)
            cells = " | ".join(f"{1e3 * t[n]:.3g}" for n in names)
            print(f"| {SIZES[index]} | {dtype} | {cells} | {ratios} |", flush=True)
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
