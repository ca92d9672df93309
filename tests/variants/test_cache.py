"""Variant identity, the cache (atomic writes, id prefixes) and lineage."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.errors import InputError
from edgeprof.models import open_model
from edgeprof.passes.base import apply_pass
from edgeprof.variants.cache import Cache, variant_id


def test_variant_id_is_a_hash_of_parent_pass_config_and_tools():
    a = variant_id("p", "quantize", {"x": 1, "y": [1, 2]}, {"ort": "1"})
    assert a == variant_id("p", "quantize", {"y": [1, 2], "x": 1}, {"ort": "1"})  # key order
    assert len({a, variant_id("q", "quantize", {"x": 1, "y": [1, 2]}, {"ort": "1"}),
                variant_id("p", "prune", {"x": 1, "y": [1, 2]}, {"ort": "1"}),
                variant_id("p", "quantize", {"x": 2, "y": [1, 2]}, {"ort": "1"}),
                variant_id("p", "quantize", {"x": 1, "y": [1, 2]}, {"ort": "2"})}) == 5


def test_root_id_is_the_file_sha256_and_prefix_lookup(models_dir, tmp_path):
    cache = Cache(tmp_path / "c")
    ref = open_model(models_dir / "cnn.onnx")
    root = cache.register_root(ref)
    assert root.id == ref.sha256 and root.parent is None and root.path.read_bytes() == \
        (models_dir / "cnn.onnx").read_bytes()
    assert cache.find(ref.sha256[:8]).id == root.id
    r2, v2 = cache.resolve(ref.sha256[:12])
    assert v2.id == root.id and r2.sha256 == ref.sha256
    with pytest.raises(InputError, match="no variant with id"):
        cache.find("deadbeef")
    with pytest.raises(InputError, match="neither a model file nor a variant id"):
        cache.resolve("not-hex")


class _Boom:
    name, out_format = "boom", "onnx"

    def config(self):
        return {"k": 1}

    def tool_versions(self):
        return {}

    def label(self):
        return "boom"

    def run(self, parent, out):
        out.write_bytes(b"half a model")
        raise InputError("the pass failed half-way")


def test_a_failing_pass_leaves_nothing_in_the_cache(models_dir, tmp_path):
    cache = Cache(tmp_path / "c")
    root = cache.register_root(open_model(models_dir / "cnn.onnx"))
    with pytest.raises(InputError):
        apply_pass(cache, root, _Boom())
    left = sorted(p.name for p in cache.variants_dir.iterdir())
    assert left == [root.id]


def test_ambiguous_and_short_prefixes(models_dir, tmp_path):
    import shutil
    cache = Cache(tmp_path / "c")
    root = cache.register_root(open_model(models_dir / "cnn.onnx"))
    twin_id = root.id[:6] + ("0" if root.id[6] != "0" else "1") + root.id[7:]
    twin = cache.variants_dir / twin_id
    shutil.copytree(root.dir, twin)
    meta = json.loads((twin / "variant.json").read_text())
    meta["id"] = twin_id
    (twin / "variant.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="ambiguous"):
        cache.find(root.id[:6])
    assert cache.find(root.id[:7]).id == root.id and cache.find(twin_id[:7]).id == twin_id
    with pytest.raises(InputError, match="neither a model file nor a variant id"):
        cache.find(root.id[:3])


def test_export_copies_model_record_and_readme(models_dir, tmp_path, monkeypatch):
    cache_dir = tmp_path / "c"
    root = Cache(cache_dir).register_root(open_model(models_dir / "cnn.onnx"),
                                          input_spec={"layout": "NCHW", "scale": 0.5})
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["export", root.short_id, "-o", str(out), "--cache-dir", str(cache_dir)])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "variant.json").read_text())
    assert meta["id"] == root.id and meta["schema"] == "edgeprof.variant/1"
    assert (out / "cnn.onnx").read_bytes() == (models_dir / "cnn.onnx").read_bytes()
    assert '"layout": "NCHW"' in (out / "README.md").read_text()
