"""The report: escaping, rendering in a real headless Chromium, and re-rendering from results."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.demo import DATA_DIR
from tests.conftest import FAST, require
from tests.sweep_files import demo_sweep

EVIL = "<script>alert(1)</script>"
EVIL_FILE = "<script>alert(2)<script>"   # a file name cannot hold the "/" of a closing tag


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, models_dir) -> Path:
    """A real (small) sweep whose one variant is a model file named like a script tag."""
    d = tmp_path_factory.mktemp("rep")
    evil = d / f"{EVIL_FILE}.onnx"
    shutil.copy(DATA_DIR / "fashion_cnn.onnx", evil)
    sweep = demo_sweep(d / "s.toml", name=EVIL, model=evil, measure="accuracy_limit = 300",
                       require="accuracy_drop<=2%")
    r = CliRunner().invoke(cli, ["sweep", str(sweep), "--out", str(d / "out"), "--cache-dir",
                                 str(d / "cache"), "-q"])
    assert r.exit_code == 0, r.output
    return d / "out"


def test_every_text_is_escaped(report_dir):
    html = (report_dir / "index.html").read_text()
    assert EVIL not in html and EVIL_FILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html          # the sweep's name (title)
    assert "&lt;script&gt;alert(2)&lt;script&gt;" in html           # the variant's label
    assert "<script" not in html.lower()           # the report itself has no scripts at all
    assert not re.search(r"(src|href)=['\"]https?://", html)   # no remote assets


def test_rerender_from_results_alone_is_identical(report_dir, tmp_path):
    out = tmp_path / "again"
    r = CliRunner().invoke(cli, ["report", str(report_dir / "results.jsonl"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    for name in ("index.html", "summary.md", "results.csv", "latency_vs_accuracy.svg"):
        assert (out / name).read_bytes() == (report_dir / name).read_bytes(), name


def test_report_of_a_profile_results_file(models_dir, tmp_path):
    res = tmp_path / "r.jsonl"
    assert CliRunner().invoke(cli, ["profile", str(models_dir / "cnn.onnx"), *FAST, "--results",
                                    str(res)]).exit_code == 0
    r = CliRunner().invoke(cli, ["report", str(res)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "index.html").exists() and (tmp_path / "latency_cdf.png").exists()


def test_report_bad_input(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    for path, frag in ((tmp_path / "none.jsonl", "no such results file"),
                       (tmp_path / "empty.jsonl", "holds no records")):
        r = CliRunner().invoke(cli, ["report", str(path)])
        assert r.exit_code == 1 and frag in r.output and len(r.output.strip().splitlines()) == 1


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_html_renders_every_plot_in_chromium(report_dir, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    require(exe is not None, "Debian's chromium is not installed (apt-get install chromium)")
    html = (report_dir / "index.html").read_text()
    n_images = html.count("<img ")
    assert n_images >= 3
    # A test-only copy with a probe script: after load it writes every image's natural size
    # into the DOM, which --dump-dom prints. The report itself carries no script.
    probe = ("<script>window.addEventListener('load',()=>{document.body.setAttribute("
             "'data-sizes',[...document.images].map(i=>i.naturalWidth+'x'+i.naturalHeight)"
             ".join(','))})</script>")
    harness = tmp_path / "harness.html"
    harness.write_text(html.replace("</body>", probe + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        res = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                              "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                              "--dump-dom", harness.as_uri()],
                             capture_output=True, text=True, timeout=120)
    m = re.search(r'data-sizes="([^"]*)"', res.stdout)
    assert m, res.stderr[-2000:]
    sizes = [tuple(int(v) for v in s.split("x")) for s in m.group(1).split(",")]
    assert len(sizes) == n_images and all(w > 0 and h > 0 for w, h in sizes), sizes
    console_errors = [ln for ln in res.stderr.splitlines()
                      if "CONSOLE" in ln and ("error" in ln.lower() or "uncaught" in ln.lower())]
    assert console_errors == []


def test_index_html_shows_the_spread_of_a_group_of_boards_escaped():
    """Latency of one model on two boards of an inventory group: the HTML report has the
    boards-of-a-group table (median, spread, per board), every name escaped."""
    from edgeprof.report.write import index_html
    from edgeprof.results import new_record
    from edgeprof.sweeps.decide import decide_records

    def lat(board, p50):
        return new_record("latency", variant_id="v", root_id="v", target=board, threads=1,
                          batch=1, data_sha256=None, model={"name": "m<b>.onnx", "model_bytes": 10},
                          samples_s=[p50] * 5, target_group="pi4",
                          stats={"p50_s": p50, "p50_ci_s": [p50 * .99, p50 * 1.01], "p90_s": p50,
                                 "p99_s": p50, "p99_ci_s": None, "n": 5})
    recs = [lat("b1", 1e-3), lat("b2", 1.2e-3)]
    html = index_html("t", decide_records(recs), recs, Path("."), [])
    assert "Boards of a group" in html and "m&lt;b&gt;.onnx" in html and "<b>.onnx" not in html
    assert "b1 1 ms, b2 1.2 ms" in html and "200 us (18.2%)" in html
