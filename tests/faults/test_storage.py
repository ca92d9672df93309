"""Faults on the storage side, as a user meets them: a torn last line, a full disk, a file size
limit, a damaged cache entry, a killed build's staging folder, two runs on one results file,
special output paths and unwritable ones. Each ends in one line naming what happened and where,
loses no finished measurement, and a rerun measures only what is missing.

The measuring side's faults (SIGINT, SIGKILL, a board's sshd killed, out of memory, a worker's
SIGSEGV) are kept from regressing by tests/targets/test_worker.py, tests/targets/test_ssh.py and
tests/sweeps/test_sweep.py."""
from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.passes.base import PASS_CALLS
from edgeprof.results import ResultStore, read_records
from edgeprof.variants.cache import Cache
from tests.conftest import FAST, require

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def profile(models_dir: Path, results: Path, *extra: str, models=("cnn.onnx",)):
    return run("profile", *[str(models_dir / m) for m in models], "--results", str(results),
               *FAST, *extra)


def one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


# ---- 1. a torn last line -----------------------------------------------------------------------

def test_torn_last_line_is_set_aside_and_the_file_stays_readable(models_dir, tmp_path):
    res = tmp_path / "r.jsonl"
    assert profile(models_dir, res).exit_code == 0
    good = res.read_bytes()
    # a kill or a full disk mid-write leaves an unterminated partial record
    torn = good[: len(good) // 3]
    res.write_bytes(good + torn)
    assert len(list(read_records(res))) == 1          # readers skip the torn tail
    r = profile(models_dir, res, models=("cnn.onnx", "mlp.onnx"))
    assert r.exit_code == 0, r.output + r.stderr
    recs = list(read_records(res))                    # nothing glued onto the partial line
    assert [x["model"]["name"] for x in recs] == ["cnn.onnx", "mlp.onnx"]
    assert "skipped" in r.stdout                      # cnn.onnx resumed, not re-measured
    assert (tmp_path / "r.jsonl.torn").read_bytes() == torn + b"\n"  # kept, never dropped
    assert res.read_bytes().startswith(good)


def test_complete_record_missing_only_its_newline_is_kept(models_dir, tmp_path):
    res = tmp_path / "r.jsonl"
    assert profile(models_dir, res).exit_code == 0
    res.write_bytes(res.read_bytes().rstrip(b"\n"))
    r = profile(models_dir, res, models=("cnn.onnx", "mlp.onnx"))
    assert r.exit_code == 0, r.output
    assert len(list(read_records(res))) == 2 and not (tmp_path / "r.jsonl.torn").exists()


# ---- 2. disk full, file size limit -------------------------------------------------------------

@pytest.fixture
def full_disk(tmp_path):
    """A real 64 KiB tmpfs filled to the last byte (needs root, as CI runs)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    ok = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
        capture_output=True).returncode == 0
    require(ok, "mounting a small tmpfs needs root (CI runs as root)")
    try:
        with open(mnt / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 1024)
                    f.flush()
            except OSError:
                pass
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_names_the_file_spills_the_records_and_a_rerun_resumes(
        models_dir, tmp_path, full_disk):
    res = full_disk / "r.jsonl"
    r = profile(models_dir, res, models=("cnn.onnx", "mlp.onnx"))
    assert r.exit_code == 1
    msg = one_line(r.stderr)
    assert msg.startswith(f"error: disk full writing {res} (") and "free)" in msg
    assert "0 record(s) written, 2 that did not fit saved to " in msg
    spill = Path(msg.split("saved to ")[1].split(";")[0])
    # in the order the settings finished (the stop rule may end either first)
    assert sorted(x["model"]["name"] for x in read_records(spill)) == ["cnn.onnx", "mlp.onnx"]
    assert res.read_bytes() == b""                    # all or nothing: no partial line
    # the user moves the results where there is room and appends the spilled records: a rerun
    # measures nothing again
    moved = tmp_path / "r.jsonl"
    moved.write_bytes(res.read_bytes() + spill.read_bytes())
    r = profile(models_dir, moved, models=("cnn.onnx", "mlp.onnx"))
    assert r.exit_code == 0 and r.stdout.count("skipped") == 2, r.output
    spill.unlink()


def test_file_size_limit_is_its_own_message_and_the_records_reach_stderr(models_dir, tmp_path):
    """RLIMIT_FSIZE makes every write past the limit fail with EFBIG, the spill file's too:
    the records then go to stderr, still whole."""
    res = tmp_path / "r.jsonl"
    res.write_bytes(b"")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
    p = subprocess.run([sys.executable, "-m", "edgeprof", "profile", str(models_dir / "cnn.onnx"),
                        "--results", str(res), *FAST], capture_output=True, text=True,
                       preexec_fn=limit, cwd=ROOT)
    assert p.returncode == 1, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    rec = json.loads(lines[0])                         # the spilled record, whole
    assert rec["kind"] == "latency" and rec["model"]["name"] == "cnn.onnx"
    assert lines[-1].startswith(f"error: file size limit (ulimit -f) reached writing {res}")
    assert "printed to stderr" in lines[-1] and len(lines) == 2
    assert res.read_bytes() == b""


def test_report_on_a_full_disk_leaves_no_half_written_plot(models_dir, tmp_path, full_disk):
    res = tmp_path / "r.jsonl"
    assert profile(models_dir, res).exit_code == 0
    out = full_disk / "report"
    (full_disk / "filler").unlink()
    out.mkdir()
    with open(full_disk / "filler", "wb", buffering=0) as f:  # full again, with the folder in place
        try:
            while True:
                f.write(b"\0" * 1024)
                f.flush()
        except OSError:
            pass
    r = run("report", str(res), "--out", str(out))
    assert r.exit_code == 1
    assert one_line(r.stderr).startswith("error: disk full writing ")
    assert not [p for p in out.iterdir() if p.stat().st_size == 0 or p.name.endswith(".tmp")]


# ---- 3. a damaged cache entry ------------------------------------------------------------------

def test_damaged_variant_is_rebuilt_with_a_warning_and_refused_by_profile(models_dir, tmp_path):
    cache = tmp_path / "cache"
    args = ["quantize", str(models_dir / "cnn.onnx"), "--precision", "fp16", "--cache-dir",
            str(cache), "--json", str(tmp_path / "v.json")]
    assert run(*args).exit_code == 0
    v = json.loads((tmp_path / "v.json").read_text())
    model = cache / "variants" / v["id"] / "model.onnx"
    assert v["model_bytes"] == model.stat().st_size and len(v["model_sha256"]) == 64
    good = model.read_bytes()
    model.write_bytes(good[:100])                       # truncated
    r = run("profile", v["id"][:12], "--cache-dir", str(cache), *FAST)
    assert r.exit_code == 1
    assert "is damaged: its model file is 100 bytes" in one_line(r.stderr)
    before = PASS_CALLS["quantize"]
    r = run(*args)
    assert r.exit_code == 0, r.output + r.stderr
    assert PASS_CALLS["quantize"] == before + 1 and "damaged" in r.stderr and "rebuilding" in r.stderr
    assert model.read_bytes() == good
    # same size, other bytes: the hash tells
    model.write_bytes(bytes(len(good)))
    r = run("profile", v["id"][:12], "--cache-dir", str(cache), *FAST)
    assert r.exit_code == 1 and "sha256 differs" in r.stderr
    assert run(*args).exit_code == 0 and model.read_bytes() == good


def test_killed_builds_staging_folders_are_removed_live_ones_kept(models_dir, tmp_path):
    cache = Cache(tmp_path / "cache")
    cache.variants_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = cache.variants_dir / f".staging-{dead.pid}-abc"
    orphan.mkdir()
    (orphan / "model.onnx").write_bytes(b"half")
    live = cache.variants_dir / f".staging-{os.getpid()}-xyz"
    live.mkdir()
    r = run("quantize", str(models_dir / "cnn.onnx"), "--precision", "fp16", "--cache-dir",
            str(cache.root))
    assert r.exit_code == 0, r.output
    assert not orphan.exists() and live.exists()


# ---- 4. two runs on one results file -----------------------------------------------------------

class OtherRun:
    """Another process holding the lock on an output, as a second edgeprof run would."""

    def __init__(self, path: Path, flag: str):
        code = ("import sys; from edgeprof.storage import OutputLock; "
                "lock = OutputLock(sys.argv[1], sys.argv[2]); print('held', flush=True); "
                "sys.stdin.readline()")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(path), flag],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=ROOT)
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(10)


def test_second_run_on_a_locked_results_file_stops_or_waits(models_dir, tmp_path):
    res = tmp_path / "r.jsonl"
    held = OtherRun(res, "--results")
    r = profile(models_dir, res)
    assert r.exit_code == 1
    assert one_line(r.stderr) == (f"error: --results {res} is in use by another edgeprof run; "
                                  "wait for it to finish, or rerun with --wait to queue behind it")
    assert not res.exists() or not res.read_bytes()
    threading.Timer(0.5, held.release).start()
    t0 = time.monotonic()
    r = profile(models_dir, res, "--wait")
    assert r.exit_code == 0 and time.monotonic() - t0 >= 0.4
    assert len(list(read_records(res))) == 1


def test_second_sweep_on_one_report_folder_is_refused(tmp_path):
    from tests.sweep_files import demo_sweep
    f = demo_sweep(tmp_path / "s.toml", measure="latency = false\naccuracy_limit = 50")
    out = tmp_path / "out"
    out.mkdir()
    held = OtherRun(out / "results.jsonl", "report folder")
    try:
        r = run("sweep", str(f), "--out", str(out), "--cache-dir", str(tmp_path / "c"), "-q")
        assert r.exit_code == 1 and "is in use by another edgeprof run" in one_line(r.stderr)
    finally:
        held.release()


# ---- 5. special output paths -------------------------------------------------------------------

def test_json_onto_a_device_writes_through_and_reports_enospc(models_dir, tmp_path):
    require(os.path.exists("/dev/full") and os.access("/dev/full", os.W_OK), "/dev/full")
    r = run("profile", str(models_dir / "cnn.onnx"), "--json", "/dev/full", *FAST)
    assert r.exit_code == 1 and one_line(r.stderr).startswith("error: disk full writing /dev/full")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)   # the device node is still a device
    r = run("profile", str(models_dir / "cnn.onnx"), "--json", "/dev/null", *FAST)
    assert r.exit_code == 0 and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_json_into_a_fifo_and_through_a_symlink(models_dir, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("doc", fifo.read_bytes()))
    reader.start()
    r = run("profile", str(models_dir / "cnn.onnx"), "--json", str(fifo), *FAST)
    reader.join(10)
    assert r.exit_code == 0 and json.loads(got["doc"])["records"][0]["kind"] == "latency"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    target = tmp_path / "real.json"
    link = tmp_path / "link.json"
    link.symlink_to(target)
    r = run("profile", str(models_dir / "cnn.onnx"), "--json", str(link), *FAST)
    assert r.exit_code == 0 and link.is_symlink()
    assert json.loads(target.read_text())["records"][0]["kind"] == "latency"


def test_json_to_standard_output_and_results_refused_there(models_dir, tmp_path):
    p = subprocess.run([sys.executable, "-m", "edgeprof", "profile", str(models_dir / "cnn.onnx"),
                        "--json", "-", *FAST], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["records"][0]["kind"] == "latency"   # only data on stdout
    assert "p50" in p.stderr                                         # the table went to stderr
    r = run("profile", str(models_dir / "cnn.onnx"), "--results", "-", *FAST)
    assert r.exit_code == 1 and "standard output cannot hold a results file" in r.stderr


# ---- 6. output paths checked before measuring ----------------------------------------------------

@pytest.mark.parametrize("command", ["profile", "robustness", "quantize", "compare"])
def test_unwritable_output_path_fails_before_any_work(models_dir, image_data, tmp_path, command):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    bad = str(blocker / "out.json")                    # its folder is a file
    model = str(models_dir / "cnn.onnx")
    args = {"profile": ["profile", model, *FAST],
            "robustness": ["robustness", model, "--data", str(image_data), "--corruptions",
                           "gaussian_noise", "--severities", "1", "-q"],
            "quantize": ["quantize", model, "--precision", "fp16", "--cache-dir",
                         str(tmp_path / "c")],
            "compare": ["compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]}[command]
    t0 = time.monotonic()
    r = run(*args, "--json", bad)
    assert r.exit_code in (1, 2)
    assert one_line(r.stderr) == f"error: --json {bad}: {blocker} is not a folder"
    assert not (tmp_path / "c").exists()               # nothing was built
    assert time.monotonic() - t0 < 30


# ---- 7. wording --------------------------------------------------------------------------------

def test_several_failed_configurations_print_one_line(models_dir, tmp_path):
    res = tmp_path / "r.jsonl"
    r = profile(models_dir, res, "--batch", "2,3", models=("cnn_fixed.onnx",))
    assert r.exit_code == 1
    line = one_line(r.stderr)
    assert line.startswith("error: 2 of 2 configurations failed (every error is a record in ")
    assert sum(x["kind"] == "error" for x in read_records(res)) == 2


def test_an_append_cut_short_is_truncated_away(tmp_path):
    """A write that the file size limit cuts after a few bytes: the store truncates the file
    back to its last whole record (the spill file too), so no partial line is ever left."""
    res = tmp_path / "r.jsonl"
    code = f"""
import json, resource, sys
from edgeprof.results import ResultStore
store = ResultStore({str(res)!r})
store.append({{"schema": "edgeprof.result/1", "kind": "env", "variant_id": "a"}})
size = store.path.stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, size + 10))
store.append({{"schema": "edgeprof.result/1", "kind": "env", "variant_id": "b" * 100}})
print(json.dumps({{"size": size, "spilled": store.spilled, "spill": str(store.spill_path)}}))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert res.stat().st_size == out["size"] and out["spilled"] == 1
    assert [r["variant_id"] for r in read_records(res)] == ["a"]
    assert out["spill"] == "<stderr>" and json.loads(p.stderr)["variant_id"] == "b" * 100
