"""Boards over SSH on loopback: what the SSH path costs beyond the inference it measures.

* overhead: wall time of profiling one model minus the sum of its measured and warm-up samples,
  over SSH (a real sshd on 127.0.0.1, the board interpreter .venv-board) and on the local target;
* bytes uploaded by a second run of the same models (target 0);
* connection setup (TCP + SSH handshake + key auth + SFTP + work dir) and the cost of starting a
  remote command (channel + the login shell's rc files);
* a half-core board (cgroup v1 cpu quota 50000/100000 us, 512 MB) against the unlimited board.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from edgeprof.measure.profiler import Profiler, Settings
from edgeprof.models import open_model
from edgeprof.targets import get_target
from edgeprof.targets.local import LocalTarget
from tests import tiny_models
from tests.targets import sshd as S

ROOT = Path(__file__).resolve().parents[1]
BOARD_PYTHON = ROOT / ".venv-board" / "bin" / "python"
REPEATS = 3
SETTINGS = Settings(min_time_s=1.0, min_runs=50, warmup_max_s=2.0, cold_starts=0)


def _target_file(d: Path, name: str, port: int, key: Path, kh: Path, work: Path) -> None:
    (d / f"{name}.toml").write_text(
        f'host = "127.0.0.1"\nport = {port}\nuser = "root"\nidentity_file = "{key}"\n'
        f'known_hosts = "{kh}"\npython = "{BOARD_PYTHON}"\nwork_dir = "{work}"\n')


def _profile(target, model) -> tuple[float, dict]:
    t0 = time.perf_counter()
    recs, _ = Profiler(target, SETTINGS).run([model])
    wall = time.perf_counter() - t0
    (rec,) = recs
    if rec["kind"] != "latency":
        raise RuntimeError(rec.get("error"))
    return wall, rec


def _overhead(wall: float, rec: dict) -> float:
    return wall - sum(rec["samples_s"]) - sum(rec["warmup_samples_s"])


def main() -> None:
    if not (S.sshd_available() and BOARD_PYTHON.exists()):
        print("skipped: needs /usr/sbin/sshd, ssh-keygen, root and .venv-board (make board-env)")
        return
    with tempfile.TemporaryDirectory(prefix="bench-ssh-") as tmp:
        root = Path(tmp)
        key = S.keygen(root / "key")
        d = S.Sshd(root / "sshd", [key]).start()
        cg = small = None
        try:
            tdir = root / "targets"
            tdir.mkdir()
            kh = root / "known_hosts"
            kh.write_text(S.known_hosts_line(d.port, d.host_key))
            _target_file(tdir, "board", d.port, key, kh, root / "work")
            models = [open_model(tiny_models.tiny_cnn(root / "cnn_tiny.onnx")),
                      open_model(tiny_models.mlp(root / "mlp_256x4.onnx", dim=256, layers=4)),
                      open_model(tiny_models.mlp(root / "mlp_1024x8.onnx", dim=1024, layers=8))]

            print(f"overhead beyond measured inference (wall - samples - warm-up), one model per "
                  f"run, median of {REPEATS} alternating local/ssh runs; both run the board "
                  "interpreter (.venv-board); each ssh run opens its own connection, like one CLI "
                  "call")
            print(f"{'model':<16} {'p50 local':>10} {'p50 ssh':>10} {'ovh local s':>12} "
                  f"{'ovh ssh s':>10} {'ssh - local s':>14}")
            first_bytes, exec_s = 0, None
            for m in models:
                ol, os_, pl, ps = [], [], [], []
                for _ in range(REPEATS):
                    wl, rl = _profile(LocalTarget(python=str(BOARD_PYTHON)), m)
                    board = get_target("board", targets_dir=tdir)
                    try:
                        ws, rs = _profile(board, m)
                        first_bytes += board.bytes_uploaded
                        exec_s = exec_s or board.exec_overhead_s()
                    finally:
                        board.close()
                    ol.append(_overhead(wl, rl))
                    os_.append(_overhead(ws, rs))
                    pl.append(rl["stats"]["p50_s"])
                    ps.append(rs["stats"]["p50_s"])
                med = statistics.median
                print(f"{m.name:<16} {med(pl) * 1e6:>8.1f}us {med(ps) * 1e6:>8.1f}us "
                      f"{med(ol):>12.3f} {med(os_):>10.3f} {med(os_) - med(ol):>14.3f}")

            again = get_target("board", targets_dir=tdir)
            try:
                for m in models:
                    _profile(again, m)
                second_bytes = again.bytes_uploaded
            finally:
                again.close()
            print(f"bytes uploaded: first run {first_bytes}, second run {second_bytes} (target 0)")

            setups = []
            for _ in range(5):
                t = get_target("board", targets_dir=tdir)
                t.connect()
                setups.append(t.connect_s)
                t.close()
            print(f"connection setup (TCP, SSH, key auth, SFTP, work dir): median "
                  f"{statistics.median(setups) * 1e3:.0f} ms of 5; starting a remote command "
                  f"(channel + login shell rc): {exec_s * 1e3:.0f} ms")

            if not S.cgroup_v1_writable():
                print("limited board: skipped (cgroup v1 cpu/memory not writable)")
                return
            cg = S.LimitedCgroups(f"edgeprof-bench-{os.getpid()}")
            small = S.Sshd(root / "sshd-small", [key]).start(cgroups=cg.paths)
            kh.write_text(kh.read_text() + S.known_hosts_line(small.port, small.host_key))
            _target_file(tdir, "halfcore", small.port, key, kh, root / "work")
            m = models[2]
            _, full = _profile(get_target("board", targets_dir=tdir), m)
            _, half = _profile(get_target("halfcore", targets_dir=tdir), m)
            fs, hs = full["stats"], half["stats"]
            mean = lambda r: sum(r["samples_s"]) / len(r["samples_s"])  # noqa: E731
            slow = lambda r: sum(x > 10 * r["stats"]["p50_s"] for x in r["samples_s"])  # noqa: E731
            print(f"half-core board vs unlimited, {m.name}, 1 thread: p50 "
                  f"{hs['p50_s'] * 1e3:.2f} / {fs['p50_s'] * 1e3:.2f} ms = "
                  f"{hs['p50_s'] / fs['p50_s']:.2f}x; mean {mean(half) / mean(full):.2f}x; max "
                  f"{hs['max_s'] * 1e3:.1f} / {fs['max_s'] * 1e3:.1f} ms; samples > 10x p50: "
                  f"{slow(half)} / {slow(full)} of {hs['n']} / {fs['n']}; "
                  f"cgroup nr_throttled {cg.nr_throttled()}")
        finally:
            if small is not None:
                small.stop()
            if cg is not None:
                cg.remove()
            d.stop()


if __name__ == "__main__":
    main()
