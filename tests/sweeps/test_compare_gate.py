"""The regression gate's latency test (per-round medians, run-to-run noise) and its environment
check: pure functions on synthetic records, the CLI through CliRunner, and one real A/A pair."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from edgeprof.cli import cli
from edgeprof.results import new_record, read_records
from edgeprof.sweeps.compare import (BLOCK_MEDIANS, ROUND_MEDIANS, env_differences,
                                    latency_changes, unit_medians)
from tests.conftest import FAST

ENV = {"cpu_model": "AMD EPYC", "cores": 2, "affinity": [0, 1], "governors": None,
       "env_threads": {}, "versions": {"numpy": "2.1.0", "onnxruntime": "1.20.0",
                                       "ai_edge_litert": "1.2.0"}}


def _lat(samples, rounds=None, vid="v1", name="m.onnx", env=ENV, runtime="onnxruntime",
         version="1.20.0", threads=1):
    return new_record("latency", variant_id=vid, target="local", threads=threads, batch=1,
                      data_sha256=None, model={"name": name}, samples_s=[float(v) for v in samples],
                      rounds=rounds, stats={"p50_s": float(np.median(samples))}, env=env,
                      runtime=runtime, runtime_version=version)


def _rounds(rng, levels, per_round=400, base=1e-3, sigma=0.05, phi=0.95):
    """Samples whose rounds sit at given relative levels, with AR(1) noise inside a round:
    consecutive samples are strongly correlated, as on a busy core."""
    out = []
    for level in levels:
        e = np.empty(per_round)
        e[0] = rng.normal(0, sigma)
        for i in range(1, per_round):
            e[i] = phi * e[i - 1] + rng.normal(0, sigma * np.sqrt(1 - phi ** 2))
        out.append(base * level * np.exp(e))
    return np.concatenate(out), [per_round] * len(levels)


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


# ---- the latency test -----------------------------------------------------------------------

def test_unit_medians_follow_rounds_else_blocks():
    x = np.arange(30, dtype=float) + 1
    u, method = unit_medians({"samples_s": list(x), "rounds": [10, 10, 10]})
    assert method == ROUND_MEDIANS and list(u) == [5.5, 15.5, 25.5]
    u, method = unit_medians({"samples_s": list(x), "rounds": [15, 15]})   # < 3 rounds
    assert method == BLOCK_MEDIANS and len(u) == 10
    u, method = unit_medians({"samples_s": list(x), "rounds": [10, 10, 5]})  # does not add up
    assert method == BLOCK_MEDIANS
    u, method = unit_medians({"samples_s": [1.0, 2.0, 3.0]})
    assert method == BLOCK_MEDIANS and list(u) == [1.0, 2.0, 3.0]


def test_autocorrelated_samples_fool_raw_mann_whitney_but_not_round_medians():
    """Rounds that wander by +-10 % (a busy machine) with correlated samples inside each: the new
    run's rounds sit 6 % higher, well inside that wander. Thousands of raw samples give p ~ 0
    (the old gate: a regression); the 8 round medians per side do not."""
    rng = np.random.default_rng(0)
    levels = [0.90, 1.10, 0.95, 1.05, 1.00, 0.92, 1.08, 1.00]
    xb, rb = _rounds(rng, levels, sigma=0.03)
    xn, rn = _rounds(rng, [1.06 * v for v in levels[::-1]], sigma=0.03)
    raw_p = stats.mannwhitneyu(xn, xb, alternative="greater").pvalue
    (c,) = latency_changes([_lat(xb, rb)], [_lat(xn, rn, vid="v2")], 0.05, run_noise=0.0)
    assert raw_p < 1e-6 and c.relative > 0.05          # what the old gate flagged
    assert c.method == ROUND_MEDIANS and (c.n_base, c.n_new) == (8, 8)
    assert c.p_value > 0.01 and not c.regression


def test_real_slowdown_in_every_round_is_flagged():
    rng = np.random.default_rng(12)
    levels = [1.0, 1.01, 0.99, 1.0, 1.02, 0.99]
    xb, rb = _rounds(rng, levels, sigma=0.02)
    xn, rn = _rounds(rng, levels, sigma=0.02)
    (c,) = latency_changes([_lat(xb, rb)], [_lat(1.2 * xn, rn, vid="v2")], 0.05)
    assert c.method == ROUND_MEDIANS and c.regression
    assert c.p_value < 0.01 and 0.15 < c.relative < 0.25


def test_increase_within_run_noise_is_not_a_regression():
    """Every round 6 % slower: significant by rounds, but one run's level moves by a few
    percent between runs, so a single pair cannot tell; with run noise 0 it is flagged."""
    rng = np.random.default_rng(13)
    xb, rb = _rounds(rng, [1.0] * 6, sigma=0.01)
    xn, rn = _rounds(rng, [1.06] * 6, sigma=0.01)
    b, n = [_lat(xb, rb)], [_lat(xn, rn, vid="v2")]
    assert not latency_changes(b, n, 0.05)[0].regression
    assert latency_changes(b, n, 0.05, run_noise=0.0)[0].regression


def test_records_without_rounds_use_block_medians_on_both_sides():
    rng = np.random.default_rng(14)
    xb, rb = _rounds(rng, [1.0] * 6)
    xn, _ = _rounds(rng, [1.0] * 6)
    (c,) = latency_changes([_lat(xb, rb)], [_lat(xn, None, vid="v2")], 0.05)
    assert c.method == BLOCK_MEDIANS and (c.n_base, c.n_new) == (10, 10)
    assert "method" in c.to_dict()


# ---- the environment check ------------------------------------------------------------------

def _env(**changes):
    env = json.loads(json.dumps(ENV))
    for k, v in changes.items():
        if k in ("numpy", "onnxruntime"):
            env["versions"][k] = v
        else:
            env[k] = v
    return env


def test_env_differences_hard_and_soft():
    x = [1e-3] * 30
    base = [_lat(x, [10, 10, 10])]
    assert env_differences(base, [_lat(x, [10, 10, 10], vid="v2")]) == ([], [])
    hard, soft = env_differences(base, [_lat(x, [10, 10, 10], env=_env(cpu_model="Intel Xeon"))])
    assert len(hard) == 1 and "CPU model" in hard[0] and "Intel Xeon" in hard[0] and not soft
    hard, _ = env_differences(base, [_lat(x, [10, 10, 10], version="1.21.0")])
    assert len(hard) == 1 and "onnxruntime version" in hard[0] and "1.21.0" in hard[0]
    hard, _ = env_differences(base, [_lat(x, [10, 10, 10], runtime="litert", version="1.2.0")])
    assert len(hard) == 1 and "runtime" in hard[0]
    hard, soft = env_differences(base, [_lat(x, [10, 10, 10], env=_env(cores=4, numpy="1.26.4"))])
    assert not hard and len(soft) == 2
    assert any("cores" in s for s in soft) and any("numpy" in s for s in soft)


def test_env_version_taken_from_env_when_record_lacks_it():
    x = [1e-3] * 30
    base = [_lat(x, [10, 10, 10], version=None)]
    new = [_lat(x, [10, 10, 10], version=None, env=_env(onnxruntime="1.19.2"))]
    hard, _ = env_differences(base, new)
    assert len(hard) == 1 and "1.19.2" in hard[0]


def test_other_thread_counts_warn():
    x = [1e-3] * 30
    base = [_lat(x, [10, 10, 10]), _lat(x, [10, 10, 10], threads=2)]
    hard, soft = env_differences(base, [_lat(x, [10, 10, 10], vid="v2")])
    assert not hard and len(soft) == 1 and "threads of m.onnx" in soft[0]


def test_cli_hard_difference_exits_2_unless_allowed(tmp_path):
    rng = np.random.default_rng(15)
    xb, rb = _rounds(rng, [1.0] * 5)
    xn, rn = _rounds(rng, [1.0] * 5)
    base = _write(tmp_path / "b.jsonl", [_lat(xb, rb)])
    new = _write(tmp_path / "n.jsonl", [_lat(xn, rn, vid="v2", env=_env(cpu_model="Intel Xeon"))])
    r = CliRunner().invoke(cli, ["compare", base, new])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "CPU model" in lines[0]
    assert "--allow-env-diff" in lines[0]
    r = CliRunner().invoke(cli, ["compare", base, new, "--allow-env-diff"])
    assert r.exit_code in (0, 1), r.output
    assert any(line.startswith("warning: CPU model differs") for line in r.stderr.splitlines())
    assert "latency" in r.stdout


def test_cli_soft_difference_warns_and_runs(tmp_path):
    rng = np.random.default_rng(16)
    xb, rb = _rounds(rng, [1.0] * 5)
    xn, rn = _rounds(rng, [1.0] * 5)
    base = _write(tmp_path / "b.jsonl", [_lat(xb, rb)])
    new = _write(tmp_path / "n.jsonl", [_lat(xn, rn, vid="v2", env=_env(numpy="1.26.4"))])
    r = CliRunner().invoke(cli, ["compare", base, new])
    assert r.exit_code in (0, 1), r.output
    assert "warning: numpy version differs: '2.1.0' (base) vs '1.26.4' (new)" in r.stderr


@pytest.mark.parametrize("bad", ["lots", "-1%", "100%"])
def test_cli_bad_run_noise_exits_2(tmp_path, bad):
    x = _write(tmp_path / "b.jsonl", [_lat([1e-3] * 30, [10, 10, 10])])
    r = CliRunner().invoke(cli, ["compare", x, x, "--run-noise", bad])
    assert r.exit_code == 2 and "--run-noise" in r.stderr


# ---- a real A/A pair ----------------------------------------------------------------------------

def test_real_aa_pair_runs_and_reports_its_method(models_dir, tmp_path):
    """Two back-to-back profiles of one model: the gate runs on round medians and says so.
    No timing figure is asserted (that is `make bench`'s A/A test)."""
    files = []
    for side in ("a", "b"):
        res = tmp_path / f"{side}.jsonl"
        r = CliRunner().invoke(cli, ["profile", str(models_dir / "cnn.onnx"), "--results",
                                     str(res), *FAST])
        assert r.exit_code == 0, r.output
        files.append(str(res))
    out = tmp_path / "c.json"
    r = CliRunner().invoke(cli, ["compare", *files, "--json", str(out)])
    assert r.exit_code in (0, 1), r.output
    assert not [line for line in r.stderr.splitlines() if line.startswith("error")]
    (c,) = json.loads(out.read_text())
    recs = [next(iter(read_records(f))) for f in files]
    assert c["what"] == "latency"
    if all(len(x["rounds"]) >= 3 for x in recs):     # the profiler normally makes >= 5
        assert c["method"] == ROUND_MEDIANS
        assert (c["n_base"], c["n_new"]) == tuple(len(x["rounds"]) for x in recs)
    else:
        assert c["method"] == BLOCK_MEDIANS
    assert 0 <= c["p_value"] <= 1
    assert env_differences(recs[:1], recs[1:])[0] == []      # same machine: nothing hard
