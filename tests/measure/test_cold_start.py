"""Cold start is measured in fresh processes, apart from warm latency."""
from __future__ import annotations

from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.errors import WorkerError
from edgeprof.results import read_records
from edgeprof.targets.local import LocalTarget
from tests.conftest import FAST, TFLITE

import pytest


def test_cold_start_runs_in_a_fresh_process_each_time(models_dir):
    t = LocalTarget()
    a = t.cold_start({"path": str(models_dir / "cnn.onnx")})
    b = t.cold_start({"path": str(models_dir / "cnn.onnx")})
    for c in (a, b):
        # every part is a positive duration and the whole process took longer than its parts
        parts = c["numpy_import_s"] + c["runtime_import_s"] + c["session_s"] + c["first_inference_s"]
        assert min(c["numpy_import_s"], c["runtime_import_s"], c["session_s"],
                   c["first_inference_s"]) > 0
        assert c["total_s"] > c["in_process_s"] >= parts
    # a fresh process imports numpy again: nothing is shared between cold starts
    assert a["numpy_import_s"] > 1e-3 and b["numpy_import_s"] > 1e-3


def test_cold_start_tflite_and_error(models_dir):
    t = LocalTarget()
    assert t.cold_start({"path": str(TFLITE / "tiny_cnn_int8.tflite")})["first_inference_s"] > 0
    with pytest.raises(WorkerError, match="dynamic dims"):
        t.cold_start({"path": str(models_dir / "dyn.onnx")})


def test_profile_records_cold_start_apart_from_warm_latency(models_dir, tmp_path):
    res = tmp_path / "r.jsonl"
    r = CliRunner().invoke(cli, ["profile", str(models_dir / "cnn.onnx"), *FAST,
                                 "--cold-starts", "2", "--results", str(res)])
    assert r.exit_code == 0, r.output
    rec = next(read_records(res))
    assert len(rec["cold_start"]["total_s"]) == 2
    assert min(rec["cold_start"]["total_s"]) > rec["stats"]["p50_s"]
