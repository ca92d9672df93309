"""Harness overhead of `edgeprof profile` against a bare perf_counter_ns loop.

For a model of about 1 ms and one of about 50 us, edgeprof's worker rounds and a bare loop over
an identical onnxruntime session (same thread count, in this process) alternate round by round,
so machine drift hits both alike. Targets: overhead <= 1 % at 1 ms and <= 5 us per call.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgeprof.targets.client import start_local_worker
from tests import tiny_models

ROUNDS = 15


def _bare_loop(sess, feeds, n):
    run, clock = sess.run, time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = clock()
        run(None, feeds)
        out[i] = clock() - t0
    return [v * 1e-9 for v in out]


def _compare(path: Path, label: str) -> dict:
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    i = sess.get_inputs()[0]
    feeds = {i.name: np.random.RandomState(0).uniform(0, 1, [1] + i.shape[1:]).astype(np.float32)}
    with start_local_worker() as w:
        w.request("load", path=str(path), threads=1, batch=1)
        _bare_loop(sess, feeds, 200)
        w.request("round", n=200)  # both warmed
        est = float(np.median(_bare_loop(sess, feeds, 50)))
        n = max(20, int(0.1 / est))
        ours, bare = [], []
        for _ in range(ROUNDS):
            ours += w.request("round", n=n)["samples_s"]
            bare += _bare_loop(sess, feeds, n)
    p_ours, p_bare = float(np.median(ours)), float(np.median(bare))
    return {"model": label, "n": len(ours), "bare_p50_s": p_bare, "edgeprof_p50_s": p_ours,
            "ratio": p_ours / p_bare, "overhead_s": p_ours - p_bare}


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        big = tiny_models.mlp(Path(d) / "mlp_1ms.onnx", dim=768, layers=10)
        small = tiny_models.mlp(Path(d) / "mlp_50us.onnx", dim=256, layers=12)
        rows = [_compare(big, "~1 ms MLP"), _compare(small, "~50 us MLP")]
    print(f"{'model':<12} {'n':>6} {'bare p50':>10} {'edgeprof p50':>13} {'ratio':>7} {'overhead/call':>14}")
    for r in rows:
        print(f"{r['model']:<12} {r['n']:>6} {r['bare_p50_s'] * 1e6:>8.1f}us "
              f"{r['edgeprof_p50_s'] * 1e6:>11.1f}us {r['ratio']:>7.4f} {r['overhead_s'] * 1e6:>12.2f}us")
    print("targets: ratio <= 1.01 at ~1 ms; overhead <= 5 us per call")


if __name__ == "__main__":
    main()
