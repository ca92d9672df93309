"""The main job on a board: a sweep over the local CPU and a real OpenSSH "board" (the board's
interpreter holds only numpy 1.26 and the runtimes), with one recommendation per target."""
from __future__ import annotations

import json

from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.results import read_records
from tests.sweep_files import demo_sweep
from tests.targets.test_ssh import board  # noqa: F401  (the real sshd fixture)


def test_sweep_on_local_and_a_board(board, tmp_path):  # noqa: F811
    board.write("pi", threads=[1])
    sweep = demo_sweep(tmp_path / "s.toml", name="boards", require="accuracy_drop<=2%",
                       min_time="0.05s", cold_starts=1, measure="""
targets = ["local", "pi"]
accuracy_limit = 200
robustness = { corruptions = ["contrast"], severities = [1], limit = 100 }""")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["sweep", str(sweep), "--out", str(out), "--cache-dir",
                                 str(tmp_path / "cache"), "--targets-dir", str(board.targets), "-q"])
    assert r.exit_code == 0, r.output
    recs = list(read_records(out / "results.jsonl"))
    assert [x for x in recs if x["kind"] == "error"] == []
    for kind in ("latency", "accuracy", "robustness"):
        assert sorted(x["target"] for x in recs if x["kind"] == kind) == \
            ["local", "local", "pi", "pi"], kind
    board_lat = [x for x in recs if x["kind"] == "latency" and x["target"] == "pi"]
    assert all(x["env"]["versions"]["numpy"].startswith("1.26") for x in board_lat)
    assert all(x["cold_start"]["total_s"] for x in board_lat)
    # the same files give the same accuracy on both machines
    acc = {(x["variant_id"], x["target"]): x["accuracy"] for x in recs if x["kind"] == "accuracy"}
    for (vid, target), a in acc.items():
        assert a == acc[(vid, "local")]
    dec = json.loads((out / "decision.json").read_text())
    assert set(dec["recommendations"]) == {"local", "pi"}
    assert "on pi" in (out / "summary.md").read_text()
    # cross-target parity: every variant compared on the same rows; the same files on the same
    # kind of CPU agree, so nothing diverges, and the report says so
    pairs = {(f["variant_id"], tuple(f["targets"])) for f in dec["parity"]}
    assert pairs == {(vid, ("local", "pi")) for vid, _ in acc}
    assert not any(f["diverges"] for f in dec["parity"])
    assert all(f["max_output_error"] is not None for f in dec["parity"])
    assert "no variant diverges across targets" in (out / "summary.md").read_text()
