"""Models as they come: a fixed batch is measured as it is (profile, accuracy, robustness,
fidelity and sweeps, no --batch needed); variants at different batches compare per row."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.modelinfo import model_batch
from edgeprof.results import read_records
from edgeprof.sweeps.rows import build_rows
from tests import tiny_models
from tests.conftest import FAST, TFLITE


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_fixed_batch_models_profile_without_flags(tmp_path):
    m = tiny_models.mlp(tmp_path / "b64.onnx", dim=32, batch=64)
    assert model_batch(m) == 64 and model_batch(TFLITE / "tiny_cnn_fixed1.tflite") == 1
    assert model_batch(tiny_models.mlp(tmp_path / "dyn.onnx", dim=32)) is None
    res = tmp_path / "r.jsonl"
    r = run("profile", str(m), str(TFLITE / "tiny_cnn_fixed1.tflite"), "--results", str(res), *FAST)
    assert r.exit_code == 0, r.output
    assert {x["model"]["name"]: x["batch"] for x in read_records(res)} == {
        "b64.onnx": 64, "tiny_cnn_fixed1.tflite": 1}
    # a batch the model cannot run is still refused in one line
    r = run("profile", str(m), "--batch", "2", *FAST)
    assert r.exit_code == 1 and "fixed batch of 64, so batch 2 cannot run" in r.output


def test_fixed_batch_accuracy_robustness_and_fidelity(tmp_path, image_data):
    m = tiny_models.tiny_cnn(tmp_path / "b8.onnx", batch=8)          # 20 rows: 8 + 8 + 4 padded
    out = tmp_path / "rob.json"
    r = run("robustness", str(m), "--data", str(image_data), "--corruptions", "gaussian_noise",
            "--severities", "1", "--cache-dir", str(tmp_path / "c"), "--json", str(out), "-q")
    assert r.exit_code == 0, r.output
    recs = json.loads(out.read_text())["records"]
    assert any(x.get("n") == 20 for x in recs)
    r = run("quantize", str(m), "--precision", "fp16", "--data", str(image_data), "--cache-dir",
            str(tmp_path / "c"), "--json", str(tmp_path / "v.json"))
    assert r.exit_code == 0, r.output
    fid = json.loads((tmp_path / "v.json").read_text())["fidelity"]["vs_root"]["logits"]
    assert fid["n"] == 20 and fid["cosine_mean"] > 0.999


def test_sweep_measures_a_fixed_batch_root_at_its_batch(tmp_path):
    m = tiny_models.tiny_cnn(tmp_path / "b8.onnx", batch=8)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "eval.npz", x=rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8),
             y=rng.integers(0, 3, 40).astype(np.int64))
    f = tmp_path / "s.toml"
    f.write_text(f'''
[model]
path = "{m}"
[data]
eval = "{tmp_path / 'eval.npz'}"
[[variants]]
precision = ["fp32", "fp16"]
[measure]
min_time = "0.05s"
min_runs = 20
cold_starts = 0
''')
    r = run("sweep", str(f), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"), "-q")
    assert r.exit_code == 0, r.output
    recs = list(read_records(tmp_path / "out" / "results.jsonl"))
    assert {x["batch"] for x in recs if x["kind"] == "latency"} == {8}
    assert sum(x["kind"] == "accuracy" and x["n"] == 40 for x in recs) == 2
    assert "each model at its own batch" in (tmp_path / "out" / "summary.md").read_text()


def test_variants_at_different_batches_compare_per_row():
    def lat(vid, batch, p50):
        return {"kind": "latency", "variant_id": vid, "target": "t", "threads": 1, "batch": batch,
                "root_id": "a", "model": {"name": vid},
                "stats": {"p50_s": p50, "p50_ci_s": [p50 * 0.9, p50 * 1.1], "p99_s": p50 * 2,
                          "p99_ci_s": None, "n": 100}, "samples_s": [p50]}
    rows = {r["variant_id"]: r for r in build_rows([lat("a", 64, 6.4e-3), lat("b", 1, 2e-4)],
                                                   batch=None)}
    assert np.isclose(rows["a"]["p50_s"], 1e-4) and rows["b"]["p50_s"] == 2e-4
    assert np.allclose(rows["a"]["p50_ci_s"], [0.9e-4, 1.1e-4]) and rows["a"]["latency_basis"] == "per row"
    same = build_rows([lat("a", 8, 1e-3), lat("b", 8, 2e-3)], batch=None)
    assert all("latency_basis" not in r and r["batch"] == 8 for r in same)
