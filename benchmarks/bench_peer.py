"""The peer job, edgeprof against a plain onnxruntime script doing the same work (issue 17): static
int8 with per-channel and per-tensor x MinMax and Percentile calibration, then latency at batch 1 /
1 thread, accuracy and size of fp32 and the four candidates, on the demo Fashion-MNIST CNN, cold
cache. Each runs in a fresh process (imports count, as for a user); printed in one run: both wall
times, the ratio (target <= 1.5x), and where edgeprof's time went.

The plain script is benchmarks/peer_plain.py (quantize_static four times, calibrating each time;
a timed loop of 1,000 runs; accuracy at batch 250). edgeprof runs a sweep file through its API,
with its defaults (stop rule on the p50 CI, fresh worker processes, fidelity against fp32, the
report folder). Both sides' top-1 figures are compared (they must be identical). On this busy
kind of machine wall times swing with other load; the CPU times are printed beside them.

EDGEPROF_BENCH_PEER_LARGE=1 adds a MobileNetV2-sized model with random weights and data (the
calibration-bound case: edgeprof calibrates twice where the script calibrates four times).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgeprof.demo import demo_paths

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.5

SWEEP = """name = "peer"
[model]
path = "{onnx}"
preprocess = "{preprocess}"
[data]
eval = "{eval}"
calib = "{calib}"
[[variants]]
precision = "int8-static"
per_channel = [true, false]
calib_method = ["minmax", "percentile"]
[measure]
targets = ["local"]
threads = [1]
batch = [1]
"""


#: what the edgeprof job's time is split into: (label, module, attribute holding the function)
PARTS = (("quantize passes", "edgeprof.passes.quantize", "QuantizePass.run"),
         ("fidelity vs fp32 (build)", "edgeprof.measure.fidelity", "FidelityEvaluator.outputs"),
         ("build (rest)", "edgeprof.sweeps.runner", "SweepRunner.build"),
         ("latency", "edgeprof.sweeps.runner", "SweepRunner.latency"),
         ("accuracy", "edgeprof.sweeps.runner", "SweepRunner.accuracy"),
         ("decide", "edgeprof.sweeps.decide", "decide"),
         ("report", "edgeprof.report.write", "write_report"))


def _wrap(owner, attr: str, acc: list) -> None:
    fn = getattr(owner, attr)

    def timed(*a, **k):
        w, c = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **k)
        finally:
            acc[0] += time.perf_counter() - w
            acc[1] += time.process_time() - c
    setattr(owner, attr, timed)


def edgeprof_job(sweep: Path, out: Path, cache: Path) -> dict:
    """The edgeprof side, run in its own process: the sweep through the API, its time split by
    wrapping the functions of each part (wall, and CPU of this process; workers apart)."""
    import importlib
    w0, c0 = time.perf_counter(), time.process_time()
    from edgeprof import api
    acc = {label: [0.0, 0.0] for label, _, _ in PARTS}
    for label, mod, attr in PARTS:
        owner = importlib.import_module(mod)
        *path, name = attr.split(".")
        for a in path:
            owner = getattr(owner, a)
        _wrap(owner, name, acc[label])
    _decision, results = api.sweep(sweep, out=out, cache_dir=cache)
    total = [time.perf_counter() - w0, time.process_time() - c0]
    # nested parts: the build includes the passes and fidelity
    b = acc["build (rest)"]
    for inner in ("quantize passes", "fidelity vs fp32 (build)"):
        b[0] -= acc[inner][0]
        b[1] -= acc[inner][1]
    acc["other"] = [total[0] - sum(v[0] for v in acc.values()),
                    total[1] - sum(v[1] for v in acc.values())]
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    names_of = {r.variant_id: r.name for r in results.latency}
    return {"parts": acc, "total": total, "workers_cpu_s": ru.ru_utime + ru.ru_stime,
            "latency": {names_of.get(r.variant_id, r.variant_id): r.p50_s for r in results.latency},
            "accuracy": {r.name: r.accuracy for r in results.accuracy},
            "model_bytes": {r.name: r.model_bytes for r in results.latency}}


def _timed(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall and CPU seconds (user + system, of the process and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {r.stderr.strip().splitlines()[-1:]}")
    return wall, cpu, r


def mobilenet_v2(path: Path, size: int = 224, classes: int = 1000, seed: int = 0) -> Path:
    """A MobileNetV2-sized ONNX model (the standard layout: 17 inverted residual blocks, 3.5 M
    parameters, batch norm folded into biases) with seeded random weights."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1,
             act: bool = True) -> str:
        name = f"conv{len(nodes)}"
        w = rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / (cin // group * k * k))
        inits.append(numpy_helper.from_array(w.astype(np.float32), name + "_w"))
        inits.append(numpy_helper.from_array((rng.standard_normal(cout) * 0.05).astype(np.float32),
                                             name + "_b"))
        nodes.append(helper.make_node("Conv", [x, name + "_w", name + "_b"], [name], name=name,
                                      strides=[stride] * 2, group=group, pads=[k // 2] * 4))
        if not act:
            return name
        nodes.append(helper.make_node("Clip", [name, "zero", "six"], [name + "_r"],
                                      name=name + "_relu6"))
        return name + "_r"

    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
              numpy_helper.from_array(np.array(6.0, np.float32), "six")]
    x, c = conv("input", 3, 32, 3, 2), 32
    for t, cout, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            stride = s if i == 0 else 1
            h = conv(x, c, c * t, 1) if t != 1 else x
            h = conv(h, c * t, c * t, 3, stride, group=c * t)
            h = conv(h, c * t, cout, 1, act=False)
            if stride == 1 and c == cout:
                nodes.append(helper.make_node("Add", [x, h], [h + "_add"], name=h + "_add"))
                h = h + "_add"
            x, c = h, cout
    x = conv(x, c, 1280, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
    inits.append(numpy_helper.from_array(
        (rng.standard_normal((classes, 1280)) * 0.03).astype(np.float32), "fc_w"))
    inits.append(numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc",
                                  transB=1))
    graph = helper.make_graph(
        nodes, "mobilenet_v2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _large_inputs(d: Path, size: int, rows: int, eval_rows: int) -> dict[str, Path]:
    """The MobileNetV2-sized model, smooth random RGB images (uint8 NHWC) labelled with the fp32
    model's own predictions (so fp32 scores 1.0 and each int8 candidate its agreement), its
    InputSpec."""
    import numpy as np
    import onnxruntime as ort
    rng = np.random.default_rng(1)
    model = mobilenet_v2(d / "mobilenet_v2.onnx", size)

    def images(n: int) -> np.ndarray:
        small = rng.integers(0, 256, (n, size // 16, size // 16, 3)).astype(np.uint8)
        return np.repeat(np.repeat(small, 16, axis=1), 16, axis=2)
    ev = images(eval_rows)
    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = ev.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255)
    y = np.concatenate([s.run(None, {"input": x[i:i + 50]})[0].argmax(1)
                        for i in range(0, len(x), 50)])
    np.savez(d / "calib.npz", x=images(rows))
    np.savez(d / "eval.npz", x=ev, y=y)
    (d / "preprocess.toml").write_text('layout = "NCHW"\nscale = 0.00392156862745098\n'
                                       'mean = [0.0, 0.0, 0.0]\nstd = [1.0, 1.0, 1.0]\n'
                                       'dtype = "float32"\n')
    return {"onnx": model, "calib": d / "calib.npz",
            "eval": d / "eval.npz", "preprocess": d / "preprocess.toml"}


def compare(title: str, p: dict[str, Path], d: Path, rows: int = 200) -> float:
    """Run both sides on one model; print their tables, wall and CPU times, ratio, breakdown."""
    sweep = d / "peer.toml"
    text = SWEEP.format(onnx=p["onnx"], preprocess=p["preprocess"], eval=p["eval"],
                        calib=p["calib"])
    if rows != 200:
        text = text.replace('calib_method = ["minmax", "percentile"]\n',
                            f'calib_method = ["minmax", "percentile"]\ncalib_rows = {rows}\n')
    sweep.write_text(text)
    plain_wall, plain_cpu, r = _timed([sys.executable, "-m", "benchmarks.peer_plain",
                                       str(p["onnx"]), str(p["calib"]), str(p["eval"]),
                                       "--calib-rows", str(rows)])
    plain_rows = [ln for ln in r.stdout.splitlines() if ln.startswith("  ")]
    ep_wall, ep_cpu, r = _timed([sys.executable, "-m", "benchmarks.bench_peer", "--edgeprof-job",
                                 str(sweep), str(d / "out"), str(d / "cache")])
    job = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"{title} ({os.cpu_count()} CPUs; fresh processes, cold cache)")
    print("plain onnxruntime script:")
    print("\n".join(plain_rows))
    print("edgeprof:")
    for name, p50 in sorted(job["latency"].items()):
        acc = job["accuracy"].get(name)
        size = job["model_bytes"].get(name)
        print(f"  {name:<52} p50 {p50 * 1e6:8.1f} us  top-1 "
              f"{acc if acc is None else format(acc, '.4f')}  "
              f"{'?' if size is None else format(size / 1024, '7.0f')} KiB")
    plain_acc = sorted(float(ln.split("top-1")[1].split()[0]) for ln in plain_rows)
    same = plain_acc == sorted(round(a, 4) for a in job["accuracy"].values())
    print(f"accuracies {'identical' if same else 'DIFFER'} (plain vs edgeprof, 4 decimals)")
    print(f"wall time: plain {plain_wall:.1f} s, edgeprof {ep_wall:.1f} s; "
          f"ratio {ep_wall / plain_wall:.2f}x (target <= {TARGET_RATIO}x on the small CNN)")
    print(f"CPU time:  plain {plain_cpu:.1f} s, edgeprof {ep_cpu:.1f} s; "
          f"ratio {ep_cpu / plain_cpu:.2f}x (worker processes included)")
    print(f"where edgeprof's time went (wall s / CPU s of the main process; "
          f"worker processes {job['workers_cpu_s']:.1f} CPU s in all):")
    print(f"  {'start-up (interpreter, imports)':<34}{ep_wall - job['total'][0]:7.1f} s")
    for label, (w, c) in job["parts"].items():
        print(f"  {label:<34}{w:7.1f} s {c:7.1f} s")
    return ep_wall / plain_wall


def main() -> None:
    """The demo CNN; with EDGEPROF_BENCH_PEER_LARGE=1 also a MobileNetV2-sized model
    (EDGEPROF_BENCH_PEER_SIZE pixels, default 224; EDGEPROF_BENCH_PEER_ROWS calibration rows,
    default 200: percentile calibration then peaks near 12.5 GiB)."""
    p = demo_paths()
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as d:
        compare("peer job on the demo Fashion-MNIST CNN", p, Path(d))
    if os.environ.get("EDGEPROF_BENCH_PEER_LARGE") == "1":
        size = int(os.environ.get("EDGEPROF_BENCH_PEER_SIZE", "224"))
        rows = int(os.environ.get("EDGEPROF_BENCH_PEER_ROWS", "200"))
        with tempfile.TemporaryDirectory(prefix="bench-peer-large-") as d:
            d = Path(d)
            print()
            compare(f"peer job on a MobileNetV2-sized model ({size}x{size} RGB, {rows} "
                    "calibration rows, 500 test rows)", _large_inputs(d, size, rows, 500), d, rows)
    else:
        print("(EDGEPROF_BENCH_PEER_LARGE=1 adds a MobileNetV2-sized model: the calibration-bound "
              "case, several minutes)")

if __name__ == "__main__":
    if sys.argv[1:2] == ["--edgeprof-job"]:
        print(json.dumps(edgeprof_job(*(Path(a) for a in sys.argv[2:5]))))
    else:
        main()
