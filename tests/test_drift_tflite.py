"""edgeprof drift on full-integer TFLite: the demo model converted by the real onnx2tf (one
converter run for the module, in its managed environment, offline) to fp32 and full int8, both
calibrated on the demo's calibration set; field sets drawn from its distribution (eval rows as they
are) and made noisier (ImageNet-C impulse and Gaussian noise from edgeprof.robust, severities
1, 3, 5).

Ranges come from the int8 tensors' scale and zero point; values from the float32 TFLite of the same
converter run through LiteRT with every tensor preserved. One check is independent of that reading:
the int8 model itself, run with preserved tensors, sits at its saturation code more often on the
noisy field rows in the tensor drift flags."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.demo import demo_paths
from edgeprof.measure.drift import THRESHOLDS, _check_variant, _float_tflite, tflite_ranges
from edgeprof.errors import InputError
from edgeprof.robust.corruptions import corrupt, to_float, to_uint8
from edgeprof.variants.cache import Cache, Variant
from tests.conftest import require
from tests.passes import test_convert as _convert_tests
from tests.passes.test_convert import ENV_MISSING, convert, env_ready

D = demo_paths()
ROWS = 300


def _drift(cache: Path, vid: str, field: Path, out: Path, rows: int = ROWS):
    return CliRunner().invoke(cli, ["drift", vid[:12], "--calib", str(D["calib"]), "--field",
                                    str(field), "--rows", str(rows), "--cache-dir", str(cache),
                                    "--json", str(out)])


# the converter's offline guard (every proxy a closed loopback port), autouse here as there
offline = _convert_tests.offline


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    require(env_ready(), ENV_MISSING)
    tmp = tmp_path_factory.mktemp("drift-tflite")
    cache = tmp / "cache"
    r = convert(cache, str(D["onnx"]), "--to", "tflite", "--precision", "fp32,int8-static,int16x8",
                "--calib", str(D["calib"]), "--preprocess", str(D["preprocess"]),
                "--fidelity-rows", "50", "--json", str(tmp / "v.json"))
    assert r.exit_code == 0, r.output
    by = {v["config"]["precision"]: v for v in json.loads((tmp / "v.json").read_text())}
    ev = np.load(D["eval"], allow_pickle=False)
    x, y = ev["x"][:ROWS], ev["y"][:ROWS]
    sets = {"same": x}
    for sev in (1, 3, 5):
        for family in ("impulse_noise", "gaussian_noise"):
            sets[f"{family.split('_')[0]}{sev}"] = to_uint8(corrupt(to_float(x), family, sev,
                                                                     seed=0))
    results, outputs = {}, {}
    for name, xs in sets.items():
        np.savez(tmp / f"{name}.npz", x=xs, y=y)
        r = _drift(cache, by["int8-static"]["id"], tmp / f"{name}.npz", tmp / f"{name}.json")
        assert r.exit_code == 0, r.output
        results[name] = json.loads((tmp / f"{name}.json").read_text())
        outputs[name] = r.output
    return {"by": by, "cache": cache, "tmp": tmp, "results": results, "outputs": outputs,
            "sets": sets}


def _model(runs, precision: str) -> Path:
    v = runs["by"][precision]
    return runs["cache"] / "variants" / v["id"] / v["model_file"]


def test_ranges_come_from_the_int8_tensors_quantization_parameters(runs):
    from ai_edge_litert.interpreter import Interpreter
    cache = Cache(runs["cache"])
    v = cache.get(runs["by"]["int8-static"]["id"])
    fpath = _float_tflite(v, cache)
    assert fpath.name == "model_float32.tflite"
    notes: list[str] = []
    ranges, measured = tflite_ranges(_model(runs, "int8-static"), fpath, notes)
    it = Interpreter(model_path=str(_model(runs, "int8-static")))
    (di,), (do,) = it.get_input_details(), it.get_output_details()
    for d in (di, do):  # the graph's int8 input and output: range = (code - zp) * scale
        s, z = d["quantization"]
        r = ranges[d["name"]]
        assert d["dtype"] == np.int8 and (r["qmin"], r["qmax"]) == (-128, 127)
        assert r["lo"] == pytest.approx((-128 - z) * s) and r["hi"] == pytest.approx((127 - z) * s)
        assert measured[d["name"]] == d["name"]  # the float model's tensor of the same name
    assert ranges["input"]["lo"] == pytest.approx(0, abs=1e-6)  # pixels / 255: [0, 1]
    assert ranges["input"]["hi"] == pytest.approx(1, rel=1e-3)
    convs = [r for r in ranges.values() if r["node"].startswith("CONV_2D")]
    assert len(convs) == 3 and all(r["lo"] == pytest.approx(0, abs=1e-6) for r in convs)  # ReLU
    assert all(r["hi"] > 0 and r["scale"] > 0 for r in ranges.values())
    assert any("not counted twice" in n for n in notes)  # the TRANSPOSE/RESHAPE before the FC


def test_field_rows_from_the_calibration_distribution_show_no_drift(runs):
    r = runs["results"]["same"]
    assert r["format"] == "tflite int8" and r["reference_id"] == runs["by"]["int8-static"]["parent"]
    assert r["baseline"]["role"].startswith("held-out") and r["baseline"]["rows"] == [200, 500]
    assert not [f for f in r["findings"] if f["code"] in ("clipping", "agreement_drop")]
    assert r["overall"]["field"] < 1e-4
    assert r["agreement"]["drop_ci"][0] <= 0
    assert r["input_drift"]["p_corrected"] > THRESHOLDS["input_p"]
    names = {t["tensor"] for t in r["tensors"]}
    assert "input" in names and "logits" in names and len(names) >= 6
    assert "findings: none" in runs["outputs"]["same"]


def test_clipping_rises_with_noise_severity_and_agreement_falls(runs):
    res = runs["results"]
    shares = [res[f"impulse{s}"]["overall"]["field"] for s in (1, 3, 5)]
    assert res["same"]["overall"]["field"] < shares[0] < shares[1] < shares[2]
    strong = res["impulse5"]
    clip = [f for f in strong["findings"] if f["code"] == "clipping"]
    assert clip, strong["findings"]
    assert [f["field_value"] for f in clip] == sorted((f["field_value"] for f in clip),
                                                      reverse=True)
    assert any(f["node"] == "CONV_2D model/tf.nn.convolution/convolution" for f in clip)
    assert "% of activations of node" in clip[0]["message"]
    assert "edgeprof convert" in clip[0]["try_next"] and "percentile" not in clip[0]["try_next"]
    top = strong["tensors"][0]
    assert top["field_max"] > top["hi"] and top["baseline_share"] == 0
    assert strong["agreement"]["field"]["agree"] <= res["same"]["agreement"]["field"]["agree"]
    out = runs["outputs"]["impulse5"]
    assert "[clipping]" in out and "try:" in out and "CONV_2D" in out
    for text in runs["outputs"].values():
        assert " ms" not in text and "latency" not in text.lower()


def test_agreement_with_fp32_falls_with_gaussian_noise_severity(runs):
    """Impulse noise clips but hardly moves this int8 model's top-1 (a few rows); Gaussian noise
    costs it agreement with severity. One row of slack between severities (n = 300): kernels of
    another ISA may flip a near tie."""
    res = runs["results"]
    agree = [res[k]["agreement"]["field"]["agree"]
             for k in ("same", "gaussian1", "gaussian3", "gaussian5")]
    assert all(b <= a + 1 / ROWS for a, b in zip(agree, agree[1:])), agree
    assert agree[-1] < agree[0] - 0.01, agree
    a = res["gaussian5"]["agreement"]
    assert a["drop"] > THRESHOLDS["agreement_margin"]
    flagged = a["drop_ci"][0] > 0  # here +0.1 points: on the edge, so both ways are checked
    drop = [f for f in res["gaussian5"]["findings"] if f["code"] == "agreement_drop"]
    assert bool(drop) == flagged
    for f in drop:
        assert f["field_value"] == a["field"]["agree"] and "labelled field rows" in f["try_next"]


def test_flagged_tensor_saturates_in_the_int8_model_itself(runs):
    """Independent of the float reading: the int8 interpreter, fed as the worker feeds it, holds
    the saturation code in more field rows than unshifted rows in the first flagged tensor."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    clip = [f for f in runs["results"]["impulse5"]["findings"] if f["code"] == "clipping"]
    name = clip[0]["tensor"]
    it = Interpreter(model_path=str(_model(runs, "int8-static")),
                     experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    di = it.get_input_details()[0]
    idx = next(t["index"] for t in it.get_tensor_details() if t["name"] == name)
    it.resize_tensor_input(di["index"], [ROWS, 28, 28, 1])
    it.allocate_tensors()
    s, z = di["quantization"]
    rows_at_max = {}
    for key in ("same", "impulse5"):
        x = runs["sets"][key].astype(np.float32).reshape(ROWS, 28, 28, 1) / 255
        it.set_tensor(di["index"], np.clip(np.round(x / s) + z, -128, 127).astype(np.int8))
        it.invoke()
        q = it.get_tensor(idx)
        rows_at_max[key] = float((q.reshape(ROWS, -1) == 127).any(axis=1).mean())
    assert rows_at_max["impulse5"] > 5 * rows_at_max["same"] and rows_at_max["impulse5"] > 0.05


def test_int16x8_reads_its_int16_ranges_through_quantize_and_dequantize(runs):
    """int16x8 keeps float32 I/O: its int16 input and output come from QUANTIZE/DEQUANTIZE ops,
    measured on the float tensors they convert; the same noisy rows clip there too."""
    out = runs["tmp"] / "i16.json"
    r = _drift(runs["cache"], runs["by"]["int16x8"]["id"], runs["tmp"] / "impulse5.npz", out,
               rows=100)  # 16x8 runs on LiteRT's reference kernels: slow
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert d["format"] == "tflite int16x8"
    by = {t["tensor"]: t for t in d["tensors"]}
    assert {"input", "logits"} <= set(by)
    assert by["input"]["hi"] == pytest.approx(1, rel=1e-3)  # int16, zero point 0: [-1, 1]
    assert by["input"]["lo"] == pytest.approx(-1, rel=1e-3)
    assert [f for f in d["findings"] if f["code"] == "clipping"]


def test_a_tflite_model_that_is_not_full_integer_is_refused_in_one_line(runs):
    r = _drift(runs["cache"], runs["by"]["fp32"]["id"], runs["tmp"] / "same.npz",
               runs["tmp"] / "x.json")
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert "not a full-integer" in r.output and "int8-static" in r.output


def test_a_missing_float_model_is_refused_in_one_line(tmp_path):
    v = Variant(id="a" * 64, parent="b" * 64, root="b" * 64, pass_name="convert-tflite",
                config={"precision": "int8-static"}, tool_versions={}, model_file="model.tflite",
                format="tflite", label="m tflite int8-static", extra={"converter_run": "c" * 64})
    _check_variant(v)  # full int8: accepted
    with pytest.raises(InputError, match="no longer in the cache"):
        _float_tflite(v, Cache(tmp_path / "c"))


def test_sweep_with_field_data_covers_full_int8_tflite(runs, tmp_path):
    """[data] field with a TFLite int8-static variant: a drift record with its clipped share,
    the field_clip constraint and the report section (the converter run is reused)."""
    from tests.sweep_files import demo_sweep
    f = demo_sweep(tmp_path / "s.toml", precisions='["int8-static"]\nto = "tflite"',
                   measure="accuracy_limit = 100", require="field_clip<=1%")
    f.write_text(f.read_text().replace(
        "[data]\n", f'[data]\nfield = "{runs["tmp"] / "impulse5.npz"}"\n'))
    r = CliRunner().invoke(cli, ["sweep", str(f), "--out", str(tmp_path / "out"), "--cache-dir",
                                 str(runs["cache"]), "-q"])
    assert r.exit_code == 0, r.output
    dec = json.loads((tmp_path / "out" / "decision.json").read_text())
    clip = {row["label"]: row.get("field_clip") for row in dec["rows"]}
    tfl = [k for k in clip if "tflite int8-static" in k]
    assert tfl and clip[tfl[0]] > 0.01, clip
    assert clip["fashion_cnn"] == 0.0
    assert dec["recommendation"]["chosen_label"] == "fashion_cnn"  # int8 misses field_clip<=1%
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "## Field data against the calibration set" in md and "CONV_2D" in md
