"""Pruning: latency and MACs of the dense model against 30 % and 50 % channel-pruned variants
(structured, torch-pruning) and a 50 % unstructured-sparse one, for the demo CNN and a MobileNet-like
net, all measured in one interleaved profiling run. Expected: channel pruning cuts MACs about
quadratically and latency with them; unstructured sparsity leaves latency unchanged (ratio ~1.0)."""
from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path

from edgeprof.demo import demo_paths
from edgeprof.measure.profiler import Profiler, Settings
from edgeprof.modelinfo import onnx_info
from edgeprof.models import open_model
from edgeprof.passes.base import apply_pass
from edgeprof.passes.prune import PrunePass
from edgeprof.passes.structured import ChannelPrunePass, export_root
from edgeprof.passes.torch_load import load_torch_model
from edgeprof.targets import get_target
from edgeprof.variants.cache import Cache
from tests import tiny_models

MN_SIZE = 96


def mobilenet_like():
    """The torch twin of tests/tiny_models.mobilenet_like: stem conv, two depthwise-separable
    blocks with ReLU6, global average pool, classifier (random weights: latency does not care)."""
    from torch import nn

    def conv(cin, cout, k, stride=1, groups=1):
        return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups), nn.ReLU6()]
    return nn.Sequential(*conv(3, 8, 3, 2), *conv(8, 8, 3, groups=8), *conv(8, 16, 1),
                         *conv(16, 16, 3, 2, groups=16), *conv(16, 32, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def _family(cache: Cache, factory: str, weights: Path | None, shape: tuple[int, ...],
            spec: dict | None, onnx_dense: Path) -> list[tuple[str, object]]:
    tm = load_torch_model(factory, weights, shape)
    root = export_root(cache, tm, spec)
    out = [("dense (torch export)", root)]
    for c, r in ((0.3, None), (0.3, 8), (0.5, None)):
        v, _ = apply_pass(cache, root, ChannelPrunePass(tm, c, round_to=r))
        out.append((f"channels -{c:.0%}" + (f" round-to {r}" if r else ""), v))
    onnx_root = cache.register_root(open_model(onnx_dense), input_spec=spec)
    if onnx_root.id != root.id:
        out.append(("dense (ONNX file)", onnx_root))
    v, _ = apply_pass(cache, onnx_root, PrunePass(0.5, "global"))
    out.append(("sparsity 50% (unstructured)", v))
    return out


def main() -> None:
    p = demo_paths()
    spec = tomllib.loads(p["preprocess"].read_text())
    with tempfile.TemporaryDirectory() as d:
        cache = Cache(Path(d) / "cache")
        mn_onnx = tiny_models.mobilenet_like(Path(d) / "mn.onnx", size=MN_SIZE)
        fams = {"demo Fashion-MNIST CNN 1x28x28": _family(
                    cache, "edgeprof.demo.model:fashion_cnn", p["pt"], (1, 1, 28, 28), spec, p["onnx"]),
                f"MobileNet-like 3x{MN_SIZE}x{MN_SIZE}": _family(
                    cache, "benchmarks.bench_prune:mobilenet_like", None, (1, 3, MN_SIZE, MN_SIZE),
                    None, mn_onnx)}
        refs = [cache.ref(v) for fam in fams.values() for _, v in fam]
        recs, _ = Profiler(get_target("local"), Settings(min_time_s=1.5, cold_starts=0)).run(refs)
        p50 = {r["variant_id"]: r["stats"]["p50_s"] for r in recs if r["kind"] == "latency"}
        for name, fam in fams.items():
            dense = fam[0][1]
            base_t, base_m = p50[dense.id], onnx_info(str(dense.path))["macs"]
            print(f"{name}: dense p50 {base_t * 1e6:.1f} us, {base_m:,} MACs (1 thread, batch 1)")
            print(f"  {'variant':<30}{'MACs':>12}{'MAC ratio':>11}{'p50':>11}{'latency ratio':>15}"
                  f"{'size':>9}{'zlib':>9}")
            for label, v in fam:
                ref = cache.ref(v)
                macs = onnx_info(str(v.path))["macs"]
                # the unstructured variant's own parent is the dense ONNX file
                parent = cache.get(v.parent) if v.pass_name == "prune" else dense
                ratio = p50[v.id] / p50[parent.id]
                print(f"  {label:<30}{macs:>12,}{macs / base_m:>11.2f}{p50[v.id] * 1e6:>9.1f}us"
                      f"{ratio:>15.2f}{ref.model_bytes / 1024:>7.0f}Ki{ref.zlib_bytes / 1024:>7.0f}Ki")


if __name__ == "__main__":
    main()
