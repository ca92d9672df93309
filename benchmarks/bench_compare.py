"""A/A test of the regression gate: 20 pairs of back-to-back profiles of the same tiny model on
this machine, each pair put through `compare`'s latency test. Every flagged regression is a false
one. Methods side by side:

- old: Mann-Whitney U on the raw samples (autocorrelated, ~10^4 of them) and p50 > threshold;
- rounds only: Mann-Whitney U on per-round medians and p50 > threshold (run noise 0);
- new: rounds, and the increase must also stand out of the assumed run-to-run noise (default).

Target: new <= 1/20. Also prints the spread of one run's p50 between runs, the figure the
default --run-noise stands for.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

from edgeprof.measure.profiler import Profiler, Settings
from edgeprof.models import open_model
from edgeprof.sweeps.compare import ALPHA, DEFAULT_RUN_NOISE, latency_changes
from edgeprof.targets.local import LocalTarget
from tests import tiny_models

PAIRS = 20
THRESHOLD = 0.05           # compare's default --max-latency-increase
SETTINGS = Settings(min_time_s=0.2, min_runs=20, warmup_max_s=0.5, cold_starts=0)


def _old_regression(base: dict, new: dict) -> bool:
    xb, xn = np.asarray(base["samples_s"]), np.asarray(new["samples_s"])
    rel = float(np.median(xn) / np.median(xb) - 1)
    p = float(stats.mannwhitneyu(xn, xb, alternative="greater").pvalue)
    return p < ALPHA and rel > THRESHOLD


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        ref = open_model(tiny_models.tiny_cnn(Path(d) / "cnn.onnx"))
        t0 = time.perf_counter()
        pairs = []
        for _ in range(PAIRS):
            a, b = (Profiler(LocalTarget(), SETTINGS).run([ref])[0][0] for _ in range(2))
            pairs.append((a, b))
        took = time.perf_counter() - t0
    old = rounds_only = new = 0
    log_ratios, methods = [], set()
    for a, b in pairs:
        old += _old_regression(a, b)
        rounds_only += latency_changes([a], [b], THRESHOLD, run_noise=0.0)[0].regression
        c = latency_changes([a], [b], THRESHOLD)[0]
        new += c.regression
        methods.add(f"{c.method}, {c.n_base} vs {c.n_new}")
        log_ratios.append(np.log1p(c.relative))
    lr = np.asarray(log_ratios)
    p50 = float(np.median(pairs[0][0]["samples_s"]))
    cpu = (pairs[0][0].get("env") or {}).get("cpu_model") or "unknown CPU"
    print(f"machine: {cpu}, {(pairs[0][0].get('env') or {}).get('cores')} cores; model: tiny_cnn, p50 ~{p50 * 1e6:.0f} us; "
          f"{PAIRS} pairs profiled in {took:.0f} s; threshold {THRESHOLD:.0%}")
    print(f"methods: {'; '.join(sorted(methods))}")
    print(f"p50 change between two runs: max |{np.expm1(np.abs(lr).max()):.1%}|, "
          f"run-to-run sd of one run ~{lr.std(ddof=1) / np.sqrt(2):.1%} "
          f"(default --run-noise {DEFAULT_RUN_NOISE:.0%})")
    print(f"old (raw samples): {old}/{PAIRS} false regressions, rounds only: {rounds_only}/{PAIRS}, "
          f"new: {new}/{PAIRS}")
    print(f"target: new <= 1/{PAIRS}")


if __name__ == "__main__":
    main()
