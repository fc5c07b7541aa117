"""`bptt-ref vectors --layout`: the golden set under a framework's names, loadable as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bptt_ref import vectors
from bptt_ref.cli import main
from bptt_ref.layouts import LAYOUTS


@pytest.fixture(scope="module")
def canonical_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    canonical = tmp_path_factory.mktemp("canonical")
    assert main(["vectors", "--out", str(canonical), "--cell", "gru"]) == 0
    return canonical


@pytest.fixture(scope="module")
def sets(canonical_set: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    keras = tmp_path_factory.mktemp("keras")
    assert main(["vectors", "--out", str(keras), "--cell", "gru", "--layout", "keras"]) == 0
    return canonical_set, keras


def test_a_layout_set_names_the_frameworks_arrays(sets: tuple[Path, Path]) -> None:
    _, keras = sets
    manifest = json.loads((keras / vectors.MANIFEST).read_text(encoding="utf-8"))
    assert manifest["layout"] == "keras"
    entry = manifest["cases"][0]
    assert list(entry["shapes"]) == [
        "kernel", "recurrent_kernel", "bias", "h0", "dense/kernel", "dense/bias", "xs", "targets"
    ]  # fmt: skip
    framework = entry["layout"]["framework"]
    assert framework["convention"] == "keras.layers.GRU(reset_after=True)"
    assert framework["gates"] == "z,r,h"
    T, B, D, H = (entry["dims"][k] for k in "TBDH")
    assert entry["shapes"]["bias"] == [2, 3 * H]
    assert entry["shapes"]["xs"] == [B, T, D]
    assert set(entry["dtypes"]["float64"]["atol"]) == {*entry["shapes"]} - {"targets"}


def test_a_layout_set_holds_the_canonical_sets_numbers(sets: tuple[Path, Path]) -> None:
    canonical, keras = sets
    layout = LAYOUTS["keras"]
    # A framework layout names a single cell's arrays: the stacked cases stay canonical.
    ours = [c for c in vectors.load(canonical) if (c.num_layers, c.bidirectional) == (1, False)]
    theirs = vectors.load(keras)
    assert [c.name for c in ours] == [c.name for c in theirs]
    for a, b in zip(ours, theirs, strict=True):
        for dt in ("float64", "float32"):
            x, y = a.arrays[dt], b.arrays[dt]
            expected = layout.to_layout(a.cell, x.params)
            assert sorted(y.params) == sorted(expected)
            for k, v in expected.items():
                np.testing.assert_array_equal(y.params[k], v)
            np.testing.assert_array_equal(y.xs, x.xs.swapaxes(0, 1))
            np.testing.assert_array_equal(y.targets, x.targets.swapaxes(0, 1))
            grads = layout.grads_to_layout(a.cell, x.grads)
            assert sorted(y.grads) == sorted(grads)
            for k, v in grads.items():
                np.testing.assert_array_equal(y.grads[k], v)
            # bias (2, 3H) holds b_ih and b_hh: its atol is the smaller of theirs.
            assert y.atol["bias"] == min(x.atol["b_ih"], x.atol["b_hh"])
            assert y.atol["recurrent_kernel"] == x.atol["W_hh"]
            assert y.loss == x.loss


def test_a_cell_the_layout_cannot_express_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["vectors", "--out", str(tmp_path), "--cell", "gru", "--layout", "cs231n"]) == 2
    assert "layout 'cs231n' cannot express cell 'gru'" in capsys.readouterr().out
    assert not (tmp_path / vectors.MANIFEST).exists()


def test_a_torch_set_writes_the_stacked_networks_as_their_state_dict(
    canonical_set: Path, tmp_path: Path
) -> None:
    assert main(["vectors", "--out", str(tmp_path), "--cell", "gru", "--layout", "torch"]) == 0
    ours = vectors.load(canonical_set)
    theirs = vectors.load(tmp_path)
    assert [c.name for c in ours] == [c.name for c in theirs]
    stacked = [(a, b) for a, b in zip(ours, theirs, strict=True) if a.num_layers > 1]
    assert stacked, "the set has no stacked case"
    manifest = json.loads((tmp_path / vectors.MANIFEST).read_text(encoding="utf-8"))
    for a, b in stacked:
        assert (b.num_layers, b.bidirectional) == (2, True)
        entry = next(e for e in manifest["cases"] if e["name"] == b.name)
        B, D, H, O = (entry["dims"][k] for k in "BDHO")
        # nn.GRU(D, H, num_layers=2, bidirectional=True)'s state_dict, then h_0 and the head.
        assert entry["shapes"]["weight_ih_l0_reverse"] == [3 * H, D]
        assert entry["shapes"]["weight_ih_l1"] == [3 * H, 2 * H]
        assert entry["shapes"]["bias_hh_l1_reverse"] == [3 * H]
        assert entry["shapes"]["h_0"] == [4, B, H]
        assert entry["shapes"]["fc.weight"] == [O, 2 * H]
        assert entry["layout"]["framework"]["named_shapes"]["weight_ih_l1"] == ["3H", "2H"]
        layout = LAYOUTS["torch"].stacked(2, True)
        for dt in ("float64", "float32"):
            x, y = a.arrays[dt], b.arrays[dt]
            for got, want in (
                (y.params, layout.to_layout(a.cell, x.params)),
                (y.grads, layout.grads_to_layout(a.cell, x.grads)),
            ):
                assert sorted(got) == sorted(want)
                for k, v in want.items():
                    np.testing.assert_array_equal(got[k], v)
            # The state_dict's arrays are the stack's own, renamed: the same atol.
            assert y.atol["weight_hh_l1_reverse"] == x.atol["W_hh_l1_reverse"]
            assert y.atol["h_0"] == x.atol["h0"]
            assert y.loss == x.loss
