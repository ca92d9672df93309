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
