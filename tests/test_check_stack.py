"""`bptt-ref check --layers N --bidirectional` and `bptt_ref.testing` for stacked networks:
a right client passes, a planted wrong one fails naming its wrong keys, and a client
written for one layer is told the stacked keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from planted import stack as clients

from bptt_ref.cli import main
from bptt_ref.testing import ProtocolError, check_gradients

HERE = Path(__file__).parent


def test_a_right_stacked_client_passes_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"{HERE / 'planted' / 'stack.py'}:lstm_2_bidirectional"
    argv = ["check", target, "--cell", "lstm", "--layers", "2", "--bidirectional"]
    code = main([*argv, "--examples", "8", "--save-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "W_hh_l1_reverse" in out
    assert "num_layers=2 bidirectional=True" in " ".join(out.split())


def test_h0_rows_in_the_wrong_order_fail(tmp_path: Path) -> None:
    result = check_gradients(
        clients.gru_reverse_h0_rows_swapped,
        cell="gru",
        num_layers=2,
        bidirectional=True,
        max_examples=30,
        save_dir=tmp_path,
    )
    assert result.report is not None
    wrong = result.report.wrong_keys
    # Rows 1 and 2 start layer 0's reverse and layer 1's forward direction: every key
    # downstream of them changes with the loss, and h0 most of all.
    assert "h0" in wrong
    text = str(result.report)
    assert "num_layers=2 bidirectional=True" in text
    with np.load(result.report.reproducer) as saved:
        assert saved["h0"].shape[0] == 4
        assert int(saved["num_layers"]) == 2


def test_single_cell_keys_are_a_protocol_error_naming_the_stacked_keys() -> None:
    expected = r"unknown keys \['W_hh', 'W_ih'.*the keys are W_ih_l0, W_hh_l0"
    with pytest.raises(ProtocolError, match=expected):
        check_gradients(
            clients.single_cell_keys, cell="lstm", num_layers=2, bidirectional=False, max_examples=2
        )
