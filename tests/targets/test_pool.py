"""Long-lived workers for the untimed phases: one worker loads several models in turn and gives
the same outputs as a fresh worker per model; a worker that failed is never reused."""
import numpy as np
import pytest

from edgeprof.errors import WorkerError
from edgeprof.measure.accuracy import outputs_on
from edgeprof.targets import get_target
from edgeprof.targets.pool import WorkerPool
from tests.tiny_models import mlp


def counting(t):
    """Count the workers ``t`` starts (the real ones, through a wrapper)."""
    started = []
    real = t.start_worker
    t.start_worker = lambda label: started.append(label) or real(label)
    return started


def test_one_worker_serves_several_models_with_the_same_outputs(tmp_path):
    models = [mlp(tmp_path / f"m{i}.onnx", dim=16, seed=i) for i in range(3)]
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).normal(size=(40, 16)).astype(np.float32))
    npz = str(tmp_path / "d.npz")
    t = get_target("local")
    fresh = [outputs_on(t, m, npz, 40, None, f"fresh {m.name}") for m in models]
    started = counting(t)
    with WorkerPool(t) as pool:
        pooled = [outputs_on(t, m, npz, 40, None, f"pooled {m.name}", pool) for m in models]
    assert started == ["pooled m0.onnx"]
    for a, b in zip(fresh, pooled):
        np.testing.assert_array_equal(a["y"], b["y"])
    assert not np.array_equal(pooled[0]["y"], pooled[1]["y"])  # really three models


def test_a_worker_that_failed_is_not_reused(tmp_path):
    good = mlp(tmp_path / "m.onnx", dim=16)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(good.read_bytes()[:100])  # truncated model file
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 16), np.float32))
    npz = str(tmp_path / "d.npz")
    t = get_target("local")
    started = counting(t)
    with WorkerPool(t) as pool:
        with pytest.raises(WorkerError):
            outputs_on(t, bad, npz, 4, None, "bad", pool)
        outputs_on(t, good, npz, 4, None, "good", pool)
        outputs_on(t, good, npz, 4, None, "again", pool)
    assert started == ["bad", "good"]


def _live_workers() -> set[int]:
    """pids of this process's children that run the edgeprof worker (read from /proc)."""
    import os
    me, found = os.getpid(), set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            status = open(f"/proc/{d}/status").read()
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
        except OSError:
            continue
        ppid = int(status.split("PPid:")[1].split()[0])
        if ppid == me and b"worker.py" in cmd:
            found.add(int(d))
    return found


def _wait_for(cond, timeout_s: float = 60.0) -> None:
    import time
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_prestarted_workers_are_fresh_processes_handed_out_once(tmp_path):
    from edgeprof.targets.pool import Prestart
    before = _live_workers()
    t = get_target("local")
    ahead = Prestart(t, 3)
    _wait_for(lambda: ahead.started == 3)
    assert len(_live_workers() - before) == 3
    started = counting(t)
    got = [ahead.start_worker(f"latency {i}") for i in range(4)]
    try:
        assert [w.label for w in got] == [f"latency {i}" for i in range(4)]
        assert started == ["latency 3"]  # three handed out, the fourth started on demand
        pids = {w.transport.pid for w in got}
        assert len(pids) == 4  # four distinct processes: never one worker twice
        m = mlp(tmp_path / "m.onnx", dim=8)
        reply = got[0].load(m)  # a prestarted worker loads and runs like any other
        assert reply["runtime"] == "onnxruntime"
    finally:
        for w in got:
            w.close()
        ahead.close()
    assert _live_workers() == before


def test_prestart_stops_when_the_phase_takes_its_first_worker_and_close_ends_the_rest():
    from edgeprof.targets.pool import Prestart
    before = _live_workers()
    t = get_target("local")
    ahead = Prestart(t, 12)
    _wait_for(lambda: ahead.started >= 1)
    w = ahead.start_worker("first")  # stops the starting ahead (waits for the one under way)
    n = ahead.started
    import time
    time.sleep(0.8)  # longer than one interpreter start
    assert ahead.started == n < 12  # nothing more started behind the phase's back
    w.close()
    ahead.close()
    assert _live_workers() == before


def test_fidelity_uses_one_worker_for_every_model_and_close_ends_it(tmp_path, monkeypatch):
    from edgeprof.data import load_npz
    from edgeprof.measure.fidelity import FidelityEvaluator
    from edgeprof.targets.local import LocalTarget
    models = [mlp(tmp_path / f"m{i}.onnx", dim=16, seed=i) for i in range(3)]
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).normal(size=(40, 16)).astype(np.float32))
    labels = []
    real = LocalTarget.start_worker
    monkeypatch.setattr(LocalTarget, "start_worker",
                        lambda self, label: labels.append(label) or real(self, label))
    before = _live_workers()
    with FidelityEvaluator(load_npz(tmp_path / "d.npz"), 40, tmp_path) as ev:
        outs = [ev.outputs(m, None)[1][0] for m in models]
        assert len(_live_workers() - before) == 1
    assert labels == ["fidelity m0.onnx"]
    assert _live_workers() == before
    t = get_target("local")
    for m, got in zip(models, outs):  # the same outputs as a fresh worker per model
        np.testing.assert_array_equal(outputs_on(t, m, str(tmp_path / "d.npz"), 40, None,
                                                 "fresh")["y"], got)
