"""Target files: schema checks with one-line errors naming file and key, and the lookup order."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.errors import InputError
from edgeprof.targets import get_target
from edgeprof.targets.config import (list_target_files, load_target, load_target_file,
                                     parse_cpus)
from edgeprof.targets.local import LocalTarget

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "targets" / "rpi4.toml.example"


def _write(d: Path, name: str, text: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{name}.toml"
    p.write_text(text)
    return p


def test_the_shipped_pi4_example_is_valid_and_not_looked_up(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # ./targets holds the example: a .example file is never a target
    assert "rpi4" not in list_target_files(tmp_path)
    copy = tmp_path / "rpi4.toml"
    shutil.copy(EXAMPLE, copy)
    spec = load_target_file(copy)
    assert spec.name == "rpi4" and spec.host and spec.python.startswith("/")
    assert spec.threads == (1, 4) and spec.affinity == (0, 1, 2, 3)
    assert spec.runtime == "onnxruntime" and spec.env and spec.description


def test_full_schema(tmp_path):
    p = _write(tmp_path, "pi", """
name = "pi"
description = "test board"
host = "10.0.0.7"
port = 2222
user = "pi"
identity_file = "keys/id_ed25519"
known_hosts = "/abs/known_hosts"
python = "/usr/bin/python3"
work_dir = "~/edgeprof-work"
runtime = "litert"
threads = 2
affinity = [2, 3]
connect_timeout_s = 5
run_timeout_s = 60.5
[env]
OMP_NUM_THREADS = "2"
LEVEL = 3
""")
    s = load_target_file(p)
    assert (s.host, s.port, s.user, s.address) == ("10.0.0.7", 2222, "pi", "pi@10.0.0.7:2222")
    assert s.identity_file == tmp_path / "keys" / "id_ed25519"  # relative to the file
    assert s.known_hosts == Path("/abs/known_hosts")
    assert s.work_dir == "edgeprof-work"  # ~/ means the remote home: relative
    assert (s.threads, s.affinity, s.runtime) == ((2,), (2, 3), "litert")
    assert s.env == {"OMP_NUM_THREADS": "2", "LEVEL": "3"}
    assert (s.connect_timeout_s, s.run_timeout_s) == (5.0, 60.5)
    defaults = load_target_file(_write(tmp_path, "min", 'host = "b"\n'))
    assert defaults.port is None and defaults.user is None  # left to ~/.ssh/config
    assert defaults.python == "/usr/bin/python3" and defaults.work_dir == ".cache/edgeprof"


@pytest.mark.parametrize("text,key", [
    ('port = 22\n', "host"),
    ('host = "b"\nport = 70000\n', "port"),
    ('host = "b"\nport = "22"\n', "port"),
    ('host = "b"\npython = "python3"\n', "python"),
    ('host = "b"\nruntime = "tensorrt"\n', "runtime"),
    ('host = "b"\nthreads = [0]\n', "threads"),
    ('host = "b"\naffinity = "3-1"\n', "affinity"),
    ('host = "b"\nenv = {"1X" = "a"}\n', "env.1X"),
    ('host = "b"\nhostname = "c"\n', "hostname"),
    ('host = "b"\nname = "other"\n', "name"),
    ('host = "-oProxyCommand=x"\n', "host"),
    ('host = "b"\nconnect_timeout_s = -1\n', "connect_timeout_s"),
    ('host = "b"\nwork_dir = "/"\n', "work_dir"),
    ('host = "b"\nuser = 7\n', "user"),
])
def test_bad_files_name_file_and_key(tmp_path, text, key):
    p = _write(tmp_path, "bad", text)
    with pytest.raises(InputError) as e:
        load_target_file(p)
    msg = str(e.value)
    assert str(p) in msg and key in msg and "\n" not in msg


def test_malformed_toml_is_one_line(tmp_path):
    p = _write(tmp_path, "broken", 'host = "b\n')
    with pytest.raises(InputError, match="not valid TOML") as e:
        load_target_file(p)
    assert str(p) in str(e.value)


def test_lookup_order_targets_dir_then_cwd_then_user_config(tmp_path, monkeypatch):
    cfg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cfg))
    cwd = tmp_path / "project"
    monkeypatch.chdir(cwd.parent)
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    _write(cfg / "edgeprof" / "targets", "b1", 'host = "from-user-config"\n')
    _write(cfg / "edgeprof" / "targets", "b2", 'host = "from-user-config"\n')
    _write(cfg / "edgeprof" / "targets", "b3", 'host = "from-user-config"\n')
    _write(cwd / "targets", "b1", 'host = "from-cwd"\n')
    _write(cwd / "targets", "b2", 'host = "from-cwd"\n')
    _write(tmp_path / "flag", "b1", 'host = "from-flag"\n')
    assert load_target("b1", tmp_path / "flag").host == "from-flag"
    assert load_target("b2", tmp_path / "flag").host == "from-cwd"
    assert load_target("b3", tmp_path / "flag").host == "from-user-config"
    with pytest.raises(InputError, match="unknown target 'nope'.*known: local, b1, b2, b3"):
        load_target("nope", tmp_path / "flag")
    with pytest.raises(InputError, match="--targets-dir"):
        load_target("b1", tmp_path / "missing")
    r = CliRunner().invoke(cli, ["targets", "list", "--targets-dir", str(tmp_path / "flag")])
    assert r.exit_code == 0
    assert "from-flag" in r.output and "from-cwd" in r.output and "local" in r.output


def test_local_is_built_in_and_affinity_is_for_boards(tmp_path):
    assert isinstance(get_target("local"), LocalTarget)
    with pytest.raises(InputError, match="--affinity"):
        get_target("local", affinity=(0,))
    d = _write(tmp_path, "pi", 'host = "b"\naffinity = "0-1"\n').parent
    t = get_target("pi", targets_dir=d, affinity=(3,))
    assert t.affinity == (3,) and t.name == "pi"  # the flag wins over the file


def test_remote_command_quotes_every_argument(tmp_path):
    p = _write(tmp_path, "q", 'host = "b"\npython = "/opt/my python/bin/python3"\n'
               'affinity = "1"\n[env]\nX = "a b; rm -rf ~"\n')
    t = get_target("q", targets_dir=p.parent)
    cmd = t._command("/w $(x)/worker.py", "--cold-start", '{"path": "a b"}')
    import shlex
    words = shlex.split(cmd)
    assert words[:4] == ["exec", "env", "X=a b; rm -rf ~", "/opt/my python/bin/python3"]
    assert words[-3:] == ["/w $(x)/worker.py", "--cold-start", '{"path": "a b"}']


def test_parse_cpus():
    assert parse_cpus("0-2,5", "x") == (0, 1, 2, 5)
    assert parse_cpus([3, "1-2"], "x") == (1, 2, 3)
    assert parse_cpus(4, "x") == (4,)
    for bad in ("", "a", "2-1", True, 1.5):
        with pytest.raises(InputError):
            parse_cpus(bad, "x")
