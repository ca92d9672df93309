"""The demo model: cold start against warm first inference, and throughput at batch 16 against
batch 1, measured in one interleaved run."""
from __future__ import annotations

from edgeprof.data import load_npz
from edgeprof.demo import demo_paths
from edgeprof.inputspec import load_spec
from edgeprof.measure.profiler import Profiler, Settings
from edgeprof.models import open_model
from edgeprof.targets import get_target


def main() -> None:
    p = demo_paths()
    recs, _ = Profiler(get_target("local"), Settings(batches=(1, 16), min_time_s=2.0, cold_starts=5),
                       data=load_npz(p["eval"]), spec=load_spec(p["preprocess"])).run(
        [open_model(p["onnx"])])
    by_batch = {r["batch"]: r for r in recs if r["kind"] == "latency"}
    b1, b16 = by_batch[1], by_batch[16]
    cold = sorted(b1["cold_start"]["total_s"])[len(b1["cold_start"]["total_s"]) // 2]
    print(f"cold start (fresh process, median of 5): {cold * 1e3:.1f} ms; warm first inference "
          f"{b1['first_inference_s'] * 1e3:.2f} ms; warm p50 {b1['stats']['p50_s'] * 1e6:.1f} us")
    print(f"  ratio cold start / warm first inference: {cold / b1['first_inference_s']:.0f}x; "
          f"cold start / warm p50: {cold / b1['stats']['p50_s']:.0f}x")
    t1 = 1 / b1["stats"]["p50_s"]
    t16 = 16 / b16["stats"]["p50_s"]
    print(f"throughput batch 1: {t1:.0f}/s, batch 16: {t16:.0f}/s; ratio batch16/batch1: "
          f"{t16 / t1:.2f}x")


if __name__ == "__main__":
    main()
