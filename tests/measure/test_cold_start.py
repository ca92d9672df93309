"""Cold start is measured in fresh processes, apart from warm latency."""
from __future__ import annotations

import os

from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.errors import WorkerError
from edgeprof.results import read_records
from edgeprof.targets.local import LocalTarget
from tests.conftest import FAST, TFLITE

import pytest


def test_cold_start_runs_in_a_fresh_process_each_time(models_dir):
    t = LocalTarget()
    a = t.cold_start({"path": str(models_dir / "cnn.onnx")})
    b = t.cold_start({"path": str(models_dir / "cnn.onnx")})
    for c in (a, b):
        # every part is a positive duration and the whole process took longer than its parts
        parts = c["numpy_import_s"] + c["runtime_import_s"] + c["session_s"] + c["first_inference_s"]
        assert min(c["numpy_import_s"], c["runtime_import_s"], c["session_s"],
                   c["first_inference_s"]) > 0
        assert c["total_s"] > c["in_process_s"] >= parts
    # a fresh process imports numpy again: nothing is shared between cold starts
    assert a["numpy_import_s"] > 1e-3 and b["numpy_import_s"] > 1e-3


def test_cold_start_tflite_and_error(models_dir):
    t = LocalTarget()
    assert t.cold_start({"path": str(TFLITE / "tiny_cnn_int8.tflite")})["first_inference_s"] > 0
    with pytest.raises(WorkerError, match="dynamic dims"):
        t.cold_start({"path": str(models_dir / "dyn.onnx")})


def test_profile_records_cold_start_apart_from_warm_latency(models_dir, tmp_path):
    res = tmp_path / "r.jsonl"
    r = CliRunner().invoke(cli, ["profile", str(models_dir / "cnn.onnx"), *FAST,
                                 "--cold-starts", "2", "--results", str(res)])
    assert r.exit_code == 0, r.output
    rec = next(read_records(res))
    assert len(rec["cold_start"]["total_s"]) == 2
    assert min(rec["cold_start"]["total_s"]) > rec["stats"]["p50_s"]


# -- a configuration's first latency processes are its cold starts ----------------------------

def _profile(models_dir, target, **kw):
    from edgeprof.measure.profiler import Profiler, Settings
    from edgeprof.variants.family import resolve_models
    settings = Settings(min_time_s=0.02, max_time_s=0.2, min_runs=20, rel_ci=0.0,
                        warmup_max_s=0.2, **kw)
    refs = resolve_models([str(models_dir / "cnn.onnx")], models_dir / "cache")
    recs, _ = Profiler(target, settings).run(refs)
    return recs[0]


def _check_parts(cold: dict, i: int) -> None:
    parts = (cold["numpy_import_s"][i] + cold["runtime_import_s"][i] + cold["session_s"][i]
             + cold["first_inference_s"][i])
    assert min(cold["numpy_import_s"][i], cold["runtime_import_s"][i], cold["session_s"][i],
               cold["first_inference_s"][i]) > 0
    # timed from spawn: the whole is longer than what the process saw, which holds its parts
    assert cold["total_s"][i] > cold["in_process_s"][i] >= parts


def test_latency_processes_started_at_their_turn_are_timed_as_cold_starts(models_dir,
                                                                         monkeypatch):
    dedicated = []
    real = LocalTarget.cold_start
    monkeypatch.setattr(LocalTarget, "cold_start",
                        lambda self, args, **kw: dedicated.append(1) or real(self, args, **kw))
    rec = _profile(models_dir, LocalTarget(), processes=3, cold_starts=2)
    assert dedicated == []                     # both came from the latency processes
    cold = rec["cold_start"]
    assert {len(v) for v in cold.values()} == {2}
    for i in range(2):
        _check_parts(cold, i)
    rec = _profile(models_dir, LocalTarget(), processes=2, cold_starts=3)
    assert dedicated == [1]                    # one more than the processes: a process of its own
    assert {len(v) for v in rec["cold_start"].values()} == {3}
    for i in range(3):
        _check_parts(rec["cold_start"], i)


def test_a_cold_start_process_is_never_one_started_ahead(models_dir):
    """With workers started ahead (a sweep's build), the cold-start process is still started at
    its turn: a worker started ahead would show a spawn-to-result time shorter than the time its
    own process has been running."""
    from edgeprof.targets.pool import Prestart
    import time
    ahead = Prestart(LocalTarget(), 3)   # one more than the two processes that are not cold
    deadline = time.monotonic() + 60
    while ahead.started < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        rec = _profile(models_dir, ahead, processes=3, cold_starts=1)
    finally:
        ahead.close()
    assert ahead.started == 3 and ahead.taken == 2
    _check_parts(rec["cold_start"], 0)


def test_memory_counts_from_before_the_runtime_import_even_when_imported_ahead(tmp_path):
    from edgeprof.targets.client import start_local_worker
    from tests.tiny_models import tiny_cnn
    m = tiny_cnn(tmp_path / "m.onnx")
    with start_local_worker() as w:
        ahead = w.request("import", runtime="onnxruntime")["runtime_import_s"]
        load = w.request("load", path=str(m))
    assert ahead > load["runtime_import_s"] >= 0     # imported once, ahead
    assert load["rss_before_runtime_bytes"] < load["rss_before_load_bytes"]


def test_latency_workers_start_no_blas_threads_but_cold_starts_run_as_a_user_would(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)

    def environ(w) -> dict:
        raw = open(f"/proc/{w.transport.pid}/environ", "rb").read().split(b"\0")
        return dict(x.decode().split("=", 1) for x in raw if b"=" in x)

    def threads(w) -> int:
        return len(os.listdir(f"/proc/{w.transport.pid}/task"))
    t = LocalTarget()
    with t.start_worker("latency") as quiet, t.start_cold_worker("cold") as cold:
        assert environ(quiet)["OPENBLAS_NUM_THREADS"] == "1"
        assert "OPENBLAS_NUM_THREADS" not in environ(cold)
        if (os.cpu_count() or 1) > 1:   # numpy's BLAS pool: one thread per core
            assert threads(quiet) < threads(cold)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")   # what the user set is kept
    with t.start_worker("latency") as w:
        assert environ(w)["OPENBLAS_NUM_THREADS"] == "2"
