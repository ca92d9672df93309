"""The bundled demo model and data (edgeprof/demo): shapes, leakage, accuracy, parity, provenance."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeprof.demo import CLASS_NAMES, DATA_DIR, FILE_NAMES, class_names, demo_paths
from edgeprof.demo import train as demo_train

REPO_ROOT = Path(__file__).resolve().parents[2]
STRICT = os.environ.get("EDGEPROF_STRICT") == "1"


def _optional(modname: str, why: str):
    """Import an optional module; skip without it (fail under EDGEPROF_STRICT=1)."""
    try:
        return __import__(modname)
    except ImportError:
        if STRICT:
            pytest.fail(f"{modname} is required under EDGEPROF_STRICT=1: {why}")
        pytest.skip(f"{modname} not installed: {why}")


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = _optional("tomli", "reading preprocess.toml on Python < 3.11")
    with open(path, "rb") as f:
        return tomllib.load(f)


def _npz(key: str) -> dict[str, np.ndarray]:
    with np.load(demo_paths()[key], allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _row_hashes(x: np.ndarray) -> set[str]:
    return {hashlib.sha256(np.ascontiguousarray(r).tobytes()).hexdigest() for r in x}


def _apply_spec(x_uint8: np.ndarray) -> np.ndarray:
    """Apply preprocess.toml's InputSpec to raw NHWC uint8 images (written from the spec's fields,
    not from the training code)."""
    spec = _load_toml(demo_paths()["preprocess"])
    x = x_uint8.astype(np.float32) * np.float32(spec["scale"])
    x = (x - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    if spec["layout"] == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x.astype(spec["dtype"]))


@pytest.fixture(scope="module")
def onnx_logits() -> np.ndarray:
    ort = _optional("onnxruntime", "the demo ONNX model is checked with it")
    sess = ort.InferenceSession(str(demo_paths()["onnx"]), providers=["CPUExecutionProvider"])
    x = _apply_spec(_npz("eval")["x"])
    return sess.run(["logits"], {"input": x})[0]


# ----------------------------------------------------------------------------- package helpers


def test_demo_paths_and_files_exist():
    paths = demo_paths()
    assert set(paths) == {"pt", "onnx", "eval", "calib", "train_subset", "preprocess", "json"}
    assert isinstance(DATA_DIR, Path) and DATA_DIR.name == "data" and DATA_DIR.parent.name == "demo"
    for key, p in paths.items():
        assert p.parent == DATA_DIR and p.name == FILE_NAMES[key]
        assert p.is_file(), f"missing demo file {p} (run python -m edgeprof.demo.train)"


def test_class_names():
    names = class_names()
    assert names == list(CLASS_NAMES) and len(names) == 10
    assert names[0] == "T-shirt/top" and names[9] == "Ankle boot"
    names.append("x")  # a copy: callers cannot corrupt the module's tuple
    assert len(class_names()) == 10


def test_importing_demo_helpers_does_not_import_torch():
    code = (
        "import sys, edgeprof.demo, edgeprof.demo.train; "
        "edgeprof.demo.demo_paths(); edgeprof.demo.class_names(); "
        "sys.exit(3 if 'torch' in sys.modules else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode == 0, f"torch was imported (rc {r.returncode}): {r.stderr}"


def test_total_shipped_size_is_small():
    total = sum(p.stat().st_size for p in demo_paths().values())
    assert total < 3_000_000, f"demo data is {total} bytes"


# ----------------------------------------------------------------------------- data files


def test_eval_npz_shapes_dtypes_labels():
    d = _npz("eval")
    assert set(d) == {"x", "y"}
    assert d["x"].shape == (2000, 28, 28, 1) and d["x"].dtype == np.uint8
    assert d["y"].shape == (2000,) and d["y"].dtype == np.int64
    assert set(np.unique(d["y"]).tolist()) == set(range(10))
    assert d["x"].max() > 200 and d["x"].min() == 0  # raw 0-255 pixels, not scaled


@pytest.mark.parametrize("key,rows", [("calib", 500), ("train_subset", None)])
def test_train_split_files_shapes_dtypes(key, rows):
    d = _npz(key)
    assert set(d) == {"x", "y"}
    n = d["x"].shape[0]
    if rows is not None:
        assert n == rows
    else:
        assert n >= 1000
    assert d["x"].shape == (n, 28, 28, 1) and d["x"].dtype == np.uint8
    assert d["y"].shape == (n,) and d["y"].dtype == np.int64
    assert set(np.unique(d["y"]).tolist()) == set(range(10))


def test_no_row_overlap_between_eval_calib_and_train_subset():
    ev = _row_hashes(_npz("eval")["x"])
    cal = _row_hashes(_npz("calib")["x"])
    tr = _row_hashes(_npz("train_subset")["x"])
    assert len(ev) > 1900  # hashing distinguishes rows (not all equal)
    assert not (cal & ev), f"{len(cal & ev)} calibration rows also in eval.npz"
    assert not (tr & ev), f"{len(tr & ev)} train_subset rows also in eval.npz"
    assert not (cal & tr), f"{len(cal & tr)} rows in both calib.npz and train_subset.npz"


def test_preprocess_toml_is_the_input_spec():
    spec = _load_toml(demo_paths()["preprocess"])
    assert spec["layout"] == "NCHW"
    assert spec["channel_order"] == "RGB"
    assert spec["scale"] == pytest.approx(1 / 255, rel=1e-12)
    assert spec["mean"] == [0.0] and spec["std"] == [1.0]
    assert spec["dtype"] == "float32"


# ----------------------------------------------------------------------------- models


def test_onnx_model_io_and_accuracy(onnx_logits):
    onnx = _optional("onnx", "the demo ONNX model is checked with it")
    m = onnx.load(str(demo_paths()["onnx"]))
    onnx.checker.check_model(m)
    assert [i.name for i in m.graph.input] == ["input"]
    assert [o.name for o in m.graph.output] == ["logits"]
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in m.opset_import)

    y = _npz("eval")["y"]
    assert onnx_logits.shape == (2000, 10) and onnx_logits.dtype == np.float32
    acc = float(np.mean(onnx_logits.argmax(1) == y))
    assert acc >= 0.85, f"ONNX accuracy on eval.npz is {acc:.4f}"


def test_onnx_batch_of_one_matches_full_batch(onnx_logits):
    ort = _optional("onnxruntime", "the demo ONNX model is checked with it")
    sess = ort.InferenceSession(str(demo_paths()["onnx"]), providers=["CPUExecutionProvider"])
    x = _apply_spec(_npz("eval")["x"][:3])
    for i in range(3):
        out = sess.run(["logits"], {"input": x[i : i + 1]})[0]
        np.testing.assert_allclose(out[0], onnx_logits[i], rtol=1e-4, atol=1e-4)


def test_state_dict_loads_weights_only_and_matches_onnx(onnx_logits):
    torch = _optional("torch", "the demo state_dict is checked against the ONNX export")
    from edgeprof.demo.model import fashion_cnn

    state = torch.load(demo_paths()["pt"], weights_only=True, map_location="cpu")
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    model = fashion_cnn()
    model.load_state_dict(state, strict=True)
    model.eval()
    n_bytes = sum(v.numel() * v.element_size() for v in state.values())
    assert n_bytes < 1_000_000
    with torch.no_grad():
        pt = model(torch.from_numpy(_apply_spec(_npz("eval")["x"]))).numpy()
    assert pt.shape == (2000, 10)
    assert float(np.mean(pt.argmax(1) == onnx_logits.argmax(1))) == 1.0
    assert float(np.max(np.abs(pt - onnx_logits))) < 1e-3


# ----------------------------------------------------------------------------- provenance


def test_demo_json_provenance_and_sha256(onnx_logits):
    info = json.loads(demo_paths()["json"].read_text(encoding="utf-8"))
    assert info["class_names"] == class_names()
    shipped = {name for key, name in FILE_NAMES.items() if key != "json"}
    assert set(info["files"]) == shipped
    for name, rec in info["files"].items():
        data = (DATA_DIR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == rec["sha256"], f"{name} changed since demo.json"
        assert len(data) == rec["bytes"]
    assert info["training"]["epochs"] >= 1 and isinstance(info["training"]["seed"], int)
    assert info["training"]["training_seconds"] > 0
    assert info["versions"]["torch"]
    assert 0.85 <= info["accuracy"]["test_10k"] <= 1.0
    # the recorded eval accuracy is the one the shipped ONNX file gives now
    acc = float(np.mean(onnx_logits.argmax(1) == _npz("eval")["y"]))
    assert info["accuracy"]["eval_npz_onnxruntime"] == pytest.approx(acc, abs=1e-9)
    assert info["onnx_parity_eval_npz"]["top1_agreement"] == 1.0


# ----------------------------------------------------------------------------- generator code


def _idx_bytes(arr: np.ndarray) -> bytes:
    head = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def test_read_idx_roundtrip_and_rejects_bad_files(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "a-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(_idx_bytes(arr)))
    np.testing.assert_array_equal(demo_train.read_idx(p), arr)
    plain = tmp_path / "b-idx1-ubyte"
    plain.write_bytes(_idx_bytes(np.array([7, 1, 9], np.uint8)))
    assert demo_train.read_idx(plain).tolist() == [7, 1, 9]
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\x00" * 4)  # float idx
    with pytest.raises(ValueError, match="unsigned-byte"):
        demo_train.read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(_idx_bytes(arr)[:-1])
    with pytest.raises(ValueError, match="expected 24 bytes"):
        demo_train.read_idx(short)


def test_make_splits_excludes_train_rows_equal_to_eval_rows():
    rng = np.random.default_rng(1)
    test_x = rng.integers(0, 256, size=(200, 28, 28, 1), dtype=np.uint8)
    test_y = np.repeat(np.arange(10), 20).astype(np.int64)
    train_x = rng.integers(0, 256, size=(400, 28, 28, 1), dtype=np.uint8)
    train_y = np.repeat(np.arange(10), 40).astype(np.int64)
    train_x[::2] = test_x  # half the train rows duplicate a test row
    data = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    ev, cal, tr, excluded = demo_train.make_splits(data, seed=0, n_eval=100, n_calib=50, n_train=100)
    assert len(ev) == 100 and len(cal) == 50 and len(tr) == 100
    assert excluded > 0
    assert not set(cal.tolist()) & set(tr.tolist())
    ev_h = _row_hashes(test_x[ev])
    assert not (_row_hashes(train_x[cal]) & ev_h)
    assert not (_row_hashes(train_x[tr]) & ev_h)
    assert np.bincount(test_y[ev], minlength=10).tolist() == [10] * 10  # stratified
    again = demo_train.make_splits(data, seed=0, n_eval=100, n_calib=50, n_train=100)
    assert all(np.array_equal(a, b) for a, b in zip(again[:3], (ev, cal, tr)))  # seeded


def test_npz_bytes_is_deterministic_and_loads_without_pickle(tmp_path):
    x = np.arange(48, dtype=np.uint8).reshape(2, 4, 6, 1)
    y = np.array([3, 4], np.int64)
    b1, b2 = demo_train.npz_bytes(x=x, y=y), demo_train.npz_bytes(x=x, y=y)
    assert b1 == b2
    p = tmp_path / "t.npz"
    p.write_bytes(b1)
    with np.load(p, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["x"], x)
        np.testing.assert_array_equal(z["y"], y)
        assert z["y"].dtype == np.int64
