"""Sweep wall time against its floor: the pure inference time of every evaluation it ran plus
the latency budget it measured, with caches warm (variants and corrupted sets built by a first,
untimed run). Target: at most 1.25x. The sweep is the demo sweep's quick form (10 variants,
accuracy on 500 images, 2 corruptions x 3 severities on 200, Square Attack on 50)."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeprof.data import load_npz
from edgeprof.demo.run import demo_plan
from edgeprof.results import read_records
from edgeprof.sweeps.runner import SweepRunner
from edgeprof.targets import worker as W
from edgeprof.variants.cache import Cache
from edgeprof.variants.family import spec_for_worker


def _per_image_s(path: Path, spec: dict | None, x: np.ndarray) -> float:
    """In-process inference time per image at batch 250 (best of 3), no worker, no protocol."""
    rt = W.open_runtime(str(path), None, 1)
    name = rt.inputs[0]["name"]
    shapes = {name: [len(x)] + list(rt.inputs[0]["shape"][1:])}
    feeds = W.prepare_feeds(rt, {name: x}, spec or {}, shapes)
    loop = isinstance(rt, W.LiteRtRuntime) and not rt.resize({name: list(feeds[name].shape)})
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        if loop:
            for i in range(len(x)):
                rt.run({name: feeds[name][i:i + 1]})
        else:
            rt.run(feeds)
        best = min(best, time.perf_counter() - t0)
    return best / len(x)


def _fresh_process_s(path: Path, n: int = 5) -> float:
    """Median time to start one fresh latency worker, import the runtime and load ``path``:
    what each of a configuration's fresh processes costs before its first timed run (the
    decisions keep latency processes fresh: exec, never fork)."""
    from edgeprof.targets.client import start_local_worker
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        w = start_local_worker()
        try:
            w.request("load", path=str(path))
        finally:
            times.append(time.perf_counter() - t0)
            w.close()
    return float(np.median(times))


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        cache = Cache(Path(d) / "cache")
        SweepRunner(demo_plan(Path(d) / "cold", quick=True), cache).run()   # builds the caches
        plan = demo_plan(Path(d) / "warm", quick=True)
        t0 = time.perf_counter()
        result = SweepRunner(plan, cache).run()
        wall = time.perf_counter() - t0
        records = list(read_records(Path(d) / "warm" / "results.jsonl"))
        ev = load_npz(plan.eval_data)
        x = next(iter(ev.x.values()))[:250]
        latency_s = sum(sum(r["samples_s"]) + sum(r["warmup_samples_s"])
                        for r in records if r["kind"] == "latency")
        cold_s = sum(sum(r.get("cold_start", {}).get("total_s", [])) for r in records
                     if r["kind"] == "latency")
        inference_s = 0.0
        by_id = {v.id: v for v in result["variants"]}
        for r in records:
            if r["kind"] not in ("accuracy", "robustness"):
                continue
            v = by_id[r["variant_id"]]
            images = r["n"]
            if r["kind"] == "robustness":
                images += r["n"] * sum(len(s) for s in r["per_corruption"].values())
                for by_eps in (r.get("attacks") or {}).values():
                    for m in by_eps.values():
                        images += (m.get("queries_mean_all") or 0) * (m.get("n_attacked") or 0)
            inference_s += images * _per_image_s(v.path, spec_for_worker(v.input_spec, "uint8"), x)
        n_procs = sum(len(r.get("processes") or [1]) for r in records if r["kind"] == "latency")
        per_proc_s = _fresh_process_s(result["variants"][0].path)
    floor = latency_s + inference_s + cold_s
    # the profiler starts them two at a time (benchmarks count what can run side by side)
    at_once = min(2, os.cpu_count() or 1)
    procs_s = n_procs * per_proc_s / at_once
    print(f"warm sweep wall time: {wall:.1f} s for {len(result['variants'])} variants")
    print(f"floor: {floor:.1f} s = latency samples and warm-up {latency_s:.1f} s + pure inference "
          f"of the evaluations {inference_s:.1f} s + cold-start processes {cold_s:.1f} s")
    print(f"ratio wall / floor: {wall / floor:.2f}x (target <= 1.25x)")
    print(f"fresh latency processes (exec, never fork, by decision): {n_procs} x "
          f"{per_proc_s * 1e3:.0f} ms (start, runtime import, load), {at_once} at a time = "
          f"{procs_s:.1f} s; floor with them {floor + procs_s:.1f} s, ratio "
          f"{wall / (floor + procs_s):.2f}x")


if __name__ == "__main__":
    main()
