"""Golden vectors: written by `bptt-ref vectors`, reloaded with NumPy only, re-derived."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import bptt_ref
from bptt_ref import vectors
from bptt_ref.cli import main

ROOT = Path(__file__).parent.parent


@dataclass(frozen=True)
class Written:
    """A set written by ``bptt-ref vectors`` on a terminal, and what the command printed."""

    out: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    out = tmp_path_factory.mktemp("golden")
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        # What a user at a terminal sees, progress included.
        patch.setenv("TTY_COMPATIBLE", "1")
        patch.setenv("COLUMNS", "120")
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            assert main(["vectors", "--out", str(out)]) == 0

    def plain(text: str) -> str:
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)

    return Written(out, plain(stdout.getvalue()), plain(stderr.getvalue()))


@pytest.fixture(scope="module")
def golden(written: Written) -> Path:
    return written.out


def test_command_shows_progress_and_where_the_time_went(written: Written) -> None:
    n = len(json.loads((written.out / vectors.MANIFEST).read_text())["cases"])
    # Every case done is shown as it completes, and the oracle's compilation as it starts.
    for done in range(n + 1):
        assert f" {done}/{n} " in written.stderr
    assert "compiling the oracle" in written.stderr
    split = r" in [\d.]+ s \([\d.]+ s compiling the oracle, [\d.]+ s on the cases\);"
    assert re.search(f"wrote {n} cases .*{split}", written.stdout), written.stdout


def test_set_covers_every_configuration_length_regime_and_edge(golden: Path) -> None:
    manifest = json.loads((golden / vectors.MANIFEST).read_text())
    assert manifest["format_version"] == vectors.FORMAT_VERSION
    assert manifest["bptt_ref_version"] == bptt_ref.__version__
    cases = manifest["cases"]
    configs = {(c["hidden"], c["output"], c["loss"]) for c in cases}
    every = {
        (h, o, lo)
        for h, (o, lo) in itertools.product(bptt_ref.HIDDEN_ACTIVATIONS, bptt_ref.VALID_HEADS)
    }
    assert configs == every
    assert {c["dims"]["T"] for c in cases} >= {1, 64}
    assert {c["regime"] for c in cases} == {"contracting", "near_critical", "expanding"}
    assert {c["style"] for c in cases} == {"normal", "zeros", "kink", "large"}
    assert {p.name for p in golden.glob("*.npz")} == {c["file"] for c in cases}


def test_round_trip_rederives_every_gradient(golden: Path) -> None:
    for case in vectors.load(golden):
        for dtype, data in case.arrays.items():
            assert data.xs.dtype == np.dtype(dtype)
            assert data.xs.shape == tuple(case.dims[d] for d in "TBD")
            _, grads = bptt_ref.loss_and_grad(data.params, data.xs, data.targets, **case.config)
            for key, grad in grads.items():
                err = np.max(np.abs(grad - data.grads[key]), initial=0.0)
                assert err <= data.atol[key], (case.name, dtype, key, err, data.atol[key])


def test_tampered_file_fails_the_hash_check(golden: Path, tmp_path: Path) -> None:
    copy = tmp_path / "set"
    shutil.copytree(golden, copy)
    victim = sorted(copy.glob("*.npz"))[3]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    victim.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"{victim.name} has sha256 .* was changed"):
        vectors.load(copy)


def test_load_needs_numpy_only(golden: Path) -> None:
    code = (
        "import sys, bptt_ref, bptt_ref.testing, bptt_ref.check, bptt_ref.vectors as v; "
        f"assert len(v.load({str(golden)!r})) > 0; "
        "heavy = {'jax', 'hypothesis', 'rich'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


def test_missing_manifest_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="bptt-ref vectors --out"):
        vectors.load(tmp_path)
