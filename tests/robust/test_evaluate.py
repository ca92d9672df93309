"""Robustness evaluation end to end: InputSpec parity, the corrupted-set cache, records, the sweep
hook and `edgeprof robustness` (CliRunner), on the demo model and small derived files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from edgeprof.cli import cli
from edgeprof.data import load_npz
from edgeprof.demo import demo_paths
from edgeprof.inputspec import load_spec, worker_spec
from edgeprof.measure.accuracy import predict, top1
from edgeprof.models import open_model
from edgeprof.results import ResultStore, read_records
from edgeprof.robust.datasets import DataCache, corrupted_set, image_set
from edgeprof.robust.evaluate import RobustnessConfig, evaluate_robustness
from edgeprof.targets import get_target
from edgeprof.targets.worker import apply_input_spec, decode_array, encode_array
from edgeprof.variants.cache import Cache

P = demo_paths()
SPEC = load_spec(P["preprocess"])


@pytest.fixture(scope="module")
def data():
    return load_npz(P["eval"])


@pytest.fixture(scope="module")
def baseline():
    return open_model(P["onnx"], input_spec=SPEC.to_dict())


@pytest.fixture(scope="module")
def variant(tmp_path_factory, baseline):
    """The demo model with its weights perturbed by 10 %: a stand-in for a degraded variant."""
    m = onnx.load(str(P["onnx"]))
    rng = np.random.default_rng(0)
    for init in m.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.size > 16:
            init.CopyFrom(numpy_helper.from_array(
                (a * (1 + 0.1 * rng.standard_normal(a.shape))).astype(np.float32), init.name))
    path = tmp_path_factory.mktemp("variant") / "noisy.onnx"
    onnx.save(m, str(path))
    return open_model(path, label="noisy", root_id=baseline.id, input_spec=SPEC.to_dict())


def test_input_spec_is_applied_alike_on_the_host_and_in_the_worker(data):
    """uint8 rows from the npz, float32 x 255 rows sent inline (the attacks' path) and the host's
    own apply_input_spec + onnxruntime give the same logits."""
    import onnxruntime as ort

    spec = worker_spec(SPEC, "uint8")
    raw = data.x["x"][:64]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(P["onnx"]), so, providers=["CPUExecutionProvider"])
    host = sess.run(None, {"input": apply_input_spec(raw, spec["*"])})[0]
    with get_target("local").start_worker("parity") as w:
        w.request("load", path=str(P["onnx"]), threads=1, batch=1, inputs={"npz": str(P["eval"])},
                  spec=spec)
        from_npz = decode_array(w.request("predict", npz=str(P["eval"]), start=0, stop=64,
                                          spec=spec)["outputs"]["logits"])
        inline = decode_array(w.request("predict", spec=spec, arrays={
            "input": encode_array(raw.astype(np.float32) / np.float32(255) * np.float32(255))}
        )["outputs"]["logits"])
    np.testing.assert_allclose(from_npz, host, rtol=0, atol=1e-5)
    np.testing.assert_allclose(inline, host, rtol=0, atol=1e-4)
    assert (inline.argmax(1) == host.argmax(1)).all()


def test_clean_accuracy_equals_the_plain_accuracy_path(data, baseline, tmp_path):
    out = evaluate_robustness([baseline], data, RobustnessConfig(
        corruptions=["contrast"], severities=[1], limit=200), cache_dir=tmp_path, baseline=baseline)
    rec = out.records[0]
    target = get_target("local")
    with target.start_worker("plain") as w:
        w.request("load", path=str(P["onnx"]), threads=1, batch=1, inputs={"npz": str(P["eval"])},
                  spec=worker_spec(SPEC, "uint8"))
        plain = top1(predict(w, str(P["eval"]), 200, SPEC, "uint8", batch=250), data.y[:200])
    assert rec["n"] == 200 and rec["limit"] == 200
    assert rec["clean_accuracy"] == plain["accuracy"]
    assert rec["clean_accuracy_ci"] == plain["accuracy_ci"]


def test_corrupted_sets_are_cached_and_variants_compared(data, baseline, variant, tmp_path):
    cfg = RobustnessConfig(corruptions="gaussian_noise,contrast", severities="1,5", limit=150)
    store = ResultStore(tmp_path / "r.jsonl")
    first = evaluate_robustness([variant], data, cfg, cache_dir=tmp_path / "cache",
                                baseline=baseline, store=store)
    assert first.generated == 4 and first.reused == 4  # made for the baseline, reused by the variant
    entries = sorted((tmp_path / "cache" / "data").iterdir())
    assert len(entries) == 4 and all((e / "set.npz").is_file() and (e / "meta.json").is_file()
                                     for e in entries)
    assert not list((tmp_path / "cache" / "data").glob(".staging-*"))
    base, var = first.records
    assert base["variant_id"] == baseline.id and var["variant_id"] == variant.id
    assert base["baseline_id"] == var["baseline_id"] == baseline.id
    assert var["root_id"] == baseline.id
    assert base["ce"] == {"gaussian_noise": 1.0, "contrast": 1.0} and base["mce"] == 1.0
    assert base["relative_mce"] == 1.0 and base["degradation"] == 0.0
    assert set(var["per_corruption"]) == {"gaussian_noise", "contrast"}
    cell = var["per_corruption"]["contrast"]["5"]
    assert set(cell) >= {"accuracy", "n", "ece", "nll", "brier"} and cell["n"] == 150
    err = {c: [1 - var["per_corruption"][c][s]["accuracy"] for s in ("1", "5")] for c in var["ce"]}
    berr = {c: [1 - base["per_corruption"][c][s]["accuracy"] for s in ("1", "5")] for c in err}
    assert var["ce"]["contrast"] == pytest.approx(sum(err["contrast"]) / sum(berr["contrast"]))
    assert var["mce"] == pytest.approx(np.mean(list(var["ce"].values())))
    mca = var["mean_corruption_accuracy"]
    assert var["degradation"] == pytest.approx(base["mean_corruption_accuracy"] - mca)
    lo, hi = var["mean_corruption_accuracy_ci"]
    assert lo <= var["mean_corruption_accuracy"] <= hi
    assert set(var["calibration"]) == {"clean", "corrupted_mean"}
    assert var["calibration"]["corrupted_mean"]["cells"] == 4
    assert 0 < var["agreement_with_baseline"]["clean"] < 1
    assert var["output_drift"]["clean"] > 0 and base["output_drift"]["clean"] == 0.0
    # second run: every set comes from the cache, records already in the store are skipped
    again = evaluate_robustness([variant], data, cfg, cache_dir=tmp_path / "cache",
                                baseline=baseline, store=ResultStore(tmp_path / "r.jsonl"))
    assert again.generated == 0 and again.records == [] and len(again.skipped) == 2
    fresh = evaluate_robustness([variant], data, cfg, cache_dir=tmp_path / "cache",
                                baseline=baseline)
    assert fresh.generated == 0
    assert fresh.records[1]["per_corruption"] == var["per_corruption"]


def test_cached_set_equals_edgeprof_corrupt(tmp_path, data):
    np.savez(tmp_path / "small.npz", x=data.x["x"][:20], y=data.y[:20])
    r = CliRunner().invoke(cli, ["corrupt", str(tmp_path / "small.npz"), "--corruption",
                                 "gaussian_noise", "--severity", "3", "--seed", "7", "-o",
                                 str(tmp_path / "out.npz")])
    assert r.exit_code == 0, r.output
    path = corrupted_set(DataCache(tmp_path / "c"), image_set(load_npz(tmp_path / "small.npz")),
                         "gaussian_noise", 3, seed=7)
    with np.load(path) as ours, np.load(tmp_path / "out.npz") as theirs:
        assert ours["x"].dtype == np.uint8
        np.testing.assert_array_equal(ours["x"], theirs["x"])
        np.testing.assert_array_equal(ours["y"], data.y[:20])


def test_unlabelled_data_gives_agreement_and_drift(data, baseline, variant, tmp_path):
    np.savez(tmp_path / "nolabels.npz", x=data.x["x"][:100])
    ds = load_npz(tmp_path / "nolabels.npz")
    out = evaluate_robustness([variant], ds, RobustnessConfig(corruptions="contrast", severities=[3]),
                              cache_dir=tmp_path, baseline=baseline)
    rec = out.records[1]
    assert rec["labels"] is False and rec["clean_accuracy"] is None and rec["mce"] is None
    agree = rec["agreement_with_baseline"]
    assert agree["n"] == 100 and 0 < agree["clean"] < 1 and agree["clean_ci"][0] < agree["clean"]
    assert 0 < rec["output_drift"]["per_corruption"]["contrast"]["3"] <= 1


def sweep_runner(tmp_path, measure: str, cache_dir):
    """A real SweepRunner on a one-model sweep file whose [measure] table is ``measure``."""
    from edgeprof.sweeps.plan import load_plan
    from edgeprof.sweeps.runner import SweepRunner
    f = tmp_path / "s.toml"
    f.write_text(f'[model]\npath = "{P["onnx"]}"\npreprocess = "{P["preprocess"]}"\n'
                 f"[measure]\n{measure}\n")
    fracs = []
    runner = SweepRunner(load_plan(f, tmp_path / "out"), Cache(cache_dir),
                         progress=lambda d, frac: fracs.append(frac))
    return runner, fracs


def test_sweep_robustness_phase_writes_records_reports_failures_and_resumes(tmp_path, data):
    """The sweep's robustness phase calls the library's evaluate_robustness (no private hook)."""
    cache = Cache(tmp_path / "cache")
    root = cache.register_root(open_model(P["onnx"]), input_spec=SPEC.to_dict())
    measure = ('robustness = { corruptions = "contrast", severities = [1, 3], limit = 100 }\n'
               'attacks = { square = { eps = ["8/255"], queries = 5, limit = 20 }, '
               'fgsm = { eps = ["2/255"] } }')
    runner, fracs = sweep_runner(tmp_path, measure, tmp_path / "cache")
    try:
        runner.robustness([root], data, tmp_path)
    finally:
        runner.store.release()
    assert runner.counts["robustness"] == 1
    recs = list(read_records(runner.results_path))
    errors = [r for r in recs if r["kind"] == "error"]
    assert errors and "transfer attacks" in errors[0]["model"]["name"] and "--torch" in errors[0]["error"]
    rec = [r for r in recs if r["kind"] == "robustness"][0]
    assert rec["variant_id"] == root.id and rec["baseline_id"] == root.id
    assert rec["attacks"]["square"]["8/255"]["n"] == 20 and rec["severities"] == [1, 3]
    assert fracs == sorted(fracs)
    again, _ = sweep_runner(tmp_path, measure, tmp_path / "cache")
    try:
        again.robustness([root], data, tmp_path)
    finally:
        again.store.release()
    assert again.counts["robustness"] == 0 and again.counts["skipped"] == 1


def run_cli(*args: str):
    return CliRunner().invoke(cli, ["robustness", *args])


def test_cli_writes_records_and_resumes(tmp_path):
    args = [str(P["onnx"]), "--data", str(P["eval"]), "--preprocess", str(P["preprocess"]),
            "--corruptions", "contrast", "--severities", "2", "--limit", "100", "--attack", "square",
            "--eps", "8/255", "--queries", "5", "--attack-limit", "20", "--cache-dir",
            str(tmp_path / "c"), "--results", str(tmp_path / "r.jsonl"), "-q"]
    r = run_cli(*args, "--json", str(tmp_path / "r.json"))
    assert r.exit_code == 0, r.output
    assert "fashion_cnn (baseline)" in r.output and "square" in r.output
    rec = json.loads((tmp_path / "r.json").read_text())["records"][0]
    for k in ("n", "clean_accuracy", "clean_accuracy_ci", "per_corruption", "mean_corruption_accuracy",
              "mean_corruption_accuracy_ci", "ce", "mce", "relative_mce", "degradation", "calibration",
              "attacks", "baseline_id", "corruptions", "severities", "limit", "model", "root_id"):
        assert k in rec, k
    sq = rec["attacks"]["square"]["8/255"]
    assert sq["within_eps"] and sq["n"] == 20 and sq["eps"] == pytest.approx(8 / 255)
    again = run_cli(*args)
    assert again.exit_code == 0 and "skipped (already in" in again.output


def _bad(tmp_path: Path, name: str, **arrays) -> str:
    np.savez(tmp_path / name, **arrays)
    return str(tmp_path / name)


GOOD_X = np.load(P["eval"])["x"][:20]
GOOD_Y = np.load(P["eval"])["y"][:20]
CASES = {
    "labels out of range": (dict(x=GOOD_X, y=np.full(20, 12)), [],
                            "labels range 12..12 but the model has 10 classes"),
    "label count": (dict(x=GOOD_X, y=GOOD_Y[:15]), [], "labels 'y' have shape (15,), expected (20,)"),
    "wrong size": (dict(x=np.zeros((20, 32, 32, 1), np.uint8), y=GOOD_Y), [], "model expects"),
    "wrong channels": (dict(x=np.zeros((20, 28, 28, 3), np.uint8), y=GOOD_Y), [], "model expects"),
    "nan": (dict(x=np.full((20, 28, 28, 1), np.nan, np.float32), y=GOOD_Y), [], "NaN or inf"),
    "no rows": (dict(x=np.zeros((0, 28, 28, 1), np.uint8)), [], "has no rows"),
    "unknown corruption": (None, ["--corruptions", "fog,smog"],
                           "unknown corruption 'smog'; valid: all, none, gaussian_noise"),
    "eps zero": (None, ["--attack", "square", "--eps", "0"], "eps must be in (0, 1]"),
    "eps above one": (None, ["--attack", "square", "--eps", "2/1"], "eps must be in (0, 1]"),
    "severity 0": (None, ["--severities", "0-3"], "severity 0 is outside 1-5"),
    "severity 6": (None, ["--severities", "1,6"], "severity 6 is outside 1-5"),
    "limit 0": (None, ["--limit", "0"], "--limit 0: must be at least 1"),
    "transfer without torch": (None, ["--attack", "pgd"], "--torch module:factory"),
    "eps without attack": (None, ["--eps", "8/255"], "--eps applies to attacks"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_bad_input_is_one_line(case, tmp_path):
    arrays, extra, message = CASES[case]
    data = _bad(tmp_path, "d.npz", **arrays) if arrays else str(P["eval"])
    r = run_cli(str(P["onnx"]), "--data", data, "--preprocess", str(P["preprocess"]),
                "--corruptions", "contrast", "--severities", "1", "--cache-dir", str(tmp_path / "c"),
                "-q", *extra)
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert message in lines[0]


def test_large_replies_are_split_into_several_requests(data, baseline, tmp_path, monkeypatch):
    from edgeprof.targets import client

    cfg = RobustnessConfig(corruptions=[], limit=600)
    whole = evaluate_robustness([baseline], data, cfg, cache_dir=tmp_path, baseline=baseline)
    # 10 logits per row (40 bytes): about 190 rows per reply, so one batch of 250 per request
    monkeypatch.setattr(client, "REPLY_MAX_BYTES", 250 * 10 * 4)
    sent = []
    orig = client.WorkerClient.request

    def counted(self, cmd, **a):
        if cmd == "predict":
            sent.append(a)
        return orig(self, cmd, **a)
    monkeypatch.setattr(client.WorkerClient, "request", counted)
    split = evaluate_robustness([baseline], data, cfg, cache_dir=tmp_path, baseline=baseline)
    assert [(a["start"], a["stop"]) for a in sent] == [(0, 250), (250, 500), (500, 600)]
    assert split.records[0]["clean_accuracy"] == whole.records[0]["clean_accuracy"]
    assert split.records[0]["calibration"] == whole.records[0]["calibration"]
