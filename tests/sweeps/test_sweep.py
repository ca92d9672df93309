"""A small real sweep end to end, its report, and a resume after a sweep killed half-way."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
from pathlib import Path

from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.results import read_records
from edgeprof.targets.client import WorkerClient
from tests.sweep_files import demo_sweep


def sweep_file(tmp_path: Path, extra: str = "", require: str = "accuracy_drop<=1%") -> Path:
    return demo_sweep(tmp_path / "s.toml", precisions='["fp32", "fp16", "int8-static"]',
                      measure="accuracy_limit = 400\n" + extra, require=require)


def run_sweep(tmp_path: Path, f: Path, *args: str):
    return CliRunner().invoke(cli, ["sweep", str(f), "--out", str(tmp_path / "out"),
                                    "--cache-dir", str(tmp_path / "cache"), "-q", *args])


def test_small_sweep_end_to_end(tmp_path):
    r = run_sweep(tmp_path, sweep_file(tmp_path))
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    recs = list(read_records(out / "results.jsonl"))
    assert sum(x["kind"] == "latency" for x in recs) == 3
    acc = [x for x in recs if x["kind"] == "accuracy"]
    assert len(acc) == 3 and all(x["n"] == 400 for x in acc)
    dec = json.loads((out / "decision.json").read_text())
    labels = {row["label"] for row in dec["rows"]}
    assert {"fashion_cnn", "fashion_cnn fp16", "fashion_cnn int8-static qdq per-channel"} == labels
    assert dec["recommendation"]["chosen"] is not None
    assert any(row.get("is_baseline") and row["accuracy_drop"] == 0 for row in dec["rows"])
    for f in ("index.html", "summary.md", "results.csv", "latency_vs_accuracy.png",
              "latency_vs_accuracy.svg", "latency_cdf.png", "size_memory.png", "sweep.toml"):
        assert (out / f).stat().st_size > 0, f
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith("variant_id,label,target")
    assert "recommended" in r.output


def test_impossible_constraints_name_the_closest_and_keep_results(tmp_path):
    r = run_sweep(tmp_path, sweep_file(tmp_path, require="accuracy_drop<=1%, peak_rss<=1MiB"))
    assert r.exit_code == 0, r.output
    assert "no variant meets every constraint" in r.output and "peak_rss<=1MiB" in r.output
    kinds = [x["kind"] for x in read_records(tmp_path / "out" / "results.jsonl")]
    assert kinds.count("latency") == 3 and kinds.count("accuracy") == 3
    assert kinds.count("fidelity") == 2 and len(kinds) == 8  # fp16 and int8 against the root
    html = (tmp_path / "out" / "index.html").read_text()
    assert "No variant meets every constraint" in html


def test_failing_cell_becomes_an_error_record(tmp_path):
    f = sweep_file(tmp_path, extra="")
    text = f.read_text().replace('precision = ["fp32", "fp16", "int8-static"]',
                                 'precision = ["fp32", "fp16"]\n[[variants]]\nsparsity = 0.5\n'
                                 'precision = "int8-static"\nper_channel = [true]\n'
                                 '[[variants]]\nprecision = "int8-static"\ncalib_method = "nope"')
    f.write_text(text)
    r = run_sweep(tmp_path, f)
    assert r.exit_code == 0, r.output
    recs = list(read_records(tmp_path / "out" / "results.jsonl"))
    errors = [x for x in recs if x["kind"] == "error"]
    assert any("calib-method 'nope'" in x["error"] for x in errors)
    assert sum(x["kind"] == "latency" for x in recs) >= 2   # the good cells were measured


def test_resume_after_a_kill_measures_only_what_is_missing(tmp_path, monkeypatch):
    f = sweep_file(tmp_path)
    out = tmp_path / "out"
    env = dict(os.environ, EDGEPROF_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "edgeprof", "sweep", str(f), "--out", str(out),
                             "-q"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    results = out / "results.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline:  # kill as soon as the first accuracy record is on disk
        if results.exists() and '"kind":"accuracy"' in results.read_text():
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = list(read_records(results))
    n_lat = sum(x["kind"] == "latency" for x in before)
    n_acc = sum(x["kind"] == "accuracy" for x in before)
    assert n_lat == 3 and 1 <= n_acc <= 3, (n_lat, n_acc)  # usually 1 or 2: killed mid-phase
    sent = Counter()  # the requests the rerun sends to its (real) workers
    real_request = WorkerClient.request

    def counted(self, cmd, *a, **kw):
        sent[cmd] += 1
        return real_request(self, cmd, *a, **kw)
    monkeypatch.setattr(WorkerClient, "request", counted)
    r = CliRunner().invoke(cli, ["sweep", str(f), "--out", str(out), "--cache-dir",
                                 str(tmp_path / "cache"), "-q"])
    assert r.exit_code == 0, r.output
    assert sent["round"] == 0            # no latency measured again
    assert sent["predict"] == 3 - n_acc   # only the missing accuracies
    after = list(read_records(results))
    assert sum(x["kind"] == "accuracy" for x in after) == 3
    assert sum(x["kind"] == "latency" for x in after) == 3


def test_bad_sweep_files(tmp_path):
    cases = {
        "missing": (tmp_path / "nope.toml", "no such sweep file"),
        "bad toml": ("name = [", "not valid TOML"),
        "no model": ("name = 'x'", "[model] needs path"),
        "bad precision": ("[model]\npath = 'm.onnx'\n[[variants]]\nprecision = 'int4'", "int4"),
        "int16x8 onnx": ("[model]\npath = 'm.onnx'\n[[variants]]\nprecision = 'int16x8'", "TFLite only"),
        "bad sparsity": ("[model]\npath = 'm.onnx'\n[[variants]]\nsparsity = 1.5", "between 0 and 1"),
        "unknown key": ("[model]\npath = 'm.onnx'\n[[variants]]\nbits = 4", "unknown key"),
        "bad require": ("[model]\npath = 'm.onnx'\n[decide]\nrequire = 'speed<=1'", "unknown key"),
    }
    for name, (content, fragment) in cases.items():
        if isinstance(content, Path):
            path = content
        else:
            path = tmp_path / f"{name.replace(' ', '_')}.toml"
            path.write_text(content)
        r = CliRunner().invoke(cli, ["sweep", str(path), "--out", str(tmp_path / "o"), "-q"])
        assert r.exit_code == 1, (name, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (name, r.output)


def test_ctrl_c_keeps_records_and_says_how_to_resume(tmp_path):
    f = sweep_file(tmp_path)
    out = tmp_path / "out"
    env = dict(os.environ, EDGEPROF_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "edgeprof", "sweep", str(f), "--out", str(out),
                             "-q"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and '"kind":"latency"' in results.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted:") and "resume" in lines[0]
    kept = [x for x in read_records(results) if x["kind"] == "latency"]
    assert 1 <= len(kept) <= 3 and all(len(x["samples_s"]) == x["stats"]["n"] for x in kept)
    r = CliRunner().invoke(cli, ["sweep", str(f), "--out", str(out), "--cache-dir",
                                 str(tmp_path / "cache"), "-q"])
    assert r.exit_code == 0, r.output
    final = [x for x in read_records(results) if x["kind"] == "latency"]
    assert len(final) == 3 and [x["variant_id"] for x in final[:len(kept)]] == \
        [x["variant_id"] for x in kept]                  # kept as they were, none measured twice


# ---- real models as they come (issue: real edge models, item 0) -----------------------------

def test_percentile_calibration_on_200_rows_and_fidelity_in_the_report(tmp_path):
    """200 calibration rows (a last partial batch of 8 at batch 16) with percentile calibration
    build; the variant's label names its calibration; fidelity reaches every report format."""
    f = demo_sweep(tmp_path / "s.toml", precisions='"int8-static"',
                   measure="accuracy_limit = 200\nlatency = false", require="")
    f.write_text(f.read_text().replace('precision = "int8-static"',
                                       'precision = "int8-static"\ncalib_method = "percentile"\n'
                                       'calib_rows = 200'))
    r = run_sweep(tmp_path, f)
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    recs = list(read_records(out / "results.jsonl"))
    assert not [x for x in recs if x["kind"] == "error"]
    fid = [x for x in recs if x["kind"] == "fidelity"]
    assert len(fid) == 1 and fid[0]["vs_root"]["logits"]["top1_agreement"] > 0.5
    v = json.loads((tmp_path / "cache" / "variants" / fid[0]["variant_id"] / "variant.json")
                   .read_text())
    assert v["config"]["calib_rows"] == 200 and v["config"]["calib_method"] == "percentile"
    agree = fid[0]["vs_root"]["logits"]["top1_agreement"]
    dec = json.loads((out / "decision.json").read_text())
    row = next(x for x in dec["rows"] if x["variant_id"] == fid[0]["variant_id"])
    assert row["top1_agreement"] == agree and row["n_fidelity"] == fid[0]["vs_root"]["logits"]["n"]
    assert f"{agree:.1%}" in (out / "summary.md").read_text()
    assert f"{agree:.1%}" in (out / "index.html").read_text()
    header, *lines = (out / "results.csv").read_text().splitlines()
    assert "top1_agreement" in header.split(",") and str(agree) in "".join(lines)


def test_a_pass_crashing_is_an_error_record_naming_the_recipe(tmp_path, monkeypatch):
    """A pass whose library raises something that is not an edgeprof error (as onnxruntime's
    histogram calibrator did on a partial batch) ends that cell only. The crash is injected:
    the real crash above is fixed, and no other is known to reproduce."""
    from edgeprof.passes.quantize import QuantizePass

    def crash(self, parent, out_path):
        raise ValueError("setting an array element with a sequence")
    monkeypatch.setattr(QuantizePass, "run", crash)
    f = demo_sweep(tmp_path / "s.toml", precisions='["fp32", "int8-static"]',
                   measure="accuracy_limit = 100\nlatency = false", require="")
    f.write_text(f.read_text().replace('precision = ["fp32", "int8-static"]',
                                       'precision = ["fp32", "int8-static"]\n'
                                       'calib_method = "entropy"\nformat = "qoperator"'))
    r = run_sweep(tmp_path, f)
    assert r.exit_code == 0, r.output
    recs = list(read_records(tmp_path / "out" / "results.jsonl"))
    errors = [x for x in recs if x["kind"] == "error"]
    assert len(errors) == 1 and "ValueError: setting an array element" in errors[0]["error"]
    assert errors[0]["model"]["name"] == "int8-static qoperator per-channel entropy"
    assert any(x["kind"] == "accuracy" for x in recs)  # the fp32 cell was measured


def test_report_lists_only_the_latest_runs_errors(tmp_path, monkeypatch):
    """A rerun retries every failed cell: the report shows this run's errors, not history."""
    from edgeprof.passes.quantize import QuantizePass
    real = QuantizePass.run

    def crash(self, parent, out_path):
        raise ValueError("injected failure")
    f = demo_sweep(tmp_path / "s.toml", precisions='["fp32", "int8-static"]',
                   measure="accuracy_limit = 100\nlatency = false", require="")
    monkeypatch.setattr(QuantizePass, "run", crash)
    assert run_sweep(tmp_path, f).exit_code == 0
    assert run_sweep(tmp_path, f).exit_code == 0
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert summary.count("injected failure") == 1
    monkeypatch.setattr(QuantizePass, "run", real)
    assert run_sweep(tmp_path, f).exit_code == 0
    recs = list(read_records(tmp_path / "out" / "results.jsonl"))
    assert sum(x["kind"] == "error" for x in recs) == 2  # history stays in the results file
    assert "injected failure" not in (tmp_path / "out" / "summary.md").read_text()
    assert "injected failure" not in (tmp_path / "out" / "index.html").read_text()


def test_two_models_in_one_sweep_share_the_frontier_and_the_recommendation(tmp_path):
    """[[models]]: the grid applies to each; drops against each family's own root; one frontier
    (same evaluation data) and one recommendation per target across both architectures."""
    from edgeprof.demo import DATA_DIR
    from tests import tiny_models
    tiny = tiny_models.tiny_cnn(tmp_path / "tiny.onnx", channels=1, size=28, classes=10)
    f = tmp_path / "two.toml"
    f.write_text(f'''
name = "two"
[[models]]
path = "{DATA_DIR / 'fashion_cnn.onnx'}"
preprocess = "{DATA_DIR / 'preprocess.toml'}"
[[models]]
name = "tiny"
path = "{tiny}"
[data]
eval = "{DATA_DIR / 'eval.npz'}"
[[variants]]
precision = ["fp32", "fp16"]
[measure]
min_time = "0.1s"
min_runs = 20
cold_starts = 0
accuracy_limit = 300
[decide]
require = "accuracy>=0.5"
''')
    r = run_sweep(tmp_path, f)
    assert r.exit_code == 0, r.output
    dec = json.loads((tmp_path / "out" / "decision.json").read_text())
    labels = {row["label"] for row in dec["rows"]}
    assert labels == {"fashion_cnn", "fashion_cnn fp16", "tiny", "tiny fp16"}
    roots = {row["root_id"] for row in dec["rows"]}
    assert len(roots) == 2 and dec["frontier"]["local"]["partitions"] == 1
    assert all(row["accuracy_drop"] is not None for row in dec["rows"])
    assert sum(row["is_baseline"] for row in dec["rows"]) == 2     # each family's own root
    chosen = dec["recommendation"]["chosen_label"]
    assert chosen.startswith("fashion_cnn")                        # tiny is random: acc ~10 %
    front = set(dec["frontier"]["local"]["frontier"])
    assert front & {row["variant_id"] for row in dec["rows"] if row["label"].startswith("fashion")}
    # a model with its own evaluation rows gets its own frontier
    f.write_text(f.read_text().replace('name = "tiny"', f'name = "tiny"\neval = "{DATA_DIR / "calib.npz"}"'))
    r = run_sweep(tmp_path, f, "--out", str(tmp_path / "out2"))
    assert r.exit_code == 0, r.output
    dec = json.loads((tmp_path / "out2" / "decision.json").read_text())
    assert dec["frontier"]["local"]["partitions"] == 2


def test_a_regression_metric_drives_the_sweep(tmp_path):
    """[measure] metric = a user metric from a file (here: mean squared error of the logits
    against per-row targets y_logits, lower is better): every table names it, drops point the
    metric's way, the frontier and the recommendation use it."""
    from edgeprof.demo import DATA_DIR
    ev = np.load(DATA_DIR / "eval.npz")
    x = ev["x"][:200]
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "reg.npz", x=x, y_logits=rng.standard_normal((200, 10)).astype(np.float32))
    (tmp_path / "m.py").write_text(
        "import numpy as np\n"
        "def mse(outputs, labels):\n"
        "    return ((outputs['logits'] - labels['y_logits']) ** 2).mean(axis=1)\n"
        "mse.lower_is_better = True\n")
    f = demo_sweep(tmp_path / "s.toml", precisions='["fp32", "fp16"]',
                   measure='metric = "m.py:mse"', require="score_drop<=0.5")
    f.write_text(f.read_text().replace(str(DATA_DIR / "eval.npz"), str(tmp_path / "reg.npz"))
                 .replace(f'calib = "{DATA_DIR / "calib.npz"}"\n', ""))
    r = run_sweep(tmp_path, f)
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    recs = [x for x in read_records(out / "results.jsonl") if x["kind"] == "accuracy"]
    assert len(recs) == 2 and all(x["metric"].endswith("m.py:mse") and not x["higher_is_better"]
                                  for x in recs)
    dec = json.loads((out / "decision.json").read_text())
    assert ("score", "min") in [tuple(o) for o in dec["frontier"]["local"]["objectives"]]
    base = next(x for x in dec["rows"] if x["is_baseline"])
    assert base["score_drop"] == 0 and dec["recommendation"]["chosen"]
    md = (out / "summary.md").read_text()
    assert "m.py:mse [95 % CI]" in md


def test_latency_workers_started_ahead_are_used_and_none_is_left(tmp_path, monkeypatch):
    # the local target's latency workers start while the variants build; the latency phase
    # takes them (still one fresh process per latency process) and nothing outlives the sweep
    from edgeprof.targets import pool
    from tests.targets.test_pool import _live_workers
    made = []
    real = pool.Prestart.__init__

    def init(self, target, count):
        made.append(self)
        real(self, target, count)
    monkeypatch.setattr(pool.Prestart, "__init__", init)
    before = _live_workers()
    r = run_sweep(tmp_path, demo_sweep(tmp_path / "s.toml", precisions='["fp32", "fp16"]',
                                       measure="accuracy = false\nprocesses = 2\n"))
    assert r.exit_code == 0, r.output
    # 2 variants x 2 processes were wanted: every worker started ahead is taken (how many had
    # started by the time the phase began depends on the machine's speed)
    assert len(made) == 1 and made[0].taken == made[0].started <= 4
    assert _live_workers() == before
    lat = [x for x in read_records(tmp_path / "out" / "results.jsonl") if x["kind"] == "latency"]
    assert len(lat) == 2 and all(len(x["processes"]) == 2 for x in lat)


def test_accuracy_runs_in_latency_workers_left_running_and_none_is_left(tmp_path, monkeypatch):
    # two local latency workers stay for the accuracy phase, which then starts none of its own;
    # accuracies are those of workers started for it (the same files, the same rows)
    from edgeprof.targets import local
    from tests.targets.test_pool import _live_workers
    phases: list[str] = []
    real = local.LocalTarget.start_worker

    def start_worker(self, label):
        phases.append(label)
        return real(self, label)
    monkeypatch.setattr(local.LocalTarget, "start_worker", start_worker)
    before = _live_workers()
    r = run_sweep(tmp_path, demo_sweep(tmp_path / "s.toml", precisions='["fp32", "fp16"]',
                                       measure="processes = 2\n"))
    assert r.exit_code == 0, r.output
    assert _live_workers() == before
    assert not [p for p in phases if p.endswith("accuracy")]     # none started for accuracy
    acc = {x["variant_id"]: x["accuracy"] for x in read_records(tmp_path / "out" / "results.jsonl")
           if x["kind"] == "accuracy"}
    monkeypatch.setattr(local.LocalTarget, "start_worker", real)
    r = run_sweep(tmp_path / "again", demo_sweep(tmp_path / "s2.toml", precisions='["fp32", "fp16"]',
                                                 measure="latency = false\n"))
    assert r.exit_code == 0, r.output
    again = {x["variant_id"]: x["accuracy"]
             for x in read_records(tmp_path / "again" / "out" / "results.jsonl")
             if x["kind"] == "accuracy"}
    assert len(acc) == 2 and acc == again
