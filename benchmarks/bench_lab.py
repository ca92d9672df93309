"""A lab of boards on loopback: sharded robustness on three half-core boards against one.

Each board is a real sshd on 127.0.0.1 in its own cgroup v1 (half a core: cfs quota 50000 of
100000 us, 512 MB), its worker pinned apart with ``edgeprof_affinity`` (on a 2-core machine two
boards share a core: three half-core boards fill 1.5 of the 2 cores). The same robustness run
(a wider CNN on the demo's Fashion-MNIST rows, a few ms per image on half a core, so that the
boards' inference dominates as on a Pi; 3 corruptions x 2 severities; a Square Attack) goes
to one board (an inventory host) and to the group of three (``--group``), each in a fresh host
process that reports its own peak RSS. Corrupted sets are generated and every file staged by a
warm-up run first, so the timed runs measure evaluation only. Reports the wall-time ratio
(target <= 0.4x) and the host's peak memory of both; the merged figures are checked equal.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.targets import sshd as S

ROOT = Path(__file__).resolve().parents[1]
BOARD_PYTHON = ROOT / ".venv-board" / "bin" / "python"
REPEATS = 2
ROWS, SQUARE_ROWS, QUERIES = 1200, 150, 30

# one host process per run: the run's wall time, records and its own peak RSS
CHILD = r"""
import json, resource, sys, time
from edgeprof.data import load_npz
from edgeprof.demo import demo_paths
from edgeprof.inputspec import load_spec
from edgeprof.models import open_model
from edgeprof.robust.evaluate import AttackConfig, RobustnessConfig, evaluate_robustness
from edgeprof.targets import get_target
from edgeprof.targets.shard import board_group

inv, where, cache, rows, square_rows, queries, model = sys.argv[1:8]
p = demo_paths()
ref = open_model(model, input_spec=load_spec(p["preprocess"]).to_dict())
cfg = RobustnessConfig(corruptions=["gaussian_noise", "contrast", "pixelate"], severities=[1, 4],
                       limit=int(rows), batch=50, attacks=[AttackConfig("square", [("8/255", 8 / 255)],
                       queries=int(queries), limit=int(square_rows))])
if where == "local":
    t = get_target("local")
elif where.startswith("group:"):
    t = board_group(inv, where[6:])
else:
    t = get_target(where, inventory=inv)
t0 = time.perf_counter()
out = evaluate_robustness([ref], load_npz(p["eval"]), cfg, target=t, baseline=ref, cache_dir=cache)
wall = time.perf_counter() - t0
getattr(t, "close", lambda: None)()
rec = out.records[0]
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": wall, "peak_rss_bytes": ru.ru_maxrss * 1024,
                  "host_cpu_s": ru.ru_utime + ru.ru_stime,
                  "figures": {k: v for k, v in rec.items() if k not in ("target", "lab", "created_utc")},
                  "lab": rec.get("lab")}))
"""


def wide_cnn(path: Path, width: int = 24, seed: int = 0) -> Path:
    """1x28x28 -> four 3x3 convolutions of ``width`` channels with ReLU -> pool -> 10 logits."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, x, cin = [], [], "input", 1
    for i in range(4):
        w = rng.standard_normal((width, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x, cin = f"r{i}", width
    inits += [numpy_helper.from_array((rng.standard_normal((10, width)) * 0.3).astype(np.float32),
                                      "fw"), numpy_helper.from_array(np.zeros(10, np.float32), "fb")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "wide_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _run(inv: Path, where: str, cache: Path, model: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(inv), where, str(cache), str(ROWS),
                           str(SQUARE_ROWS), str(QUERIES), str(model)], capture_output=True,
                          text=True,
                          cwd=ROOT, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{where}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _boards_cpu_s(sshds: list) -> float:
    """CPU seconds used by every board so far: each sshd listener's reaped children (sessions and
    their workers), read once the sessions of a finished run have exited."""
    time.sleep(1.0)
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for d in sshds:
        fields = Path(f"/proc/{d.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / tick


def main() -> None:
    if not (S.sshd_available() and BOARD_PYTHON.exists() and S.cgroup_v1_writable()):
        print("skipped: needs /usr/sbin/sshd, ssh-keygen, root, writable cgroup v1 and "
              ".venv-board (make board-env)")
        return
    import importlib.util
    if importlib.util.find_spec("ansible") is None:
        print("skipped: needs ansible-core (pip install 'edgeprof[inventory]')")
        return
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-lab-") as tmp:
        root = Path(tmp)
        key = S.keygen(root / "key")
        known = root / "known_hosts"
        sshds, cgroups, hosts = [], [], []
        try:
            for i, name in enumerate(("b1", "b2", "b3")):
                cg = S.LimitedCgroups(f"edgeprof-bench-lab-{os.getpid()}-{name}")
                cgroups.append(cg)
                d = S.Sshd(root / f"sshd-{name}", [key]).start(cg.paths)
                sshds.append(d)
                with open(known, "a") as f:
                    f.write(S.known_hosts_line(d.port, d.host_key))
                hosts.append(f"    {name}:\n      ansible_port: {d.port}\n"
                             f"      edgeprof_affinity: \"{i % cpus}\"\n"
                             f"      edgeprof_work_dir: {root / ('work-' + name)}\n")
            inv = root / "hosts.yml"
            inv.write_text(
                "lab:\n  vars:\n    ansible_host: 127.0.0.1\n    ansible_user: root\n"
                f"    ansible_ssh_private_key_file: {key}\n    edgeprof_known_hosts: {known}\n"
                f"    ansible_python_interpreter: {BOARD_PYTHON}\n  hosts:\n" + "".join(hosts))
            cache = root / "cache"
            model = wide_cnn(root / "wide_cnn.onnx")
            t0 = time.perf_counter()
            _run(inv, "group:lab", cache, model)  # warm-up: corrupted sets made, files staged everywhere
            print(f"warm-up (corrupted sets, staging on 3 boards): {time.perf_counter() - t0:.1f} s")
            one, three = [], []
            cores: dict[str, list[float]] = {"one": [], "three": []}
            for _ in range(REPEATS):
                for kind, where, runs in (("one", "b1", one), ("three", "group:lab", three)):
                    c0 = _boards_cpu_s(sshds)
                    runs.append(_run(inv, where, cache, model))
                    cores[kind].append((_boards_cpu_s(sshds) - c0) / runs[-1]["wall_s"])
            same = all(r["figures"] == one[0]["figures"] for r in one + three)
            w1 = sorted(r["wall_s"] for r in one)[0]
            w3 = sorted(r["wall_s"] for r in three)[0]
            m1 = max(r["peak_rss_bytes"] for r in one)
            m3 = max(r["peak_rss_bytes"] for r in three)
            cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                        .splitlines() if ln.startswith("model name")), "?")
            print(f"host: {cpu}, {cpus} cores; boards: half a core each (cgroup v1), pinned to "
                  f"CPUs {', '.join(str(i % cpus) for i in range(3))}")
            print(f"work: wide CNN (4 convs x 24 channels), batch 50, {ROWS} rows x (clean + 3 corruptions x 2 severities), Square Attack "
                  f"{SQUARE_ROWS} rows x {QUERIES} queries; best of {REPEATS}")
            print(f"{'run':<22} {'wall s':>8} {'host peak RSS':>14}")
            print(f"{'1 board (b1)':<22} {w1:>8.1f} {m1 / 2**20:>11.0f} MiB")
            print(f"{'3 boards (sharded)':<22} {w3:>8.1f} {m3 / 2**20:>11.0f} MiB")
            print(f"wall ratio 3 boards / 1 board: {w3 / w1:.2f}x (target <= 0.4x); host peak "
                  f"memory ratio {m3 / m1:.2f}x; rows per board "
                  f"{three[-1]['lab']['rows_by_board']}")
            print(f"CPU the boards got (board CPU seconds / wall): 1 board "
                  f"{max(cores['one']):.2f} cores of 0.50 allotted, 3 boards "
                  f"{max(cores['three']):.2f} of 1.50 (the host process and other load share the "
                  f"{cpus} cores); the host process used {max(r['host_cpu_s'] for r in one):.1f} "
                  f"CPU s with 1 board, {max(r['host_cpu_s'] for r in three):.1f} with 3 "
                  "(start-up included)")
            print(f"merged figures equal the single-board run: {same}; boards lost: "
                  f"{three[-1]['lab']['lost'] or 'none'}")
        finally:
            for d in sshds:
                d.stop()
            for cg in cgroups:
                cg.remove()
