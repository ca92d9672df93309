"""The Python API used directly (no CLI): profile, accuracy, decide, a small sweep,
load_results -> DataFrame, typed values round-tripping, and the example percent-script run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import edgeprof
from tests.sweep_files import demo_sweep

ROOT = Path(__file__).resolve().parents[1]


def test_profile_returns_typed_results_and_prints_nothing(models_dir, tmp_path, capsys):
    seen = []
    res = edgeprof.profile([models_dir / "cnn.onnx", models_dir / "mlp.onnx"], threads=[1, 2],
                           processes=1,
                           min_time=0.05, min_runs=20, results=tmp_path / "r.jsonl",
                           progress=lambda desc, frac: seen.append(frac))
    assert capsys.readouterr().out == ""
    lat = res.latency
    assert len(lat) == 4 and {(x.name, x.threads) for x in lat} == {
        ("cnn.onnx", 1), ("cnn.onnx", 2), ("mlp.onnx", 1), ("mlp.onnx", 2)}
    for x in lat:
        assert x.p50_ci_s[0] <= x.p50_s <= x.p50_ci_s[1] * (1 + 1e-9) and x.n >= 20
        assert edgeprof.Latency.from_dict(x.to_dict()) == x
    assert seen and max(seen) <= 1.0
    again = edgeprof.load_results(tmp_path / "r.jsonl")
    assert [x.to_dict() for x in again.latency] == [x.to_dict() for x in lat]
    df = again.to_pandas()
    assert list(df["name"]).count("cnn.onnx") == 2 and "p50_s" in df.columns


def test_errors_are_edgeprof_errors(models_dir, tmp_path):
    with pytest.raises(edgeprof.EdgeprofError, match="no such"):
        edgeprof.profile(tmp_path / "missing.onnx")
    with pytest.raises(edgeprof.EdgeprofError, match="require"):
        edgeprof.decide(edgeprof.Results(()), require="speed<=fast")


def test_sweep_from_python(tmp_path):
    f = demo_sweep(tmp_path / "s.toml", precisions='["fp32", "fp16"]',
                   measure="accuracy_limit = 200", require="accuracy_drop<=1%")
    dec, res = edgeprof.sweep(f, out=tmp_path / "out", cache_dir=tmp_path / "c")
    assert {r["label"] for r in dec.rows} == {"fashion_cnn", "fashion_cnn fp16"}
    assert dec.recommendation()["chosen"] in {r["variant_id"] for r in dec.rows}
    assert set(dec.frontier()) <= {r["variant_id"] for r in dec.rows} and dec.frontier()
    assert len(res.accuracy) == 2 and all(a.n == 200 for a in res.accuracy)
    assert (tmp_path / "out" / "index.html").is_file()
    assert dec.plot(tmp_path / "f.svg").read_text().startswith("<?xml")


def test_example_percent_script_runs(tmp_path):
    env = dict(os.environ, EDGEPROF_EXAMPLE_OUT=str(tmp_path / "nb"),
               EDGEPROF_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "notebook.py")], env=env,
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "recommended: fashion_cnn" in p.stdout
    assert (tmp_path / "nb" / "frontier.png").stat().st_size > 1000


def test_accuracy_with_a_task_metric(models_dir, image_data, tmp_path):
    top1 = edgeprof.accuracy(models_dir / "cnn.onnx", image_data)
    top2 = edgeprof.accuracy(models_dir / "cnn.onnx", image_data, metric="topk:2")
    (a,), (b,) = top1.accuracy, top2.accuracy
    assert a.metric == "top1" and b.metric == "topk:2" and b.accuracy >= a.accuracy
    assert b.n == a.n == 20 and b.accuracy_ci[0] <= b.accuracy <= b.accuracy_ci[1]


def test_robustness_from_python(models_dir, image_data, tmp_path):
    res = edgeprof.robustness(models_dir / "cnn.onnx", image_data, corruptions=["gaussian_noise"],
                              severities=[1, 3], cache_dir=tmp_path / "c")
    (rec,) = [r for r in res.records if r["kind"] == "robustness"]
    assert rec["n"] == 20 and 0 <= rec["mean_corruption_accuracy"] <= 1
    assert callable(edgeprof.robustness) and callable(edgeprof.sweep)  # not shadowed by packages


def test_a_sustained_profile_through_the_api(tmp_path):
    """edgeprof.profile(sustained=...) gives a sustained-mode Latency with its steady-state p50;
    no sensor here is said, not hidden (a real local run of 2 s, windows of 0.5 s)."""
    import edgeprof
    from edgeprof.demo import demo_paths
    res = edgeprof.profile(demo_paths()["onnx"], sustained="2s", window="0.5s",
                           results=tmp_path / "r.jsonl")
    (lat,) = res.latency
    assert lat.mode == "sustained" and lat.steady_p50_s > 0
    rec = res.records[0]
    assert len(rec["windows"]) >= 3
    if lat.energy_per_inference_j is None:
        assert lat.energy_unavailable
    again = edgeprof.profile(demo_paths()["onnx"], sustained="2s", window="0.5s",
                             results=tmp_path / "r.jsonl")
    assert len(again) == 0  # resumed: the sustained key is already there


def test_the_latency_table_names_the_mode_when_sustained_records_are_shown():
    from rich.console import Console

    from edgeprof.report.terminal import latency_table
    stats = {"p50_s": 1e-4, "p50_ci_s": [0.9e-4, 1.1e-4], "p90_s": 1.2e-4, "p99_s": 2e-4,
             "p99_ci_s": [1.5e-4, 2.5e-4], "n": 100}
    rec = {"kind": "latency", "target": "local", "threads": 1, "batch": 1, "stats": stats,
           "model": {"name": "m.onnx", "model_bytes": 1000}}
    console = Console(width=200, record=True)
    console.print(latency_table([rec, dict(rec, mode="sustained")]))
    text = console.export_text()
    assert " mode " in text and "sustained" in text and "burst" in text
    console = Console(width=200, record=True)
    console.print(latency_table([rec]))
    assert " mode " not in console.export_text()


def test_profile_arguments_out_of_range_are_one_line_errors():
    """Numbers get the same bounds as the CLI's strings (a window of 0 s would divide by zero
    after the whole sustained run)."""
    import pytest

    import edgeprof
    from edgeprof.demo import demo_paths
    from edgeprof.errors import InputError
    m = demo_paths()["onnx"]
    for kwargs, message in (({"sustained": 60, "window": 0}, "--window 0"),
                            ({"min_time": -1}, "--min-time -1"),
                            ({"processes": 0}, "--processes 0"),
                            ({"cold_starts": -1}, "--cold-starts -1"),
                            ({"cooldown": "nanC"}, "a temperature from -40C to 150C")):
        with pytest.raises(InputError, match=message):
            edgeprof.profile(m, **kwargs)


def test_the_import_graph_has_the_cli_above_the_library():
    """No module of the library imports the CLI (edgeprof/__main__.py, the entry point, aside),
    and importing the API does not load click's commands."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    import edgeprof
    root = Path(edgeprof.__file__).parent
    offenders = []
    for f in root.rglob("*.py"):
        rel = f.relative_to(root)
        if rel.parts[0] == "cli" or rel.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = "." * node.level + (node.module or "")
                if mod.lstrip(".").split(".")[0] == "cli" or mod.startswith("edgeprof.cli"):
                    offenders.append(f"{rel}: from {mod}")
            elif isinstance(node, ast.Import):
                offenders += [f"{rel}: import {a.name}" for a in node.names
                              if a.name.startswith("edgeprof.cli")]
    assert not offenders, offenders
    out = subprocess.run([sys.executable, "-c", "import sys, edgeprof; "
                          "print(any(m.startswith('edgeprof.cli') for m in sys.modules))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
