"""Boards reserved through labgrid: a real labgrid-coordinator on 127.0.0.1 (a free port), a real
labgrid-exporter exporting a NetworkService that points at a real sshd board (the .venv-board
interpreter, as the SSH tests use), and a place matching it created with labgrid-client."""
from __future__ import annotations

import gc
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from getpass import getuser
from pathlib import Path

import pytest

from edgeprof.errors import EdgeprofError, InputError, WorkerError
from edgeprof.results import read_records
from edgeprof.targets import get_target
from edgeprof.targets.config import load_target_file
from edgeprof.targets.labgrid import INSTALL_HINT, LabgridTarget
from tests.conftest import FAST, require
from tests.targets import sshd as S
from tests.targets.test_ssh import BOARD_PYTHON, Board

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's labgrid-coordinator, -exporter, -client
PLACE = "pi4-01"


def _labgrid_installed() -> bool:
    return (importlib.util.find_spec("labgrid") is not None
            and (BIN / "labgrid-coordinator").exists())


class Lab:
    """The coordinator, one exporter, the board, and a place whose match is the board's
    NetworkService."""

    def __init__(self, root: Path, board: Board):
        self.root, self.board = root, board
        self.procs: list[subprocess.Popen] = []
        self.channels: list = []
        self.address = ""

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        out = open(folder / "out.log", "wb")
        p = subprocess.Popen([str(BIN / args[0]), *args[1:]], cwd=folder, stdout=out,
                             stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def start(self) -> "Lab":
        p = self.spawn("coordinator", "labgrid-coordinator", "-l", "127.0.0.1:0")
        log = self.root / "coordinator" / "out.log"
        deadline = time.monotonic() + 30
        while not self.address:
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"labgrid-coordinator did not start: {log.read_text()[-800:]}")
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("listening on "):
                    self.address = line.split()[-1]
            time.sleep(0.1)
        config = self.root / "exporter.yaml"
        config.write_text(f"board:\n  NetworkService:\n    address: 127.0.0.1\n"
                          f"    username: root\n    port: {self.board.sshd.port}\n")
        self.spawn("exporter", "labgrid-exporter", "-c", self.address, "-n", "exp1",
                   "--hostname", "127.0.0.1", str(config))
        # the place, as `labgrid-client -p PLACE create` and `add-match` make it (the same
        # requests, sent directly: each labgrid-client start costs seconds on a busy machine)
        stub = self.stub()
        stub.AddPlace(self.pb.AddPlaceRequest(name=PLACE), timeout=30)
        stub.AddPlaceMatch(self.pb.AddPlaceMatchRequest(
            placename=PLACE, pattern="exp1/board/NetworkService"), timeout=30)
        deadline = time.monotonic() + 30
        while "set_resource board NetworkService path" not in log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise RuntimeError("the exporter's NetworkService never reached the coordinator")
            time.sleep(0.1)
        return self

    @property
    def pb(self):
        from labgrid.remote.generated import labgrid_coordinator_pb2
        return labgrid_coordinator_pb2

    def stub(self):
        import grpc
        from labgrid.remote.generated import labgrid_coordinator_pb2_grpc as pb_grpc

        channel = grpc.insecure_channel(self.address)
        self.channels.append(channel)
        return pb_grpc.CoordinatorStub(channel)

    def client(self, *args: str, user: str | None = None, host: str | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        if user:
            env["LG_USERNAME"] = user
        if host:
            env["LG_HOSTNAME"] = host
        r = subprocess.run([str(BIN / "labgrid-client"), "-x", self.address, *args], env=env,
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode:
            raise RuntimeError(f"labgrid-client {' '.join(args)}: {r.stdout}{r.stderr}")
        return r

    def acquired_by(self, place: str = PLACE) -> str | None:
        """Who holds ``place`` now, asked of the coordinator directly (its GetPlaces request,
        not through edgeprof)."""
        reply = self.stub().GetPlaces(self.pb.GetPlacesRequest(), timeout=30)
        (found,) = [p for p in reply.places if p.name == place]
        return found.acquired or None

    def write(self, name: str, **over: object) -> str:
        fields = {"kind": "labgrid", "coordinator": self.address, "place": PLACE,
                  "host": None, "port": None, "user": None, **over}
        return self.board.write(name, **fields)

    def stop(self) -> None:
        for c in self.channels:
            c.close()
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require(_labgrid_installed(), f"labgrid is not installed: {INSTALL_HINT}")
    require(S.sshd_available(), "OpenSSH server (/usr/sbin/sshd, ssh-keygen, root) is missing: "
            "apt-get install openssh-server")
    require(BOARD_PYTHON.exists(), f"{BOARD_PYTHON} is missing: run `make board-env`")
    root = tmp_path_factory.mktemp("lab")
    key = S.keygen(root / "user_key")
    d = S.Sshd(root / "sshd", [key]).start()
    lab = Lab(root, Board(root, d, key))
    try:
        lab.start()
        lab.write("lab")
        yield lab
    finally:
        lab.stop()
        d.stop()


def _me() -> str:
    return f"{os.environ.get('LG_HOSTNAME', socket.gethostname())}/" \
           f"{os.environ.get('LG_USERNAME', getuser())}"


def _one_line_error(r) -> str:
    assert r.exit_code != 0, r.output
    assert "Traceback" not in r.output, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Acquire, profile, release
# ---------------------------------------------------------------------------------------------

def test_profile_on_a_labgrid_place_then_released(lab, models_dir, tmp_path):
    res = tmp_path / "r.jsonl"
    r = lab.board.cli("profile", str(models_dir / "cnn.onnx"), "--target", "lab",
                      "--results", str(res), *FAST)
    assert r.exit_code == 0, r.output
    (rec,) = read_records(res)
    assert rec["kind"] == "latency" and rec["target"] == "lab"
    assert rec["env"]["versions"]["numpy"].startswith("1.26")  # ran on the board's interpreter
    assert len(rec["samples_s"]) == rec["stats"]["n"] >= 20
    assert lab.acquired_by() is None  # released at the end of the run


def test_place_held_while_connected_and_address_from_the_network_service(lab):
    t = get_target("lab", targets_dir=lab.board.targets)
    assert isinstance(t, LabgridTarget)
    assert t.spec.address == f"labgrid place {PLACE} at {lab.address}"  # nothing contacted yet
    assert lab.acquired_by() is None
    try:
        t.connect()
        assert t.owner == _me() and lab.acquired_by() == t.owner
        # the board's address is the exported NetworkService's
        assert (t.spec.host, t.spec.port, t.spec.user) == ("127.0.0.1", lab.board.sshd.port,
                                                          "root")
        assert t.run("exec echo ok")[:2] == (0, "ok\n")
        assert t.acquire_s is not None and t.acquire_s > 0
    finally:
        t.close()
    assert lab.acquired_by() is None
    t.close()  # a second close releases nothing more and does not fail


def test_repeated_exchanges_log_no_event_loop_errors(lab, caplog):
    # gRPC keeps delivering late events of a finished call to the loop that made it: exchanges
    # share one live loop, so none lands on a closed one (a CI run once printed "Event loop is
    # closed" with a traceback after Ctrl-C; this cycles acquire/release in one process)
    caplog.set_level(logging.DEBUG, logger="asyncio")
    for _ in range(6):
        t = get_target("lab", targets_dir=lab.board.targets)
        try:
            t.acquire()
            assert lab.acquired_by() == t.owner
            gc.collect()  # what is left of the acquire's session goes while the place is held
            time.sleep(0.2)
        finally:
            t.close()
        assert lab.acquired_by() is None
    time.sleep(0.5)  # late completions arrive on the poller thread
    bad = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.WARNING]
    assert not bad, [r.getMessage() for r in bad]


def test_targets_check_names_the_board_behind_the_place(lab):
    r = lab.board.cli("targets", "check", "lab")
    assert r.exit_code == 0, r.output
    head = r.output.splitlines()[0]
    assert head == (f"lab  root@127.0.0.1:{lab.board.sshd.port} (labgrid place {PLACE} at "
                    f"{lab.address})"), r.output
    assert "ready: lab can profile" in r.output
    assert lab.acquired_by() is None


def test_failed_connect_releases_the_place(lab, models_dir, tmp_path):
    # a known_hosts without the board's key: host key verification stays, and the place is
    # released when the board is refused
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    lab.write("lab-unknown-key", known_hosts=str(empty))
    r = lab.board.cli("profile", str(models_dir / "mlp.onnx"), "--target", "lab-unknown-key",
                      *FAST)
    line = _one_line_error(r)
    assert "unknown host key" in line and "--accept-new-host-key" in line, line
    assert lab.acquired_by() is None
    assert empty.read_text() == ""  # nothing was recorded


def test_no_network_service_of_that_name_releases_the_place(lab):
    lab.write("lab-wrong-resource", resource="serial0")
    t = get_target("lab-wrong-resource", targets_dir=lab.board.targets)
    with pytest.raises(WorkerError, match="no NetworkService named 'serial0'.*NetworkService"):
        t.connect()
    assert lab.acquired_by() is None
    with pytest.raises(WorkerError, match="serial0"):  # remembered: no second acquire
        t.connect()
    t.close()


def test_place_of_someone_else_refused_naming_the_owner_or_queued_with_wait(lab, models_dir):
    lab.client("-p", PLACE, "acquire", user="alice", host="labhost")
    t = get_target("lab", targets_dir=lab.board.targets, wait=True)
    errors: list = []

    def connect() -> None:
        try:
            t.connect()
        except BaseException as exc:
            errors.append(exc)

    th = threading.Thread(target=connect)
    try:
        r = lab.board.cli("profile", str(models_dir / "mlp.onnx"), "--target", "lab", *FAST)
        line = _one_line_error(r)
        assert "already acquired by labhost/alice" in line, line
        assert lab.acquired_by() == "labhost/alice"  # theirs: never released by edgeprof
        th.start()  # with --wait: queued behind alice
        time.sleep(1.5)
        assert th.is_alive() and lab.acquired_by() == "labhost/alice"
    finally:
        lab.client("-p", PLACE, "release", user="alice", host="labhost")
    if th.ident:
        th.join(60)
    try:
        assert not errors, errors
        assert lab.acquired_by() == t.owner == _me() and t.waited_s > 0
    finally:
        t.close()
    assert lab.acquired_by() is None


def test_ctrl_c_releases_the_place(lab, models_dir, tmp_path):
    res = tmp_path / "r.jsonl"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen(
        [sys.executable, "-m", "edgeprof", "profile", str(models_dir / "cnn.onnx"),
         str(models_dir / "mlp.onnx"), "--target", "lab", "--targets-dir",
         str(lab.board.targets), "--results", str(res), "--min-time", "20s",
         "--max-time", "30s", "--cold-starts", "0", "-q"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while lab.acquired_by() != _me():
            assert p.poll() is None, p.communicate()[0].decode()
            assert time.monotonic() < deadline, "the place was never acquired"
            time.sleep(0.2)
        time.sleep(1.0)  # measuring on the board now
        p.send_signal(signal.SIGINT)
        out = p.communicate(timeout=60)[0].decode()
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0 and "interrupted" in out and "Traceback" not in out, out
    assert lab.acquired_by() is None


def test_unknown_place_and_unreachable_coordinator_are_one_line(lab):
    lab.write("lab-nope", place="nope")
    t = get_target("lab-nope", targets_dir=lab.board.targets)
    with pytest.raises(WorkerError, match=f"no place 'nope' .*places: {PLACE}"):
        t.connect()
    t.close()
    lab.write("lab-down", coordinator=f"127.0.0.1:{S.free_port()}", connect_timeout_s=3.0)
    t = get_target("lab-down", targets_dir=lab.board.targets)
    with pytest.raises(WorkerError, match="cannot reach the labgrid coordinator"):
        t.connect()
    assert "\n" not in str(t._fatal)
    t.close()


# ---------------------------------------------------------------------------------------------
# The target file (nothing contacted)
# ---------------------------------------------------------------------------------------------

def _file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "t.toml"
    p.write_text(text)
    return p


def test_labgrid_keys_are_checked(tmp_path, monkeypatch):
    monkeypatch.delenv("LG_COORDINATOR", raising=False)
    spec = load_target_file(_file(tmp_path, 'kind = "labgrid"\nplace = "pi"\n'))
    assert spec.labgrid.coordinator == "127.0.0.1:20408" and spec.host == ""
    assert spec.address == "labgrid place pi at 127.0.0.1:20408"
    spec = load_target_file(_file(tmp_path, 'kind = "labgrid"\nplace = "pi"\n'
                                            'coordinator = "lab.example"\nuser = "pi"\n'))
    assert spec.labgrid.coordinator == "lab.example:20408" and spec.user == "pi"
    monkeypatch.setenv("LG_COORDINATOR", "10.0.0.9:1234")
    assert load_target_file(_file(tmp_path, 'kind = "labgrid"\nplace = "pi"\n')) \
        .labgrid.coordinator == "10.0.0.9:1234"
    for text, msg in [
        ('kind = "labgrid"\n', "place: required"),
        ('kind = "serial"\nhost = "b"\n', "kind: 'serial' is not one of ssh, labgrid"),
        ('host = "b"\nplace = "pi"\n', 'place: only for kind = "labgrid"'),
        ('kind = "labgrid"\nplace = "pi"\ncoordinator = "h:99999"\n', "coordinator:"),
        ('kind = "labgrid"\nplace = "p i"\n', "place: required"),
        ('kind = "labgrid"\nplace = "pi"\nresource = 3\n', "resource: expected"),
    ]:
        with pytest.raises(InputError, match=msg):
            load_target_file(_file(tmp_path, text))


def test_missing_labgrid_is_one_line_with_the_install_hint(tmp_path, monkeypatch):
    """labgrid absent (its import made to fail): the target file still loads; using it says how
    to install the extra."""
    import edgeprof.targets.labgrid as L

    monkeypatch.setattr(L, "_LIB", {})
    monkeypatch.setitem(sys.modules, "labgrid.remote.client", None)
    p = _file(tmp_path, 'kind = "labgrid"\nplace = "pi"\n')
    t = LabgridTarget(load_target_file(p))
    with pytest.raises(EdgeprofError, match=r'pip install "edgeprof\[labgrid\]"'):
        t.connect()
    t.close()
