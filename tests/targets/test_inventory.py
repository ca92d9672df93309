"""Ansible inventories as targets: read by ansible-core (groups, children, group and host vars,
templates), every host checked like a target file, and `targets check --inventory` against a real
OpenSSH server on 127.0.0.1."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.errors import InputError
from edgeprof.targets import get_target, targets_from_inventory
from edgeprof.targets.inventory import MISSING, inventory_target, inventory_targets
from tests.conftest import require
from tests.targets import sshd as S

ROOT = Path(__file__).resolve().parents[2]
BOARD_PYTHON = ROOT / ".venv-board" / "bin" / "python"
HAVE_ANSIBLE = importlib.util.find_spec("ansible") is not None


@pytest.fixture
def ansible():
    require(HAVE_ANSIBLE, "ansible-core is missing: pip install 'edgeprof[inventory]'")


YAML = """\
lab:
  vars:
    ansible_user: pi
    venv: /home/pi/ep
    ansible_ssh_private_key_file: keys/lab_ed25519
  children:
    pi4:
      vars:
        edgeprof_threads: [1, 4]
      hosts:
        pi4-a:
          ansible_host: 10.0.0.41
          ansible_port: 2222
          ansible_python_interpreter: "{{ venv }}/bin/python"
          edgeprof_affinity: "0-3"
          edgeprof_runtime: onnxruntime
          edgeprof_known_hosts: lab_known_hosts
        pi4-b:
          ansible_python_interpreter: auto
          ansible_user: admin
    pi5:
      hosts:
        pi5-a:
          ansible_host: pi5.local
          ansible_python_interpreter: /usr/local/bin/python3.11
          edgeprof_connect_timeout_s: 3
          edgeprof_env: {OMP_NUM_THREADS: "4"}
other:
  hosts:
    desk:
"""

INI = """\
[pi4]
pi4-a ansible_host=10.0.0.41 ansible_port=2222 ansible_python_interpreter="{{ venv }}/bin/python" edgeprof_affinity=0-3
pi4-b ansible_python_interpreter=auto_silent ansible_user=admin

[pi5]
pi5-a ansible_host=pi5.local edgeprof_threads=2

[pi4:vars]
edgeprof_threads=[1, 4]

[lab:children]
pi4
pi5

[lab:vars]
ansible_user=pi
venv=/home/pi/ep
ansible_ssh_private_key_file=keys/lab_ed25519
"""


def _inv(tmp_path: Path, text: str, name: str = "hosts.yml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _by_name(specs):
    return {s.name: s for s in specs}


def test_yaml_inventory_groups_children_vars_and_templates(ansible, tmp_path):
    inv = _inv(tmp_path, YAML)
    specs = _by_name(inventory_targets(inv, "lab"))
    assert list(specs) == ["pi4-a", "pi4-b", "pi5-a"]  # children's hosts, inventory order
    a, b, c = specs["pi4-a"], specs["pi4-b"], specs["pi5-a"]
    assert (a.host, a.port, a.user) == ("10.0.0.41", 2222, "pi")
    assert a.python == "/home/pi/ep/bin/python"  # {{ venv }} from the lab group's vars
    assert a.identity_file == tmp_path / "keys" / "lab_ed25519"  # under the inventory's folder
    assert a.known_hosts == tmp_path / "lab_known_hosts"
    assert a.threads == (1, 4) and a.affinity == (0, 1, 2, 3) and a.runtime == "onnxruntime"
    assert a.source == inv
    assert (b.host, b.port, b.user, b.python) == ("pi4-b", None, "admin", "/usr/bin/python3")
    assert b.threads == (1, 4)  # group var of pi4
    assert c.host == "pi5.local" and c.python == "/usr/local/bin/python3.11"
    assert c.threads is None and c.connect_timeout_s == 3.0 and c.env == {"OMP_NUM_THREADS": "4"}
    assert [s.name for s in inventory_targets(inv, "pi4")] == ["pi4-a", "pi4-b"]
    assert sorted(s.name for s in inventory_targets(inv, "all")) == ["desk", "pi4-a", "pi4-b",
                                                                    "pi5-a"]


def test_ini_inventory_gives_the_same_targets(ansible, tmp_path):
    specs = _by_name(inventory_targets(_inv(tmp_path, INI, "hosts.ini"), "lab"))
    assert sorted(specs) == ["pi4-a", "pi4-b", "pi5-a"]
    a, b, c = specs["pi4-a"], specs["pi4-b"], specs["pi5-a"]
    assert (a.host, a.port, a.user, a.python) == ("10.0.0.41", 2222, "pi", "/home/pi/ep/bin/python")
    assert a.threads == (1, 4) and a.affinity == (0, 1, 2, 3)
    assert a.identity_file == tmp_path / "keys" / "lab_ed25519"
    assert (b.user, b.python) == ("admin", "/usr/bin/python3")  # auto_silent
    assert c.threads == (2,) and c.python == "/usr/bin/python3"  # no interpreter: the default


def test_group_vars_folder_beside_the_inventory(ansible, tmp_path):
    inv = _inv(tmp_path, "pi4:\n  hosts:\n    pi4-a:\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "pi4.yml").write_text(
        "base: /opt\nansible_python_interpreter: '{{ base }}/venv/bin/python'\n"
        "edgeprof_threads: 3\n")
    (spec,) = inventory_targets(inv, "pi4")
    assert spec.python == "/opt/venv/bin/python" and spec.threads == (3,)


def _error(inv: Path, group: str = "all") -> str:
    with pytest.raises(InputError) as ei:
        inventory_targets(inv, group)
    msg = str(ei.value)
    assert "\n" not in msg, msg
    return msg


def test_a_relative_interpreter_is_refused_in_one_line(ansible, tmp_path):
    inv = _inv(tmp_path, "pi4:\n  hosts:\n    pi4-a:\n      ansible_python_interpreter: python3\n")
    msg = _error(inv)
    assert str(inv) in msg and "pi4-a" in msg and "ansible_python_interpreter" in msg
    assert "'python3'" in msg and "absolute" in msg
    # still relative after templating
    inv = _inv(tmp_path, "pi4:\n  vars:\n    v: venv\n  hosts:\n    pi4-a:\n"
                         "      ansible_python_interpreter: '{{ v }}/bin/python'\n", "t.yml")
    assert "'venv/bin/python'" in _error(inv)
    # an undefined template variable
    inv = _inv(tmp_path, "pi4:\n  hosts:\n    pi4-a:\n"
                         "      ansible_python_interpreter: '{{ nope }}/bin/python'\n", "u.yml")
    msg = _error(inv)
    assert "pi4-a" in msg and "ansible_python_interpreter" in msg and "nope" in msg


@pytest.mark.parametrize("var, value, words", [
    ("edgeprof_threads", "0", ["edgeprof_threads", "1 to 256"]),
    ("edgeprof_threads", "'many'", ["edgeprof_threads", "integer"]),
    ("edgeprof_affinity", "'a-b'", ["edgeprof_affinity", "CPU"]),
    ("edgeprof_runtime", "tensorrt", ["edgeprof_runtime", "onnxruntime, litert"]),
    ("edgeprof_connect_timeout_s", "0", ["edgeprof_connect_timeout_s", "seconds"]),
    ("edgeprof_env", "{'1X': a}", ["edgeprof_env.1X", "environment variable"]),
    ("edgeprof_thread", "2", ["edgeprof_thread", "unknown", "edgeprof_threads"]),
    ("edgeprof_python", "/usr/bin/python3", ["edgeprof_python", "unknown"]),
    ("ansible_port", "70000", ["ansible_port", "65535"]),
    ("ansible_user", "'-oProxyCommand=x'", ["ansible_user", "not a user name"]),
])
def test_bad_host_vars_are_refused_naming_inventory_host_and_key(ansible, tmp_path, var, value,
                                                                  words):
    inv = _inv(tmp_path, f"pi4:\n  hosts:\n    pi4-b:\n    pi4-a:\n      {var}: {value}\n")
    msg = _error(inv, "pi4")
    assert msg.startswith(f"{inv}: host pi4-a: "), msg
    for w in words:
        assert w in msg, (w, msg)


def test_unknown_group_lists_the_groups_and_other_input_errors(ansible, tmp_path):
    inv = _inv(tmp_path, YAML)
    msg = _error(inv, "pi3")
    assert "'pi3'" in msg and "lab, other, pi4, pi5" in msg
    assert "no host 'nope'" in str(pytest.raises(InputError, inventory_target, inv, "nope").value)
    assert "no such inventory file" in _error(tmp_path / "missing.yml")
    bad = _inv(tmp_path, "lab:\n  hosts: [a, b\n", "broken.yml")
    assert "ansible-core" in _error(bad)
    empty = _inv(tmp_path, "[pi4]\n", "empty.ini")
    assert "no hosts" in _error(empty)
    assert "no hosts" in _error(_inv(tmp_path, "[pi4]\na\n[pi5]\n", "e2.ini"), "pi5")


def test_missing_ansible_core_is_one_line(tmp_path, monkeypatch):
    for mod in ("ansible", "ansible.inventory.manager", "ansible.parsing.dataloader",
                "ansible.template", "ansible.vars.manager"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(InputError) as ei:
        inventory_targets(_inv(tmp_path, YAML), "lab")
    assert str(ei.value) == MISSING == \
        "inventories need ansible-core: pip install 'edgeprof[inventory]'"


def test_get_target_and_targets_from_inventory_build_ssh_targets(ansible, tmp_path):
    from edgeprof.targets.ssh import SshTarget

    inv = _inv(tmp_path, YAML)
    tgts = targets_from_inventory(inv, "pi4")
    assert [t.name for t in tgts] == ["pi4-a", "pi4-b"]
    assert all(isinstance(t, SshTarget) for t in tgts)  # nothing connected yet
    assert tgts[0].threads == (1, 4) and tgts[0].group_key == ("ssh", "10.0.0.41", 2222)
    t = get_target("pi5-a", inventory=inv, affinity=[1])
    assert isinstance(t, SshTarget) and t.spec.host == "pi5.local" and t.affinity == (1,)
    assert get_target("local", inventory=inv).name == "local"


def test_targets_list_with_an_inventory(ansible, tmp_path):
    inv = _inv(tmp_path, YAML.replace("edgeprof_connect_timeout_s: 3",
                                      "edgeprof_connect_timeout_s: -1"))
    r = CliRunner().invoke(cli, ["targets", "list", "--inventory", str(inv), "--group", "lab"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert any(ln.startswith("pi4-a") and "pi@10.0.0.41:2222" in ln
               and "/home/pi/ep/bin/python" in ln and "1,4" in ln for ln in lines), r.output
    assert any(ln.startswith("pi5-a") and "(invalid)" in ln
               and "edgeprof_connect_timeout_s" in ln for ln in lines), r.output
    assert "desk" not in r.output and "3 hosts" in r.output
    r = CliRunner().invoke(cli, ["targets", "list", "--inventory", str(inv), "--group", "pi3"])
    assert r.exit_code != 0 and "lab, other, pi4, pi5" in r.output
    r = CliRunner().invoke(cli, ["targets", "list", "--group", "pi4"])
    assert r.exit_code == 2 and "--inventory" in r.output


# ---------------------------------------------------------------------------------------------
# End to end: an inventory pointing at a real sshd on 127.0.0.1
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require(HAVE_ANSIBLE, "ansible-core is missing: pip install 'edgeprof[inventory]'")
    require(S.sshd_available(), "OpenSSH server (/usr/sbin/sshd, ssh-keygen, root) is missing: "
            "apt-get install openssh-server")
    require(BOARD_PYTHON.exists(), f"{BOARD_PYTHON} is missing: run `make board-env`")
    pytest.importorskip("asyncssh")
    root = tmp_path_factory.mktemp("lab")
    key = S.keygen(root / "user_key")
    d = S.Sshd(root / "sshd", [key]).start()
    (root / "known_hosts").write_text(S.known_hosts_line(d.port, d.host_key))
    yield root, d, key
    d.stop()


def test_targets_check_every_host_of_an_inventory_group(lab):
    root, d, key = lab
    venv = BOARD_PYTHON.parent.parent
    inv = _inv(root, f"""\
lab:
  vars:
    ansible_host: 127.0.0.1
    ansible_port: {d.port}
    ansible_user: root
    ansible_ssh_private_key_file: user_key
    edgeprof_known_hosts: known_hosts
    board_venv: {venv}
  children:
    pi4:
      hosts:
        pi4-a:
          ansible_python_interpreter: "{{{{ board_venv }}}}/bin/python"
          edgeprof_work_dir: {root / 'work-a'}
          edgeprof_threads: 2
        pi4-b:
          ansible_python_interpreter: "{BOARD_PYTHON}"
          edgeprof_work_dir: {root / 'work-b'}
    pi5:
      hosts:
        pi5-a:
          ansible_port: {S.free_port()}
          edgeprof_connect_timeout_s: 2
""")
    r = CliRunner().invoke(cli, ["targets", "check", "--inventory", str(inv), "--group", "pi4"])
    assert r.exit_code == 0, r.output
    assert r.output.count("ready: pi4-") == 2 and "ready: all 2 hosts of group pi4" in r.output
    for word in ("pi4-a  root@127.0.0.1", "pi4-b  root@127.0.0.1", "architecture", "1.26",
                 f"({venv}/bin/python)"):
        assert word in r.output, (word, r.output)
    assert (root / "work-a").is_dir() and (root / "work-b").is_dir()
    # one host by name
    r = CliRunner().invoke(cli, ["targets", "check", "pi4-b", "--inventory", str(inv)])
    assert r.exit_code == 0 and "ready: pi4-b can profile" in r.output, r.output
    # the lab: pi5-a's port has no sshd: reported in one line, the others still checked, exit 1
    r = CliRunner().invoke(cli, ["targets", "check", "--inventory", str(inv), "--group", "lab"])
    assert r.exit_code == 1, r.output
    assert r.output.count("ready: pi4-") == 2 and "pi5-a" in r.output
    assert "1 of 3 hosts of group lab in" in r.output and "cannot profile: pi5-a" in r.output
