"""edgeprof drift: the demo model quantized (int8-static, minmax) on its calibration set, against
field sets drawn from its distribution (eval rows as they are) and made noisier (ImageNet-C impulse
noise from edgeprof.robust at rising severities)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.demo import demo_paths
from edgeprof.measure.drift import THRESHOLDS, _check_variant
from edgeprof.errors import InputError
from edgeprof.robust.corruptions import corrupt, to_float, to_uint8
from edgeprof.variants.cache import Variant

D = demo_paths()
ROWS = 300


def _quantize(cache: Path, tmp: Path, *args: str) -> dict:
    out = tmp / "v.json"
    r = CliRunner().invoke(cli, ["quantize", str(D["onnx"]), *args, "--preprocess",
                                 str(D["preprocess"]), "--cache-dir", str(cache),
                                 "--json", str(out)])
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())


def _drift(cache: Path, vid: str, field: Path, out: Path, calib: Path = D["calib"]):
    return CliRunner().invoke(cli, ["drift", vid[:12], "--calib", str(calib), "--field", str(field),
                                    "--rows", str(ROWS), "--cache-dir", str(cache),
                                    "--json", str(out)])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drift")
    cache = tmp / "cache"
    v = _quantize(cache, tmp, "--precision", "int8-static", "--calib", str(D["calib"]))
    ev = np.load(D["eval"])
    x, y = ev["x"][:ROWS], ev["y"][:ROWS]
    sets = {"same": x}
    for sev in (1, 3, 5):
        sets[f"impulse{sev}"] = to_uint8(corrupt(to_float(x), "impulse_noise", sev, seed=0))
    results, outputs = {}, {}
    for name, xs in sets.items():
        np.savez(tmp / f"{name}.npz", x=xs, y=y)
        r = _drift(cache, v["id"], tmp / f"{name}.npz", tmp / f"{name}.json")
        assert r.exit_code == 0, r.output
        results[name] = json.loads((tmp / f"{name}.json").read_text())
        outputs[name] = r.output
    return {"variant": v, "cache": cache, "tmp": tmp, "results": results, "outputs": outputs}


def test_the_quantized_graph_is_kept_in_the_variant_folder(runs):
    v = runs["variant"]
    assert v["extra"]["preprocessed_model"] == "preprocessed.onnx"
    assert (runs["cache"] / "variants" / v["id"] / "preprocessed.onnx").is_file()


def test_field_rows_from_the_calibration_distribution_show_no_drift(runs):
    r = runs["results"]["same"]
    assert r["baseline"]["role"].startswith("held-out") and r["baseline"]["rows"] == [200, 500]
    assert not [f for f in r["findings"] if f["code"] in ("clipping", "agreement_drop")]
    assert r["overall"]["field"] < 1e-4  # fresh rows clip a little, far from any threshold
    assert r["agreement"]["drop_ci"][0] <= 0  # not significantly lower
    assert r["input_drift"]["p_corrected"] > THRESHOLDS["input_p"]
    names = {t["tensor"] for t in r["tensors"]}
    assert "input" in names and "logits" in names and len(names) >= 5


def test_clipping_rises_with_noise_severity_and_names_the_layer(runs):
    res = runs["results"]
    shares = [res[f"impulse{s}"]["overall"]["field"] for s in (1, 3, 5)]
    assert res["same"]["overall"]["field"] < shares[0] < shares[1] < shares[2]
    strong = res["impulse5"]
    clip = [f for f in strong["findings"] if f["code"] == "clipping"]
    assert clip, strong["findings"]
    # ranked by clipped share, the first layer's output clips most: the noise is in the pixels
    assert clip[0]["field_value"] >= clip[-1]["field_value"]
    assert any("features.0/Conv" in f["node"] for f in clip)
    assert "% of activations of node" in clip[0]["message"] and "5 x" in clip[0]["message"]
    assert "recalibrate" in clip[0]["try_next"] and "percentile" in clip[0]["try_next"]
    top = strong["tensors"][0]
    assert top["field_share"] == max(t["field_share"] for t in strong["tensors"])
    assert top["field_max"] > top["hi"] and top["baseline_share"] == 0
    # agreement of int8 with fp32 falls at the strong shift
    a = strong["agreement"]
    assert a["field"]["agree"] < a["baseline"]["agree"]
    assert a["field"]["agree"] <= res["same"]["agreement"]["field"]["agree"]
    out = runs["outputs"]["impulse5"]
    assert "[clipping]" in out and "try:" in out and "features.0/Conv" in out
    for text in runs["outputs"].values():  # no CPU-speed figures
        assert " ms" not in text and "latency" not in text.lower() and " us " not in text


def test_another_calibration_file_is_refused_in_one_line(runs):
    r = _drift(runs["cache"], runs["variant"]["id"], runs["tmp"] / "same.npz",
               runs["tmp"] / "x.json", calib=D["eval"])
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and "not the calibration data" in r.output


def test_field_rows_inside_the_calibration_file_are_refused(runs):
    r = _drift(runs["cache"], runs["variant"]["id"], D["calib"], runs["tmp"] / "x.json")
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "also appear" in r.output


@pytest.mark.parametrize("precision", ["fp16", "int8-dynamic"])
def test_variants_without_calibration_ranges_are_refused(runs, precision):
    v = _quantize(runs["cache"], runs["tmp"], "--precision", precision)
    assert "preprocessed_model" not in v["extra"]
    r = _drift(runs["cache"], v["id"], runs["tmp"] / "same.npz", runs["tmp"] / "x.json")
    assert r.exit_code == 1 and r.output.count("\n") == 1
    assert "not a static int8" in r.output


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8-dynamic"])
def test_tflite_without_calibrated_activations_is_refused(precision):
    """Full-integer TFLite is measured (tests/test_drift_tflite.py); other TFLite variants are
    refused before any data is read."""
    v = Variant(id="a" * 64, parent="b" * 64, root="b" * 64, pass_name="convert-tflite",
                config={"precision": precision}, tool_versions={}, model_file="model.tflite",
                format="tflite", label=f"m tflite {precision}")
    with pytest.raises(InputError, match="not a full-integer"):
        _check_variant(v)


def test_sweep_with_field_data_reports_drift_and_constrains_on_it(tmp_path):
    """[data] field: every static int8 variant gets a drift record; fp32/fp16 clip nothing by
    construction; field_clip is a constraint key and a report section."""
    from tests.sweep_files import demo_sweep
    ev = np.load(D["eval"])
    x, y = ev["x"][:ROWS], ev["y"][:ROWS]
    np.savez(tmp_path / "field.npz", y=y,
             x=to_uint8(corrupt(to_float(x), "impulse_noise", 5, seed=0)))
    f = demo_sweep(tmp_path / "s.toml", precisions='["fp32", "int8-static"]',
                   measure="accuracy_limit = 200", require="field_clip<=1%")
    f.write_text(f.read_text().replace("[data]\n", f'[data]\nfield = "{tmp_path / "field.npz"}"\n'))
    r = CliRunner().invoke(cli, ["sweep", str(f), "--out", str(tmp_path / "out"), "--cache-dir",
                                 str(tmp_path / "c"), "-q"])
    assert r.exit_code == 0, r.output
    dec = json.loads((tmp_path / "out" / "decision.json").read_text())
    clip = {row["label"]: row["field_clip"] for row in dec["rows"]}
    assert clip["fashion_cnn"] == 0.0
    assert clip["fashion_cnn int8-static qdq per-channel"] > 0.01   # clips on noisy field rows
    rec = dec["recommendation"]
    assert rec["chosen_label"] == "fashion_cnn"                     # int8 misses field_clip<=1%
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "## Field data against the calibration set" in md and "clipping" in md


def test_the_python_api_gives_the_cli_figures(runs):
    """edgeprof.drift() is the same library call the command renders."""
    import edgeprof
    r = edgeprof.drift(runs["variant"]["id"][:12], D["calib"], runs["tmp"] / "impulse5.npz",
                       rows=ROWS, cache_dir=runs["cache"])
    cli_json = runs["results"]["impulse5"]
    d = r.to_dict()
    assert d["variant_id"] == cli_json["variant_id"] == runs["variant"]["id"]
    assert d["overall"] == cli_json["overall"]
    assert [f["code"] for f in d["findings"]] == [f["code"] for f in cli_json["findings"]]
