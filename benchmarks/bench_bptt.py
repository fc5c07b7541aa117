"""Time every way of computing the BPTT gradient against JAX and the BLAS floor (``nox -s bench``).

For each cell, size and dtype, every row of ``bench_rows.REGISTRY`` that runs the cell is
built on the same inputs, its gradients are judged against ``bptt_ref.loss_and_grad``
(``bptt_ref.compare``), and then all rows are timed interleaved in this one process: each
repeat runs every row once, in a rotating order, so every ratio is same-run. The gated
cells (``--cells``) run the ``sizes`` section; the T and H sweeps are the RNN's. A sample
is the mean of enough calls to last ``--min-sample`` seconds; the table gives the median
of the samples and their spread ((q75 - q25) / median). The BLAS library, its kernel and
thread count (threadpoolctl), NumPy's SIMD targets and the throughput of its ufuncs, the
machine and the load average before, during and after are recorded, with a warning when the
machine was busy.

    python benchmarks/bench_bptt.py                 # the full run (minutes)
    python benchmarks/bench_bptt.py --smoke         # one tiny size, seconds
    python benchmarks/bench_bptt.py --sections sizes --cells lstm gru
    python benchmarks/bench_bptt.py --sections sizes --cpu-features avx2
    python benchmarks/bench_bptt.py --unset-blas-env

``--cpu-features avx2`` then re-runs ``reverse``, the floors and ``jax_grad`` in a
subprocess that computes as a CPU without AVX-512 does, as far as each library lets it:
NumPy's AVX-512 targets disabled through ``NPY_DISABLE_CPU_FEATURES`` (read at import),
OpenBLAS on its Haswell (AVX2) kernel through ``OPENBLAS_CORETYPE``, and XLA's generated
code limited to AVX2 through ``XLA_FLAGS`` (``XLA_WITHOUT_AVX512``); its results go into
the same table and JSON.

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, when set, pick OpenBLAS's kernel and blocking
when NumPy loads it; ``--unset-blas-env`` re-runs this process without them (nothing
else is changed) so both settings can be compared. Writes ``bench.json`` and the plots
``time_vs_T.png``, ``time_vs_H.png`` and ``ratio_to_floor.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from bench_rows import GATED, REGISTRY, Bench, Implementation, Problem, Size, make_problem
from numpy.typing import NDArray
from rich.console import Console
from rich.progress import Progress
from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

import bptt_ref
from bptt_ref.cells import CELLS
from bptt_ref.compare import KeyComparison, Reference, compare_gradients

SIZES = [
    Size(1, 16, 64, 16, 100),
    Size(32, 64, 128, 64, 100),
    Size(32, 128, 256, 128, 200),
    Size(64, 256, 512, 256, 100),
]
T_SWEEP = [Size(32, 64, 128, 64, T) for T in (10, 30, 100, 300, 1000)]
H_SWEEP = [Size(32, 64, H, 64, 100) for H in (16, 32, 64, 128, 256, 512)]
SMOKE = Size(2, 3, 8, 2, 5)
# The smoke run writes next to, not over, the committed results of a full run.
OUT = Path("benchmarks/results")
SMOKE_OUT = Path("bench-results")
SECTIONS = ("sizes", "T", "H")
BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
NUMPY_FEATURE_ENV = ("NPY_DISABLE_CPU_FEATURES", "NPY_ENABLE_CPU_FEATURES")
AVX2_ROWS = ("reverse", "blas_floor", "math_floor", "step_floor", "jax_grad")
"""The rows ``--cpu-features avx2`` re-runs without AVX-512."""
XLA_WITHOUT_AVX512 = "--xla_cpu_max_isa=AVX2"
"""Appended to ``XLA_FLAGS`` in that run: XLA compiles its own code (the fused elementwise
passes, tanh included) with no instruction newer than AVX2. The matrix products of
``jax_grad`` are not XLA's code: jaxlib 0.10 hands them to YNNPACK, which picks its kernels
from CPUID whatever the flag says, so they keep their AVX-512 kernels (README, "Both
floors, with and without AVX-512")."""
# A 1-minute load average above this, per core, before the run means another process
# was competing for the cores; during the run this process adds up to one per core.
BUSY_PER_CORE = 0.25


@dataclass(frozen=True)
class Target:
    """A goal of the issues: ``row`` at most ``limit`` times ``versus`` where ``where`` holds,
    for the groups of ``cells`` in ``dtypes``."""

    row: str
    versus: str
    limit: float
    where: str
    applies: Callable[[Size], bool]
    cells: tuple[str, ...] = ("rnn",)
    dtypes: tuple[str, ...] = ("float32", "float64")


def _wide(s: Size) -> bool:
    return s.B * s.H >= 4096


TARGETS = [
    Target("reverse", "math_floor", 1.15, "B·H ≥ 4096", _wide),
    Target("reverse", "math_floor", 1.5, str(SIZES[0]), lambda s: s == SIZES[0]),
    Target("reverse", "jax_grad", 1.0, "B·H ≥ 4096", _wide),
    Target("reverse", "jax_grad", 1.5, str(SIZES[0]), lambda s: s == SIZES[0]),
    Target("vectorized", "jax_jacrev", 1.0, "every size", lambda s: True),
    Target("reverse", "math_floor", 1.2, "B·H ≥ 4096", _wide, GATED),
    Target("reverse", "jax_grad", 1.0, "B·H ≥ 4096", _wide, GATED),
    Target("reverse", "torch", 1.0, "B·H ≥ 4096", _wide, GATED, ("float64",)),
    Target("reverse", "torch", 1.5, "B·H ≥ 4096", _wide, GATED, ("float32",)),
]
"""Checked on the ``sizes`` section; a target whose row does not run at a size is reported as
not run there, one whose rows ``--rows`` left out not at all.
The smoke run's size is too small for any of them, so there none is judged."""


def peakmem_limit(cell: str) -> float:
    """Peak memory of ``reverse`` above its inputs, in units of T·B·H·itemsize: 4 for the
    RNN, 2G + 2 for a cell of G gates."""
    gates = CELLS[cell].gates
    return 4.0 if cell == "rnn" else 2.0 * gates + 2


@dataclass
class Timing:
    samples: list[float] = field(default_factory=list)
    number: int = 1

    def summary(self) -> dict[str, float | int | list[float]]:
        q25, median, q75 = np.percentile(self.samples, [25, 50, 75])
        return {
            "median_s": float(median),
            "spread": float((q75 - q25) / median),
            "number": self.number,
            "samples_s": self.samples,
        }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def simd_targets() -> dict[str, list[str]]:
    """NumPy's SIMD targets as ``np.show_runtime()`` lists them.

    ``baseline``: compiled in, always used; ``found``: the dispatched targets this CPU
    has and the environment did not disable; ``not_found``: the rest. NumPy exposes
    these lists only through ``show_runtime``'s printout, so they are read where it
    reads them.
    """
    umath = importlib.import_module("numpy._core._multiarray_umath")
    features, dispatch = umath.__cpu_features__, umath.__cpu_dispatch__
    return {
        "baseline": list(umath.__cpu_baseline__),
        "found": [t for t in dispatch if features[t]],
        "not_found": [t for t in dispatch if not features[t]],
    }


def avx512_targets(targets: Sequence[str]) -> list[str]:
    """The AVX-512 ones among NumPy's x86 dispatch targets.

    NumPy 2.4 names them ``X86_V4`` (AVX512 F, CD, VL, BW, DQ) and ``AVX512_*``; earlier
    versions ``AVX512F``, ``AVX512_SKX``, ... .
    """
    return [t for t in targets if t == "X86_V4" or t.startswith("AVX512")]


THROUGHPUT_UFUNCS: dict[str, Callable[[NDArray[Any], NDArray[Any]], object]] = {
    "tanh": lambda x, out: np.tanh(x, out=out),
    "exp": lambda x, out: np.exp(x, out=out),
    "cosh": lambda x, out: np.cosh(x, out=out),
    "multiply": lambda x, out: np.multiply(x, x, out=out),
}
"""The ufuncs whose speed the gradient's elementwise passes depend on (cosh: f_h′)."""


def ufunc_throughput(dtype: str, seconds: float = 0.02) -> dict[str, float]:
    """G elements/s of each of ``THROUGHPUT_UFUNCS`` on a cache-resident array.

    2¹⁶ standard normal elements (256 KiB in float32) into a preallocated output; the
    median of 5 samples of at least ``seconds`` each.
    """
    x = np.random.default_rng(0).standard_normal(1 << 16).astype(dtype)
    out = np.empty_like(x)
    rates = {}
    for name, fn in THROUGHPUT_UFUNCS.items():
        fn(x, out)  # warm-up
        start = time.perf_counter()
        fn(x, out)
        number = max(1, math.ceil(seconds / max(time.perf_counter() - start, 1e-9)))
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(number):
                fn(x, out)
            samples.append(number * x.size / (time.perf_counter() - start))
        rates[name] = round(float(np.median(samples)) / 1e9, 3)
    return rates


def machine_info(controller: ThreadpoolController, dtypes: Sequence[str]) -> dict[str, Any]:
    """The machine, the libraries, the BLAS as threadpoolctl sees it and the relevant env."""
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("jax", "jaxlib", "torch"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    env_names = (
        *BLAS_OVERRIDES,
        *NUMPY_FEATURE_ENV,
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "XLA_FLAGS",
    )
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "versions": versions,
        "threadpools": controller.info(),
        "numpy_simd": simd_targets(),
        "ufunc_gelem_per_s": {dtype: ufunc_throughput(dtype) for dtype in dtypes},
        "env": {k: os.environ.get(k) for k in env_names},
    }


def reference_for(problem: Problem) -> Reference:
    """``bptt_ref.loss_and_grad`` in float64 on the same inputs, with its own noise in the dtype.

    The noise of key k is ``max |g_dtype - g_float64|`` of ``loss_and_grad`` itself: how
    far a correct implementation in this dtype strays on this case (see
    ``bptt_ref.compare``).
    """
    c = problem.case
    up = {k: v.astype(np.float64) for k, v in c.params.items()}
    loss, exact = bptt_ref.loss_and_grad(
        up, c.xs.astype(np.float64), c.targets.astype(np.float64), cell=c.cell
    )
    _, same = bptt_ref.loss_and_grad(c.params, c.xs, c.targets, cell=c.cell)
    inputs = {**c.params, "xs": c.xs}
    return Reference(
        loss=loss,
        grads={k: np.asarray(g, dtype=np.float64) for k, g in exact.items()},
        noise={k: float(np.max(np.abs(same[k] - g), initial=0.0)) for k, g in exact.items()},
        input_scale={k: float(np.max(np.abs(v), initial=0.0)) for k, v in inputs.items()},
        dtype=c.dtype,
        steps=c.xs.shape[0],
    )


def peakmem_reverse(problem: Problem) -> int:
    """Peak bytes ``bptt_ref.loss_and_grad`` allocates above its inputs (tracemalloc)."""
    c = problem.case
    tracemalloc.start()
    try:
        bptt_ref.loss_and_grad(c.params, c.xs, c.targets, cell=c.cell)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@dataclass(frozen=True)
class Settings:
    repeats: int
    warmup: int
    min_sample: float


def time_interleaved(
    benches: dict[tuple[str, str], Callable[[], object]],
    limits: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]],
    settings: Settings,
    progress: Callable[[str], None],
) -> dict[tuple[str, str], Timing]:
    """Median-ready samples of every (row, mode), all rows interleaved in each repeat."""
    timings = {key: Timing() for key in benches}
    if not benches:  # a size where no selected row runs
        return timings
    for key, fn in benches.items():
        progress(f"{key[0]} {key[1]}: warm-up")
        with limits[key[0]]():
            for _ in range(settings.warmup - 1):
                fn()
            start = time.perf_counter()
            fn()
            once = time.perf_counter() - start
        timings[key].number = max(1, math.ceil(settings.min_sample / max(once, 1e-9)))
    keys = list(benches)
    for r in range(settings.repeats):
        progress(f"repeat {r + 1}/{settings.repeats}")
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            fn, number = benches[key], timings[key].number
            with limits[key[0]]():
                start = time.perf_counter()
                for _ in range(number):
                    fn()
                timings[key].samples.append((time.perf_counter() - start) / number)
    return timings


def _judge(bench: Bench, ref: Reference) -> list[KeyComparison]:
    assert bench.gradients is not None
    actual = bench.gradients()
    return compare_gradients(actual, ref, keys=list(actual))


def measure_group(
    problem: Problem,
    rows: Sequence[Implementation],
    controller: ThreadpoolController,
    settings: Settings,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Build, check and time every supported row on one problem."""
    size = problem.size
    ref = reference_for(problem)
    out: dict[str, Any] = {}
    benches: dict[tuple[str, str], Callable[[], object]] = {}
    limits: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]] = {}
    for impl in rows:
        if problem.cell not in impl.cells:
            if impl.missing is not None:
                out[impl.name] = {"status": impl.missing}
            continue
        if not impl.supports(size):
            out[impl.name] = {"status": "unsupported size"}
            continue

        def limit(n: int | None = impl.blas_threads) -> contextlib.AbstractContextManager[Any]:
            if n is None:
                return contextlib.nullcontext()
            limited: contextlib.AbstractContextManager[Any] = controller.limit(
                limits=n, user_api="blas"
            )
            return limited

        progress(f"{impl.name}: build and check")
        with limit():
            bench = impl.build(problem)
            verdicts = None if bench.gradients is None else _judge(bench, ref)
        failed = [str(v) for v in verdicts or [] if not v.ok]
        out[impl.name] = {
            "status": "check failed" if failed else "ok",
            "check": None
            if verdicts is None
            else {v.key: {"err": v.err, "bound": v.bound} for v in verdicts},
            "failures": failed,
            "compile_s": bench.compile_s,
        }
        if failed:
            continue
        limits[impl.name] = limit
        benches[impl.name, "fwd_bwd"] = bench.run
        if bench.backward is not None:
            benches[impl.name, "bwd"] = bench.backward
    for (name, mode), timing in time_interleaved(benches, limits, settings, progress).items():
        out[name][f"time_{mode}"] = timing.summary()
    return out


def plan(smoke: bool, only: Sequence[str] = SECTIONS) -> list[tuple[Size, list[str]]]:
    """Every size once, with the sections (``sizes``, ``T``, ``H``) it belongs to (for the
    RNN; a gated cell runs the sizes tagged ``sizes``, see :func:`work_list`)."""
    sections = {"sizes": [SMOKE]} if smoke else {"sizes": SIZES, "T": T_SWEEP, "H": H_SWEEP}
    tags: dict[Size, list[str]] = {}
    for section, sizes in sections.items():
        if section not in only:
            continue
        for size in sizes:
            tags.setdefault(size, []).append(section)
    if smoke:
        tags[SMOKE] = ["sizes", "T", "H"]
    return list(tags.items())


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    import jax

    # float64 rows need x64; float32 arrays stay float32 under it.
    jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]
    controller = ThreadpoolController()
    rows = [impl for impl in REGISTRY if not args.rows or impl.name in args.rows]
    settings = Settings(args.repeats, args.warmup, args.min_sample)
    result: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "machine": machine_info(controller, args.dtypes),
        "settings": vars(settings),
        "rows": {impl.name: impl.description for impl in rows},
        "smoke": args.smoke,
        "load_start": _load(),
        "groups": [],
    }
    work = work_list(args)
    with Progress(console=console) as bar:
        task = bar.add_task("bench", total=len(work))
        for cell, size, tags, dtype in work:
            label = f"{cell} {size} {dtype}"

            def say(text: str, label: str = label) -> None:
                bar.update(task, description=f"{label} {text}")

            problem = make_problem(size, dtype, cell=cell)
            load_before = _load()
            rows_out = measure_group(problem, rows, controller, settings, say)
            peak = peakmem_reverse(problem)
            result["groups"].append(
                {
                    "cell": cell,
                    "size": size._asdict(),
                    "dtype": dtype,
                    "sections": tags,
                    "flops": dict(
                        zip(("fwd_bwd", "bwd"), size.flops(CELLS[cell].gates), strict=True)
                    ),
                    "load": [load_before, _load()],
                    "peakmem_reverse": {
                        "bytes": peak,
                        "per_TBH": peak / (size.T * size.B * size.H * problem.case.dtype.itemsize),
                    },
                    "rows": rows_out,
                }
            )
            bar.advance(task)
    result["load_end"] = _load()
    result["warnings"] = load_warnings(result)
    result["targets"] = check_targets(result)
    if args.cpu_features == "avx2":
        result["without_avx512"] = run_without_avx512(args)
    return result


def work_list(args: argparse.Namespace) -> list[tuple[str, Size, list[str], str]]:
    """(cell, size, sections, dtype) to measure: the RNN over every planned size, each gated
    cell of ``--cells`` over the sizes of the ``sizes`` section."""
    out = []
    for cell in args.cells:
        for size, tags in plan(args.smoke, args.sections):
            mine = tags if cell == "rnn" else [t for t in tags if t == "sizes"]
            out += [(cell, size, mine, dtype) for dtype in args.dtypes if mine]
    return out


def avx2_env() -> dict[str, str] | None:
    """This process's environment as a child should get it to compute as a CPU without
    AVX-512 does (``--cpu-features avx2``); None where NumPy uses no AVX-512 target."""
    disabled = avx512_targets(simd_targets()["found"])
    if not disabled:
        return None
    return {
        **os.environ,
        "NPY_DISABLE_CPU_FEATURES": " ".join(disabled),
        "OPENBLAS_CORETYPE": "Haswell",
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {XLA_WITHOUT_AVX512}".strip(),
    }


def run_without_avx512(args: argparse.Namespace) -> dict[str, Any]:
    """The result of this script re-run for ``AVX2_ROWS`` as on a CPU without AVX-512.

    A subprocess, because NumPy reads ``NPY_DISABLE_CPU_FEATURES``, OpenBLAS
    ``OPENBLAS_CORETYPE`` and XLA ``XLA_FLAGS`` only when they are loaded; the child
    records the three in its ``machine.env``. Same sections, dtypes and settings;
    it writes its own outputs to ``--out``/avx2. Where NumPy uses no AVX-512 target,
    this run already is that case and nothing is re-run.
    """
    env = avx2_env()
    if env is None:
        return {"skipped": "NumPy uses no AVX-512 target in this process; nothing to disable"}
    out = args.out / "avx2"
    argv = [
        *(["--smoke"] if args.smoke else []),
        *("--sections", *args.sections, "--dtypes", *args.dtypes, "--cells", *args.cells),
        *("--rows", *[r for r in AVX2_ROWS if not args.rows or r in args.rows]),
        *("--repeats", str(args.repeats), "--warmup", str(args.warmup)),
        *("--min-sample", str(args.min_sample), "--out", str(out)),
    ]
    # Its table is part of this run's report; its progress bar shows on stderr.
    child = subprocess.run(
        [sys.executable, __file__, *argv], env=env, stdout=subprocess.DEVNULL, check=False
    )
    if child.returncode not in (0, 1):  # 1: a row failed its check, reported as such
        raise RuntimeError(f"the run without AVX-512 failed (exit {child.returncode})")
    child_result: dict[str, Any] = json.loads((out / "bench.json").read_text())
    return child_result


def load_warnings(result: dict[str, Any]) -> list[str]:
    cores = result["machine"]["cores"] or 1
    out = []
    start = result["load_start"][0]
    if start > BUSY_PER_CORE * cores:
        out.append(
            f"the machine was busy before the run: 1-min load average {start} on {cores} cores; "
            "other processes compete for the cores and the times are inflated and noisy"
        )
    busiest = max((g["load"][1][0] for g in result["groups"]), default=0.0)
    if busiest > (1 + BUSY_PER_CORE) * cores:
        out.append(
            f"load average reached {busiest} during the run on {cores} cores: "
            "more runnable threads than cores, so the ratios may be off"
        )
    for name in BLAS_OVERRIDES:
        if result["machine"]["env"].get(name):
            out.append(
                f"{name}={result['machine']['env'][name]} is set and changes OpenBLAS's kernel "
                "(--cpu-features avx2 sets it on purpose); --unset-blas-env runs without it"
            )
    return out


def _median(row: dict[str, Any], mode: str = "fwd_bwd") -> float | None:
    timing = row.get(f"time_{mode}")
    return None if timing is None else float(timing["median_s"])


def _verdict(smoke: bool, ratio: float | None, limit: float) -> dict[str, Any]:
    """``met`` (None when not judged) and the table's word for it."""
    if smoke:
        return {"met": None, "verdict": "not judged at smoke size"}
    if ratio is None:
        return {"met": None, "verdict": "not run"}
    return {"met": ratio <= limit, "verdict": "yes" if ratio <= limit else "no"}


def check_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target on each ``sizes`` group it applies to: the ratio and whether it is met."""
    smoke = result["smoke"]
    # Targets between rows that --rows left out are not listed, rather than "not run".
    selected = result.get("rows", {row.name: None for row in REGISTRY})
    out = []
    for target in TARGETS:
        if not {target.row, target.versus} <= set(selected):
            continue
        for group in result["groups"]:
            size = Size(**group["size"])
            cell = group.get("cell", "rnn")
            if (
                "sizes" not in group["sections"]
                or not target.applies(size)
                or cell not in target.cells
                or group["dtype"] not in target.dtypes
            ):
                continue
            rows = group["rows"]
            mine = _median(rows.get(target.row, {}))
            theirs = _median(rows.get(target.versus, {}))
            ratio = None if mine is None or theirs is None else mine / theirs
            out.append(
                {
                    "target": f"{target.row} ≤ {target.limit}× {target.versus} at {target.where}",
                    "cell": cell,
                    "size": str(size),
                    "dtype": group["dtype"],
                    "ratio": ratio,
                    **_verdict(smoke, ratio, target.limit),
                }
            )
    for group in result["groups"]:
        if "sizes" in group["sections"] and "reverse" in selected:
            per = group["peakmem_reverse"]["per_TBH"]
            cell = group.get("cell", "rnn")
            limit = peakmem_limit(cell)
            out.append(
                {
                    "target": f"peakmem_reverse ≤ {limit}·T·B·H·itemsize",
                    "cell": cell,
                    "size": str(Size(**group["size"])),
                    "dtype": group["dtype"],
                    "ratio": per,
                    **_verdict(smoke, per, limit),
                }
            )
    return out


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def markdown(result: dict[str, Any], section: str) -> str:
    """One markdown table of every row of every group in ``section``."""
    lines = [
        "| cell | size | dtype | row | time_fwd_bwd ms | spread | time_bwd ms | GFLOP/s "
        "| × blas_floor | × math_floor | × peer | compile s | peakmem_reverse /TBH |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    peers = {impl.name: impl.peer for impl in REGISTRY}
    for group in result["groups"]:
        if section not in group["sections"]:
            continue
        rows = group["rows"]
        floors = [_median(rows.get(f, {})) for f in ("blas_floor", "math_floor")]
        size = str(Size(**group["size"]))
        cell = group.get("cell", "rnn")
        for name, row in rows.items():
            t = _median(row)
            if t is None:
                lines.append(
                    f"| {cell} | {size} | {group['dtype']} | {name} | {row['status']} ||||||||"
                )
                continue
            peer = peers.get(name)
            peer_t = None if peer is None else _median(rows.get(peer, {}))
            bwd = _median(row, "bwd")
            mem = group["peakmem_reverse"]["per_TBH"] if name == "reverse" else None
            cells = [
                cell,
                size,
                group["dtype"],
                name,
                _fmt(1e3 * t),
                f"{100 * row['time_fwd_bwd']['spread']:.0f}%",
                _fmt(None if bwd is None else 1e3 * bwd),
                _fmt(group["flops"]["fwd_bwd"] / t / 1e9),
                *(_fmt(None if floor is None else t / floor) for floor in floors),
                "—" if peer_t is None else f"{t / peer_t:.3g} ({peer})",
                _fmt(row["compile_s"]),
                _fmt(mem),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    simd = m["numpy_simd"]
    blas = [
        f"{p['internal_api']} {p['version']} ({p.get('architecture')}, {p['num_threads']} threads)"
        for p in m["threadpools"]
    ]
    parts = [
        f"`{result['command']}`",
        "",
        f"{m['cpu']}, {m['cores']} cores; {m['platform']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"BLAS: {'; '.join(blas)}; env: {m['env']}",
        f"NumPy SIMD: baseline {' '.join(simd['baseline'])}; dispatched, in use: "
        f"{' '.join(simd['found']) or 'none'}; not in use: {' '.join(simd['not_found']) or 'none'}",
        "ufunc throughput (G elements/s, 2¹⁶ elements in cache): "
        + "; ".join(
            f"{dtype} " + ", ".join(f"{k} {v:g}" for k, v in rates.items())
            for dtype, rates in m["ufunc_gelem_per_s"].items()
        ),
        f"load average (1, 5, 15 min): start {result['load_start']}, end {result['load_end']}",
        "",
    ]
    parts += [f"**warning:** {w}" for w in result["warnings"]]
    tables: list[str] = []
    for section, title in (("sizes", "Sizes"), ("T", "T sweep"), ("H", "H sweep")):
        # The smoke run's one size is every section; its table is printed once.
        table = markdown(result, section)
        if table.count("\n") > 1 and table not in tables:
            tables.append(table)
            parts += ["", f"### {title}", "", table]
    parts += [
        "",
        "### Targets",
        "",
        "| target | cell | size | dtype | ratio | met |",
        "|---|---|---|---|---|---|",
    ]
    for t in result["targets"]:
        met = "**no**" if t["verdict"] == "no" else t["verdict"]
        parts.append(
            f"| {t['target']} | {t.get('cell', 'rnn')} | {t['size']} | {t['dtype']} "
            f"| {_fmt(t['ratio'])} | {met} |"
        )
    child = result.get("without_avx512")
    if child is not None:
        parts += ["", "## Without AVX-512 (`--cpu-features avx2`)", ""]
        parts.append(child["skipped"] if "skipped" in child else report(child))
    return "\n".join(parts)


def _reexec_without_blas_overrides() -> None:
    env = {k: v for k, v in os.environ.items() if k not in BLAS_OVERRIDES}
    if len(env) != len(os.environ):
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one tiny size, seconds")
    parser.add_argument(
        "--out", type=Path, help=f"output folder (default: {OUT}, with --smoke {SMOKE_OUT})"
    )
    parser.add_argument("--dtypes", nargs="+", default=None, choices=["float32", "float64"])
    parser.add_argument("--rows", nargs="+", help="only these rows (default: every row)")
    parser.add_argument(
        "--cells",
        nargs="+",
        default=list(CELLS),
        choices=list(CELLS),
        help="the cells to run (default: every cell; the gated ones over the sizes section)",
    )
    parser.add_argument("--sections", nargs="+", default=SECTIONS, choices=SECTIONS)
    parser.add_argument("--repeats", type=int, default=None, help="samples per row")
    parser.add_argument("--warmup", type=int, default=2, help="calls before the samples")
    parser.add_argument("--min-sample", type=float, default=None, help="seconds per sample")
    parser.add_argument(
        "--cpu-features",
        choices=["avx2"],
        help="then re-run " + ", ".join(AVX2_ROWS) + " as on a CPU without AVX-512: NumPy's "
        f"AVX-512 targets disabled, OpenBLAS's Haswell kernel, XLA_FLAGS+={XLA_WITHOUT_AVX512} "
        "(a subprocess)",
    )
    parser.add_argument(
        "--unset-blas-env",
        action="store_true",
        help=f"re-run this process with {' and '.join(BLAS_OVERRIDES)} removed",
    )
    args = parser.parse_args(argv)
    args.out = args.out or (SMOKE_OUT if args.smoke else OUT)
    args.dtypes = args.dtypes or (["float64"] if args.smoke else ["float32", "float64"])
    args.repeats = args.repeats or (3 if args.smoke else 7)
    args.min_sample = args.min_sample or (0.001 if args.smoke else 0.05)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.unset_blas_env:
        _reexec_without_blas_overrides()
    console = Console(stderr=True)
    for w in (result := run(args, console))["warnings"]:
        console.print(f"[bold red]warning:[/] {w}")
    text = report(result)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.md").write_text(text + "\n")
    (args.out / "bench.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    from bench_plots import plot_all

    plot_all(result, args.out)
    runs = [result, result.get("without_avx512", {})]
    failed = [
        f"{g['size']} {g['dtype']} {name}"
        for run_result in runs
        for g in run_result.get("groups", [])
        for name, row in g["rows"].items()
        if row["status"] == "check failed"
    ]
    for f in failed:
        console.print(f"[bold red]check failed:[/] {f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
