"""`edgeprof inspect`: facts from the model, and operator support checked against the runtime."""
from __future__ import annotations

import json

from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.demo import demo_paths
from tests.conftest import TFLITE


def test_inspect_demo_model(tmp_path):
    out = tmp_path / "info.json"
    r = CliRunner().invoke(cli, ["inspect", str(demo_paths()["onnx"]), "--json", str(out)])
    assert r.exit_code == 0, r.output
    info = json.loads(out.read_text())
    assert info["format"] == "onnx" and info["opsets"]["ai.onnx"] == 17
    assert info["inputs"][0]["shape"][1:] == [1, 28, 28] and info["outputs"][0]["shape"][1:] == [10]
    assert info["op_counts"] == {"Conv": 3, "Relu": 3, "MaxPool": 3, "Flatten": 1, "Gemm": 1}
    # MACs by hand for conv16/conv32/conv64 (3x3, padding 1, pool 2 after each) and 576->10:
    assert info["macs"] == 16 * 28 * 28 * 9 + 32 * 14 * 14 * 16 * 9 + 64 * 7 * 7 * 32 * 9 + 576 * 10
    # parameters: folded conv weights + biases and the linear layer
    assert info["params"] == (16 * 9 + 16) + (32 * 16 * 9 + 32) + (64 * 32 * 9 + 64) + (576 * 10 + 10)
    assert info["support"]["supported"] is True
    assert "every operator is supported" in r.output


def test_inspect_macs_scale_with_batch(models_dir, tmp_path):
    out = tmp_path / "i.json"
    assert CliRunner().invoke(cli, ["inspect", str(models_dir / "cnn.onnx"), "--batch", "4",
                                    "--json", str(out)]).exit_code == 0
    # Conv 1->4 3x3 on 8x8 (pad 1) and Gemm 4->3, times batch 4
    assert json.loads(out.read_text())["macs"] == 4 * (4 * 8 * 8 * 9 + 4 * 3)


def test_inspect_unsupported_operator_fails_with_its_name(models_dir):
    r = CliRunner().invoke(cli, ["inspect", str(models_dir / "unsup.onnx")])
    assert r.exit_code == 1
    err = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "com.example.edgeprof:Frobnicate" in err[0]
    assert "will not run on target 'local'" in err[0]


def test_inspect_tflite_full_int8(tmp_path):
    out = tmp_path / "i.json"
    r = CliRunner().invoke(cli, ["inspect", str(TFLITE / "tiny_cnn_int8.tflite"), "--json", str(out)])
    assert r.exit_code == 0, r.output
    info = json.loads(out.read_text())
    assert info["format"] == "tflite" and info["inputs"][0]["dtype"] == "int8"
    assert info["inputs"][0]["quant"][0] > 0
    assert set(info["op_counts"]) == {"CONV_2D", "MEAN", "FULLY_CONNECTED"}
    # Conv2D 1->4 3x3 (36 int8 weights + 4 int32 biases) and Dense 4->3 (12 + 3)
    assert info["weight_dtypes"]["int8"] == 48 and info["support"]["supported"] is True


def test_inspect_bad_file(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"\x00garbage")
    r = CliRunner().invoke(cli, ["inspect", str(tmp_path / "x.onnx")])
    assert r.exit_code == 1 and r.output.startswith("error:") and len(r.output.splitlines()) == 1
