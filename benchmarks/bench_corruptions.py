"""Images per second of edgeprof's corruptions vs a per-image loop of the reference (imagecorruptions).

    python benchmarks/bench_corruptions.py [--rounds 5] [--batch 32] [--severity 3] [--only fog,snow]

Both sides get the same uint8 batches (224x224 RGB and 28x28 grayscale, made from scikit-image's
sample images shipped in tests/fixtures/corruptions/reference.npz) and return uint8: edgeprof through
``corrupt_uint8`` (its blocks on every CPU this process may use; ``EDGEPROF_THREADS`` overrides),
the reference one ``corrupt()`` call per image, 28 px images padded to its 32 px minimum. The
reference runs in its own managed environment (imagecorruptions 1.1.2 and the versions that wrote
the test fixtures, pinned in edgeprof/tools.py), created on first use under ``$EDGEPROF_TOOLS_DIR``
(``make bench`` sets ~/.cache/edgeprof-tools) and reused after; ``--reference-python`` or
``$EDGEPROF_IC_PYTHON`` points at another interpreter instead. It runs as a long-lived subprocess.
Rounds alternate between the two sides (who goes first alternates too) so that drift of a busy
machine hits both alike; the median round is reported. The reference stops a round after ~0.5 s
(glass blur takes about a second per 224 px image). The summary is the geometric mean of the
speed-ups over all corruptions, glass blur's part of it, and the mean over the others.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeprof.robust.corruptions import CORRUPTIONS, corrupt_uint8, threads  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "corruptions" / "reference.npz"

WORKER = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")             # its pkg_resources import warns on every start
import numpy as np
np.float_ = np.float64                      # imagecorruptions 1.1.2 on numpy 2
import imagecorruptions.corruptions as ic
from skimage.filters import gaussian as _g
def _gauss(*a, multichannel=None, **k):     # and on scikit-image >= 0.19
    if multichannel:
        k["channel_axis"] = -1
    return _g(*a, **k)
ic.gaussian = _gauss
from imagecorruptions import corrupt
warnings.simplefilter("ignore")
batches = dict(np.load(sys.argv[1]))
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    imgs = batches[req["batch"]]
    done, t0 = 0, time.perf_counter()
    for i, img in enumerate(imgs):
        h, w = img.shape[:2]
        if h < 32 or w < 32:
            pad = [(0, max(0, 32 - h)), (0, max(0, 32 - w))] + [(0, 0)] * (img.ndim - 2)
            img = np.pad(img, pad, mode="reflect")
        np.random.seed(i)
        out = corrupt(img, severity=req["severity"], corruption_name=req["name"])[:h, :w]
        done += 1
        if time.perf_counter() - t0 > req["budget_s"]:
            break
    print(json.dumps({"seconds": time.perf_counter() - t0, "images": done}), flush=True)
"""


def make_batches(n: int) -> dict[str, np.ndarray]:
    """224x224 RGB and 28x28 grayscale uint8 batches with natural-image content."""
    from PIL import Image

    with np.load(FIXTURE, allow_pickle=False) as z:
        rgb, gray = z["clean_rgb"], z["clean_gray"]
    views = [lambda a: a, lambda a: a[::-1], lambda a: a[:, ::-1], lambda a: np.swapaxes(a, 0, 1)]
    big = [np.asarray(Image.fromarray(np.ascontiguousarray(views[i % 4](rgb))).resize((224, 224), Image.BICUBIC))
           for i in range(n)]
    small = [np.asarray(Image.fromarray(np.ascontiguousarray(views[i % 4](gray))).resize((28, 28), Image.BOX))
             for i in range(n)]
    return {"rgb224": np.stack(big), "gray28": np.stack(small)}


class Reference:
    """The reference implementation in its own interpreter, driven over stdin/stdout."""

    def __init__(self, python: str, batches: dict[str, np.ndarray], env: dict[str, str] | None = None):
        self.tmp = tempfile.TemporaryDirectory()
        data = Path(self.tmp.name) / "batches.npz"
        np.savez(data, **batches)
        script = Path(self.tmp.name) / "worker.py"
        script.write_text(WORKER)
        self.proc = subprocess.Popen([python, str(script), str(data)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the reference interpreter {python} did not start (exit {self.proc.wait()})")
        json.loads(line)

    def images_per_s(self, batch: str, name: str, severity: int) -> float:
        self.proc.stdin.write(json.dumps({"batch": batch, "name": name, "severity": severity, "budget_s": 0.5}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        return reply["images"] / reply["seconds"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.tmp.cleanup()


def ours_images_per_s(images: np.ndarray, name: str, severity: int) -> float:
    t0 = time.perf_counter()
    corrupt_uint8(images, name, severity, seed=0)
    return len(images) / (time.perf_counter() - t0)


def reference_interpreter(explicit: str | None) -> tuple[str | None, dict[str, str] | None, str]:
    """(python, env, description) of the reference; the managed environment unless one is given."""
    if explicit:
        if not Path(explicit).exists():
            return None, None, f"no reference interpreter at {explicit}"
        return explicit, None, explicit
    from edgeprof.errors import InputError
    from edgeprof.tools import ensure_tool
    from edgeprof.variants.cache import cache_root

    try:
        env = ensure_tool("imagecorruptions", cache_root(None), lambda msg: print(msg, flush=True))
    except InputError as exc:
        return None, None, f"could not set up the reference environment: {exc}"
    versions = ", ".join(f"{k} {v}" for k, v in env.versions().items())
    return str(env.python), env.subprocess_env(), f"{env.dir} ({versions})"


def geometric_mean(ratios: list[float]) -> float:
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))


def summary(ratios: dict[str, float]) -> list[str]:
    """The geometric mean over all, glass blur's factor in it, the mean over the rest, the losers."""
    lines = [f"{'geometric mean':20s} {'':10s} {'':10s} {geometric_mean(list(ratios.values())):8.1f}x"
             f"   (over {len(ratios)})"]
    if "glass_blur" in ratios and len(ratios) > 1:
        rest = [r for n, r in ratios.items() if n != "glass_blur"]
        share = ratios["glass_blur"] ** (1 / len(ratios))
        lines.append(f"{'  without glass blur':20s} {'':10s} {'':10s} {geometric_mean(rest):8.1f}x"
                     f"   (over {len(rest)}; glass blur's {ratios['glass_blur']:.0f}x contributes a factor "
                     f"{share:.2f} to the mean over all)")
    slower = [f"{n} {r:.2f}x" for n, r in ratios.items() if r < 1]
    lines.append("slower than the reference: " + (", ".join(slower) if slower else "none"))
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--severity", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated corruptions (default: all 19)")
    ap.add_argument("--sizes", default="rgb224,gray28", help="batches to time: rgb224, gray28")
    ap.add_argument("--reference-python", default=os.environ.get("EDGEPROF_IC_PYTHON"),
                    help="the reference's interpreter (default: the managed environment)")
    if argv is None:  # under ``python -m benchmarks corruptions`` sys.argv holds the runner's filter
        argv = sys.argv[1:] if __name__ == "__main__" else []
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(CORRUPTIONS)
    unknown = sorted(set(names) - set(CORRUPTIONS))
    if unknown:
        sys.exit(f"error: unknown corruption(s) {', '.join(unknown)}")

    batches = {k: v for k, v in make_batches(args.batch).items() if k in args.sizes.split(",")}
    python, env, where = reference_interpreter(args.reference_python)
    ref = Reference(python, batches, env) if python else None
    print(f"reference: {where}" + ("" if ref else "; timing edgeprof only"), flush=True)

    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    for key, images in batches.items():
        for name in names:
            if name == "saturate" and images.ndim == 3:
                continue
            grayscale = images[..., None] if images.ndim == 3 else images
            ours_images_per_s(grayscale[:2], name, args.severity)  # warm caches (zoom operator, frost)
            rec = results.setdefault((key, name), {"ours": [], "ref": []})
            for r in range(args.rounds):  # interleaved, alternating who goes first
                order = ["ours", "ref"] if r % 2 == 0 else ["ref", "ours"]
                for side in order:
                    if side == "ours":
                        rec["ours"].append(ours_images_per_s(grayscale, name, args.severity))
                    elif ref is not None:
                        rec["ref"].append(ref.images_per_s(key, name, args.severity))
    if ref is not None:
        ref.close()

    print(f"\ncorruption speed, severity {args.severity}, batches of {args.batch}, median of {args.rounds} "
          f"interleaved rounds (images/s, uint8 in and out; edgeprof on {threads()} thread(s), "
          "the reference one image at a time)")
    for key in batches:
        print(f"\n{key}\n{'corruption':20s} {'edgeprof':>10s} {'reference':>10s} {'speed-up':>9s}")
        ratios: dict[str, float] = {}
        for name in names:
            rec = results.get((key, name))
            if rec is None:
                continue
            ours = statistics.median(rec["ours"])
            if rec["ref"]:
                theirs = statistics.median(rec["ref"])
                ratios[name] = ours / theirs
                print(f"{name:20s} {ours:10.0f} {theirs:10.1f} {ours / theirs:8.2f}x")
            else:
                print(f"{name:20s} {ours:10.0f} {'-':>10s} {'-':>9s}")
        if ratios:
            print("\n".join(summary(ratios)))


if __name__ == "__main__":
    main()
