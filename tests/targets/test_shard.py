"""A lab of boards: robustness and accuracy rows sharded across three real loopback sshd boards
of one inventory group (each in its own half-core cgroup), merged into one board's figures; a
board killed mid-run; a group with an older onnxruntime refused; --max-boards."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.data import load_npz
from edgeprof.demo import demo_paths
from edgeprof.errors import InputError
from edgeprof.inputspec import load_spec, worker_spec
from edgeprof.measure.accuracy import outputs_on
from edgeprof.models import open_model
from edgeprof.robust.evaluate import AttackConfig, RobustnessConfig, evaluate_robustness
from edgeprof.targets import get_target
from edgeprof.targets.shard import BoardGroup, board_group, compatibility_problem
from tests.conftest import require
from tests.targets import sshd as S

ROOT = Path(__file__).resolve().parents[2]
BOARD_PYTHON = ROOT / ".venv-board" / "bin" / "python"
OLD_PYTHON = ROOT / ".venv-board-old" / "bin" / "python"  # onnxruntime 1.22 (make board-env-old)
HAVE_ANSIBLE = importlib.util.find_spec("ansible") is not None
BOARDS = ("b1", "b2", "b3")
# fields that say where and when, not what was measured
VOLATILE = {"target", "lab", "created_utc", "edgeprof_version"}


class Lab:
    def __init__(self, root: Path):
        self.root = root
        self.key = S.keygen(root / "user_key")
        self.sshds: dict[str, S.Sshd] = {}
        self.cgroups: list[S.LimitedCgroups] = []
        self.known = root / "known_hosts"
        self.known.write_text("")

    def board(self, name: str) -> S.Sshd:
        cg = S.LimitedCgroups(f"edgeprof-lab-{os.getpid()}-{name}")
        self.cgroups.append(cg)
        d = S.Sshd(self.root / f"sshd-{name}", [self.key]).start(cg.paths)
        with open(self.known, "a") as f:
            f.write(S.known_hosts_line(d.port, d.host_key))
        self.sshds[name] = d
        return d

    def yaml(self, groups: dict[str, dict[str, Path]]) -> Path:
        lines = ["lab:", "  vars:", "    ansible_host: 127.0.0.1", "    ansible_user: root",
                 f"    ansible_ssh_private_key_file: {self.key}",
                 f"    edgeprof_known_hosts: {self.known}", "  children:"]
        for g, hosts in groups.items():
            lines += [f"    {g}:", "      hosts:"]
            for h, python in hosts.items():
                lines += [f"        {h}:", f"          ansible_port: {self.sshds[h].port}",
                          f"          ansible_python_interpreter: {python}",
                          f"          edgeprof_work_dir: {self.root / ('work-' + h)}"]
        p = self.root / f"hosts-{'-'.join(groups)}.yml"
        p.write_text("\n".join(lines) + "\n")
        return p

    def ini(self, group: str, hosts: dict[str, Path]) -> Path:
        lines = [f"[{group}]"] + [
            f"{h} ansible_port={self.sshds[h].port} ansible_python_interpreter={py} "
            f"edgeprof_work_dir={self.root / ('work-' + h)}" for h, py in hosts.items()]
        lines += [f"[{group}:vars]", "ansible_host=127.0.0.1", "ansible_user=root",
                  f"ansible_ssh_private_key_file={self.key}", f"edgeprof_known_hosts={self.known}"]
        p = self.root / f"hosts-{group}.ini"
        p.write_text("\n".join(lines) + "\n")
        return p

    def stop(self) -> None:
        for d in self.sshds.values():
            d.stop()
        for cg in self.cgroups:
            cg.remove()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require(HAVE_ANSIBLE, "ansible-core is missing: pip install 'edgeprof[inventory]'")
    require(S.sshd_available(), "OpenSSH server (/usr/sbin/sshd, ssh-keygen, root) is missing: "
            "apt-get install openssh-server")
    require(S.cgroup_v1_writable(), "cgroup v1 cpu and memory controllers are not writable")
    require(BOARD_PYTHON.exists(), f"{BOARD_PYTHON} is missing: run `make board-env`")
    pytest.importorskip("asyncssh")
    lab = Lab(tmp_path_factory.mktemp("lab"))
    try:
        for b in BOARDS:
            lab.board(b)
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="module")
def demo():
    p = demo_paths()
    ref = open_model(p["onnx"], input_spec=load_spec(p["preprocess"]).to_dict())
    return p, ref, load_npz(p["eval"])


CONFIG = RobustnessConfig(corruptions=["gaussian_noise", "contrast"], severities=[1, 4], limit=48,
                          batch=8, attacks=[AttackConfig("square", [("8/255", 8 / 255)], queries=12,
                                                         limit=24)])


def _figures(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in VOLATILE}


@pytest.fixture(scope="module")
def one_board(lab, demo, tmp_path_factory):
    """The reference: the same rows evaluated by board b1 alone."""
    _, ref, data = demo
    inv = lab.yaml({"pi4": {b: BOARD_PYTHON for b in BOARDS}})
    t = get_target("b1", inventory=inv)
    try:
        out = evaluate_robustness([ref], data, CONFIG, target=t, baseline=ref,
                                  cache_dir=tmp_path_factory.mktemp("cache1"))
    finally:
        t.close()
    return out.records[0]


def test_sharded_robustness_equals_one_board(lab, demo, one_board, tmp_path):
    p, ref, data = demo
    inv = lab.yaml({"pi4": {b: BOARD_PYTHON for b in BOARDS}})
    group = board_group(inv, "pi4")
    sessions: dict[str, int] = {}

    def progress(desc: str, frac: float) -> None:  # SSH connections open on each board's sshd
        for b in BOARDS:
            sessions[b] = max(sessions.get(b, 0), len(lab.sshds[b].session_pids()))

    try:
        out = evaluate_robustness([ref], data, CONFIG, target=group, baseline=ref,
                                  cache_dir=tmp_path, progress=progress)
        rec = out.records[0]
        # accuracy through the same target: the per-row outputs of a whole set, merged
        spec = worker_spec(load_spec(p["preprocess"]), "uint8")
        npz = str(p["eval"])
        sharded = outputs_on(group, p["onnx"], group.stage(npz), 40, spec, "accuracy")
    finally:
        group.close()
    assert rec["target"] == "pi4" and rec["n"] == one_board["n"] == 48
    lab_facts = rec["lab"]
    assert lab_facts["boards"] == list(BOARDS) and lab_facts["lost"] == {}
    assert set(lab_facts["rows_by_board"]) == set(BOARDS)  # every board evaluated rows
    assert _figures(rec) == _figures(one_board)  # same n, same CIs, same attack results
    assert rec["attacks"]["square"]["8/255"]["n"] == 24
    assert sessions == {b: 1 for b in BOARDS}  # one SSH connection per board
    t = get_target("b2", inventory=inv)
    try:
        single = outputs_on(t, p["onnx"], t.stage(npz), 40, spec, "accuracy")
    finally:
        t.close()
    assert all(np.array_equal(sharded[k], single[k]) for k in single)


def test_a_board_killed_mid_run_has_its_shard_finished_by_the_others(lab, demo, one_board,
                                                                     tmp_path):
    _, ref, data = demo
    lab.board("b4")  # a board of its own, killed below
    # two boards at work (b1, b4), b2 the spare that steps in when b4 goes down
    inv = lab.ini("pi4", {"b1": BOARD_PYTHON, "b4": BOARD_PYTHON, "b2": BOARD_PYTHON})
    group = board_group(inv, "pi4", max_boards=2)
    killed = []

    def progress(desc: str, frac: float) -> None:
        if "gaussian_noise 4" in desc and not killed:  # mid-run: clean and one cell are done
            killed.append(desc)
            lab.sshds["b4"].stop()  # sshd and its sessions, the worker with them

    try:
        out = evaluate_robustness([ref], data, CONFIG, target=group, baseline=ref,
                                  cache_dir=tmp_path, progress=progress)
    finally:
        group.close()
    rec = out.records[0]
    assert killed and set(rec["lab"]["lost"]) == {"b4"}
    # b4 did rows before it went down, b2 only after
    assert set(rec["lab"]["rows_by_board"]) == {"b1", "b4", "b2"}, rec["lab"]
    assert _figures(rec) == _figures(one_board)


def test_a_group_with_an_older_onnxruntime_is_refused_in_one_line(lab, demo, tmp_path):
    require(OLD_PYTHON.exists(), f"{OLD_PYTHON} is missing: run `make board-env-old`")
    p, _, _ = demo
    if "old" not in lab.sshds:
        lab.board("old")  # a real second venv: numpy 1.26 and onnxruntime 1.22
    inv = lab.yaml({"mixed": {"b1": BOARD_PYTHON, "b2": BOARD_PYTHON, "old": OLD_PYTHON}})
    r = CliRunner().invoke(cli, ["robustness", str(p["onnx"]), "--data", str(p["eval"]),
                                 "--preprocess", str(p["preprocess"]), "--inventory", str(inv),
                                 "--group", "mixed", "--corruptions", "contrast", "--limit", "8",
                                 "--cache-dir", str(tmp_path), "-q"])
    assert r.exit_code != 0
    msg = r.output.strip()
    assert len(msg.splitlines()) == 1 and "Traceback" not in msg, msg
    assert "group mixed" in msg and "onnxruntime (b1, b2 1.32" in msg and "old 1.22" in msg, msg


def test_cli_shards_a_group_with_max_boards(lab, demo, one_board, tmp_path):
    p, _, _ = demo
    inv = lab.yaml({"pi4": {b: BOARD_PYTHON for b in BOARDS}})
    out = tmp_path / "r.json"
    r = CliRunner().invoke(cli, ["robustness", str(p["onnx"]), "--data", str(p["eval"]),
                                 "--preprocess", str(p["preprocess"]), "--inventory", str(inv),
                                 "--group", "pi4", "--max-boards", "2", "--corruptions",
                                 "gaussian_noise,contrast", "--severities", "1,4", "--limit", "48",
                                 "--batch", "8", "--cache-dir", str(tmp_path), "--json", str(out),
                                 "-q"])
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text())["records"][0]
    assert set(rec["lab"]["rows_by_board"]) == {"b1", "b2"}  # at most two at once, no spare used
    assert rec["target"] == "pi4" and "pi4" in r.output  # the table names the group
    assert rec["clean_accuracy"] == one_board["clean_accuracy"]
    assert rec["per_corruption"] == one_board["per_corruption"]
    for args, words in ((["--group", "pi4"], "--inventory"),
                        (["--inventory", str(inv), "--max-boards", "2"], "--group"),
                        (["--inventory", str(inv), "--group", "nope"], "no group 'nope'")):
        r = CliRunner().invoke(cli, ["robustness", str(p["onnx"]), "--data", str(p["eval"]),
                                     "--cache-dir", str(tmp_path), "-q"] + args)
        assert r.exit_code != 0 and words in r.output and "Traceback" not in r.output, r.output


def test_compatibility_names_every_difference():
    env = {"cpu_model": "Cortex-A72", "machine": "aarch64",
           "versions": {"numpy": "1.26.4", "onnxruntime": "1.32.0", "ai_edge_litert": None}}
    other = dict(env, cpu_model="Cortex-A76", versions=dict(env["versions"], onnxruntime="1.22.1"))
    assert compatibility_problem("lab", {"a": env, "b": env}) is None
    msg = compatibility_problem("lab", {"a": env, "b": env, "c": other})
    assert msg.startswith("group lab: its boards differ in cpu model (a, b Cortex-A72; c "
                          "Cortex-A76), onnxruntime (a, b 1.32.0; c 1.22.1)")
    with pytest.raises(InputError, match="at least 1"):
        BoardGroup([object()], "g", max_boards=0)


def _lat(vid: str, target: str, p50: float, group: str | None = "pi4") -> dict:
    from edgeprof.results import new_record
    rec = new_record("latency", variant_id=vid, root_id="v1", target=target, threads=1, batch=1,
                     data_sha256=None, model={"name": f"{vid}.onnx", "model_bytes": 10},
                     samples_s=[p50] * 5,
                     stats={"p50_s": p50, "p50_ci_s": [p50 * 0.99, p50 * 1.01], "p99_s": p50,
                            "p99_ci_s": [p50, p50], "p90_s": p50, "n": 5})
    if group:
        rec["target_group"] = group
    return rec


def test_recommendation_is_per_group_from_the_boards_median_and_spread_is_per_board():
    from edgeprof.measure.spread import board_spread
    from edgeprof.sweeps.decide import decide_records

    # v2 is faster on b1 only: per board, b1 would pick it; the group (median) picks v1
    recs = [_lat("v1", "b1", 2e-3), _lat("v1", "b2", 2e-3), _lat("v1", "b3", 2.2e-3),
            _lat("v2", "b1", 1e-3), _lat("v2", "b2", 3e-3), _lat("v2", "b3", 3.1e-3),
            _lat("v1", "desk", 5e-4, None), _lat("v2", "desk", 4e-4, None)]
    dec = decide_records(recs, batch=1)
    assert set(dec["recommendations"]) == {"pi4", "desk"}
    pi4 = dec["recommendations"]["pi4"]
    assert pi4["chosen"] == "v1" and dec["recommendations"]["desk"]["chosen"] == "v2"
    assert any("group of 3 boards" in reason for reason in pi4["reasons"])
    spread = {e["variant_id"]: e for e in board_spread(recs)}
    assert set(spread) == {"v1", "v2"}  # desk is in no group
    v2 = spread["v2"]
    assert v2["median_p50_s"] == 3e-3 and v2["fastest"] == "b1" and v2["slowest"] == "b3"
    assert v2["spread_s"] == pytest.approx(2.1e-3) and v2["beyond_noise"]
    assert v2["relative_spread"] == pytest.approx(0.7)


def test_profile_a_group_names_every_board_and_its_spread(lab, demo, tmp_path):
    p, _, _ = demo
    inv = lab.yaml({"pi4": {b: BOARD_PYTHON for b in ("b1", "b2")}})
    out = tmp_path / "p.json"
    r = CliRunner().invoke(cli, ["profile", str(p["onnx"]), "--inventory", str(inv), "--group",
                                 "pi4", "--max-boards", "1", "--processes", "1", "--min-runs",
                                 "20", "--min-time", "0s", "--max-time", "0.5s", "--rel-ci", "0",
                                 "--cold-starts", "0", "--json", str(out), "-q"])
    assert r.exit_code == 0, r.output
    recs = json.loads(out.read_text())["records"]
    assert sorted(x["target"] for x in recs) == ["b1", "b2"]
    assert {x["target_group"] for x in recs} == {"pi4"}
    rows = [ln for ln in r.output.splitlines() if "fashion_cnn" in ln]
    assert any(" b1 " in ln for ln in rows) and any(" b2 " in ln for ln in rows), r.output
    assert "boards of a group" in r.output and any("pi4" in ln and "b1" in ln and "b2" in ln
                                                   for ln in rows), r.output


def test_a_model_every_board_refuses_is_an_error_not_a_lost_board(lab, demo, tmp_path):
    from edgeprof.errors import WorkerError

    p, _, _ = demo
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    spec = worker_spec(load_spec(p["preprocess"]), "uint8")
    group = board_group(lab.yaml({"pi4": {b: BOARD_PYTHON for b in ("b1", "b2")}}), "pi4")
    try:
        with group.start_worker("refused") as w:
            w.load(group.stage(p["onnx"]), npz=group.stage(p["eval"]), spec=spec)
            workers = dict(w.workers)
            with pytest.raises(WorkerError) as ei:
                w.load(group.stage(bad))
            # the same workers load the next model (a pool reuses them) and still predict
            w.load(group.stage(p["onnx"]), npz=group.stage(p["eval"]), spec=spec)
            out = w.predict_rows(group.stage(p["eval"]), 16, batch=4, spec=spec)
            assert w.workers == workers and len(next(iter(out.values()))) == 16
    finally:
        group.close()
    assert "every board was lost" not in str(ei.value) and group.lost == {}, str(ei.value)


def test_a_sweep_over_an_inventory_group_recommends_once_for_the_group(lab, tmp_path):
    from edgeprof.results import read_records
    from tests.sweep_files import demo_sweep

    inv = lab.yaml({"pi4": {b: BOARD_PYTHON for b in ("b1", "b2")}})
    sweep = demo_sweep(tmp_path / "s.toml", name="lab", precisions='["fp32"]',
                       require="p50<=10s", min_time="0.05s",
                       measure=f'inventory = "{inv}"\ngroup = "pi4"\naccuracy_limit = 20\n'
                       "processes = 1")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["sweep", str(sweep), "--out", str(out), "--cache-dir",
                                 str(tmp_path / "cache"), "-q"])
    assert r.exit_code == 0, r.output
    lat = [x for x in read_records(out / "results.jsonl") if x["kind"] == "latency"]
    assert sorted((x["target"], x.get("target_group")) for x in lat) == \
        [("b1", "pi4"), ("b2", "pi4")]
    dec = json.loads((out / "decision.json").read_text())
    assert set(dec["recommendations"]) == {"pi4"}  # one board class, not one per board
    assert any("group of 2 boards" in reason for reason in dec["recommendations"]["pi4"]["reasons"])
