"""`edgeprof demo` end to end (what `make demo` runs), with a shorter time per setting."""
from __future__ import annotations

import json

from click.testing import CliRunner

from edgeprof.cli import cli


def test_demo_writes_a_report_of_measured_records(tmp_path):
    out = tmp_path / "demo"
    r = CliRunner().invoke(cli, ["demo", "--out", str(out), "--min-time", "0.1s", "-q"])
    assert r.exit_code == 0, r.output
    records = json.loads((out / "results.json").read_text())["records"]
    lat = [x for x in records if x["kind"] == "latency"]
    assert {(x["threads"], x["batch"]) for x in lat} == {(t, b) for t in (1, 2) for b in (1, 4, 16)}
    acc = next(x for x in records if x["kind"] == "accuracy")
    assert acc["n"] == 2000 and 0.85 <= acc["accuracy"] <= 1.0
    summary = (out / "summary.md").read_text()
    assert f"{acc['accuracy']:.2%}" in summary and "n = 2000" in summary
    for x in lat:  # every latency figure in the summary comes from this run's records
        assert x["model"]["name"] == "fashion_cnn.onnx" and x["cold_start"]["total_s"]
    assert (out / "results.jsonl").read_text().count("\n") == len(records)
    assert (out / "throughput.png").stat().st_size > 10_000 and "throughput.png" in summary
