"""`edgeprof demo --quick`: the same pipeline as `make demo` on a smaller budget."""
from __future__ import annotations

import json

from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.results import read_records
from edgeprof.tools import tool_env
from tests.conftest import require


def test_demo_quick_writes_a_report_of_measured_records(tmp_path):
    require(tool_env("tflite", tmp_path / "cache").ready,
            "the TFLite converter environment (make tools; EDGEPROF_TOOLS_DIR)")
    out = tmp_path / "demo"
    r = CliRunner().invoke(cli, ["demo", "--quick", "--out", str(out), "--cache-dir",
                                 str(tmp_path / "cache"), "-q"])
    assert r.exit_code == 0, r.output
    recs = list(read_records(out / "results.jsonl"))
    errors = [x for x in recs if x["kind"] == "error"]
    assert errors == [], errors
    labels = {x["model"]["name"] for x in recs if x["kind"] == "latency"}
    assert len(labels) == 10, labels       # 11 recipes less the 30 % channel one in --quick
    assert any("tflite int8-static" in n for n in labels)
    assert any("channels -50%" in n for n in labels)
    dec = json.loads((out / "decision.json").read_text())
    assert dec["recommendation"]["chosen"] or dec["recommendation"]["closest"]
    html = (out / "index.html").read_text()
    assert "Recommended" in html or "No variant meets every constraint" in html
    for f in ("summary.md", "results.csv", "latency_vs_accuracy.png"):
        assert (out / f).stat().st_size > 0
