"""Calibrate once per (model, data, method): per-channel and per-tensor, QDQ and QOperator variants
share one set of activation ranges (and one pre-processed graph), and the files they give are
byte-identical to a fresh onnxruntime calibration of each."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edgeprof.data import load_npz
from edgeprof.demo import demo_paths
from edgeprof.models import open_model
from edgeprof.passes import quantize as Q
from edgeprof.passes.base import apply_pass
from edgeprof.variants.cache import Cache
from edgeprof.variants.family import spec_for_worker
from tests.conftest import require

D = demo_paths()
SPEC = tomllib.loads(D["preprocess"].read_text())
ROWS = 60  # few rows keep calibration short; the sharing does not depend on the count


@pytest.fixture
def counts(monkeypatch):
    """Calibrator runs and pre-processings actually done (counted through wrappers around the
    real functions: the calibration rows are read only when calibrating)."""
    seen = {"calibrations": 0, "preprocessings": 0}
    real_batches, real_pre = Q.calibration_batches, Q.pre_process

    def batches(*a, **k):
        seen["calibrations"] += 1
        return real_batches(*a, **k)

    def pre(*a, **k):
        seen["preprocessings"] += 1
        return real_pre(*a, **k)
    monkeypatch.setattr(Q, "calibration_batches", batches)
    monkeypatch.setattr(Q, "pre_process", pre)
    return seen


@pytest.fixture(scope="module")
def calib():
    return load_npz(D["calib"])


def _pass(calib, **kw) -> Q.QuantizePass:
    return Q.QuantizePass(precision="int8-static", calib=calib, calib_rows=ROWS,
                          spec=spec_for_worker(SPEC, "uint8"), **kw)


def _fresh(calib, variant, tmp_path: Path, **kw) -> bytes:
    """The reference: onnxruntime's quantize_static on the same pre-processed graph, calibrating
    itself (no ranges file), as edgeprof did before ranges were shared."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    p = _pass(calib, **kw)
    feeds = Q.calibration_batches(D["onnx"], calib, p.spec, ROWS,
                                  equal=p.calib_method != "minmax")
    qt = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    act, wt = Q.TYPES[p.types]
    out = tmp_path / f"ref-{variant.short_id}.onnx"
    quantize_static(str(variant.dir / "preprocessed.onnx"), str(out), Q._Reader(feeds),
                    quant_format=QuantFormat.QDQ if p.format == "qdq" else QuantFormat.QOperator,
                    per_channel=p.per_channel, activation_type=qt[act], weight_type=qt[wt],
                    calibrate_method={"minmax": CalibrationMethod.MinMax,
                                      "percentile": CalibrationMethod.Percentile}[p.calib_method],
                    calibration_providers=["CPUExecutionProvider"])
    return out.read_bytes()


def test_one_calibration_per_method_and_files_equal_fresh_calibration(calib, tmp_path, counts):
    cache = Cache(tmp_path / "cache")
    root = cache.register_root(open_model(D["onnx"]), input_spec=SPEC)
    built: dict[tuple, object] = {}
    grid = [dict(calib_method=m, per_channel=pc) for m in ("minmax", "percentile")
            for pc in (True, False)] + [dict(calib_method="minmax", per_channel=False,
                                             format="qoperator", types="U8S8")]
    for kw in grid:
        before, pre_before = counts["calibrations"], counts["preprocessings"]
        v, reused = apply_pass(cache, root, _pass(calib, **kw))
        assert not reused
        first_of_method = not any(dict(k)["calib_method"] == kw["calib_method"] for k in built)
        # the first variant of each method calibrates; the others read its ranges
        assert counts["calibrations"] - before == int(first_of_method)
        # the pre-processed graph is made once for the parent
        assert counts["preprocessings"] - pre_before == int(not built)
        built[tuple(sorted(kw.items()))] = v
    ranges = {v.extra["calibration_ranges"] for v in built.values()}
    assert len(ranges) == 2  # one per method
    assert sorted(p.name for p in (cache.root / "calibration").iterdir()) == sorted(ranges)
    # byte-identical to a fresh calibration of each (including those that reused ranges)
    for key, v in built.items():
        assert v.path.read_bytes() == _fresh(calib, v, tmp_path, **dict(key)), key
    # and the methods really give other files (the comparison above could tell them apart)
    mm = built[(("calib_method", "minmax"), ("per_channel", False))]
    pc = built[(("calib_method", "percentile"), ("per_channel", False))]
    assert mm.path.read_bytes() != pc.path.read_bytes()


def test_other_rows_or_data_calibrate_again(calib, tmp_path, counts):
    cache = Cache(tmp_path / "cache")
    root = cache.register_root(open_model(D["onnx"]), input_spec=SPEC)
    p = _pass(calib, per_channel=True)
    before = counts["calibrations"]
    a, _ = apply_pass(cache, root, p)
    b, _ = apply_pass(cache, root, Q.QuantizePass(precision="int8-static", calib=calib,
                                                  calib_rows=ROWS + 10, spec=p.spec,
                                                  per_channel=False))
    assert counts["calibrations"] - before == 2
    assert a.extra["calibration_ranges"] != b.extra["calibration_ranges"]


def test_damaged_ranges_are_computed_again(calib, tmp_path, counts, caplog):
    cache = Cache(tmp_path / "cache")
    root = cache.register_root(open_model(D["onnx"]), input_spec=SPEC)
    a, _ = apply_pass(cache, root, _pass(calib, per_channel=True))
    f = cache.root / "calibration" / a.extra["calibration_ranges"] / "ranges.json"
    d = json.loads(f.read_text())
    name = next(iter(d["data"]))
    d["data"][name]["highest"]["data"] = 1000.0  # a wrong range: the sha256 no longer matches
    f.write_text(json.dumps(d))
    before = counts["calibrations"]
    with caplog.at_level(logging.WARNING, logger="edgeprof"):
        b, _ = apply_pass(cache, root, _pass(calib, per_channel=False))
    assert counts["calibrations"] - before == 1
    assert "damaged" in caplog.text
    assert b.path.read_bytes() == _fresh(calib, b, tmp_path, per_channel=False)
    # a torn file with a matching sha256 (written by something else) is refused too
    f.write_text("{\"data\": ")
    (f.parent / "sha256").write_text(__import__("hashlib").sha256(f.read_bytes()).hexdigest())
    before = counts["calibrations"]  # (the fresh comparison above calibrated on its own)
    with caplog.at_level(logging.WARNING, logger="edgeprof"):
        c, _ = apply_pass(cache, root, _pass(calib, per_channel=False, format="qoperator"))
    assert counts["calibrations"] - before == 1 and "unreadable" in caplog.text
    assert c.path.read_bytes() == _fresh(calib, c, tmp_path, per_channel=False, format="qoperator")


def test_pre_processing_does_not_import_torch(tmp_path):
    import importlib.util
    require(importlib.util.find_spec("torch") is not None, "torch (the 'torch' extra) is needed "
            "to show that pre-processing no longer imports it")
    code = ("import sys; from pathlib import Path;"
            "from edgeprof.passes.quantize import pre_process;"
            f"pre_process(Path({str(D['onnx'])!r}), Path({str(tmp_path / 'pre.onnx')!r}));"
            "import onnxruntime.tools as t; print('torch' in sys.modules, bool(t.have_torch))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "True"]
    assert (tmp_path / "pre.onnx").stat().st_size > 0


def test_graphs_raised_to_opset_13_have_their_own_ranges(calib, tmp_path, counts):
    """Per-channel QDQ raises an opset-12 graph to 13 before quantizing: the graph calibrated
    differs from the per-tensor one, so the two do not share ranges."""
    import onnx
    m = onnx.load(str(D["onnx"]))
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 12
    onnx.save(m, str(tmp_path / "op12.onnx"))
    cache = Cache(tmp_path / "cache")
    root = cache.register_root(open_model(tmp_path / "op12.onnx"), input_spec=SPEC)
    before = counts["calibrations"]
    a, _ = apply_pass(cache, root, _pass(calib, per_channel=True))
    b, _ = apply_pass(cache, root, _pass(calib, per_channel=False))
    assert counts["calibrations"] - before == 2
    assert a.extra["calibration_ranges"] != b.extra["calibration_ranges"]
    assert b.path.read_bytes() == _fresh(calib, b, tmp_path, per_channel=False)
