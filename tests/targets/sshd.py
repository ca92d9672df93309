"""A real OpenSSH server for the board tests: 127.0.0.1, a free port, its own config, host key and
authorized_keys, key authentication only. Also cgroup v1 helpers for a resource-limited board."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen")
CGROUP_V1 = Path("/sys/fs/cgroup")


def sshd_available() -> bool:
    return SSHD.exists() and SSH_KEYGEN is not None and os.geteuid() == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, kind: str = "ed25519") -> Path:
    """A new key pair without passphrase; returns the private key's path (``.pub`` beside it)."""
    subprocess.run([SSH_KEYGEN, "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)],
                   check=True)
    return path


def public_key(path: Path) -> str:
    return Path(str(path) + ".pub").read_text().strip()


def known_hosts_line(port: int, host_key: Path) -> str:
    kind, b64 = public_key(host_key).split()[:2]
    return f"[127.0.0.1]:{port} {kind} {b64}\n"


class Sshd:
    """``sshd -D`` in the foreground as our child; ``stop()`` ends it and its sessions."""

    def __init__(self, root: Path, authorized: list[Path], max_sessions: int = 10):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_key = keygen(root / "host_ed25519")
        (root / "authorized_keys").write_text("".join(public_key(k) + "\n" for k in authorized))
        self.config = root / "sshd_config"
        self.config.write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding no
X11Forwarding no
MaxSessions {max_sessions}
MaxStartups 50
Subsystem sftp internal-sftp
LogLevel ERROR
""")
        self.log = root / "sshd.log"
        self.proc: subprocess.Popen | None = None

    def start(self, cgroups: list[Path] = ()) -> "Sshd":
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)

        def join() -> None:  # before exec: sshd and every session start inside the cgroups
            for cg in cgroups:
                (cg / "cgroup.procs").write_text(str(os.getpid()))

        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.config)],
                                         stdout=log, stderr=log, preexec_fn=join)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if self.proc is not None and ppid == self.proc.pid:
                    out.append(int(d.name))
        return out

    def stop(self) -> None:
        if self.proc is None:
            return
        for pid in self.session_pids():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def cgroup_v1_writable() -> bool:
    return all(os.access(CGROUP_V1 / c, os.W_OK) and (CGROUP_V1 / c / "cgroup.procs").exists()
               for c in ("cpu", "memory"))


class LimitedCgroups:
    """Half a core (cfs quota 50000 of 100000 us) and ``memory_bytes`` of memory, cgroup v1."""

    def __init__(self, name: str, memory_bytes: int = 512 * 2**20):
        self.cpu = CGROUP_V1 / "cpu" / name
        self.mem = CGROUP_V1 / "memory" / name
        for d in (self.cpu, self.mem):
            d.mkdir(exist_ok=True)
        (self.cpu / "cpu.cfs_period_us").write_text("100000")
        (self.cpu / "cpu.cfs_quota_us").write_text("50000")
        (self.mem / "memory.limit_in_bytes").write_text(str(memory_bytes))
        memsw = self.mem / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # no swapping around the limit: above it, the OOM killer acts
            memsw.write_text(str(memory_bytes))

    @property
    def paths(self) -> list[Path]:
        return [self.cpu, self.mem]

    def nr_throttled(self) -> int:
        for line in (self.cpu / "cpu.stat").read_text().splitlines():
            if line.startswith("nr_throttled"):
                return int(line.split()[1])
        return 0

    def remove(self) -> None:
        for d in (self.cpu, self.mem):
            if not d.exists():
                continue
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                pids = [p for p in (d / "cgroup.procs").read_text().split() if p]
                for p in pids:  # whatever is left goes back to the parent before rmdir
                    try:
                        (d.parent / "cgroup.procs").write_text(p)
                    except OSError:
                        pass
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
