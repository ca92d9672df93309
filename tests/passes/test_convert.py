"""Conversion: PyTorch -> ONNX (the demo factory and its weights) and ONNX -> TFLite through the
real onnx2tf in its managed environment, offline (every proxy points at a closed port).

The demo model is converted to all five precisions ONCE per session (the module fixture); the
other tests read that run's variants. The converter environment is found in
$EDGEPROF_TOOLS_DIR, else in <repo>/.cache/edgeprof-tools (`make setup` prepares it there); tests
that need it skip without it, or fail under EDGEPROF_STRICT=1.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.demo import demo_paths
from edgeprof.passes.base import PASS_CALLS
from edgeprof.passes.convert import TOLERANCES, check_tolerance
from edgeprof.passes.tflite import PASS_NAME, PRECISIONS, RUN_COUNTER
from edgeprof.tools import CLOSED_PROXY, TOOLS, ToolEnv, tool_env, write_guard
from tests import tiny_models
from tests.conftest import FAST, require

D = demo_paths()
REPO = Path(__file__).resolve().parents[2]
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
ENV_MISSING = ("the TFLite converter environment is not installed: run `edgeprof tools install "
               "tflite` with EDGEPROF_TOOLS_DIR set (make setup does)")


def _tools_dir() -> Path:
    return Path(os.environ.get("EDGEPROF_TOOLS_DIR") or REPO / ".cache" / "edgeprof-tools")


def env_ready() -> bool:
    return tool_env("tflite", Path("/nonexistent")).ready  # the env var decides where


@pytest.fixture(scope="module", autouse=True)
def offline():
    """Any network attempt by the converter fails loudly: every proxy is a closed loopback port."""
    with pytest.MonkeyPatch.context() as mp:
        for k in PROXIES:
            mp.setenv(k, CLOSED_PROXY)
        for k in ("NO_PROXY", "no_proxy"):
            mp.delenv(k, raising=False)
        mp.setenv("EDGEPROF_TOOLS_DIR", str(_tools_dir()))
        yield


def convert(cache: Path, *args: str):
    return CliRunner().invoke(cli, ["convert", *args, "--cache-dir", str(cache), "--no-install"])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo CNN converted to every precision: one converter run, parity on 500 eval rows."""
    require(env_ready(), ENV_MISSING)
    cache = tmp_path_factory.mktemp("convert-cache")
    out = cache.parent / "demo-variants.json"
    runs, passes = PASS_CALLS[RUN_COUNTER], PASS_CALLS[PASS_NAME]
    r = convert(cache, str(D["onnx"]), "--to", "tflite", "--precision", ",".join(PRECISIONS),
                "--calib", str(D["calib"]), "--data", str(D["eval"]), "--preprocess",
                str(D["preprocess"]), "--json", str(out))
    assert r.exit_code == 0, r.output
    recs = json.loads(out.read_text())
    return {"cache": cache, "by": {v["config"]["precision"]: v for v in recs}, "output": r.output,
            "runs": PASS_CALLS[RUN_COUNTER] - runs, "passes": PASS_CALLS[PASS_NAME] - passes}


def _model_file(demo, precision: str) -> Path:
    v = demo["by"][precision]
    return demo["cache"] / "variants" / v["id"] / v["model_file"]


# ---- ONNX -> TFLite: the demo model ------------------------------------------------------------

def test_five_precisions_come_from_one_converter_run(demo):
    assert demo["runs"] == 1 and demo["passes"] == 5
    by = demo["by"]
    assert sorted(by) == sorted(PRECISIONS)
    assert len({v["id"] for v in by.values()}) == 5
    assert len({v["extra"]["converter_run"] for v in by.values()}) == 1
    root = by["fp32"]["parent"]
    for p, v in by.items():
        assert v["pass"] == PASS_NAME and v["format"] == "tflite" and v["parent"] == root
        assert v["tool_versions"] == {"onnx2tf": TOOLS["tflite"].version,
                                      "tensorflow": v["tool_versions"]["tensorflow"]}
        assert _model_file(demo, p).read_bytes()[4:8] == b"TFL3"
        assert Path(v["extra"]["converter_log"]).is_file()
        assert list(v["fidelity"]["vs_parent"]) == ["logits"]  # ONNX names copied onto TFLite
    calib_sha = by["int8-static"]["config"]["calib_sha256"]
    assert by["int16x8"]["config"]["calib_sha256"] == calib_sha
    assert "calib_sha256" not in by["fp32"]["config"]  # float conversions ignore the data
    sizes = {p: _model_file(demo, p).stat().st_size for p in PRECISIONS}
    assert sizes["fp16"] < 0.6 * sizes["fp32"] and sizes["int8-static"] < 0.4 * sizes["fp32"]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_parity_within_the_issue_tolerances(demo, precision):
    fid = demo["by"][precision]["fidelity"]
    assert fid["data_role"] == "evaluation" and fid["rows"] == 500
    (m,) = fid["vs_parent"].values()
    assert m["n"] == 500
    if precision == "fp32":
        assert m["relative_max_error"] <= 1e-4
    elif precision == "fp16":
        assert m["relative_max_error"] <= 1e-2 and not m["exact"]
    else:
        assert m["top1_agreement"] >= 0.97 and not m["exact"]
    assert fid["tolerance"]["status"] == "passed"
    assert fid["tolerance"]["metric"] == TOLERANCES[precision][0]
    assert not any("parity" in n for n in demo["by"][precision]["notes"])


def test_variants_record_nhwc_and_keep_float_input(demo):
    for p, v in demo["by"].items():
        spec = v["input_spec"]
        assert spec["layout"] == "NHWC" and spec["dtype"] == "float32"
        assert spec["scale"] == pytest.approx(1 / 255)  # the root's --preprocess, inherited
    assert any("worker quantizes" in n for n in demo["by"]["int8-static"]["notes"])


def test_full_int8_runs_with_quantized_io_through_the_worker(demo):
    from ai_edge_litert.interpreter import Interpreter

    from edgeprof.targets.client import start_local_worker
    from edgeprof.targets.worker import decode_array
    from edgeprof.variants.family import spec_for_worker

    v = demo["by"]["int8-static"]
    path = _model_file(demo, "int8-static")
    spec = spec_for_worker(v["input_spec"], "uint8")
    with start_local_worker("int8") as w:
        load = w.request("load", path=str(path), threads=1, batch=1, inputs={"npz": str(D["eval"])},
                         spec=spec)
        got = w.request("predict", npz=str(D["eval"]), start=0, stop=500, batch=64, spec=spec)
    assert load["runtime"] == "litert"
    (inp,), (out,) = load["inputs"], load["outputs"]
    assert inp["name"] == "input" and out["name"] == "logits"
    assert inp["dtype"] == "int8" and inp["quant"]["scale"] > 0
    assert out["dtype"] == "int8" and out["quant"] is not None
    logits = decode_array(next(iter(got["outputs"].values())))
    # an independent path: quantize by hand with the interpreter's own parameters
    ev = np.load(D["eval"], allow_pickle=False)
    x, y = ev["x"][:500], ev["y"][:500]
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    di, do = it.get_input_details()[0], it.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = di["quantization"], do["quantization"]
    manual = []
    for row in x[:50]:
        q = np.clip(np.round(row[None].astype(np.float32) / 255 / s_in) + z_in, -128, 127)
        it.set_tensor(di["index"], q.astype(np.int8))
        it.invoke()
        manual.append((it.get_tensor(do["index"]).astype(np.float32) - z_out) * s_out)
    np.testing.assert_allclose(np.concatenate(manual), logits[:50], atol=1e-6)
    assert (logits.argmax(1) == y).mean() > 0.8  # a trained Fashion-MNIST CNN, still trained


def test_profile_takes_a_converted_variant_by_id_prefix(demo, tmp_path):
    ids = [demo["by"][p]["id"] for p in ("fp32", "int8-static")]
    out = tmp_path / "p.json"
    r = CliRunner().invoke(cli, ["profile", ids[0][:10], ids[1][:10], "--cache-dir",
                                 str(demo["cache"]), "--json", str(out), *FAST])
    assert r.exit_code == 0, r.output
    recs = [x for x in json.loads(out.read_text())["records"] if x["kind"] == "latency"]
    assert sorted(x["variant_id"] for x in recs) == sorted(ids)
    assert {x["runtime"] for x in recs} == {"litert"} and all(x["stats"]["n"] >= 20 for x in recs)


def test_a_repeated_request_reuses_variants_and_runs_nothing(demo):
    runs, passes = PASS_CALLS[RUN_COUNTER], PASS_CALLS[PASS_NAME]
    r = convert(demo["cache"], str(D["onnx"]), "--to", "tflite", "--precision", "int8-static,fp16",
                "--calib", str(D["calib"]), "--data", str(D["eval"]))
    assert r.exit_code == 0, r.output
    assert r.output.count("reused from the cache") == 2
    assert (PASS_CALLS[RUN_COUNTER], PASS_CALLS[PASS_NAME]) == (runs, passes)


# ---- ONNX -> TFLite: other models --------------------------------------------------------------

def test_three_channel_model_converts_offline(tmp_path):
    """onnx2tf downloads a sample file for 4-D 3-channel inputs even with -cind; with every proxy
    closed this only passes because edgeprof places that file itself."""
    require(env_ready(), ENV_MISSING)
    model = tiny_models.tiny_cnn(tmp_path / "rgb.onnx", channels=3, size=16)
    rng = np.random.default_rng(0)

    def images(n):  # smooth images so the classes differ between samples
        small = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float32)
        return np.repeat(np.repeat(small, 4, axis=1), 4, axis=2).astype(np.uint8)
    np.savez(tmp_path / "cal.npz", x=images(32))
    np.savez(tmp_path / "ev.npz", x=images(40))
    out = tmp_path / "v.json"
    r = convert(tmp_path / "c", str(model), "--to", "tflite", "--precision", "fp32,int8-static",
                "--calib", str(tmp_path / "cal.npz"), "--data", str(tmp_path / "ev.npz"),
                "--json", str(out), "-o", str(tmp_path / "out"))
    assert r.exit_code == 0, r.output
    fp32, int8 = json.loads(out.read_text())
    assert fp32["input_spec"]["layout"] == "NHWC"
    (m,) = fp32["fidelity"]["vs_parent"].values()
    assert m["relative_max_error"] <= 1e-4
    # 40 rows cannot establish the 0.97 top-1 bar: said, not silently passed
    assert int8["fidelity"]["tolerance"]["status"] == "unverified"
    assert any("parity unverified" in n for n in int8["notes"])
    assert "unverified" in r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "rgb_tflite_fp32.tflite", "rgb_tflite_int8-static.tflite"]


def test_two_inputs_keep_their_onnx_names(models_dir, tmp_path):
    """onnx2tf names TFLite inputs serving_default_<name>:0 and reorders them; edgeprof copies
    the ONNX names back, so data keyed by input name feeds the TFLite variant too."""
    require(env_ready(), ENV_MISSING)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ev.npz", a=rng.random((16, 4), dtype=np.float32),
             b=rng.random((16, 4), dtype=np.float32))
    out = tmp_path / "v.json"
    r = convert(tmp_path / "c", str(models_dir / "two.onnx"), "--to", "tflite", "--data",
                str(tmp_path / "ev.npz"), "--json", str(out))
    assert r.exit_code == 0, r.output
    (v,) = json.loads(out.read_text())
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(tmp_path / "c" / "variants" / v["id"] / v["model_file"]))
    assert sorted(d["name"] for d in it.get_input_details()) == ["a", "b"]
    assert [d["name"] for d in it.get_output_details()] == ["y"]
    assert v["fidelity"]["vs_parent"]["y"]["relative_max_error"] <= 1e-4


def test_unconvertible_operator_is_named_with_the_log(models_dir, tmp_path):
    require(env_ready(), ENV_MISSING)
    cache = tmp_path / "c"
    r = convert(cache, str(models_dir / "unsup.onnx"), "--to", "tflite")
    assert r.exit_code == 1
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and "Frobnicate" in line and "Traceback" not in r.output
    log = Path(line.rsplit("converter log: ", 1)[1])
    assert log.is_file() and log.parent == cache / "tools" / "logs"
    assert "Frobnicate" in log.read_text()
    entries = list((cache / "variants").iterdir())  # the root only: no TFLite variant, no staging
    assert len(entries) == 1 and json.loads((entries[0] / "variant.json").read_text())["pass"] == "root"
    assert not list((cache / "data").glob(".run-*"))  # the failed run left no half entry


# ---- ONNX -> TFLite: safeguards and words (no converter needed) --------------------------------

def test_offline_guard_refuses_lookups_and_connections(tmp_path):
    env = ToolEnv(TOOLS["tflite"], tmp_path / "env").subprocess_env(
        extra_pythonpath=write_guard(tmp_path / "guard"))
    assert all(env[k] == CLOSED_PROXY for k in PROXIES)
    code = ("import socket\n"
            "for f in (lambda: socket.getaddrinfo('pypi.org', 443),\n"
            "          lambda: socket.create_connection(('192.0.2.1', 80), timeout=2)):\n"
            "    try:\n        f()\n        print('REACHED')\n"
            "    except OSError as e:\n        print(e)\n"
            "print(socket.getaddrinfo('localhost', 9)[0][4][1])\n")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    lines = res.stdout.splitlines()
    assert res.returncode == 0, res.stderr
    assert "REACHED" not in res.stdout and lines[-1] == "9"
    assert "edgeprof offline guard" in lines[0] and "pypi.org" in lines[0]
    assert "edgeprof offline guard" in lines[1] and "192.0.2.1" in lines[1]


@pytest.mark.parametrize("args,message", [
    (["--precision", "int8-static"], "needs calibration data"),
    (["--precision", "fp32,int4"], "TFLite precisions are"),
    (["--precision", "fp32,fp16", "-o", "x.tflite"], "need a folder"),
    (["--precision", "fp32", "@int8"], "already quantized"),
])
def test_bad_tflite_requests_are_refused_before_converting(models_dir, tmp_path, args, message):
    runs = PASS_CALLS[RUN_COUNTER]
    model = str(models_dir / "cnn.onnx")
    if "@int8" in args:  # an ONNX model quantized by `edgeprof quantize`
        args = [a for a in args if a != "@int8"]
        q = CliRunner().invoke(cli, ["quantize", model, "--precision", "int8-dynamic",
                                     "--cache-dir", str(tmp_path / "c")])
        assert q.exit_code == 0, q.output
        model = q.output.split()[0]  # the new variant's short id
    r = convert(tmp_path / "c", model, "--to", "tflite", *args)
    assert r.exit_code == 1 and message in r.output and PASS_CALLS[RUN_COUNTER] == runs


def test_missing_converter_with_no_install_says_what_to_run(models_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPROF_TOOLS_DIR", str(tmp_path / "empty-tools"))
    r = convert(tmp_path / "c", str(models_dir / "cnn.onnx"), "--to", "tflite")
    assert r.exit_code == 1 and "edgeprof tools install tflite" in r.output
    listing = CliRunner().invoke(cli, ["tools", "list", "--cache-dir", str(tmp_path / "c")])
    assert listing.exit_code == 0 and "not installed" in listing.output
    assert str(tmp_path / "empty-tools") in listing.output


def test_a_missed_tolerance_is_a_warning_not_a_pass():
    fid = {"rows": 500, "data_role": "evaluation",
           "vs_parent": {"y": {"relative_max_error": 3e-4, "max_abs_error": 0.01,
                               "top1_agreement": 0.9, "cosine_mean": 0.999}}}
    verdict, warning = check_tolerance("fp32", fid)
    assert verdict["status"] == "failed" and "misses its parity tolerance" in warning
    verdict, warning = check_tolerance("fp16", fid)
    assert verdict["status"] == "passed" and warning is None
    verdict, warning = check_tolerance("int8-static", fid)
    assert verdict["status"] == "failed" and "90.00%" in warning
    fid["rows"] = 300
    fid["vs_parent"]["y"]["top1_agreement"] = 0.99
    verdict, warning = check_tolerance("int16x8", fid)
    assert verdict["status"] == "unverified" and ">= 500" in warning


def test_tools_list_shows_a_ready_converter():
    require(env_ready(), ENV_MISSING)
    r = CliRunner().invoke(cli, ["tools", "list"])
    assert r.exit_code == 0 and "ready (onnx2tf " + TOOLS["tflite"].version in r.output


# ---- PyTorch -> ONNX ---------------------------------------------------------------------------

def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def export(cache: Path, *args: str):
    return CliRunner().invoke(cli, ["convert", "--to", "onnx", "--cache-dir", str(cache), *args])


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def test_demo_factory_and_weights_export_to_a_root_variant(tmp_path):
    require(_has_torch(), "torch is not installed")
    import onnx
    out, rec = tmp_path / "m.onnx", tmp_path / "v.json"
    r = export(tmp_path / "c", "--torch", "edgeprof.demo.model:fashion_cnn", "--weights",
               str(D["pt"]), "--example-shape", "1x1x28x28", "-o", str(out), "--preprocess",
               str(D["preprocess"]), "--json", str(rec))
    assert r.exit_code == 0, r.output
    (v,) = json.loads(rec.read_text())
    assert v["pass"] == "root" and v["parent"] is None and v["input_spec"]["layout"] == "NCHW"
    cached = tmp_path / "c" / "variants" / v["id"] / v["model_file"]
    assert out.read_bytes() == cached.read_bytes()
    par = v["extra"]["torch_export"]["parity"]
    assert par["passed"] and par["max_abs_error"] < 1e-4
    assert sorted({c["batch"] for c in par["checks"]}) == [1, 3]
    assert "parity vs PyTorch" in r.output
    m = onnx.load(str(out))
    assert m.opset_import[0].version == 17
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    # the same network as the shipped demo ONNX (made by the training script)
    ev = np.load(D["eval"], allow_pickle=False)["x"][:64].astype(np.float32) / 255
    x = ev.transpose(0, 3, 1, 2).copy()
    np.testing.assert_allclose(_ort(out, x), _ort(D["onnx"], x), atol=1e-4)


def test_demo_export_is_the_bundled_demo_root(tmp_path):
    """convert --to onnx and structured pruning share one exporter: the demo factory and weights
    give the bundled fashion_cnn.onnx byte for byte, so both land on the same root variant."""
    require(_has_torch(), "torch is not installed")
    import hashlib
    rec = tmp_path / "v.json"
    r = export(tmp_path / "c", "--torch", "edgeprof.demo.model:fashion_cnn", "--weights",
               str(D["pt"]), "--example-shape", "1x1x28x28", "--json", str(rec))
    assert r.exit_code == 0, r.output
    (v,) = json.loads(rec.read_text())
    assert v["id"] == hashlib.sha256(D["onnx"].read_bytes()).hexdigest()
    assert v["extra"]["torch_export"]["output_names"] == ["logits"]


def test_static_batch_export(tmp_path):
    require(_has_torch(), "torch is not installed")
    import onnx
    out = tmp_path / "m.onnx"
    r = export(tmp_path / "c", "--torch", "edgeprof.demo.model:fashion_cnn", "--weights",
               str(D["pt"]), "--example-shape", "2x1x28x28", "--static-batch", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


@pytest.fixture(scope="module")
def bad_weights(tmp_path_factory):
    if not _has_torch():
        return {}
    import torch
    from torch import nn

    from edgeprof.demo.model import fashion_cnn
    d = tmp_path_factory.mktemp("weights")
    torch.save(nn.Linear(3, 4).state_dict(), d / "other.pt")
    sd = fashion_cnn().state_dict()
    sd["classifier.weight"] = torch.zeros(5, 576)
    torch.save(sd, d / "shape.pt")
    (d / "junk.pt").write_bytes(b"not a torch file")
    return {k: d / f"{k}.pt" for k in ("other", "shape", "junk")}


@pytest.mark.parametrize("args,message", [
    (["--torch", "no_such_module_xyz:make"], "cannot import no_such_module_xyz"),
    (["--torch", "edgeprof.demo.model:NUM_CLASSES"], "not a factory function"),
    (["--torch", "edgeprof.demo.model:missing"], "has no attribute 'missing'"),
    (["--torch", "edgeprof.demo:class_names"], "returned a list, not a torch.nn.Module"),
    (["--torch", "edgeprof.demo.model"], "expected module:factory"),
    (["--torch", "edgeprof.demo.model:fashion_cnn", "--weights", "@other"],
     "do not fit the model: missing 17 keys"),
    (["--torch", "edgeprof.demo.model:fashion_cnn", "--weights", "@shape"],
     "size mismatch for classifier.weight"),
    (["--torch", "edgeprof.demo.model:fashion_cnn", "--weights", "@junk"],
     "not a loadable state dict"),
])
def test_bad_factories_and_weights_are_one_line_errors(tmp_path, bad_weights, args, message):
    require(_has_torch(), "torch is not installed")
    args = [str(bad_weights[a[1:]]) if a.startswith("@") else a for a in args]
    r = export(tmp_path / "c", *args, "--example-shape", "1x1x28x28")
    assert r.exit_code == 1, r.output
    assert r.output.startswith("error: ") and message in r.output and len(r.output.splitlines()) == 1


@pytest.mark.parametrize("shape,message", [
    ("1x3x28x28", "rejects an input of shape 1x3x28x28"),
    ("1x1x32x32", "rejects an input of shape 1x1x32x32"),
    ("1x0x28", "expected positive sizes"),
])
def test_an_example_shape_the_model_rejects(tmp_path, shape, message):
    require(_has_torch(), "torch is not installed")
    r = export(tmp_path / "c", "--torch", "edgeprof.demo.model:fashion_cnn",
               "--example-shape", shape)
    assert r.exit_code == 1 and message in r.output and len(r.output.splitlines()) == 1


def test_without_torch_the_message_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    r = export(tmp_path / "c", "--torch", "edgeprof.demo.model:fashion_cnn",
               "--example-shape", "1x1x28x28")
    assert r.exit_code == 1 and "pip install torch==2.13.0" in r.output


def test_export_needs_a_factory_and_a_shape(tmp_path):
    r = export(tmp_path / "c", "--torch", "edgeprof.demo.model:fashion_cnn")
    assert r.exit_code == 1 and "--example-shape" in r.output
    r = CliRunner().invoke(cli, ["convert", str(D["onnx"]), "--to", "onnx"])
    assert r.exit_code == 1 and "--torch" in r.output
