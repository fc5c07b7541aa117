"""The plot command, headless."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from bptt_ref import plots


def test_lags_command_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "lags.png"
    assert plots.main(["lags", "--out", str(out), "--T", "6", "--hidden-size", "3"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out) in capsys.readouterr().out


def test_by_lag_reads_the_diagonals() -> None:
    table = np.arange(9.0).reshape(3, 3)
    mid, low, high = plots._by_lag(table)
    assert np.array_equal(mid, [4.0, 5.0, 6.0])
    assert np.array_equal(low, [0.0, 3.0, 6.0])  # lag 0: [0,0],[1,1],[2,2]
    assert np.array_equal(high, [8.0, 7.0, 6.0])


def test_unknown_command_exits() -> None:
    with pytest.raises(SystemExit):
        plots.main(["bars", "--out", "x.png"])
