"""One column specification feeds results.csv, summary.md, index.html and the terminal: a
column's title and cells are the same wherever it is shown."""
import csv
import io

from rich.console import Console

from edgeprof.report import columns as C
from edgeprof.report.terminal import print_decision
from edgeprof.report.write import _rows_md, index_html, write_csv

ROWS = [
    {"variant_id": "a" * 64, "label": "fp32 <b>", "target": "local", "p50_s": 2e-4,
     "p50_ci_s": [1.9e-4, 2.1e-4], "n_latency": 300, "metric": "mae", "score": 0.125,
     "score_ci": [0.12, 0.13], "score_drop": 0.0, "is_baseline": True, "model_bytes": 2048,
     "peak_rss_bytes": 50 << 20, "on_frontier": True, "errors": []},
    {"variant_id": "b" * 64, "label": "int8", "target": "local", "p50_s": 1e-4,
     "p50_ci_s": [0.9e-4, 1.1e-4], "n_latency": 300, "metric": "mae", "score": 0.25,
     "score_ci": [0.24, 0.26], "score_drop": 0.125, "model_bytes": 1024,
     "peak_rss_bytes": 40 << 20, "on_frontier": True, "errors": ["x failed"]},
]
DEC = {"rows": ROWS, "recommendation": {"chosen": None, "reasons": []}, "frontier": {},
       "baseline": "a" * 64}


def test_every_view_renders_the_same_columns(tmp_path):
    md = "\n".join(_rows_md(ROWS))
    html = index_html("t", DEC, [], tmp_path, [])
    console = Console(width=250, record=True)
    print_decision(DEC, {}, console)
    term = console.export_text()
    for view, text in (("md", md), ("html", html), ("term", term)):
        for c in C.in_view(view):
            title = c.header(ROWS, view)
            assert (title.replace("<", "&lt;") if view == "html" else title) in text, (view, title)
        assert "+0.125" in text  # the drop of a lower-is-better metric, as one cell formats it
    assert "mae [95 % CI]" in md and "mae [95 % CI]" in html and " mae " in term
    assert "fp32 &lt;b&gt; (baseline)" in html and "fp32 <b> (baseline)" in md
    # fastest first in every view
    assert md.index("int8") < md.index("fp32") and term.index("int8") < term.index("fp32")
    write_csv(tmp_path / "r.csv", ROWS)
    header, *lines = list(csv.reader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert header == C.csv_header() and header[:3] == ["variant_id", "label", "target"]
    by = dict(zip(header, lines[1]))
    assert by["p50_ci_low_s"] == "9e-05" and by["score"] == "0.25" and by["errors"] == "x failed"
