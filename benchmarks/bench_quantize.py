"""Quantization time for the demo model and a MobileNet-like net, and int8/fp32 and fp16/fp32
latency ratios measured in one interleaved profiling run per model."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from edgeprof.data import load_npz
from edgeprof.demo import demo_paths
from edgeprof.measure.profiler import Profiler, Settings
from edgeprof.models import open_model
from edgeprof.passes.base import apply_pass
from edgeprof.passes.quantize import QuantizePass
from edgeprof.targets import get_target
from edgeprof.variants.cache import Cache
from edgeprof.variants.family import spec_for_worker
from tests import tiny_models


def _family(cache: Cache, model: Path, calib: Path, spec: dict | None) -> list:
    root = cache.register_root(open_model(model), input_spec=spec)
    ds = load_npz(calib)
    out = [("fp32", root, 0.0)]
    for label, kw in (("int8-static per-channel", dict(precision="int8-static", per_channel=True)),
                      ("int8-static per-tensor", dict(precision="int8-static", per_channel=False)),
                      ("int8-dynamic", dict(precision="int8-dynamic")), ("fp16", dict(precision="fp16"))):
        t0 = time.perf_counter()
        v, _ = apply_pass(cache, root, QuantizePass(calib=ds, spec=spec_for_worker(spec), **kw))
        out.append((label, v, time.perf_counter() - t0))
    return out


def _report(cache: Cache, name: str, fam: list) -> None:
    refs = [cache.ref(v) for _, v, _ in fam]
    recs, _ = Profiler(get_target("local"), Settings(min_time_s=1.5, cold_starts=0)).run(refs)
    p50 = {r["variant_id"]: r["stats"]["p50_s"] for r in recs if r["kind"] == "latency"}
    base = p50[fam[0][1].id]
    print(f"{name}: fp32 p50 {base * 1e6:.1f} us (1 thread)")
    print(f"  {'variant':<26}{'quantize time':>14}{'p50':>11}{'ratio to fp32':>15}{'size':>10}")
    for label, v, t in fam:
        print(f"  {label:<26}{t:>12.2f} s{p50[v.id] * 1e6:>9.1f}us{p50[v.id] / base:>15.2f}"
              f"{v.path.stat().st_size / 1024:>8.0f}KiB")


def main() -> None:
    p = demo_paths()
    import tomllib
    spec = tomllib.loads(p["preprocess"].read_text())
    with tempfile.TemporaryDirectory() as d:
        cache = Cache(Path(d) / "cache")
        _report(cache, "demo Fashion-MNIST CNN", _family(cache, p["onnx"], p["calib"], spec))
        mn = tiny_models.mobilenet_like(Path(d) / "mn.onnx", size=96)
        rng = np.random.default_rng(0)
        np.savez(Path(d) / "cal.npz", x=rng.integers(0, 256, (64, 96, 96, 3), dtype=np.uint8))
        _report(cache, "MobileNet-like 3x96x96", _family(cache, mn, Path(d) / "cal.npz", None))


if __name__ == "__main__":
    main()
