"""ONNX -> TFLite conversion time for the demo model (a float-only converter run, then a run
producing all five precisions), and ONNX vs TFLite latency per precision from ONE interleaved
profiling run (onnxruntime for the ONNX variants, LiteRT for the TFLite ones).

Needs the converter environment: `edgeprof tools install tflite` (EDGEPROF_TOOLS_DIR, else the
repo's .cache/edgeprof-tools, else the user cache)."""
from __future__ import annotations

import os
import tempfile
import time
import tomllib
from pathlib import Path

from edgeprof.data import load_npz
from edgeprof.demo import demo_paths
from edgeprof.measure.fidelity import FidelityEvaluator
from edgeprof.measure.profiler import Profiler, Settings
from edgeprof.models import open_model
from edgeprof.passes.base import apply_pass
from edgeprof.passes.quantize import QuantizePass
from edgeprof.passes.convert import check_tolerance
from edgeprof.passes.tflite import PRECISIONS, ConverterRun, TflitePass
from edgeprof.targets import get_target
from edgeprof.tools import tool_env
from edgeprof.variants.cache import Cache, cache_root
from edgeprof.variants.family import spec_for_worker

REPO = Path(__file__).resolve().parents[1]
ONNX_TWIN = {"fp32": "fp32", "fp16": "fp16", "int8-dynamic": "int8-dynamic",
             "int8-static": "int8-static", "int16x8": "fp32"}


def _tools_ready() -> bool:
    if not os.environ.get("EDGEPROF_TOOLS_DIR"):
        for cand in (REPO / ".cache" / "edgeprof-tools", cache_root() / "tools"):
            if (cand / tool_env("tflite", Path("/")).dir.name).is_dir():
                os.environ["EDGEPROF_TOOLS_DIR"] = str(cand)
                break
    return tool_env("tflite", Path("/nonexistent")).ready


def main() -> None:
    if not _tools_ready():
        print("bench_convert: the converter is not installed; run `edgeprof tools install tflite` "
              "(set EDGEPROF_TOOLS_DIR to share it)")
        return
    p = demo_paths()
    spec = tomllib.loads(p["preprocess"].read_text())
    calib, ev_ds = load_npz(p["calib"]), load_npz(p["eval"])
    with tempfile.TemporaryDirectory() as d:
        cache = Cache(Path(d) / "cache")
        root = cache.register_root(open_model(p["onnx"]), input_spec=spec)
        wspec = spec_for_worker(spec, "uint8")
        base = FidelityEvaluator(ev_ds, 500, Path(d)).hook(root, root, "evaluation")

        def fidelity(path, v):
            out = base(path, v)
            out["tolerance"] = check_tolerance(v.config["precision"], out)[0]
            return out

        float_run = ConverterRun(cache, root, quantize=False)
        t0 = time.perf_counter()
        float_run.ensure()
        float_s = time.perf_counter() - t0
        run = ConverterRun(cache, root, calib=calib, calib_rows=200, quantize=True,
                           worker_spec=wspec)
        t0 = time.perf_counter()
        run.ensure()
        full_s = time.perf_counter() - t0
        tfl, apply_s = {}, {}
        for prec in PRECISIONS:
            t0 = time.perf_counter()
            tfl[prec], _ = apply_pass(cache, root, TflitePass(prec, run), fidelity)
            apply_s[prec] = time.perf_counter() - t0
        print("demo Fashion-MNIST CNN -> TFLite (onnx2tf in its own environment, 2-core VM)")
        print(f"  converter run fp32+fp16 only:        {float_s:6.1f} s wall "
              f"(onnx2tf itself {float_run.info()['converter_s']:.1f} s)")
        print(f"  converter run all 5 (200 calib rows): {full_s:6.1f} s wall "
              f"(onnx2tf itself {run.info()['converter_s']:.1f} s); the integer precisions add "
              f"{full_s - float_s:.1f} s")
        onnx = {"fp32": root}
        for prec, kw in (("int8-static", dict(precision="int8-static", calib=calib, spec=wspec)),
                         ("int8-dynamic", dict(precision="int8-dynamic")),
                         ("fp16", dict(precision="fp16"))):
            onnx[prec], _ = apply_pass(cache, root, QuantizePass(**kw))
        models = list(onnx.values()) + list(tfl.values())
        recs, _ = Profiler(get_target("local"), Settings(min_time_s=1.5, cold_starts=0)).run(
            [cache.ref(v) for v in models])
        p50 = {r["variant_id"]: r["stats"]["p50_s"] for r in recs if r["kind"] == "latency"}
        print("  one interleaved profiling run, 1 thread, batch 1 (p50):")
        print(f"  {'precision':<14}{'copy+parity':>12}  {'parity metric':<19}{'value':>10}"
              f"{'size':>9}{'TFLite p50':>12}{'ONNX twin':>14}{'p50':>10}{'ONNX/TFLite':>13}")
        for prec in PRECISIONS:
            v, twin = tfl[prec], onnx[ONNX_TWIN[prec]]
            tol = v.fidelity["tolerance"]
            val = next(iter(tol["values"].values()))
            print(f"  {prec:<14}{apply_s[prec]:>10.2f} s  {tol['metric']:<19}{val:>10.4g}"
                  f"{v.path.stat().st_size / 1024:>6.0f}KiB{p50[v.id] * 1e6:>10.1f}us"
                  f"{ONNX_TWIN[prec]:>14}{p50[twin.id] * 1e6:>8.1f}us"
                  f"{p50[twin.id] / p50[v.id]:>13.2f}")


if __name__ == "__main__":
    main()
