"""A sustained run on an emulated board (a real OpenSSH server on 127.0.0.1 and the minimal board
interpreter) whose target file names an ``energy_command``: the command runs on the host, its
readings give the energy per inference, and the record names the command."""
from __future__ import annotations

import sys

import pytest

from edgeprof.results import read_records
from tests.targets.test_ssh import board  # noqa: F401  (the session's emulated board)


def test_sustained_on_a_board_with_an_energy_command(board, models_dir, tmp_path):  # noqa: F811
    meter = tmp_path / "meter.py"
    # stands in for a USB power meter on the host's USB port
    meter.write_text("print('2.5 W')\n")
    board.write("metered", energy_command=[sys.executable, str(meter)])
    res = tmp_path / "r.jsonl"
    r = board.cli("profile", str(models_dir / "cnn.onnx"), "--target", "metered",
                  "--sustained", "1.5s", "--window", "0.5s", "--results", str(res), "-q")
    assert r.exit_code == 0, r.output
    (rec,) = read_records(res)
    assert rec["mode"] == "sustained" and rec["target"] == "metered"
    assert rec["energy_command"] == [sys.executable, str(meter)]
    e = rec["energy"]
    assert e["available"] and e["source"] == "energy_command"
    assert e["mean_w"] == pytest.approx(2.5) and e["idle_w"] == pytest.approx(2.5)
    calls = rec["stats"]["n"]
    assert 0 < e["joules_per_inference"] <= 2.5 * rec["duration_s"] / calls * 2
    assert "energy_command" in rec["sampling_overhead"]["what"]
    board.write("broken", energy_command=[str(tmp_path / "no-such-meter")])
    r = board.cli("profile", str(models_dir / "cnn.onnx"), "--target", "broken",
                  "--sustained", "1s", "-q")
    assert r.exit_code == 1 and "no such program on this host" in r.output
    assert len(r.output.strip().splitlines()) == 1
