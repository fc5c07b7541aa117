"""`bptt-ref check --all`: one run over many configurations of a client that takes them
as keywords, one table, one report and reproducer per failing configuration."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

from bptt_ref.cli import main

SUBSET = ["--all", "--hidden", "tanh", "--hidden", "relu", "--output", "softmax"]
"""Four configurations: tanh and relu, each with softmax / mse and softmax / cross_entropy
(the losses that --all adds to softmax)."""


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv, "--examples", "15", "--save-dir", str(tmp_path)])
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def rows(out: str) -> dict[str, str]:
    """The table's verdict per configuration: ``{"tanh/softmax/mse": "yes", ...}``."""
    found = re.findall(r"^│ (\S+/\S+/\S+)\s+│\s+\d+ │[^│]+│ (yes|NO) ", out, re.MULTILINE)
    return dict(found)


def test_a_client_wrong_in_one_configuration_fails_exactly_that_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(tmp_path, capsys, "planted.configured:fused_tanh_softmax_ce", *SUBSET)
    assert code == 1, out
    assert rows(out) == {
        "tanh/softmax/mse": "yes",
        "tanh/softmax/cross_entropy": "NO",
        "relu/softmax/mse": "yes",
        "relu/softmax/cross_entropy": "yes",
    }, out
    assert "1 of 4 configurations fail: tanh/softmax/cross_entropy" in " ".join(out.split())
    # One report, for that configuration, shrunk to the smallest batch that shows the bug.
    assert out.count("disagrees with the reference") == 1, out
    assert "wrong keys: U, V, W, b_h, b_y, h0, xs   (right: none)" in out
    assert "hidden=tanh output=softmax loss=cross_entropy" in out
    assert re.search(r"T=1 B=2 H=1", out), out
    # Its reproducer calls the client with that configuration's keywords.
    (npz,) = tmp_path.glob("bptt-ref-failure-*.npz")
    assert npz.name == "bptt-ref-failure-fused_tanh_softmax_ce-tanh-softmax-cross_entropy.npz"
    keywords = "hidden='tanh', output='softmax', loss='cross_entropy'"
    assert f"fn = functools.partial(fn, {keywords})" in out


def test_the_right_client_passes_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(tmp_path, capsys, "planted.configured:grad", *SUBSET)
    assert code == 0, out + err
    assert rows(out) == dict.fromkeys(
        [
            "tanh/softmax/mse",
            "tanh/softmax/cross_entropy",
            "relu/softmax/mse",
            "relu/softmax/cross_entropy",
        ],
        "yes",
    ), out
    assert "every configuration agrees with the reference" in out
    assert not list(tmp_path.glob("*.npz"))


def test_all_spans_every_valid_configuration_of_the_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The LSTM takes only tanh, so ``--all`` is its six output heads; ``**config`` receives
    the keywords."""
    code, out, err = run(tmp_path, capsys, "planted.configured:lstm", "--cell", "lstm", "--all")
    assert code == 0, out + err
    assert sorted(rows(out)) == sorted(
        f"tanh/{head}"
        for head in [
            "identity/mse",
            "tanh/mse",
            "sigmoid/mse",
            "softmax/mse",
            "softmax/cross_entropy",
            "sigmoid/binary_cross_entropy",
        ]
    ), out


def test_several_configurations_need_the_keywords(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(tmp_path, capsys, "planted.batched:grad", "--all")
    assert code == 2
    assert "planted.batched:grad takes no keyword hidden, output, loss" in err, err


def test_no_valid_configuration_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["planted.configured:grad", "--output", "identity", "--output", "tanh"]
    code, _, err = run(tmp_path, capsys, *argv, "--loss", "cross_entropy")
    assert code == 2
    assert "no valid configuration among hidden tanh, output identity, tanh and loss" in err


def test_one_configuration_is_passed_to_a_client_that_takes_keywords(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --all the one configuration goes to fn too, and the output is the single
    check's: a wrong configured client fails in its configuration only."""
    wrong = "planted.configured:fused_tanh_softmax_ce"
    code, out, _ = run(tmp_path, capsys, wrong, "--output", "softmax", "--loss", "cross_entropy")
    assert code == 1, out
    assert out.startswith(f"FAIL {wrong} disagrees with the reference")
    snippet = "\n".join(
        line[4:] for line in out.split("reproducer: ")[1].splitlines()[1:] if line.strip()
    )
    # The reproducer prints each key's error on the shrunk case: all wrong there.
    printed: dict[str, float] = {}
    script = _write(tmp_path / "rerun.py", snippet)
    runpy.run_path(script, init_globals={"print": printed.setdefault})
    assert set(printed) == {"U", "V", "W", "b_h", "b_y", "h0", "xs"}
    assert all(float(error) > 0 for error in printed.values()), printed
    code, out, _ = run(tmp_path, capsys, wrong, "--output", "softmax", "--loss", "mse")
    assert code == 0, out


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)
