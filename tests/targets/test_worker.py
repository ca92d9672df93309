"""The worker: self-contained, speaks the protocol, runs real onnxruntime and LiteRT models."""
from __future__ import annotations

import ast
import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeprof.errors import WorkerError
from edgeprof.targets import worker as W
from edgeprof.targets.client import WORKER_PATH, start_local_worker
from tests.conftest import TFLITE, require

ROOT = Path(__file__).resolve().parents[2]
BOARD_PYTHON = ROOT / ".venv-board" / "bin" / "python"
ALLOWED_IMPORTS = {"base64", "glob", "json", "os", "platform", "shutil", "signal", "subprocess",
                   "sys", "tempfile", "time", "numpy", "resource", "re", "onnxruntime",
                   "ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime",
                   "tflite_runtime.interpreter", "onnxruntime.capi"}


def test_worker_parses_as_python_39():
    ast.parse(WORKER_PATH.read_text(), feature_version=(3, 9))


def test_worker_imports_only_stdlib_numpy_and_runtimes():
    tree = ast.parse(WORKER_PATH.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module)
    assert names <= ALLOWED_IMPORTS, names - ALLOWED_IMPORTS


def _protocol_roundtrip(python: str | None, models_dir: Path, image_data: Path) -> None:
    with start_local_worker(python=python) as w:
        assert w.hello["protocol"] == W.PROTOCOL_VERSION
        env = w.request("env")["env"]
        assert env["cores"] >= 1 and env["python"] and env["versions"]["numpy"]
        load = w.request("load", path=str(models_dir / "cnn.onnx"), threads=1, batch=2,
                         inputs={"npz": str(image_data), "start": 0})
        assert load["feed_shapes"] == {"input": [2, 1, 8, 8]}  # NHWC data -> NCHW model
        assert load["session_s"] > 0 and load["first_inference_s"] > 0
        r = w.request("round", n=7)
        assert len(r["samples_s"]) == 7 and all(s > 0 for s in r["samples_s"])
        assert r["peak_rss_bytes"] >= r["rss_bytes"] > 0
        out = w.request("predict", npz=str(image_data), start=0, stop=20, batch=8)
        logits = W.decode_array(out["outputs"]["logits"])
        assert logits.shape == (20, 3) and np.isfinite(logits).all()


def test_protocol_roundtrip_local(models_dir, image_data):
    _protocol_roundtrip(None, models_dir, image_data)


def test_worker_runs_in_a_numpy_126_environment(models_dir, image_data):
    require(BOARD_PYTHON.exists(), f"{BOARD_PYTHON} missing (make board-env)")
    v = subprocess.run([str(BOARD_PYTHON), "-c", "import numpy; print(numpy.__version__)"],
                       capture_output=True, text=True, check=True).stdout.strip()
    assert v.startswith("1.26"), v
    _protocol_roundtrip(str(BOARD_PYTHON), models_dir, image_data)
    with start_local_worker(python=str(BOARD_PYTHON)) as w:
        w.request("load", path=str(TFLITE / "tiny_cnn_int8.tflite"), threads=1)
        assert len(w.request("round", n=3, io_runs=2)["io_samples_s"]) == 2


def test_predictions_match_numpy_reference(models_dir, image_data):
    """The ONNX tiny CNN recomputed in numpy from its own initializers."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(models_dir / "cnn.onnx"))
    p = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    x = np.load(image_data)["x"].astype(np.float32) / 255.0            # N,8,8,1
    xp = np.pad(x[..., 0], ((0, 0), (1, 1), (1, 1)))
    conv = np.zeros((len(x), 4, 8, 8), np.float32)
    for o in range(4):
        for dy in range(3):
            for dx in range(3):
                conv[:, o] += p["w"][o, 0, dy, dx] * xp[:, dy:dy + 8, dx:dx + 8]
        conv[:, o] += p["b"][o]
    ref = np.maximum(conv, 0).mean(axis=(2, 3)) @ p["fw"].T + p["fb"]
    with start_local_worker() as w:
        w.request("load", path=str(models_dir / "cnn.onnx"))
        out = W.decode_array(w.request("predict", npz=str(image_data), start=0, stop=20)
                             ["outputs"]["logits"])
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,atol", [("fp32", 1e-5), ("fixed1", 1e-5), ("dynamic", 0.05),
                                       ("int8", 0.05)])
def test_litert_models_match_keras_reference(name, atol):
    """Outputs from LiteRT vs the Keras model that made the fixtures (independent reference).
    The full-int8 model takes int8 input: the worker quantizes with the model's scale and
    zero-point and dequantizes the int8 output."""
    ref = np.load(TFLITE / "tiny_cnn_io.npz")
    with start_local_worker() as w:
        load = w.request("load", path=str(TFLITE / f"tiny_cnn_{name}.tflite"), batch=4)
        assert load["runtime"] == "litert"
        if name == "int8":
            assert load["inputs"][0]["dtype"] == "int8" and load["inputs"][0]["quant"]["scale"] > 0
        out = w.request("predict", npz=str(TFLITE / "tiny_cnn_io.npz"), start=0, stop=16,
                        spec={"*": {"layout": "NHWC", "scale": 1.0}})
        y = W.decode_array(next(iter(out["outputs"].values())))
        # a round after predict still runs at the loaded batch
        assert len(w.request("round", n=2, io_runs=2)["samples_s"]) == 2
    assert y.shape == (16, 3) and y.dtype == np.float32
    np.testing.assert_allclose(y, ref["y"], atol=atol)
    assert (y.argmax(1) == ref["y"].argmax(1)).mean() >= (1.0 if atol < 1e-3 else 0.9)


def test_full_int8_io_is_timed_apart(tmp_path):
    with start_local_worker() as w:
        w.request("load", path=str(TFLITE / "tiny_cnn_int8.tflite"))
        r = w.request("round", n=5, io_runs=4)
    assert len(r["samples_s"]) == 5 and len(r["io_samples_s"]) == 4


def test_op_profile_reports_operator_types(models_dir):
    with start_local_worker() as w:
        w.request("load", path=str(models_dir / "cnn.onnx"), op_profile=True)
        w.request("round", n=10)
        ops = w.request("ops")["ops"]
    assert ops["available"] and {"Conv", "Gemm"} <= set(ops["per_op"])
    assert ops["per_op"]["Conv"]["calls"] >= 10 and ops["per_op"]["Conv"]["total_s"] > 0


def test_litert_op_profile_says_unavailable():
    with start_local_worker() as w:
        w.request("load", path=str(TFLITE / "tiny_cnn_fp32.tflite"))
        ops = w.request("ops")["ops"]
    assert ops["available"] is False and "benchmark_model" in ops["reason"]


@pytest.mark.parametrize("model,kwargs,fragment", [
    ("dyn.onnx", {}, "dynamic dims"),
    ("dyn.onnx", {"shapes": {"x": [1, 2, 3]}}, "has 3 dims"),
    ("cnn_fixed.onnx", {"batch": 4}, "fixed batch of 1"),
    ("unsup.onnx", {}, "Frobnicate is not supported"),
    ("cnn.onnx", {"runtime": "litert"}, "not a TFLite model"),
])
def test_load_errors_are_one_line(models_dir, model, kwargs, fragment):
    with start_local_worker() as w:
        with pytest.raises(WorkerError) as e:
            w.request("load", path=str(models_dir / model), **kwargs)
        assert fragment in str(e.value) and "\n" not in str(e.value)
        # the worker survives a failed request
        assert w.request("env")["env"]["cores"] >= 1


def test_wrong_data_shape_is_named(models_dir, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 9, 9, 1), np.uint8))
    with start_local_worker() as w:
        with pytest.raises(WorkerError, match=r"shape \[1, 1, 9, 9\].*expects \[N, 1, 8, 8\]"):
            w.request("load", path=str(models_dir / "cnn.onnx"),
                      inputs={"npz": str(tmp_path / "d.npz")})


def test_dead_worker_is_reported(models_dir):
    w = start_local_worker()
    w.request("load", path=str(models_dir / "cnn.onnx"))
    os.kill(w.transport.pid, 9)
    with pytest.raises(WorkerError, match="SIGKILL"):
        w.request("round", n=3)
    w.close()


def test_stdout_prints_cannot_corrupt_the_protocol(models_dir):
    with start_local_worker() as w:
        # the worker redirects fd 1 to stderr; a print from a library lands there
        w.request("load", path=str(models_dir / "cnn.onnx"))
        assert w.request("round", n=1)["samples_s"]


# ---- InputSpec ----------------------------------------------------------------------------

def test_input_spec_matches_hand_computation():
    raw = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    spec = {"layout": "NCHW", "channel_order": "BGR", "scale": 1 / 255.0,
            "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.1], "dtype": "float32"}
    got = W.apply_input_spec(raw, spec)
    x = raw.astype(np.float32)[..., ::-1] / 255.0
    want = ((x - np.array([0.5, 0.4, 0.3], np.float32)) / np.array([0.2, 0.2, 0.1], np.float32))
    np.testing.assert_allclose(got, want.transpose(0, 3, 1, 2), rtol=1e-6)
    assert got.dtype == np.float32 and got.shape == (2, 3, 2, 2)


def test_input_spec_resize_and_grayscale_without_channel_axis():
    raw = np.zeros((3, 4, 4), np.uint8)
    raw[:, :2] = 255
    got = W.apply_input_spec(raw, {"layout": "NHWC", "scale": 1 / 255.0, "resize": [8, 8]})
    assert got.shape == (3, 8, 8, 1)
    assert got[0, 0, 0, 0] == pytest.approx(1.0) and got[0, -1, 0, 0] == pytest.approx(0.0)


def test_layout_inference():
    assert W.infer_layout([None, 3, 224, 224]) == "NCHW"
    assert W.infer_layout([1, 224, 224, 3]) == "NHWC"
    assert W.infer_layout([1, 28, 28, 1]) == "NHWC"
    assert W.infer_layout([1, 1, 28, 28]) == "NCHW"
    assert W.infer_layout([1, 10]) is None


def test_data_layout_read_from_the_shape_when_only_one_reading_fits():
    # model NCHW [N,1,28,28]: data (16,1,28,28) can only be NCHW, (16,28,28,1) only NHWC
    assert W.infer_data_layout((16, 1, 28, 28), [None, 1, 28, 28], "NCHW") == "NCHW"
    assert W.infer_data_layout((16, 28, 28, 1), [None, 1, 28, 28], "NCHW") == "NHWC"
    assert W.infer_data_layout((4, 3, 32, 32), [1, 32, 32, 3], "NHWC") == "NCHW"
    # 3x3 images with 3 channels fit both readings: the InputSpec decides, else NHWC
    assert W.infer_data_layout((2, 3, 3, 3), [None, 3, 3, 3], "NCHW") == "NHWC"
    assert W.infer_data_layout((2, 3, 3, 3), [None, 3, 3, 3], "NCHW", "NCHW") == "NCHW"
    # a resizing spec: only the channel count decides
    assert W.infer_data_layout((2, 3, 64, 48), [None, 3, 32, 32], "NCHW", resize=[32, 32]) == "NCHW"


def test_nchw_float_data_feeds_the_model_like_nhwc_data(models_dir, tmp_path):
    """The same images given NHWC uint8 and NCHW float32 (already scaled) give the same outputs,
    and the worker says which layout it read."""
    rng = np.random.default_rng(3)
    nhwc = rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "nhwc.npz", x=nhwc)
    np.savez(tmp_path / "nchw.npz", x=(nhwc.astype(np.float32) / 255).transpose(0, 3, 1, 2))
    outs = {}
    with start_local_worker() as w:
        for name in ("nhwc", "nchw"):
            npz = str(tmp_path / f"{name}.npz")
            rep = w.request("load", path=str(models_dir / "cnn.onnx"), inputs={"npz": npz})
            assert rep["data_layouts"] == {"input": name.upper()}
            outs[name] = W.decode_array(w.request("predict", npz=npz, start=0, stop=16)
                                        ["outputs"]["logits"])
    np.testing.assert_allclose(outs["nchw"], outs["nhwc"], rtol=1e-5, atol=1e-6)


# ---- environment readers against fake trees ---------------------------------------------------
# This machine exposes no cpufreq, thermal zones or vcgencmd, so the readers are checked against
# fake sysfs/procfs trees and a fake vcgencmd script (the only fakes in this suite; real boards
# have these files).

def _write(root: Path, rel: str, text: str) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


@pytest.fixture
def pi_tree(tmp_path):
    root = tmp_path / "pi"
    _write(root, "/proc/cpuinfo", "processor\t: 0\nBogoMIPS\t: 108.00\n"
           "Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n")
    _write(root, "/proc/meminfo", "MemTotal:        3884292 kB\nMemFree: 1 kB\n")
    for cpu, cur in ((0, 1500000), (1, 600000)):
        base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/"
        _write(root, base + "scaling_governor", "ondemand\n")
        _write(root, base + "scaling_cur_freq", f"{cur}\n")
        _write(root, base + "cpuinfo_max_freq", "1500000\n")
    _write(root, "/sys/class/thermal/thermal_zone0/temp", "61835\n")
    _write(root, "/sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    vc = tmp_path / "vcgencmd"
    vc.write_text("#!/bin/sh\necho throttled=0x50005\n")
    vc.chmod(vc.stat().st_mode | stat.S_IEXEC)
    return root, str(vc)


def test_readers_on_a_pi_like_tree(pi_tree):
    root, vc = pi_tree
    root = str(root)
    assert W.cpu_model(root) == "Raspberry Pi 4 Model B Rev 1.4"
    freq = W.cpufreq(root)
    assert freq["0"] == {"governor": "ondemand", "cur_hz": 1_500_000_000, "max_hz": 1_500_000_000}
    assert freq["1"]["cur_hz"] == 600_000_000
    assert W.thermal(root) == {"cpu-thermal:thermal_zone0": pytest.approx(61.835)}
    thr = W.throttled(vc)
    assert thr["value"] == 0x50005
    assert thr["flags"] == ["under-voltage", "throttled", "under-voltage occurred",
                            "throttling occurred"]
    env = W.static_env(root)
    assert env["governors"] == ["ondemand"] and env["max_hz"] == 1_500_000_000
    assert env["mem_total_bytes"] == 3884292 * 1024
    assert "temp_c" not in env["unavailable"] and "cur_hz" not in env["unavailable"]


def test_readers_on_an_empty_tree_record_unavailable(tmp_path):
    root = str(tmp_path / "empty")
    os.makedirs(root)
    assert W.cpu_model(root) is None and W.cpufreq(root) == {} and W.thermal(root) == {}
    env = W.static_env(root)
    for key in ("cpu_model", "governors", "max_hz", "mem_total_bytes", "cur_hz", "temp_c"):
        assert key in env["unavailable"]
    snap = W.snapshot(root)
    assert snap["cur_hz"] is None and snap["temp_c"] is None


@pytest.mark.parametrize("text,expected", [("throttled=0x0", (0, [])),
                                           ("throttled=0x2", (2, ["arm frequency capped"])),
                                           ("garbage", None), ("", None)])
def test_parse_throttled(text, expected):
    assert W.parse_throttled(text) == expected


def test_plain_integer_model_input_gets_integers(tmp_path):
    """A uint8 (not quantized) model input: the default spec does not scale to [0, 1] and the
    worker feeds integers (onnxruntime would refuse floats; LiteRT would truncate them to 0)."""
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "c",
                          [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 4, 4, 1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 4, 1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "u8.onnx"))
    raw = np.arange(32, dtype=np.uint8).reshape(2, 4, 4, 1) * 7
    np.savez(tmp_path / "u8.npz", x=raw)
    with start_local_worker() as w:
        w.request("load", path=str(tmp_path / "u8.onnx"), inputs={"npz": str(tmp_path / "u8.npz")})
        out = W.decode_array(w.request("predict", npz=str(tmp_path / "u8.npz"), start=0,
                                       stop=2)["outputs"]["y"])
    np.testing.assert_array_equal(out, raw.astype(np.float32))
