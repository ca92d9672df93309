"""The pass commands as library functions (edgeprof.quantize / prune), used directly: typed
variants with lineage, reuse from the cache, one-line errors; the CLI renders the same calls."""
import numpy as np
import pytest

import edgeprof
from edgeprof.errors import InputError
from tests.tiny_models import mlp


@pytest.fixture
def model(tmp_path):
    m = mlp(tmp_path / "m.onnx", dim=32)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.normal(size=(64, 32)).astype(np.float32))
    np.savez(tmp_path / "eval.npz", x=rng.normal(size=(48, 32)).astype(np.float32))
    return m


def test_prune_then_quantize_through_the_api(model, tmp_path):
    cache = tmp_path / "cache"
    pruned = edgeprof.prune(model, sparsity=0.5, data=tmp_path / "eval.npz", cache_dir=cache)
    assert isinstance(pruned, edgeprof.Variant) and not pruned.reused
    assert pruned.pass_name == "prune" and pruned.extra["sparsity_achieved"] == pytest.approx(0.5, abs=0.01)
    assert pruned.lineage == (pruned.root, pruned.id) and pruned.path.is_file()
    q = edgeprof.quantize(pruned.id[:12], "int8-static", calib=tmp_path / "calib.npz",
                          data=tmp_path / "eval.npz", metric="agreement", cache_dir=cache)
    assert q.lineage == (pruned.root, pruned.id, q.id) and q.parent == pruned.id
    assert q.fidelity["vs_parent"] and "agreement" in q.fidelity["metrics"]
    again = edgeprof.quantize(pruned.id[:12], "int8-static", calib=tmp_path / "calib.npz",
                              cache_dir=cache)
    assert again.reused and again.id == q.id
    assert edgeprof.Variant.from_dict(q.to_dict()) == q


def test_pass_functions_refuse_bad_arguments_in_one_line(model, tmp_path):
    with pytest.raises(InputError, match="give --sparsity"):
        edgeprof.prune(model, cache_dir=tmp_path / "c")
    with pytest.raises(InputError, match="--metric mae needs labels"):
        edgeprof.quantize(model, "int8-dynamic", data=tmp_path / "eval.npz", metric="mae",
                          cache_dir=tmp_path / "c")
    with pytest.raises(InputError, match="--sensitivity analyses int8-static"):
        edgeprof.quantize(model, "fp16", sensitivity=True, cache_dir=tmp_path / "c")
