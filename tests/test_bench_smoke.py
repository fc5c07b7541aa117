"""The benchmark harness runs end to end in what ``nox -s bench`` installs; no time is asserted.

The smoke run goes through :func:`session_env.run_with_only`: a subprocess in which only
the distributions the bench session installs can be imported, so a benchmark import of
something only the tests session has (Hypothesis, pytest) fails here as it does for a
user. A separate process also keeps the harness's jax x64 and BLAS limits out of the
suite, and this suite's strict JAX promotion out of the harness.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from session_env import ROOT, distributions, run_with_only, session_requirements

BENCH = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def bench_session() -> set[str]:
    """The distributions ``nox -s bench`` installs."""
    return distributions(*session_requirements("bench"))


@pytest.fixture
def bench_bptt(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("bench_bptt")


def test_smoke_run_in_the_bench_session_checks_every_row_and_writes_its_outputs(
    tmp_path: Path, bench_session: set[str], bench_bptt: Any
) -> None:
    run = run_with_only(
        bench_session, BENCH / "bench_bptt.py", "--smoke", "--cpu-features", "avx2",
        "--cells", "rnn", "lstm", "--out", str(tmp_path),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "| rnn | B=2 D=3 H=8 O=2 T=5 | float64 | reverse |" in run.stdout
    assert "| lstm | B=2 D=3 H=8 O=2 T=5 | float64 | reverse |" in run.stdout
    # The smoke size is too small to judge a target, and must not read as a miss.
    assert "not judged at smoke size" in run.stdout
    assert "**no**" not in run.stdout
    result = json.loads((tmp_path / "bench.json").read_text())
    groups = {group["cell"]: group for group in result["groups"]}
    assert list(groups) == ["rnn", "lstm"]
    for group in groups.values():
        for name, row in group["rows"].items():
            assert row["status"] in ("ok", "unsupported size"), (name, row)
    timed = {"rnn": ("jax_jacrev",), "lstm": ()}
    for cell, group in groups.items():
        for name in ("reverse", "blas_floor", "math_floor", "jax_grad", *timed[cell]):
            assert group["rows"][name]["time_fwd_bwd"]["median_s"] > 0, (cell, name)
    # The RNN-only rows are not run on the LSTM; torch is not in the bench session.
    assert set(groups["lstm"]["rows"]) == {"reverse", "blas_floor", "math_floor", "jax_grad"}
    for png in ("time_vs_T.png", "time_vs_H.png", "ratio_to_floor.png"):
        assert (tmp_path / png).stat().st_size > 0
    for dtype in result["machine"]["ufunc_gelem_per_s"].values():
        assert set(dtype) == {"tanh", "exp", "cosh", "multiply"}
        assert min(dtype.values()) > 0
    _check_run_without_avx512(bench_bptt, result, run.stdout)


def _check_run_without_avx512(bench_bptt: Any, result: dict[str, Any], stdout: str) -> None:
    """The ``--cpu-features avx2`` subprocess ran its rows with no AVX-512 target in use."""
    avx512 = bench_bptt.avx512_targets(result["machine"]["numpy_simd"]["found"])
    child = result["without_avx512"]
    if not avx512:  # a CPU without AVX-512: this run already is that case
        assert "skipped" in child
        return
    # The control: the same check finds AVX-512 targets in this process's features.
    assert avx512 == bench_bptt.avx512_targets(bench_bptt.simd_targets()["found"])
    assert "## Without AVX-512" in stdout
    simd = child["machine"]["numpy_simd"]
    assert bench_bptt.avx512_targets(simd["found"]) == []
    assert set(avx512) <= set(simd["not_found"])
    assert {p["architecture"] for p in child["machine"]["threadpools"]} == {"Haswell"}
    # What the child read from its environment, not what the parent meant to set.
    xla_flags = child["machine"]["env"]["XLA_FLAGS"] or ""
    assert bench_bptt.XLA_WITHOUT_AVX512 in xla_flags.split()
    assert f"'XLA_FLAGS': '{xla_flags}'" in stdout
    assert [group["cell"] for group in child["groups"]] == ["rnn", "lstm"]
    for group in child["groups"]:
        # step_floor is the rnn's alone.
        expected = set(bench_bptt.AVX2_ROWS) - ({"step_floor"} if group["cell"] != "rnn" else set())
        assert set(group["rows"]) == expected
        for row in group["rows"].values():
            assert row["status"] == "ok"
            assert row["time_fwd_bwd"]["median_s"] > 0


def test_the_bench_session_is_what_noxfile_installs(bench_session: set[str]) -> None:
    assert session_requirements("bench") == ({"jax", "plot"}, ["bench"])
    assert {"bptt-ref", "numpy", "jax", "jaxlib", "matplotlib", "rich", "threadpoolctl"} <= (
        bench_session
    )
    assert not {"hypothesis", "pytest"} & bench_session


def test_an_import_the_bench_session_lacks_fails_as_it_does_for_a_user(
    tmp_path: Path, bench_session: set[str]
) -> None:
    # Test the tester: the harness as it was when `nox -s bench -- --smoke` failed for
    # users (bench_rows importing the case model through the Hypothesis strategies) must
    # fail here; the same copy with today's import is the control.
    for name in ("bench_bptt.py", "bench_rows.py", "bench_plots.py"):
        shutil.copy(BENCH / name, tmp_path / name)
    rows = tmp_path / "bench_rows.py"
    today = "from bptt_ref.cases import Case, make_case"
    assert today in rows.read_text()
    control = run_with_only(bench_session, tmp_path / "bench_bptt.py", "--help")
    assert control.returncode == 0, control.stderr
    assert "--out OUT" in control.stdout

    old = "from bptt_ref.strategies import Case, make_case"
    rows.write_text(rows.read_text().replace(today, old))
    planted = run_with_only(bench_session, tmp_path / "bench_bptt.py", "--help")
    assert planted.returncode == 1
    assert "ModuleNotFoundError: No module named 'hypothesis'" in planted.stderr


def test_modules_outside_the_session_look_absent_and_its_own_import(
    tmp_path: Path, bench_session: set[str]
) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import importlib.util\n"
        "import jax, matplotlib, numpy, rich, threadpoolctl, bptt_ref.cases\n"
        "assert importlib.util.find_spec('hypothesis') is None\n"
        "import hypothesis\n"
    )
    run = run_with_only(bench_session, probe)
    assert run.returncode == 1
    assert run.stderr.strip().endswith("ModuleNotFoundError: No module named 'hypothesis'")


def test_help_names_the_default_output_folders(
    bench_bptt: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        bench_bptt.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "output folder (default: benchmarks/results, with --smoke bench-results)" in text
    assert "see below" not in text


def _result(
    bench_bptt: Any,
    smoke: bool,
    medians: dict[str, float],
    *,
    cell: str = "rnn",
    size: int = 0,
    dtype: str = "float64",
    per_TBH: float = 3.0,
) -> dict[str, Any]:
    rows = {name: {"time_fwd_bwd": {"median_s": t}} for name, t in medians.items()}
    group = {
        "cell": cell,
        "size": bench_bptt.SIZES[size]._asdict(),
        "dtype": dtype,
        "sections": ["sizes"],
        "rows": rows,
        "peakmem_reverse": {"per_TBH": per_TBH},
    }
    return {"smoke": smoke, "groups": [group]}


def test_targets_are_judged_at_full_sizes_and_not_at_the_smoke_size(bench_bptt: Any) -> None:
    # At the smallest full size: reverse 2× the math floor (limit 1.5: missed), 0.5×
    # jax_grad (limit 1.5: met), no vectorized row (not run), peak memory 3 (limit 4: met).
    medians = {"reverse": 2.0, "math_floor": 1.0, "jax_grad": 4.0}
    verdicts = {
        t["target"].split(" at ")[0]: t["verdict"]
        for t in bench_bptt.check_targets(_result(bench_bptt, False, medians))
    }
    assert verdicts == {
        "reverse ≤ 1.5× math_floor": "no",
        "reverse ≤ 1.5× jax_grad": "yes",
        "vectorized ≤ 1.0× jax_jacrev": "not run",
        "peakmem_reverse ≤ 4.0·T·B·H·itemsize": "yes",
    }
    smoke = bench_bptt.check_targets(_result(bench_bptt, True, medians))
    assert {t["verdict"] for t in smoke} == {"not judged at smoke size"}
    assert {t["met"] for t in smoke} == {None}


@pytest.mark.parametrize(
    ("dtype", "torch_verdict"), [("float64", ("1.0", "no")), ("float32", ("1.5", "yes"))]
)
def test_gated_targets_are_their_own(
    bench_bptt: Any, dtype: str, torch_verdict: tuple[str, str]
) -> None:
    # An LSTM at B·H = 4096: reverse 1.3× its math floor (limit 1.2: missed), 0.9× jax_grad
    # (met), 1.3× torch (float64 limit 1.0: missed; float32 limit 1.5: met), peak memory 9
    # (limit 2G + 2 = 10, met; the RNN's limit 4 would miss it). No RNN target applies.
    medians = {"reverse": 1.3, "math_floor": 1.0, "jax_grad": 1.3 / 0.9, "torch": 1.0}
    result = _result(bench_bptt, False, medians, cell="lstm", size=1, dtype=dtype, per_TBH=9.0)
    result["rows"] = dict.fromkeys(medians)  # the rows of a run where torch is installed
    verdicts = {
        t["target"].split(" at ")[0]: t["verdict"] for t in bench_bptt.check_targets(result)
    }
    limit, met = torch_verdict
    assert verdicts == {
        "reverse ≤ 1.2× math_floor": "no",
        "reverse ≤ 1.0× jax_grad": "yes",
        f"reverse ≤ {limit}× torch": met,
        "peakmem_reverse ≤ 10.0·T·B·H·itemsize": "yes",
    }
    assert {t["cell"] for t in bench_bptt.check_targets(result)} == {"lstm"}


def test_targets_between_rows_left_out_by_rows_are_not_listed(bench_bptt: Any) -> None:
    # The run without AVX-512 has reverse and the floors only: no jax_grad target.
    medians = {"reverse": 1.2, "math_floor": 1.0}
    result = {**_result(bench_bptt, False, medians), "rows": dict.fromkeys(medians)}
    verdicts = {
        t["target"].split(" at ")[0]: t["verdict"] for t in bench_bptt.check_targets(result)
    }
    assert verdicts == {
        "reverse ≤ 1.5× math_floor": "yes",
        "peakmem_reverse ≤ 4.0·T·B·H·itemsize": "yes",
    }


def test_a_size_where_no_selected_row_runs_times_nothing(bench_bptt: Any) -> None:
    # --rows vectorized runs at the two smaller sizes only; the larger ones time no row.
    settings = bench_bptt.Settings(repeats=3, warmup=1, min_sample=0.0)
    assert bench_bptt.time_interleaved({}, {}, settings, print) == {}


def _child(simd: dict[str, list[str]], xla_flags: str | None) -> dict[str, Any]:
    """A child run's result as the check reads it: every row ok, ``simd`` and ``xla_flags``."""
    ok = {"status": "ok", "time_fwd_bwd": {"median_s": 1.0}}
    rows = {
        "rnn": ("reverse", "blas_floor", "math_floor", "step_floor", "jax_grad"),
        "lstm": ("reverse", "blas_floor", "math_floor", "jax_grad"),
    }
    return {
        "machine": {
            "numpy_simd": simd,
            "threadpools": [{"architecture": "Haswell"}],
            "env": {"XLA_FLAGS": xla_flags},
        },
        "groups": [{"cell": cell, "rows": dict.fromkeys(r, ok)} for cell, r in rows.items()],
    }


def test_the_check_without_avx512_fails_on_a_subprocess_that_kept_it(bench_bptt: Any) -> None:
    # Test the tester: a child run whose NumPy still used its AVX-512 targets (this
    # process's features, as if the variable had not been set) fails the check, and so
    # does one whose XLA was not told to leave AVX-512 out; the control passes.
    simd = bench_bptt.simd_targets()
    if not bench_bptt.avx512_targets(simd["found"]):
        pytest.skip("NumPy uses no AVX-512 target on this CPU")
    without = {
        "baseline": simd["baseline"],
        "found": [t for t in simd["found"] if not bench_bptt.avx512_targets([t])],
        "not_found": simd["not_found"] + bench_bptt.avx512_targets(simd["found"]),
    }
    flags = f"--xla_dump_to=x {bench_bptt.XLA_WITHOUT_AVX512}"
    stdout = f"## Without AVX-512 ... 'XLA_FLAGS': '{flags}'"
    parent = {"machine": {"numpy_simd": simd}}
    _check_run_without_avx512(
        bench_bptt, {**parent, "without_avx512": _child(without, flags)}, stdout
    )
    kept_numpy = {**parent, "without_avx512": _child(simd, flags)}
    with pytest.raises(AssertionError, match=r"X86_V4|AVX512"):
        _check_run_without_avx512(bench_bptt, kept_numpy, stdout)
    kept_xla = {**parent, "without_avx512": _child(without, "--xla_dump_to=x")}
    with pytest.raises(AssertionError, match="xla_cpu_max_isa"):
        _check_run_without_avx512(bench_bptt, kept_xla, stdout)
