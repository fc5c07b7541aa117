"""The benchmark harness runs end to end, so that it cannot rot; no time is asserted."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_run_checks_every_row_and_writes_its_outputs(tmp_path: Path) -> None:
    # A separate process: the harness turns on jax x64 and limits BLAS threads, which must
    # not leak into the suite, and this suite's strict JAX promotion must not leak into it.
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_bptt.py"),
            "--smoke",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "| reverse |" in run.stdout
    result = json.loads((tmp_path / "bench.json").read_text())
    (group,) = result["groups"]
    for name, row in group["rows"].items():
        assert row["status"] in ("ok", "unsupported size"), (name, row)
    for name in ("reverse", "blas_floor", "jax_grad", "jax_jacrev"):
        assert group["rows"][name]["time_fwd_bwd"]["median_s"] > 0
    for png in ("time_vs_T.png", "time_vs_H.png", "ratio_to_floor.png"):
        assert (tmp_path / png).stat().st_size > 0


def test_a_size_where_no_selected_row_runs_times_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # --rows vectorized runs at the two smaller sizes only; the larger ones time no row.
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    bench_bptt = importlib.import_module("bench_bptt")
    settings = bench_bptt.Settings(repeats=3, warmup=1, min_sample=0.0)
    assert bench_bptt.time_interleaved({}, {}, settings, print) == {}
