"""`edgeprof profile` through click's CliRunner on real onnxruntime and LiteRT runs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.results import read_records
from tests.conftest import FAST, TFLITE


def run(*args: str):
    return CliRunner().invoke(cli, ["profile", *args])


def test_profile_onnx_and_tflite_interleaved_with_records(models_dir, tmp_path):
    res_file, json_file = tmp_path / "r.jsonl", tmp_path / "r.json"
    r = run(str(models_dir / "cnn.onnx"), str(TFLITE / "tiny_cnn_fp32.tflite"), "--threads", "1,2",
            "--results", str(res_file), "--json", str(json_file), *FAST)
    assert r.exit_code == 0, r.output
    recs = list(read_records(res_file))
    assert len(recs) == 4 and {x["kind"] for x in recs} == {"latency"}
    assert {(x["model"]["format"], x["threads"]) for x in recs} == {
        ("onnx", 1), ("onnx", 2), ("tflite", 1), ("tflite", 2)}
    for rec in recs:
        s = rec["stats"]
        assert rec["schema"] == "edgeprof.result/2"
        assert len(rec["samples_s"]) == s["n"] >= 20
        assert sum(rec["samples_s"]) >= 0.05 or s["n"] == 10_000  # --max-runs default caps
        eps = 1e-9 * s["p50_s"]  # samples are ns * 1e-9: allow one rounding step
        assert s["p50_ci_s"][0] - eps <= s["p50_s"] <= s["p50_ci_s"][1] + eps
        assert s["min_s"] <= s["p50_s"] <= s["p90_s"] <= s["p99_s"] <= s["max_s"]
        assert rec["warmup_samples_s"] and rec["session_s"] > 0 and rec["first_inference_s"] > 0
        assert rec["peak_rss_bytes"] > rec["baseline_rss_bytes"] > 0
        assert rec["model"]["model_bytes"] == Path(rec["model"]["path"]).stat().st_size
        assert 0 < rec["model"]["zlib_bytes"]
        assert rec["env"]["cores"] >= 1 and rec["runtime_version"]
        assert len(rec["rounds"]) >= 1 and sum(rec["rounds"]) == s["n"]
    tfl = [x for x in recs if x["model"]["format"] == "tflite"]
    assert all(x["runtime"] == "litert" and x["io_samples_s"] for x in tfl)
    doc = json.loads(json_file.read_text())
    assert doc["schema"] == "edgeprof.result/2" and len(doc["records"]) == 4
    assert "p50" in r.output and "cnn.onnx" in r.output


def test_interleaving_alternates_rounds(models_dir, tmp_path):
    """With two models, each needs several rounds: rounds alternate, so both records have a
    similar number of rounds (one model is never measured entirely before the other). The
    precision stop rule is off (--rel-ci 0): it may rightly end one model rounds earlier."""
    res = tmp_path / "r.jsonl"
    r = run(str(models_dir / "cnn.onnx"), str(models_dir / "mlp.onnx"), "--results", str(res),
            "--min-time", "0.3s", "--max-time", "0.3s", "--min-runs", "20", "--rel-ci", "0",
            "--warmup-max-time", "0.5s", "-q")
    assert r.exit_code == 0, r.output
    a, b = list(read_records(res))
    assert len(a["rounds"]) >= 2 and len(b["rounds"]) >= 2
    assert abs(len(a["rounds"]) - len(b["rounds"])) <= 1


def test_several_fresh_processes_and_the_stop_rule_in_the_record(models_dir, tmp_path):
    """--processes 2: every round belongs to one of two workers, the record recovers which, the
    p50 CI is the two-level one (the single-level one kept beside it) and the stop rule says why
    it stopped. Behaviour only: no timing figure is asserted."""
    from edgeprof.measure.stats import process_groups

    res = tmp_path / "r.jsonl"
    fast = [a for a in FAST]
    fast[fast.index("--processes") + 1] = "2"
    r = run(str(models_dir / "cnn.onnx"), "--results", str(res), "--rel-ci", "2%", *fast)
    assert r.exit_code == 0, r.output
    rec = next(read_records(res))
    s = rec["stats"]
    assert s["processes"] == 2 and len(rec["processes"]) == 2
    assert sorted(set(rec["process_of_round"])) == [0, 1]
    assert len(rec["process_of_round"]) == len(rec["rounds"]) and sum(rec["rounds"]) == s["n"]
    groups = process_groups(rec["samples_s"], rec["rounds"], rec["process_of_round"])
    assert len(groups) == 2 and all(len(g) > 0 for g in groups)
    assert len(s["process_p50_s"]) == 2 and s["between_process_spread"] >= 0
    assert s["p50_ci_s"][0] <= s["p50_s"] <= s["p50_ci_s"][1]
    assert s["p50_ci_within_s"][0] <= s["p50_s"] <= s["p50_ci_within_s"][1]
    assert rec["peak_rss_bytes"] == max(p["peak_rss_bytes"] for p in rec["processes"])
    rule = rec["stop_rule"]
    assert rule["rel_ci_target"] == pytest.approx(0.02)
    assert rule["reason"] in ("precision", "process_bound", "max_time", "max_runs")
    assert rule["reached_rel_ci"] is not None
    codes = [w["code"] for w in rec["warnings"]]
    assert (rule["reason"] == "precision") != ("precision_not_reached" in codes)


def test_stop_rule_options_are_checked(models_dir):
    r = run(str(models_dir / "cnn.onnx"), *FAST, "--max-time", "0.01s")
    assert r.exit_code != 0 and "--max-time" in r.output
    r = run(str(models_dir / "cnn.onnx"), *FAST, "--rel-ci", "150%")
    assert r.exit_code != 0 and "--rel-ci" in r.output


def test_rerun_resumes_and_skips_existing_keys(models_dir, tmp_path):
    res = tmp_path / "r.jsonl"
    assert run(str(models_dir / "cnn.onnx"), "--results", str(res), *FAST).exit_code == 0
    r = run(str(models_dir / "cnn.onnx"), str(models_dir / "mlp.onnx"), "--results", str(res), *FAST)
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output
    recs = list(read_records(res))
    assert [x["model"]["name"] for x in recs] == ["cnn.onnx", "mlp.onnx"]


def test_batch_and_throughput(models_dir, tmp_path):
    res = tmp_path / "r.jsonl"
    r = run(str(models_dir / "cnn.onnx"), "--batch", "1,4", "--results", str(res), *FAST)
    assert r.exit_code == 0, r.output
    recs = {x["batch"]: x for x in read_records(res)}
    assert recs[4]["inputs"]["input"] == [4, 1, 8, 8]
    assert recs[4]["stats"]["throughput_per_s"] == pytest.approx(4 / recs[4]["stats"]["p50_s"])


def test_real_data_with_preprocess(models_dir, image_data, tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('layout = "NCHW"\nscale = 0.00392156862745098\nmean = [0.5]\nstd = [0.25]\n')
    res = tmp_path / "r.jsonl"
    r = run(str(models_dir / "cnn.onnx"), "--data", str(image_data), "--preprocess", str(spec),
            "--batch", "2", "--results", str(res), *FAST)
    assert r.exit_code == 0, r.output
    rec = next(read_records(res))
    assert rec["data_sha256"] and rec["input_source"]["data"].endswith("gray.npz")


def test_dynamic_dims_with_shape(models_dir, tmp_path):
    r = run(str(models_dir / "dyn.onnx"), "--shape", "x=1x16", *FAST)
    assert r.exit_code == 0, r.output


def test_op_profile_table(models_dir, tmp_path):
    res = tmp_path / "r.jsonl"
    r = run(str(models_dir / "cnn.onnx"), "--op-profile", "--results", str(res), *FAST)
    assert r.exit_code == 0, r.output
    rec = next(read_records(res))
    assert rec["op_profile"]["available"] and "Conv" in rec["op_profile"]["per_op"]
    assert "operator time" in r.output and "Conv" in r.output


def test_two_input_model_with_one_key_per_input(models_dir, tmp_path):
    np.savez(tmp_path / "two.npz", a=np.ones((3, 4), np.float32), b=np.ones((3, 4), np.float32))
    r = run(str(models_dir / "two.onnx"), "--data", str(tmp_path / "two.npz"), *FAST)
    assert r.exit_code == 0, r.output


# ---- bad input: one line, non-zero exit, no traceback -------------------------------------

def _bad(tmp_path: Path, models_dir: Path, image_data: Path) -> dict[str, tuple[list[str], str]]:
    truncated = tmp_path / "trunc.onnx"
    truncated.write_bytes((models_dir / "mlp.onnx").read_bytes()[:300])
    trunc_tfl = tmp_path / "trunc.tflite"
    trunc_tfl.write_bytes((TFLITE / "tiny_cnn_fp32.tflite").read_bytes()[:200])
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "text.onnx").write_text("hello, I am not a model\n" * 10)
    fake_tfl = tmp_path / "really_onnx.tflite"
    shutil.copy(models_dir / "cnn.onnx", fake_tfl)
    np.savez(tmp_path / "nan.npz", x=np.full((4, 8, 8, 1), np.nan, np.float32))
    np.savez(tmp_path / "norows.npz", x=np.zeros((0, 8, 8, 1), np.uint8))
    np.savez(tmp_path / "f64.npz", x=np.zeros((4, 8, 8, 1), np.float64))
    np.savez(tmp_path / "wrongkey.npz", images=np.zeros((4, 8, 8, 1), np.uint8))
    np.savez(tmp_path / "wrongshape.npz", x=np.zeros((4, 5, 5, 1), np.uint8))
    np.savez(tmp_path / "pickled.npz", x=np.array([{"a": 1}, None], dtype=object))
    cnn = str(models_dir / "cnn.onnx")
    return {
        "missing": ([str(tmp_path / "nope.onnx")], "no such file"),
        "directory": ([str(tmp_path)], "is a directory"),
        "empty": ([str(tmp_path / "empty.onnx")], "is empty"),
        "truncated onnx": ([str(truncated)], "truncated or corrupt"),
        "truncated tflite": ([str(trunc_tfl)], "cannot load this model"),
        "not a model": ([str(tmp_path / "text.onnx")], "not a valid ONNX or TFLite model"),
        "onnx named tflite": ([str(fake_tfl)], "looks like an ONNX model"),
        "dynamic dims": ([str(models_dir / "dyn.onnx")], "--shape x="),
        "malformed shape": ([cnn, "--shape", "input=1xtwo"], "malformed --shape"),
        "threads zero": ([cnn, "--threads", "0"], "--threads 0 is out of range"),
        "threads text": ([cnn, "--threads", "many"], "expected integers"),
        "batch huge": ([cnn, "--batch", "9999999"], "--batch 9999999 is out of range"),
        "min-time negative": ([cnn, "--min-time", "-1s"], "expected a duration"),
        "min-time huge": ([cnn, "--min-time", "2h"], "is out of range"),
        "max below min": ([cnn, "--min-runs", "10", "--max-runs", "5"], "--max-runs 5"),
        "nan data": ([cnn, "--data", str(tmp_path / "nan.npz")], "NaN or inf"),
        "no rows": ([cnn, "--data", str(tmp_path / "norows.npz")], "no rows"),
        "float64 data": ([cnn, "--data", str(tmp_path / "f64.npz")], "dtype float64"),
        "wrong key": ([cnn, "--data", str(tmp_path / "wrongkey.npz")], "no array for input 'input'"),
        "wrong shape": ([cnn, "--data", str(tmp_path / "wrongshape.npz")], "but the model expects"),
        "pickled": ([cnn, "--data", str(tmp_path / "pickled.npz")], "never loads"),
        "missing data": ([cnn, "--data", str(tmp_path / "none.npz")], "no such data file"),
        "bad json path": ([cnn, "--json", str(tmp_path / "no" / "dir" / "r.json")], "does not exist"),
        "results is dir": ([cnn, "--results", str(tmp_path)], "is a directory"),
        "unsupported op": ([str(models_dir / "unsup.onnx")], "is not supported"),
        "fixed batch": ([str(models_dir / "cnn_fixed.onnx"), "--batch", "2"], "fixed batch of 1"),
        "rgb data for gray model": ([cnn, "--data", str(image_data), "--preprocess",
                                     str(tmp_path / "nospec.toml")], "no such preprocessing file"),
        "unknown target": ([cnn, "--target", "pi4"], "unknown target"),
    }


CASES = ["missing", "directory", "empty", "truncated onnx", "truncated tflite", "not a model",
         "onnx named tflite", "dynamic dims", "malformed shape", "threads zero", "threads text",
         "batch huge", "min-time negative", "min-time huge", "max below min", "nan data",
         "no rows", "float64 data", "wrong key", "wrong shape", "pickled", "missing data",
         "bad json path", "results is dir", "unsupported op", "fixed batch",
         "rgb data for gray model", "unknown target"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_error(case, tmp_path, models_dir, image_data):
    args, fragment = _bad(tmp_path, models_dir, image_data)[case]
    r = CliRunner().invoke(cli, ["profile", *FAST, *args])
    assert r.exit_code not in (0, 70), r.output       # 70 would be an internal error
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output
    err_lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(err_lines) == 1, r.output
    assert fragment in err_lines[0], r.output


def test_one_failing_model_keeps_the_others(models_dir, tmp_path):
    res = tmp_path / "r.jsonl"
    r = run(str(models_dir / "cnn.onnx"), str(models_dir / "dyn.onnx"), "--results", str(res), *FAST)
    assert r.exit_code == 1
    kinds = [x["kind"] for x in read_records(res)]
    assert sorted(kinds) == ["error", "latency"]
    # a rerun measures nothing new for the good model and retries the failed one
    r = run(str(models_dir / "cnn.onnx"), str(models_dir / "dyn.onnx"), "--shape", "x=1x8",
            "--results", str(res), *FAST)
    assert r.exit_code == 0, r.output
    assert [x["kind"] for x in read_records(res)].count("latency") == 2
