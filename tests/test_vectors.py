"""Golden vectors: written by `bptt-ref vectors`, reloaded with NumPy only, re-derived."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bptt_ref
from bptt_ref import vectors
from bptt_ref.cli import main

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("golden")
    assert main(["vectors", "--out", str(out)]) == 0
    return out


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
