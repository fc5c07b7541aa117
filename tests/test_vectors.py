"""Golden vectors: written by `bptt-ref vectors`, reloaded with NumPy only, re-derived."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bptt_ref
from bptt_ref import stack, vectors
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
    n = len(json.loads((written.out / vectors.MANIFEST).read_text(encoding="utf-8"))["cases"])
    # Every case done is shown as it completes, and the oracle's compilation as it starts.
    for done in range(n + 1):
        assert f" {done}/{n} " in written.stderr
    assert "compiling the oracle" in written.stderr
    split = r" in [\d.]+ s \([\d.]+ s compiling the oracle, [\d.]+ s on the cases\);"
    assert re.search(f"wrote {n} cases .*{split}", written.stdout), written.stdout


def test_set_covers_every_cell_configuration_length_regime_and_edge(golden: Path) -> None:
    manifest = json.loads((golden / vectors.MANIFEST).read_text(encoding="utf-8"))
    assert manifest["format_version"] == vectors.FORMAT_VERSION == 3
    assert manifest["bptt_ref_version"] == bptt_ref.__version__
    cases = manifest["cases"]
    assert {c["cell"] for c in cases} == set(bptt_ref.CELL_NAMES)
    for cell in bptt_ref.CELL_NAMES:
        mine = [c for c in cases if c["cell"] == cell]
        configs = {(c["hidden"], c["output"], c["loss"]) for c in mine}
        hiddens = bptt_ref.HIDDEN_ACTIVATIONS if cell == "rnn" else ("tanh",)
        assert configs == {(h, o, lo) for h in hiddens for o, lo in bptt_ref.VALID_HEADS}, cell
        assert {c["dims"]["T"] for c in mine} >= {1, 64}, cell
        long_regimes = {c["regime"] for c in mine if c["dims"]["T"] == 64}
        assert long_regimes == {"contracting", "near_critical", "expanding"}, cell
        assert {c["style"] for c in mine} >= {"normal", "zeros", "large"}, cell
    # The rnn keeps format 1's 81 cases, with their seeds, ahead of the gated cells (its
    # stacked network comes last, with the other cells' ones).
    rnn = [c for c in cases if c["cell"] == "rnn" and c["num_layers"] == 1]
    assert len(rnn) == 81
    assert [c["seed"] for c in rnn] == list(range(81))
    assert "kink" in {c["style"] for c in rnn}
    for index, c in enumerate(cases):
        assert c["name"].startswith(f"{index:03d}-{c['cell']}-{c['hidden']}-"), c["name"]
        assert c["file"] == c["name"] + ".npz"
    assert {p.name for p in golden.glob("*.npz")} == {c["file"] for c in cases}


# The layouts as the issue states them (PyTorch / cuDNN), written out here rather than
# read from the package, so a manifest that drifts from them fails.
GATES = {"rnn": "", "lstm": "i,f,g,o", "gru": "r,z,n", "gru_reset_before": "r,z,n"}
NAMED = {
    "rnn": {"V": ["H", "D"], "W": ["H", "H"], "b_h": ["H"], "h0": ["B", "H"]},
    "lstm": {
        "W_ih": ["4H", "D"],
        "W_hh": ["4H", "H"],
        "b_ih": ["4H"],
        "b_hh": ["4H"],
        "h0": ["B", "H"],
        "c0": ["B", "H"],
    },
    "gru": {
        "W_ih": ["3H", "D"],
        "W_hh": ["3H", "H"],
        "b_ih": ["3H"],
        "b_hh": ["3H"],
        "h0": ["B", "H"],
    },
}
NAMED["gru_reset_before"] = NAMED["gru"]
SHARED = {"U": ["O", "H"], "b_y": ["O"], "xs": ["T", "B", "D"], "targets": ["T", "B", "O"]}


def test_manifest_states_each_cells_layout(golden: Path) -> None:
    manifest = json.loads((golden / vectors.MANIFEST).read_text(encoding="utf-8"))
    for c in manifest["cases"]:
        if (c["num_layers"], c["bidirectional"]) != (1, False):
            continue  # test_manifest_states_each_stacks_layout
        cell, layout = c["cell"], c["layout"]
        assert layout["gates"] == GATES[cell], c["name"]
        assert layout["named_shapes"] == {**NAMED[cell], **SHARED}, c["name"]
        assert list(c["shapes"]) == list(layout["named_shapes"]), c["name"]
        dims = c["dims"]
        for key, named in layout["named_shapes"].items():
            size = [int(n[:-1] or 1) * dims[n[-1]] for n in named]
            assert c["shapes"][key] == size, (c["name"], key)
        if cell != "rnn":
            assert "used as x_t W_ih^T" in layout["weights"]
            assert "row k*H + j" in layout["weights"]
        assert ("reset" in layout) == cell.startswith("gru"), c["name"]
    resets = {c["cell"]: c["layout"].get("reset", "") for c in manifest["cases"]}
    assert resets["gru"].startswith("after the recurrent product"), resets
    assert "linear_before_reset=1" in resets["gru"], resets
    assert resets["gru_reset_before"].startswith("before the recurrent product"), resets
    assert "linear_before_reset=0" in resets["gru_reset_before"], resets


def test_gated_cases_have_asymmetric_weights_and_nonzero_initial_states(golden: Path) -> None:
    # What makes a vector able to catch a transposed weight or a dropped h0/c0 path.
    gated = [
        c
        for c in vectors.load(golden)
        if c.cell != "rnn" and c.style == "normal" and (c.num_layers, c.bidirectional) == (1, False)
    ]
    assert gated
    for case in gated:
        p = case.arrays["float64"].params
        H = case.dims["H"]
        for block in np.split(p["W_hh"], p["W_hh"].shape[0] // H):
            assert not np.allclose(block, block.T), case.name
        for state in ("h0", "c0") if case.cell == "lstm" else ("h0",):
            assert np.all(p[state] != 0), (case.name, state)
    for cell in set(bptt_ref.CELL_NAMES) - {"rnn"}:
        assert max(c.dims["T"] for c in gated if c.cell == cell) > 1, cell


def mismatches(cases: list[vectors.GoldenCase]) -> list[tuple[str, str, str]]:
    """``(case, dtype, key)`` where ``bptt_ref.loss_and_grad`` strays from the vector
    beyond the manifest's atol."""
    out = []
    for case in cases:
        for dtype, data in case.arrays.items():
            assert data.xs.dtype == np.dtype(dtype)
            assert data.xs.shape == tuple(case.dims[d] for d in "TBD")
            _, grads = stack.loss_and_grad(
                data.params,
                data.xs,
                data.targets,
                num_layers=case.num_layers,
                bidirectional=case.bidirectional,
                **case.config,
            )
            assert set(grads) == set(data.grads) == set(data.atol), case.name
            out += [
                (case.name, dtype, key)
                for key, grad in grads.items()
                if not np.max(np.abs(grad - data.grads[key]), initial=0.0) <= data.atol[key]
            ]
    return out


def test_round_trip_rederives_every_gradient_of_every_cell(golden: Path) -> None:
    cases = vectors.load(golden)
    assert {c.cell for c in cases} == set(bptt_ref.CELL_NAMES)
    assert mismatches(cases) == []


def rewrite(path: Path, change: dict[str, np.ndarray]) -> None:
    """Replace arrays of one ``.npz`` and record its new sha256 in the manifest, as a set
    written by a wrong implementation would look."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(path, **{**arrays, **change})
    manifest_path = path.parent / vectors.MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for entry in manifest["cases"]:
        if entry["file"] == path.name:
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")


def test_a_planted_wrong_lstm_vector_is_found(golden: Path, tmp_path: Path) -> None:
    copy = tmp_path / "set"
    shutil.copytree(golden, copy)
    victim = next(iter(sorted(copy.glob("*-lstm-tanh-identity-mse-T5-*-normal.npz"))))
    with np.load(victim) as data:
        wrong = 1.001 * data["float64.grad.W_hh"]
    rewrite(victim, {"float64.grad.W_hh": wrong})
    assert mismatches(vectors.load(copy)) == [(victim.stem, "float64", "W_hh")]


def test_manifest_states_each_stacks_layout(golden: Path) -> None:
    manifest = json.loads((golden / vectors.MANIFEST).read_text(encoding="utf-8"))
    stacked = [c for c in manifest["cases"] if (c["num_layers"], c["bidirectional"]) == (2, True)]
    assert {c["cell"] for c in stacked} == set(bptt_ref.CELL_NAMES)
    for c in stacked:
        named, dims = c["layout"]["named_shapes"], c["dims"]
        assert c["name"].endswith("-L2-bidirectional"), c["name"]
        assert "row k*dirs + d of h0" in c["layout"]["stack"]
        # PyTorch's state_dict of nn.<Cell>(num_layers=2, bidirectional=True), renamed.
        first, rest = ("V", ["W", "b_h"]) if c["cell"] == "rnn" else ("W_ih", ["W_hh", "b_ih"])
        for suffix in ("_l0", "_l0_reverse", "_l1", "_l1_reverse"):
            for key in (first, *rest):
                assert key + suffix in named, (c["name"], key + suffix)
        rows = "H" if c["cell"] == "rnn" else ("4H" if c["cell"] == "lstm" else "3H")
        assert named[first + "_l0"] == [rows, "D"]
        assert named[first + "_l1_reverse"] == [rows, "2H"]
        assert named["U"] == ["O", "2H"]
        assert named["h0"] == ["L·dirs", "B", "H"]
        assert c["shapes"]["h0"] == [4, dims["B"], dims["H"]]
        assert c["shapes"][first + "_l1"][1] == 2 * dims["H"]


def test_a_planted_wrong_stacked_vector_is_found(golden: Path, tmp_path: Path) -> None:
    copy = tmp_path / "set"
    shutil.copytree(golden, copy)
    victim = next(iter(sorted(copy.glob("*-gru-tanh-*-L2-bidirectional.npz"))))
    with np.load(victim) as data:
        wrong = 1.001 * data["float64.grad.W_hh_l0_reverse"]
    rewrite(victim, {"float64.grad.W_hh_l0_reverse": wrong})
    assert mismatches(vectors.load(copy)) == [(victim.stem, "float64", "W_hh_l0_reverse")]


def test_tampered_file_fails_the_hash_check(golden: Path, tmp_path: Path) -> None:
    copy = tmp_path / "set"
    shutil.copytree(golden, copy)
    for victim in (sorted(copy.glob("*.npz"))[3], next(copy.glob("*-gru_reset_before-*.npz"))):
        raw = bytearray(victim.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        victim.write_bytes(bytes(raw))
        with pytest.raises(ValueError, match=f"{victim.name} has sha256 .* was changed"):
            vectors.load(copy)
        victim.write_bytes((golden / victim.name).read_bytes())


def test_load_needs_numpy_only(golden: Path) -> None:
    code = (
        "import sys, bptt_ref, bptt_ref.testing, bptt_ref.check, bptt_ref.vectors as v; "
        f"cells = {{c.cell for c in v.load({str(golden)!r})}}; "
        "assert cells == set(bptt_ref.CELL_NAMES), cells; "
        "heavy = {'jax', 'hypothesis', 'rich'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


def test_a_wrong_lstm_gradient_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = bptt_ref.loss_and_grad

    def w_hh_scaled(*args: Any, cell: str = "rnn", **config: Any) -> Any:
        loss, grads = real(*args, cell=cell, **config)
        return loss, {**grads, "W_hh": 1.001 * grads["W_hh"]} if cell == "lstm" else grads

    monkeypatch.setattr(bptt_ref, "loss_and_grad", w_hh_scaled)
    assert main(["vectors", "--out", str(tmp_path), "--cell", "lstm"]) == 1
    out = capsys.readouterr().out
    # The first LSTM case, under its name in the whole set, fails on W_hh alone.
    assert "FAIL 081-lstm-tanh-identity-mse-T5-near_critical-normal (float64)" in out, out
    assert "W_hh: err" in out, out
    assert "W_ih: err" not in out, out
    assert not (tmp_path / vectors.MANIFEST).exists()
    # The control: the same command with the real gradient writes the GRU's cases.
    monkeypatch.setattr(bptt_ref, "loss_and_grad", real)
    assert main(["vectors", "--out", str(tmp_path), "--cell", "gru"]) == 0
    assert {c.cell for c in vectors.load(tmp_path)} == {"gru"}


def test_unknown_cell_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown cells \['lstn'\]"):
        vectors.write(tmp_path, cells=["lstn"])


def test_missing_manifest_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="bptt-ref vectors --out"):
        vectors.load(tmp_path)
