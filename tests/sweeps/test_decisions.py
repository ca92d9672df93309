"""Frontier, recommendation and the regression gate on hand-made points and resampled samples."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.errors import InputError
from edgeprof.results import new_record
from edgeprof.sweeps.frontier import compare_objective, pareto
from edgeprof.sweeps.recommend import parse_requirements, recommend


def pt(vid, p50, ci, acc=None, acc_ci=None, rss=100, size=1000, mca=None):
    return {"variant_id": vid, "target": "local", "label": vid, "p50_s": p50, "p50_ci_s": ci,
            "n_latency": 100, "accuracy": acc, "accuracy_ci": acc_ci, "peak_rss_bytes": rss,
            "model_bytes": size, "mean_corruption_accuracy": mca}


def test_overlapping_intervals_are_a_tie_not_dominance():
    a = pt("a", 1.00, [0.95, 1.05], acc=0.90, acc_ci=[0.88, 0.92])
    b = pt("b", 1.02, [0.97, 1.07], acc=0.89, acc_ci=[0.87, 0.91])   # worse point values, within CI
    res = pareto([a, b], objectives=[("p50_s", "min"), ("accuracy", "max")])
    assert set(res.frontier) == {"a", "b"}
    assert res.ties == {"a": ["b"], "b": ["a"]}


def test_clear_dominance_beyond_intervals():
    a = pt("a", 1.0, [0.98, 1.02], acc=0.90, acc_ci=[0.88, 0.92])
    b = pt("b", 2.0, [1.95, 2.05], acc=0.90, acc_ci=[0.88, 0.92])     # slower, same accuracy
    c = pt("c", 0.5, [0.49, 0.51], acc=0.70, acc_ci=[0.68, 0.72])     # faster, less accurate
    res = pareto([a, b, c], objectives=[("p50_s", "min"), ("accuracy", "max")])
    assert set(res.frontier) == {"a", "c"}                            # a trade-off, both kept
    assert res.dominated_by == {"b": ["a"]}


def test_direction_and_missing_metrics():
    a, b = pt("a", 1.0, [1, 1], size=10), pt("b", 1.0, [1, 1], size=20)
    assert compare_objective(a, b, "model_bytes", "min") == "better"
    assert compare_objective(a, b, "model_bytes", "max") == "worse"
    assert compare_objective(a, b, "mean_corruption_accuracy", "max") is None
    res = pareto([a, b])  # default objectives; unmeasured ones are ignored
    assert res.frontier == ["a"] and ("mean_corruption_accuracy", "max") not in res.objectives


def test_recommendation_picks_the_fastest_that_meets_everything():
    rows = [pt("fp32", 2.0, [1.9, 2.1], acc=0.90, rss=300 << 20),
            pt("int8", 1.0, [0.9, 1.1], acc=0.85, rss=100 << 20),
            pt("fp16", 1.5, [1.4, 1.6], acc=0.899, rss=200 << 20)]
    for r in rows:
        r["accuracy_drop"] = 0.90 - r["accuracy"]
    rec = recommend(rows, parse_requirements("accuracy_drop<=1%, peak_rss<=256MiB"))
    assert rec.chosen["variant_id"] == "fp16"
    assert any("accuracy_drop<=1%" in r for r in rec.reasons)
    rec = recommend(rows, parse_requirements("accuracy_drop<=0.05%, peak_rss<=128MiB"))
    assert rec.chosen is None and rec.closest is not None
    assert rec.closest["variant_id"] in ("fp32", "int8") and rec.missing


@pytest.mark.parametrize("text,key,value", [("accuracy_drop<=1%", "accuracy_drop", 0.01),
                                            ("peak_rss<=256MiB", "peak_rss_bytes", 256 * 2**20),
                                            ("p50<=5ms", "p50_s", 0.005),
                                            ("corruption_drop <= 0.02", "corruption_drop", 0.02)])
def test_parse_requirements(text, key, value):
    (c,) = parse_requirements(text)
    assert c.key == key and c.value == pytest.approx(value)


@pytest.mark.parametrize("bad", ["accuracy_drop=1%", "speed<=1", "peak_rss<=lots"])
def test_bad_requirements(bad):
    with pytest.raises(InputError):
        parse_requirements(bad)


# ---- compare: resampled recorded samples -------------------------------------------------

def _lat(samples, name="m.onnx", vid="v1"):
    return new_record("latency", variant_id=vid, target="local", threads=1, batch=1,
                      data_sha256=None, model={"name": name}, samples_s=list(samples),
                      stats={"p50_s": float(np.median(samples))})


def _acc(correct, n=2000, vid="v1"):
    return new_record("accuracy", variant_id=vid, target="local", threads=1, batch=None,
                      data_sha256="d", model={"name": "m.onnx"}, n=n, correct=correct,
                      accuracy=correct / n)


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture
def recorded():
    """Latency samples of one real run shape: log-normal around 1 ms with a tail."""
    rng = np.random.default_rng(7)
    return rng.lognormal(np.log(1e-3), 0.08, 2000)


def test_compare_noise_passes(recorded, tmp_path):
    rng = np.random.default_rng(1)
    base = _write(tmp_path / "b.jsonl", [_lat(rng.choice(recorded, 1000)), _acc(1800)])
    new = _write(tmp_path / "n.jsonl", [_lat(rng.choice(recorded, 1000), vid="v2"), _acc(1795, vid="v2")])
    r = CliRunner().invoke(cli, ["compare", base, new])
    assert r.exit_code == 0, r.output
    assert "REGRESSION" not in r.output


def test_compare_3x_slowdown_fails(recorded, tmp_path):
    rng = np.random.default_rng(2)
    base = _write(tmp_path / "b.jsonl", [_lat(rng.choice(recorded, 1000))])
    new = _write(tmp_path / "n.jsonl", [_lat(3 * rng.choice(recorded, 1000), vid="v2")])
    r = CliRunner().invoke(cli, ["compare", base, new])
    assert r.exit_code == 1 and "REGRESSION" in r.output


def test_compare_small_significant_slowdown_within_threshold_passes(recorded, tmp_path):
    rng = np.random.default_rng(3)
    base = _write(tmp_path / "b.jsonl", [_lat(rng.choice(recorded, 3000))])
    new = _write(tmp_path / "n.jsonl", [_lat(1.02 * rng.choice(recorded, 3000), vid="v2")])
    # resampled from one distribution: no run-to-run noise to allow for
    r = CliRunner().invoke(cli, ["compare", base, new, "--max-latency-increase", "5%",
                                 "--run-noise", "0"])
    assert r.exit_code == 0, r.output
    assert "within threshold" in r.output


def test_compare_real_accuracy_drop_fails(tmp_path):
    base = _write(tmp_path / "b.jsonl", [_acc(1800)])
    new = _write(tmp_path / "n.jsonl", [_acc(1700, vid="v2")])   # 90 % -> 85 %
    r = CliRunner().invoke(cli, ["compare", base, new])
    assert r.exit_code == 1 and "REGRESSION" in r.output


def test_compare_bad_input_exit_2(tmp_path):
    r = CliRunner().invoke(cli, ["compare", str(tmp_path / "x.jsonl"), str(tmp_path / "y.jsonl")])
    assert r.exit_code == 2 and r.output.startswith("error:")
    a = _write(tmp_path / "a.jsonl", [_acc(10, n=20)])
    b = _write(tmp_path / "b.jsonl", [_lat([1e-3] * 5, name="other", vid="zz")])
    r = CliRunner().invoke(cli, ["compare", a, b])
    assert r.exit_code == 2 and "nothing to compare" in r.output


def test_drops_are_measured_against_each_family_root():
    from edgeprof.sweeps.rows import add_drops
    rows = [dict(pt("aaa", 1.0, [1, 1], acc=0.95), root_id="aaa"),
            dict(pt("bbb", 1.0, [1, 1], acc=0.70), root_id="bbb"),
            dict(pt("ccc", 1.0, [1, 1], acc=0.69), root_id="bbb")]
    add_drops(rows)
    drops = {r["variant_id"]: r["accuracy_drop"] for r in rows}
    assert drops == pytest.approx({"aaa": 0.0, "bbb": 0.0, "ccc": 0.01})


def test_one_recommendation_per_target():
    from types import SimpleNamespace

    from edgeprof.sweeps.decide import decide
    recs = []
    for target, fast in (("laptop", "x"), ("pi4", "y")):
        for vid, p50 in (("x", 1e-3 if fast == "x" else 5e-3), ("y", 1e-3 if fast == "y" else 5e-3)):
            recs.append(new_record("latency", variant_id=vid, root_id="x", target=target,
                                   threads=1, batch=1, data_sha256=None,
                                   model={"name": vid, "model_bytes": 10},
                                   samples_s=[p50] * 10, warmup_samples_s=[],
                                   stats={"p50_s": p50, "p50_ci_s": [p50, p50], "p99_s": p50,
                                          "p99_ci_s": [p50, p50], "n": 10}))
    plan = SimpleNamespace(batches=[1], objectives=None, require=None, targets=["pi4", "laptop"])
    dec = decide(recs, plan, None)
    assert {t: r["chosen"] for t, r in dec["recommendations"].items()} == {"pi4": "y", "laptop": "x"}
    assert dec["recommendation"]["target"] == "pi4"


# ---- a task metric drives the corruption columns, drops and frontier ----------------------

def _rob(vid, score, ci, metric="mae"):
    return new_record("robustness", variant_id=vid, root_id="root", target="local", threads=1,
                      batch=None, data_sha256="d", model={"name": vid}, n=100, metric=metric,
                      higher_is_better=False, mean_corruption_accuracy=None,
                      mean_corruption_score=score, mean_corruption_score_ci=ci)


def test_a_task_metric_robustness_gives_corruption_scores_and_drops():
    from edgeprof.report.columns import corr, corr_drop, corr_name
    from edgeprof.sweeps.decide import decide_records
    recs = []
    for vid, p50, mae, ci in (("root", 2e-3, 0.10, [0.09, 0.11]),
                              ("fast", 1e-3, 0.30, [0.28, 0.32])):
        lat = _lat([p50] * 50, name=vid, vid=vid)
        lat["root_id"] = "root"
        lat["stats"].update(p50_ci_s=[p50 * 0.99, p50 * 1.01], p99_s=p50, p99_ci_s=None, n=50)
        recs += [lat, _rob(vid, mae, ci)]
    dec = decide_records(recs)
    rows = {r["variant_id"]: r for r in dec["rows"]}
    assert rows["fast"]["mean_corruption_score"] == 0.30
    # mae: lower is better, so 0.10 -> 0.30 is 0.20 worse
    assert rows["fast"]["corruption_drop"] == pytest.approx(0.20)
    assert ("mean_corruption_score", "min") in [tuple(o) for o in dec["frontier"]["local"]["objectives"]]
    # faster but clearly worse under corruption: both stay on the frontier
    assert set(dec["frontier"]["local"]["frontier"]) == {"root", "fast"}
    assert corr_name(dec["rows"]) == "corruption mae"
    assert corr(rows["fast"]) == "0.3" and corr_drop(rows["fast"]) == "+0.2"


def test_top1_agreement_of_one_head_of_a_multi_head_model_is_not_used():
    """The argmax of a box-regression head is no class: only the named head's agreement counts."""
    from edgeprof.sweeps.rows import fidelity_summary
    rec = {"vs_root": {"boxes": {"top1_agreement": 0.90, "sqnr_db": 30.0, "n": 10},
                       "prob": {"top1_agreement": 0.99, "sqnr_db": 40.0, "n": 10}}}
    assert fidelity_summary(rec)["top1_agreement"] is None
    assert fidelity_summary(rec)["sqnr_db"] == 30.0
    named = fidelity_summary(rec, "prob")
    assert named["top1_agreement"] == 0.99 and named["fidelity_output"] == "prob"
    single = {"vs_root": {"logits": {"top1_agreement": 0.95, "sqnr_db": 20.0, "n": 10}}}
    assert fidelity_summary(single)["top1_agreement"] == 0.95


# ---- sustained runs, groups of boards: the rank is chosen per target ----------------------

def _sus(vid, board, steady, group=True):
    r = {"kind": "latency", "mode": "sustained", "variant_id": vid, "root_id": "a",
         "target": board, "threads": 1, "batch": 1, "model": {"name": vid}, "duration_s": 60,
         "sustained": {"steady_p50_s": steady, "steady_p50_ci_s": [steady * 0.99, steady * 1.01],
                       "steady_n": 100},
         "energy": {"available": False, "reason": "none"}}
    if group:
        r["target_group"] = "lab"
    return r


def _burst(vid, board, p50):
    return {"kind": "latency", "mode": "burst", "variant_id": vid, "root_id": "a", "target": board,
            "threads": 1, "batch": 1, "model": {"name": vid}, "samples_s": [p50], "warnings": [],
            "stats": {"p50_s": p50, "p50_ci_s": [p50 * .99, p50 * 1.01], "p99_s": p50,
                      "p99_ci_s": None, "n": 50}}


def test_a_group_with_only_sustained_runs_is_ranked_by_its_median_steady_state():
    from edgeprof.sweeps.decide import decide_records
    d = decide_records([_sus("a", "b1", 0.010), _sus("a", "b2", 0.012),
                        _sus("b", "b1", 0.020), _sus("b", "b2", 0.022)])
    rec = d["recommendations"]["lab"]
    assert d["ranks"] == {"lab": "steady_p50_s"} and rec["chosen"] == "a"
    assert "steady-state p50 11 ms" in rec["reasons"][0]  # the median of the two boards


def test_a_sustained_board_does_not_change_how_another_target_is_ranked():
    from edgeprof.sweeps.decide import decide_records
    d = decide_records([_burst("a", "local", 0.01), _burst("b", "local", 0.02),
                        _sus("a", "pi", 0.03, group=False)])
    assert d["ranks"] == {"local": "p50_s", "pi": "steady_p50_s"}
    assert d["recommendations"]["local"]["chosen"] == "a"
    assert "p50 10 ms" in d["recommendations"]["local"]["reasons"][0]
