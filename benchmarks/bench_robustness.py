"""Robustness evaluation: wall time against the pure inference it contains, and host memory
against the size of the evaluation data.

    python benchmarks/bench_robustness.py [--rounds 3] [--corruptions fast|all|a,b]

Time: the demo model (fp32 ONNX) on its 2000 evaluation images, clean plus every corruption at
severities 1-5, with the corrupted sets cached (a first, untimed run makes them). Pure inference
is the same model in this process (onnxruntime, 1 thread, batches of 250, inputs prepared
beforehand) timed around ``run`` only, over the same sets. Rounds alternate between the two so
that drift of the machine hits both alike; the median ratio is reported (target <= 1.2x).
``fast`` leaves out snow, frost and spatter, whose generation takes minutes on 2000 images (it
is not what is timed here; ``all`` includes them).

Memory: a fresh process evaluates the data set tiled to 1x, 10x and 30x its size (2 corruptions,
severity 3), first generating the corrupted sets then with them cached, and reports its peak RSS
(VmHWM) above what it held after its imports, against the raw bytes of the images. Generation
works on float32 chunks of at most 64 MiB (as ``edgeprof corrupt``), so its share is bounded.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeprof.data import load_npz  # noqa: E402
from edgeprof.demo import demo_paths  # noqa: E402
from edgeprof.inputspec import load_spec, worker_spec  # noqa: E402
from edgeprof.models import open_model  # noqa: E402
from edgeprof.robust.corruptions import CORRUPTIONS  # noqa: E402
from edgeprof.robust.datasets import DataCache, corrupted_set, image_set  # noqa: E402
from edgeprof.robust.evaluate import RobustnessConfig, evaluate_robustness  # noqa: E402
from edgeprof.targets.worker import apply_input_spec  # noqa: E402

SLOW = ("snow", "frost", "spatter")

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child forked from this big
# process would report the parent's size
MEMORY_CHILD = r"""
import json, sys
import numpy as np
import scipy.stats  # noqa: F401  (imported by the run; counted before it, like the others)
from edgeprof.data import load_npz
from edgeprof.models import open_model
from edgeprof.robust import corruptions  # noqa: F401
from edgeprof.robust.evaluate import RobustnessConfig, evaluate_robustness
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
def rss():
    return status('VmRSS:')
onnx, spec, data, cache = sys.argv[1:5]
ref = open_model(onnx, input_spec=json.loads(spec))
before = rss()
ds = load_npz(data)
evaluate_robustness([ref], ds, RobustnessConfig(corruptions='gaussian_noise,contrast', severities=[3]),
                    cache_dir=cache, baseline=ref)
peak = status('VmHWM:')
print(json.dumps({'before': before, 'peak': peak, 'data_bytes': int(ds.x['x'].nbytes)}))
"""


def pure_inference_s(sess, inputs: list[np.ndarray], batch: int = 250) -> float:
    total = 0.0
    for x in inputs:
        for i in range(0, len(x), batch):
            chunk = x[i:i + batch]
            t0 = time.perf_counter()
            sess.run(None, {"input": chunk})
            total += time.perf_counter() - t0
    return total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--corruptions", default="fast")
    args = ap.parse_args(argv or [])  # `python -m benchmarks robustness` leaves its own argv
    import onnxruntime as ort

    p = demo_paths()
    spec = load_spec(p["preprocess"])
    ref = open_model(p["onnx"], input_spec=spec.to_dict())
    data = load_npz(p["eval"])
    names = ([c for c in CORRUPTIONS if c not in SLOW and c != "saturate"]
             if args.corruptions == "fast" else args.corruptions)
    config = RobustnessConfig(corruptions=names, severities=[1, 2, 3, 4, 5])
    with tempfile.TemporaryDirectory(prefix="edgeprof-bench-rob-") as tmp:
        t0 = time.perf_counter()
        first = evaluate_robustness([ref], data, config, cache_dir=tmp, baseline=ref)
        gen_s = time.perf_counter() - t0
        cells = first.records[0]["corruptions"]
        print(f"first run (generates {first.generated} corrupted sets of {data.n} images): "
              f"{gen_s:.1f} s")
        wspec = worker_spec(spec, "uint8")["*"]
        cache = DataCache(tmp)
        im = image_set(data)
        sets = [data.x["x"]]
        for c in cells:
            for s in range(1, 6):
                with np.load(corrupted_set(cache, im, c, s)) as z:
                    sets.append(z["x"])
        inputs = [apply_input_spec(x, wspec) for x in sets]
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(p["onnx"]), so, providers=["CPUExecutionProvider"])
        pure_inference_s(sess, inputs[:2])  # warm-up
        walls, pures, predicts = [], [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            out = evaluate_robustness([ref], data, config, cache_dir=tmp, baseline=ref)
            walls.append(time.perf_counter() - t0)
            assert out.generated == 0
            predicts.append(out.predict_s)
            pures.append(pure_inference_s(sess, inputs))
        ratios = [w / q for w, q in zip(walls, pures)]
        n_images = data.n * len(sets)
        print(f"{len(sets)} sets (clean + {len(cells)} corruptions x 5 severities), "
              f"{n_images} inferences, cached, {args.rounds} interleaved rounds (median):")
        print(f"  robustness run wall time  {statistics.median(walls):7.2f} s "
              f"(of which predict requests {statistics.median(predicts):.2f} s)")
        print(f"  pure inference (in-process onnxruntime run only) {statistics.median(pures):7.2f} s")
        print(f"  ratio wall / pure inference: {statistics.median(ratios):.2f}x "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}; target <= 1.2x)")

        print("host memory (fresh process, 2 corruptions at severity 3; the worker is another "
              "process):")
        for tile in (1, 10, 30):
            path = Path(tmp) / f"tiled{tile}.npz"
            np.savez(path, x=np.tile(data.x["x"], (tile, 1, 1, 1)), y=np.tile(data.y, tile))
            for phase in ("generating the sets", "sets cached"):
                res = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(p["onnx"]),
                                      json.dumps(spec.to_dict()), str(path), tmp],
                                     capture_output=True, text=True, cwd=ROOT, check=True)
                m = json.loads(res.stdout.strip().splitlines()[-1])
                grow = m["peak"] - m["before"]
                print(f"  {data.n * tile:6d} images, {m['data_bytes'] / 2**20:5.1f} MiB raw, "
                      f"{phase:19s}: peak RSS {m['peak'] / 2**20:6.1f} MiB, "
                      f"{grow / 2**20:6.1f} MiB above the post-import {m['before'] / 2**20:.0f} MiB"
                      f" = {grow / m['data_bytes']:4.1f}x the data")


if __name__ == "__main__":
    main(sys.argv[1:])
