"""--metric on prune and quantize: the task metric of a variant against its parent and root,
checked against the metric computed here on the variant files' own onnxruntime outputs."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from edgeprof.cli import cli

from .robust.test_metric_robustness import SIZE, host_outputs, two_heads

N = 48


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fidmetric")
    model = two_heads(d / "m.onnx")
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (2 * N, SIZE, SIZE, 1)).astype(np.uint8)
    y_box = host_outputs(model, x)["box"] + rng.normal(0, 0.05, (2 * N, 4)).astype(np.float32)
    np.savez(d / "eval.npz", x=x[:N], y_box=y_box[:N])
    np.savez(d / "nolabels.npz", x=x[:N])
    np.savez(d / "calib.npz", x=x[N:])
    return d, model, x[:N], y_box[:N]


def run(*args):
    return CliRunner().invoke(cli, list(args))


def _variant(path):
    rec = json.loads(path.read_text())
    return rec, rec["fidelity"]["metrics"]


def test_prune_mae_against_parent_by_hand_and_reuse_adds_a_metric(files, tmp_path):
    d, model, x, y_box = files
    common = [str(model), "--sparsity", "0.6", "--data", str(d / "eval.npz"), "--cache-dir",
              str(tmp_path / "c"), "-q"]
    r = run("prune", *common, "--metric", "mae", "--json", str(tmp_path / "v.json"))
    assert r.exit_code == 0, r.output
    assert "task metric mae (lower is better" in r.output
    rec, metrics = _variant(tmp_path / "v.json")
    vdir = tmp_path / "c" / "variants" / rec["id"]
    mae_v = float(np.abs(host_outputs(vdir / "model.onnx", x)["box"] - y_box).mean())
    mae_p = float(np.abs(host_outputs(model, x)["box"] - y_box).mean())
    m = metrics["mae"]["vs_parent"]
    assert m["variant"]["score"] == pytest.approx(mae_v, rel=1e-5)
    assert m["reference"]["score"] == pytest.approx(mae_p, rel=1e-5)
    assert m["degradation"] == pytest.approx(mae_v - mae_p, rel=1e-4)   # lower is better
    assert metrics["mae"]["vs_root"] == m            # the parent is the root here
    # the same variant reused from the cache takes another metric, kept beside the first
    r = run("prune", *common, "--metric", "rmse", "--json", str(tmp_path / "v2.json"))
    assert r.exit_code == 0 and "reused from the cache" in r.output, r.output
    _, metrics = _variant(tmp_path / "v2.json")
    assert set(metrics) == {"mae", "rmse"}
    rmse_v = float(np.sqrt(((host_outputs(vdir / "model.onnx", x)["box"] - y_box) ** 2).mean()))
    assert metrics["rmse"]["vs_parent"]["variant"]["score"] == pytest.approx(rmse_v, rel=1e-5)


def test_quantize_agreement_needs_no_labels(files, tmp_path):
    d, model, x, _ = files
    r = run("quantize", str(model), "--precision", "int8-static", "--calib", str(d / "calib.npz"),
            "--data", str(d / "nolabels.npz"), "--metric", "agreement:cls", "--cache-dir",
            str(tmp_path / "c"), "--json", str(tmp_path / "v.json"))
    assert r.exit_code == 0, r.output
    rec, metrics = _variant(tmp_path / "v.json")
    sess = ort.InferenceSession(str(tmp_path / "c" / "variants" / rec["id"] / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    mine = sess.run(["cls"], {"input": (x.astype(np.float32) / 255).transpose(0, 3, 1, 2)})[0]
    agree = float((mine.argmax(1) == host_outputs(model, x)["cls"].argmax(1)).mean())
    m = metrics["agreement:cls"]["vs_parent"]
    assert m["variant"]["score"] == pytest.approx(agree) and m["reference"]["score"] == 1.0
    assert m["degradation"] == pytest.approx(1 - agree)


@pytest.mark.parametrize("args, message", [
    (["prune", "--sparsity", "0.5", "--data", "nolabels.npz", "--metric", "mae"],
     "--metric mae needs labels in nolabels.npz"),
    (["prune", "--sparsity", "0.5", "--metric", "agreement"], "give --data"),
    (["quantize", "--precision", "int8-dynamic", "--data", "eval.npz", "--metric", "f1"],
     "one of top1"),
])
def test_metric_refusals_are_one_line_and_build_nothing(files, tmp_path, args, message):
    d, model, _, _ = files
    args = [str(d / a) if a.endswith(".npz") else a for a in args]
    r = run(args[0], str(model), *args[1:], "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert r.output.startswith("error: ") and message in r.output
    built = [f for f in (tmp_path / "c").glob("variants/*/variant.json")
             if json.loads(f.read_text()).get("parent")]
    assert not built        # refused before any pass ran (the root alone may be registered)


def test_convert_to_tflite_pairs_renamed_outputs_and_scores_them(files, tmp_path, monkeypatch):
    """The TFLite variant's outputs come back in another order; the metric still scores the box
    head against y_box (mae of the fp32 TFLite file equals the ONNX parent's)."""
    from edgeprof.tools import CLOSED_PROXY
    from tests.conftest import require
    from tests.passes.test_convert import ENV_MISSING, _tools_dir, env_ready

    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(k, CLOSED_PROXY)
    monkeypatch.setenv("EDGEPROF_TOOLS_DIR", str(_tools_dir()))
    require(env_ready(), ENV_MISSING)
    d, model, x, y_box = files
    r = run("convert", str(model), "--to", "tflite", "--precision", "fp32", "--data",
            str(d / "eval.npz"), "--metric", "mae", "--cache-dir", str(tmp_path / "c"),
            "--no-install", "--json", str(tmp_path / "v.json"))
    assert r.exit_code == 0, r.output
    (v,) = json.loads((tmp_path / "v.json").read_text())
    m = v["fidelity"]["metrics"]["mae"]["vs_parent"]
    mae_p = float(np.abs(host_outputs(model, x)["box"] - y_box).mean())
    assert m["reference"]["score"] == pytest.approx(mae_p, rel=1e-5)
    assert m["variant"]["score"] == pytest.approx(mae_p, rel=1e-3)
    bad = run("convert", "--torch", "x:y", "--to", "onnx", "--metric", "mae")
    assert bad.exit_code == 1 and "use it with --to tflite" in bad.output
