"""Boards over SSH, against a real OpenSSH server on 127.0.0.1 and the minimal board interpreter
(.venv-board: numpy 1.26 and the runtimes only), so the worker is shown to be self-contained."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.errors import WorkerError
from edgeprof.measure.profiler import Profiler, Settings
from edgeprof.models import open_model
from edgeprof.results import ResultStore, read_records
from edgeprof.targets import get_target, run_per_target
from edgeprof.targets.client import WORKER_PATH
from edgeprof.targets.config import load_target
from edgeprof.targets.ssh import SshTarget
from tests.conftest import FAST, require
from tests.targets import sshd as S

ROOT = Path(__file__).resolve().parents[2]
BOARD_PYTHON = ROOT / ".venv-board" / "bin" / "python"
QUICK = Settings(min_time_s=0.05, min_runs=20, warmup_max_s=0.3, cold_starts=0)


class Board:
    """One sshd, a user key it accepts, a known_hosts file holding its host key, and a folder
    of target files pointing at it."""

    def __init__(self, root: Path, sshd: S.Sshd, key: Path):
        self.root, self.sshd, self.key = root, sshd, key
        self.targets = root / "targets"
        self.targets.mkdir(exist_ok=True)
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(S.known_hosts_line(sshd.port, sshd.host_key))
        # spaces and shell syntax in a remote path: every remote argument must be quoted
        self.work = root / "remote work $(touch PWNED);x"

    def write(self, name: str, **over: object) -> str:
        fields = {"host": "127.0.0.1", "port": self.sshd.port, "user": "root",
                  "identity_file": str(self.key), "known_hosts": str(self.known_hosts),
                  "python": str(BOARD_PYTHON), "work_dir": str(self.work), **over}
        lines = [f"{k} = {v!r}" if isinstance(v, (int, float)) else f'{k} = "{v}"'
                 for k, v in fields.items() if v is not None and not isinstance(v, list)]
        lines += [f"{k} = {v!r}" for k, v in fields.items() if isinstance(v, list)]
        (self.targets / f"{name}.toml").write_text("\n".join(lines) + "\n")
        return name

    def cli(self, *args: str):
        return CliRunner().invoke(cli, [*args, "--targets-dir", str(self.targets)])


@pytest.fixture(scope="session")
def board(tmp_path_factory):
    require(S.sshd_available(), "OpenSSH server (/usr/sbin/sshd, ssh-keygen, root) is missing: "
            "apt-get install openssh-server")
    require(BOARD_PYTHON.exists(), f"{BOARD_PYTHON} is missing: run `make board-env`")
    pytest.importorskip("asyncssh")
    root = tmp_path_factory.mktemp("board")
    key = S.keygen(root / "user_key")
    d = S.Sshd(root / "sshd", [key]).start()
    b = Board(root, d, key)
    b.write("board", threads=[2], affinity="0")
    yield b
    d.stop()
    assert not (Path.cwd() / "PWNED").exists() and not (root / "PWNED").exists()


# ---------------------------------------------------------------------------------------------
# Profiling over SSH
# ---------------------------------------------------------------------------------------------

def test_profile_on_board_with_data_then_resume(board, models_dir, image_data, tmp_path):
    res = tmp_path / "r.jsonl"
    model = str(models_dir / "cnn.onnx")
    r = board.cli("profile", model, "--target", "board", "--data", str(image_data),
                  "--results", str(res), *FAST)
    assert r.exit_code == 0, r.output
    (rec,) = read_records(res)
    assert rec["kind"] == "latency" and rec["target"] == "board"
    assert rec["threads"] == 2  # from the target file
    assert rec["env"]["affinity"] == [0]  # the file's affinity, set on the board
    assert rec["env"]["versions"]["numpy"].startswith("1.26")  # the board's interpreter
    assert rec["inputs"] == {"input": [1, 1, 8, 8]} and rec["data_sha256"]
    assert len(rec["samples_s"]) == rec["stats"]["n"] >= 20
    # the remote work dir is private, files are named by their sha256
    work = board.work
    assert (work.stat().st_mode & 0o777) == 0o700
    names = {p.name for p in (work / "files").iterdir()}
    assert f"{rec['variant_id']}.onnx" in names and any(n.endswith(".npz") for n in names)
    # rerun: the measured key is skipped; CLI flags override the file's threads and affinity
    r = board.cli("profile", model, "--target", "board", "--data", str(image_data),
                  "--results", str(res), "--threads", "1,2", "--affinity", "1", *FAST)
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output
    recs = list(read_records(res))
    assert [x["threads"] for x in recs] == [2, 1]
    assert recs[1]["env"]["affinity"] == [1]


def test_second_stage_uploads_nothing(board, models_dir):
    model = models_dir / "mlp.onnx"
    t = get_target("board", targets_dir=board.targets)
    try:
        first = t.stage(model)
        sent = t.bytes_uploaded
        assert t.stage(model) == first and t.bytes_uploaded == sent
    finally:
        t.close()
    fresh = get_target("board", targets_dir=board.targets)  # new connection: the board's cache
    try:
        assert fresh.stage(model) == first
        assert fresh.bytes_uploaded == 0 and fresh.files_uploaded == 0
        assert fresh.stage(WORKER_PATH).endswith(".py") and fresh.bytes_uploaded == 0
        assert Path(first).read_bytes() == model.read_bytes()
        assert (Path(first).stat().st_mode & 0o777) == 0o600
    finally:
        fresh.close()


def test_targets_check_and_list(board, tmp_path):
    r = board.cli("targets", "check", "board")
    assert r.exit_code == 0, r.output
    for word in ("architecture", "x86_64", "numpy", "1.26", "onnxruntime", "LiteRT", "governor",
                 "temperature", "throttled", "ready"):
        assert word in r.output, (word, r.output)
    # ~/.ssh/config style: an alias resolved through an ssh config file
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host myboard\n  HostName 127.0.0.1\n  Port {board.sshd.port}\n"
                   f"  User root\n  IdentityFile {board.key}\n")
    board.write("alias", host="myboard", port=None, user=None, identity_file=None,
                ssh_config=str(cfg))
    r = board.cli("targets", "check", "alias")
    assert r.exit_code == 0 and "ready" in r.output, r.output
    r = board.cli("targets", "list")
    assert r.exit_code == 0 and "board" in r.output and "alias" in r.output and "local" in r.output


def test_targets_on_one_host_run_one_after_another_and_boards_at_once():
    """run_per_target: a and b (different hosts) each wait for the other to start, which only
    succeeds when they run at once; c (a's host) never runs beside a."""
    class T:
        def __init__(self, name, key):
            self.name, self.group_key = name, key

    a, b, c = T("a", ("ssh", "h1", 22)), T("b", ("ssh", "h2", 22)), T("c", ("ssh", "h1", 22))
    started = {n: threading.Event() for n in "abc"}
    running: set[str] = set()
    seen: dict[str, set[str]] = {}
    lock = threading.Lock()

    def fn(t):
        with lock:
            seen[t.name] = set(running)
            running.add(t.name)
        started[t.name].set()
        met = started[{"a": "b", "b": "a"}[t.name]].wait(10) if t.name in "ab" else None
        with lock:
            running.discard(t.name)
        if t.name == "c":
            raise WorkerError("c failed")
        return met

    out = run_per_target([a, b, c], fn)
    assert out[:2] == [True, True] and isinstance(out[2], WorkerError)
    assert "a" not in seen["c"] and "c" not in seen["a"]


@pytest.mark.parametrize("what", ["worker", "sshd"])
def test_killed_mid_run_keeps_the_rest_and_resumes(board, models_dir, tmp_path, what):
    """Kill the remote worker (or the connection's sshd) while rounds run: a one-line error for
    that configuration, the other's record is written, a rerun measures only what is missing."""
    res = tmp_path / "r.jsonl"
    models = [open_model(models_dir / "cnn.onnx"), open_model(models_dir / "mlp.onnx")]
    workers = {}

    class Watched(SshTarget):
        def start_worker(self, label):
            w = super().start_worker(label)
            workers[label] = w
            return w

    t = Watched(load_target("board", board.targets))
    killed = []

    def progress(desc, frac):
        if desc.startswith("measuring") and not killed:
            killed.append(desc)
            if what == "worker":
                os.kill(workers["mlp.onnx t=1 b=1"].hello["pid"], signal.SIGKILL)
            else:  # the per-connection sshd: the whole connection drops
                for pid in board.sshd.session_pids():
                    os.kill(pid, signal.SIGKILL)

    # the precision stop rule off: both configurations need several passes (under load it could
    # otherwise end one after its first pass, before the kill)
    settings = Settings(min_time_s=0.5, min_runs=20, warmup_max_s=0.3, cold_starts=0,
                        rel_ci=0.0)
    try:
        recs, _ = Profiler(t, settings, store=ResultStore(res), progress=progress).run(models)
    finally:
        t.close()
    kinds = {r["model"]["name"]: r for r in read_records(res)}
    assert killed
    err = kinds["mlp.onnx"] if what == "worker" else next(
        r for r in read_records(res) if r["kind"] == "error")
    assert err["kind"] == "error" and "\n" not in err["error"]
    if what == "worker":
        assert "was killed by SIGKILL" in err["error"] and kinds["cnn.onnx"]["kind"] == "latency"
    else:
        assert "lost" in err["error"] or "closed" in err["error"]
    measured = {r["model"]["name"] for r in read_records(res) if r["kind"] == "latency"}
    t2 = get_target("board", targets_dir=board.targets)
    recs2, skipped = Profiler(t2, QUICK, store=ResultStore(res)).run(models)
    assert [r["model"]["name"] for r in recs2 if r["kind"] == "latency"] == sorted(
        {"cnn.onnx", "mlp.onnx"} - measured)
    assert len(skipped) == len(measured)


# ---------------------------------------------------------------------------------------------
# Faults: one line each, the other board carries on, a rerun resumes
# ---------------------------------------------------------------------------------------------

def _one_line_error(r) -> str:
    assert r.exit_code == 1, r.output
    errs = [ln for ln in r.output.splitlines() if ln.startswith("error: ")]
    assert errs and "Traceback" not in r.output, r.output
    return errs[-1]


def test_unreachable_board_does_not_stop_the_other_and_rerun_resumes(board, models_dir, tmp_path):
    res = tmp_path / "r.jsonl"
    board.write("down", port=S.free_port())  # nothing listens there
    r = board.cli("profile", str(models_dir / "cnn.onnx"), "--target", "board", "--target",
                  "down", "--threads", "1", "--results", str(res), *FAST)
    line = _one_line_error(r)
    assert "down" in line and "cannot connect" in line
    recs = list(read_records(res))
    assert {(x["target"], x["kind"]) for x in recs} == {("board", "latency"), ("down", "error")}
    board.write("down")  # the board is back
    r = board.cli("profile", str(models_dir / "cnn.onnx"), "--target", "board", "--target",
                  "down", "--threads", "1", "--results", str(res), *FAST)
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output and "board: cnn.onnx" in r.output
    recs = list(read_records(res))
    assert [(x["target"], x["kind"]) for x in recs][2:] == [("down", "latency")]


def test_refused_key(board, tmp_path):
    other = S.keygen(tmp_path / "stranger")
    board.write("stranger", identity_file=str(other))
    line = _one_line_error(board.cli("targets", "check", "stranger"))
    assert "refused the key" in line and "authorized_keys" in line


def test_unknown_host_key_needs_explicit_accept(board, tmp_path):
    kh = tmp_path / "kh"
    kh.write_text("")
    board.write("newhost", known_hosts=str(kh))
    line = _one_line_error(board.cli("targets", "check", "newhost"))
    assert "unknown host key" in line and "--accept-new-host-key" in line
    r = board.cli("targets", "check", "newhost", "--accept-new-host-key")
    assert r.exit_code == 0 and "recorded" in r.output, r.output
    assert kh.read_text().split()[:2] == S.known_hosts_line(board.sshd.port,
                                                            board.sshd.host_key).split()[:2]
    r = board.cli("targets", "check", "newhost")  # known now: no flag needed
    assert r.exit_code == 0, r.output


def test_changed_host_key_is_refused_even_with_accept_new(board, tmp_path):
    kh = tmp_path / "kh"
    impostor = S.keygen(tmp_path / "other_host_key")
    kh.write_text(S.known_hosts_line(board.sshd.port, impostor))
    before = kh.read_text()
    board.write("changed", known_hosts=str(kh))
    for extra in ([], ["--accept-new-host-key"]):
        line = _one_line_error(board.cli("targets", "check", "changed", *extra))
        assert "host key has CHANGED" in line and "ssh-keygen -R" in line
    assert kh.read_text() == before


def test_connect_and_run_timeouts(board, tmp_path):
    import socket

    silent = socket.socket()  # accepts TCP, never speaks SSH
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        board.write("silent", port=silent.getsockname()[1], connect_timeout_s=0.5)
        line = _one_line_error(board.cli("targets", "check", "silent"))
        assert "no answer within 0.5 s" in line
    finally:
        silent.close()
    mute = tmp_path / "mute-python"  # an "interpreter" that never answers
    mute.write_text("#!/bin/sh\nexec sleep 37\n")
    mute.chmod(0o755)
    board.write("mute", python=str(mute), run_timeout_s=1)
    line = _one_line_error(board.cli("targets", "check", "mute"))
    assert "no reply from the worker within 1 s" in line

    def sleepers():
        found = []
        for d in Path("/proc").iterdir():
            try:
                found += [d.name] if (d / "cmdline").read_bytes() == b"sleep\x0037\x00" else []
            except OSError:
                pass
        return found

    assert not sleepers()  # the stuck process was killed on the board


def _venv_with_numpy_only(path: Path) -> Path:
    """A board interpreter with numpy and no runtime: a bare venv plus the board's numpy."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = next(path.glob("lib/python*/site-packages"))
    board_site = next(BOARD_PYTHON.parent.parent.glob("lib/python*/site-packages"))
    for name in ("numpy", "numpy.libs"):
        if (board_site / name).exists():
            (site / name).symlink_to(board_site / name)
    return path / "bin" / "python"


def test_board_without_runtime_or_numpy(board, models_dir, tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    board.write("nonumpy", python=str(bare / "bin" / "python"))
    line = _one_line_error(board.cli("targets", "check", "nonumpy"))
    assert "numpy is missing" in line and "-m pip install" in line
    r = board.cli("profile", str(models_dir / "cnn.onnx"), "--target", "nonumpy", *FAST)
    assert "No module named 'numpy'" in _one_line_error(r)

    board.write("noruntime", python=str(_venv_with_numpy_only(tmp_path / "numpy_only")))
    r = board.cli("targets", "check", "noruntime")
    line = _one_line_error(r)
    assert "no runtime" in line and "-m pip install onnxruntime" in line
    assert "1.26" in r.output  # numpy found
    r = board.cli("profile", str(models_dir / "cnn.onnx"), "--target", "noruntime", *FAST)
    assert "onnxruntime is not installed" in _one_line_error(r)


# ---------------------------------------------------------------------------------------------
# A resource-limited board: half a core and 512 MB (cgroup v1)
# ---------------------------------------------------------------------------------------------

def _activation_hog(path: Path, n_floats: int = 200_000_000) -> Path:
    """x[1,1] -> Expand to [n, 1] (800 MB of activations) -> ReduceSum: a tiny file whose
    inference needs far more than 512 MB."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], ["big"]),
         helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0)], "hog",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(np.array([n_floats, 1], dtype=np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_limited_board_throttles_and_reports_out_of_memory(board, models_dir, tmp_path):
    require(S.cgroup_v1_writable(), "cgroup v1 cpu and memory controllers are not writable")
    cg = S.LimitedCgroups(f"edgeprof-test-{os.getpid()}")
    # MaxSessions 2: the SFTP channel and one worker; a second worker needs a second connection
    small = S.Sshd(tmp_path / "sshd", [board.key], max_sessions=2)
    try:
        small.start(cgroups=cg.paths)
        kh = tmp_path / "kh"
        kh.write_text(S.known_hosts_line(small.port, small.host_key))
        board.write("pi", port=small.port, known_hosts=str(kh), work_dir=str(tmp_path / "w"))
        t = get_target("pi", targets_dir=board.targets)
        hog = open_model(_activation_hog(tmp_path / "hog.onnx"))
        models = [open_model(models_dir / "cnn.onnx"), open_model(models_dir / "mlp.onnx"), hog]
        try:
            recs, _ = Profiler(t, QUICK, store=ResultStore(tmp_path / "r.jsonl")).run(models)
            assert len(t._conns) >= 2  # sessions beyond MaxSessions went to another connection
        finally:
            t.close()
        by = {r["model"]["name"]: r for r in recs}
        assert by["cnn.onnx"]["kind"] == "latency" and by["mlp.onnx"]["kind"] == "latency"
        err = by["hog.onnx"]
        assert err["kind"] == "error" and "\n" not in err["error"]
        assert "SIGKILL" in err["error"] and "out of memory" in err["error"]
        assert cg.nr_throttled() > 0
    finally:
        small.stop()
        cg.remove()


def test_a_board_in_use_by_another_run_is_refused_or_waited_for(board, models_dir, tmp_path):
    """Two edgeprof runs never measure on one board at once: another process claims the board
    (the real lock a run takes), a profile on it stops with one line, --wait queues behind it.
    A board of its own (its own sshd and port), so no earlier test's connection is involved."""
    import subprocess
    import sys
    import threading
    key = S.keygen(tmp_path / "key")
    d = S.Sshd(tmp_path / "sshd", [key]).start()
    try:
        own = Board(tmp_path, d, key)
        own.write("solo")
        code = ("import sys; from edgeprof.targets import get_target; "
                "t = get_target('solo', targets_dir=sys.argv[1]); t.claim(); "
                "print('held', flush=True); sys.stdin.readline()")
        other = subprocess.Popen([sys.executable, "-c", code, str(own.targets)], text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert other.stdout.readline().strip() == "held"
            model = str(models_dir / "cnn.onnx")
            r = own.cli("profile", model, "--target", "solo", *FAST)
            assert r.exit_code == 1 and "is in use by another edgeprof run" in r.output
            assert r.output.count("\n") == 1

            def release():
                other.stdin.write("\n")
                other.stdin.flush()
            threading.Timer(1.0, release).start()
            r = own.cli("profile", model, "--target", "solo", "--wait", *FAST)
            assert r.exit_code == 0, r.output
        finally:
            other.kill()
            other.wait()
    finally:
        d.stop()
