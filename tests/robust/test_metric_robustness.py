"""Robustness under a task metric (--metric): scores, corruption curves and mCE come from the
chosen metric, checked against values computed here with onnxruntime on the same sets; attacks
and calibration (top-1's) are skipped with a reason, never a crash; the CLI and the sweep hook
take the metric."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgeprof.cli import cli
from edgeprof.data import load_npz
from edgeprof.models import open_model
from edgeprof.results import read_records
from edgeprof.robust.datasets import corrupt_rows, image_set
from edgeprof.robust.evaluate import AttackConfig, RobustnessConfig, evaluate_robustness
from edgeprof.variants.cache import Cache

SIZE, N = 16, 40
CORR, SEV = ["gaussian_noise", "contrast"], [1, 3]


def two_heads(path: Path, noise: float = 0.0) -> Path:
    """NCHW image -> box (N, 4) regression head and cls (N, 3) logits head."""
    rng = np.random.default_rng(0)
    wb = rng.standard_normal((SIZE * SIZE, 4)).astype(np.float32) / SIZE
    wc = rng.standard_normal((SIZE * SIZE, 3)).astype(np.float32) / SIZE
    if noise:
        r2 = np.random.default_rng(1)
        wb = (wb * (1 + noise * r2.standard_normal(wb.shape))).astype(np.float32)
        wc = (wc * (1 + noise * r2.standard_normal(wc.shape))).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["f"]),
         helper.make_node("MatMul", ["f", "wb"], ["box"]),
         helper.make_node("MatMul", ["f", "wc"], ["cls"])], "two_heads",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("box", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("cls", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(wb, "wb"), numpy_helper.from_array(wc, "wc")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def host_outputs(path: Path, raw: np.ndarray) -> dict[str, np.ndarray]:
    """The default InputSpec by hand: uint8 / 255, NHWC -> NCHW."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = (raw.astype(np.float32) / np.float32(255)).transpose(0, 3, 1, 2)
    return dict(zip(["box", "cls"], sess.run(None, {"input": x})))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("metric_rob")
    base_p, var_p = two_heads(d / "base.onnx"), two_heads(d / "var.onnx", noise=0.3)
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    x = np.stack([127 + 120 * np.sin(xx / (1 + i % 5) + yy / (2 + i % 3)) for i in range(N)])
    x = np.clip(x + rng.normal(0, 8, x.shape), 0, 255).astype(np.uint8)[..., None]
    y_box = host_outputs(base_p, x)["box"] + rng.normal(0, 0.05, (N, 4)).astype(np.float32)
    np.savez(d / "eval.npz", x=x, y_box=y_box.astype(np.float32))
    base = open_model(base_p, label="base")
    var = open_model(var_p, label="var", root_id=base.id)
    return SimpleNamespace(dir=d, base=base, var=var, base_p=base_p, var_p=var_p,
                           data=load_npz(d / "eval.npz"), x=x, y_box=y_box)


def _sets(case):
    """Clean and corrupted raw sets, as the evaluation feeds them."""
    im = image_set(case.data)
    out = {"clean": case.x}
    for c in CORR:
        for s in SEV:
            out[(c, s)] = corrupt_rows(im, c, s, 0)
    return out


def test_mae_drives_scores_curves_and_mce(case, tmp_path):
    cfg = RobustnessConfig(corruptions=CORR, severities=SEV, metric="mae",
                           attacks=[AttackConfig(name="square", eps=[("8/255", 8 / 255)], queries=5)])
    out = evaluate_robustness([case.var], case.data, cfg, cache_dir=tmp_path, baseline=case.base)
    b, v = out.records
    mae = {}
    for key, raw in _sets(case).items():
        for name, p in (("base", case.base_p), ("var", case.var_p)):
            mae[name, key] = float(np.abs(host_outputs(p, raw)["box"] - case.y_box).mean())
    for rec, name in ((b, "base"), (v, "var")):
        assert rec["metric"] == "mae" and rec["higher_is_better"] is False
        assert rec["error_rule"] == "score"
        assert rec["clean_score"] == pytest.approx(mae[name, "clean"], rel=1e-4)
        for c in CORR:
            for s in SEV:
                assert rec["per_corruption"][c][str(s)]["score"] == pytest.approx(
                    mae[name, (c, s)], rel=1e-4)
        cells = [mae[name, (c, s)] for c in CORR for s in SEV]
        assert rec["mean_corruption_score"] == pytest.approx(np.mean(cells), rel=1e-4)
        lo, hi = rec["mean_corruption_score_ci"]
        assert lo < rec["mean_corruption_score"] < hi
        # top-1's figures are not made up for a regression metric, and the reasons are stated
        assert rec["clean_accuracy"] is None and rec["calibration"] is None and rec["ece"] is None
        assert "attacks (square) skipped" in rec["skipped"]["attacks"]
        assert "top-1" in rec["skipped"]["calibration"] and rec["attacks"] == {}
    # CE from the metric's error (the score itself, lower is better)
    ce = {c: sum(mae["var", (c, s)] for s in SEV) / sum(mae["base", (c, s)] for s in SEV)
          for c in CORR}
    for c in CORR:
        assert v["ce"][c] == pytest.approx(ce[c], rel=1e-4)
    assert v["mce"] == pytest.approx(np.mean(list(ce.values())), rel=1e-4)
    assert b["mce"] == pytest.approx(1.0)
    rel = {c: sum(mae["var", (c, s)] - mae["var", "clean"] for s in SEV)
           / sum(mae["base", (c, s)] - mae["base", "clean"] for s in SEV) for c in CORR}
    assert v["relative_mce"] == pytest.approx(np.mean(list(rel.values())), rel=1e-3)


def test_agreement_of_a_named_head_needs_no_labels(case, tmp_path):
    np.savez(tmp_path / "nolabels.npz", x=case.x)
    ds = load_npz(tmp_path / "nolabels.npz")
    cfg = RobustnessConfig(corruptions=["contrast"], severities=[3], metric="agreement:cls")
    b, v = evaluate_robustness([case.var], ds, cfg, cache_dir=tmp_path, baseline=case.base).records
    clean_b = host_outputs(case.base_p, case.x)["cls"].argmax(1)
    corrupted = _sets(case)[("contrast", 3)]
    agree_v = (host_outputs(case.var_p, case.x)["cls"].argmax(1) == clean_b).mean()
    agree_vc = (host_outputs(case.var_p, corrupted)["cls"].argmax(1) == clean_b).mean()
    agree_bc = (host_outputs(case.base_p, corrupted)["cls"].argmax(1) == clean_b).mean()
    assert b["clean_score"] == 1.0 and v["clean_score"] == pytest.approx(agree_v)
    assert v["per_corruption"]["contrast"]["3"]["score"] == pytest.approx(agree_vc)
    assert b["per_corruption"]["contrast"]["3"]["score"] == pytest.approx(agree_bc)
    # higher is better: the error is 1 - score
    assert v["error_rule"] == "1 - score"
    if agree_bc < 1:
        assert v["mce"] == pytest.approx((1 - agree_vc) / (1 - agree_bc))


def run_cli(*args: str):
    return CliRunner().invoke(cli, ["robustness", *args])


def test_cli_metric_table_keys_and_bad_metric(case, tmp_path):
    args = [str(case.var_p), "--baseline", str(case.base_p), "--data", str(case.dir / "eval.npz"),
            "--corruptions", "contrast", "--severities", "2", "--cache-dir", str(tmp_path / "c"),
            "--results", str(tmp_path / "r.jsonl"), "-q", "--attack", "square", "--eps", "8/255",
            "--queries", "5"]
    r = run_cli(*args, "--metric", "rmse", "--json", str(tmp_path / "r.json"))
    assert r.exit_code == 0, r.output
    assert "metric rmse (lower is better" in r.output and "clean rmse" in r.output
    assert "attacks (square) skipped" in r.output
    recs = json.loads((tmp_path / "r.json").read_text())["records"]
    assert [x["metric"] for x in recs] == ["rmse", "rmse"] and recs[1]["mce"] is not None
    # the same command again is resumed; another metric is another measurement
    again = run_cli(*args, "--metric", "rmse")
    assert again.exit_code == 0 and "skipped (already in" in again.output
    other = run_cli(*args, "--metric", "mae")
    assert other.exit_code == 0 and "skipped (already in" not in other.output
    kinds = [(x["metric"], x["variant_id"]) for x in read_records(tmp_path / "r.jsonl")
             if x["kind"] == "robustness"]
    assert len(kinds) == 4 and len(set(kinds)) == 4
    bad = run_cli(*args[:-6], "--metric", "f1")
    assert bad.exit_code == 1 and bad.output.strip().startswith("error: ")
    assert len(bad.output.strip().splitlines()) == 1 and "one of top1" in bad.output


def test_sweep_robustness_phase_uses_the_plan_metric(case, tmp_path):
    from edgeprof.sweeps.plan import load_plan
    from edgeprof.sweeps.runner import SweepRunner
    cache = Cache(tmp_path / "cache")
    root = cache.register_root(case.base)
    f = tmp_path / "s.toml"
    f.write_text(f'[model]\npath = "{case.base_p}"\n[measure]\nmetric = "mae"\n'
                 'robustness = { corruptions = "contrast", severities = [2] }\n')
    runner = SweepRunner(load_plan(f, tmp_path / "out"), cache)
    try:
        runner.robustness([root], case.data, tmp_path)
    finally:
        runner.store.release()
    assert runner.counts["robustness"] == 1 and runner.counts["errors"] == 0
    rec = [r for r in read_records(runner.results_path) if r["kind"] == "robustness"][0]
    assert rec["metric"] == "mae" and rec["clean_score"] == pytest.approx(
        float(np.abs(host_outputs(case.base_p, case.x)["box"] - case.y_box).mean()), rel=1e-4)
