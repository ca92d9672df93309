"""int8 diagnoses: the rule as a pure function over rows and records (synthetic CPUs, no
assumption about this machine's), and the graph facts on real quantized models."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.measure.int8 import cpu_facts, diagnose_rows, graph_facts
from tests import tiny_models

AVX2 = {"cpu_model": "AMD EPYC", "machine": "x86_64",
        "cpu_features": {"arch": "x86_64", "flags": ["avx2", "fma"], "int8_dot": False}}
VNNI = {"cpu_model": "Intel Xeon", "machine": "x86_64",
        "cpu_features": {"arch": "x86_64", "flags": ["avx2", "avx512_vnni"], "int8_dot": True}}
PI4 = {"cpu_model": "Cortex-A72", "machine": "aarch64",
       "cpu_features": {"arch": "aarch64", "flags": ["asimd"], "int8_dot": None}}


def rows_and_records(env, int8_p50=(240e-6, 238e-6, 242e-6), agreement=0.95):
    root = {"variant_id": "r", "root_id": "r", "target": "t", "label": "m", "format": "onnx",
            "p50_s": 134e-6, "p50_ci_s": [133e-6, 135e-6]}
    q = {"variant_id": "q", "root_id": "r", "target": "t", "label": "m int8-static qdq per-channel",
         "format": "onnx", "p50_s": int8_p50[0], "p50_ci_s": list(int8_p50[1:]),
         "top1_agreement": agreement}
    recs = [{"kind": "latency", "variant_id": v, "target": "t", "env": env,
             "model": {"path": f"/nonexistent/{v}.onnx", "format": "onnx"}} for v in ("r", "q")]
    return [root, q], recs


def codes(env, **kw):
    rows, recs = rows_and_records(env, **kw)
    return [d.code for d in diagnose_rows(rows, recs, graph=lambda p: None)]


def test_avx2_without_vnni_slow_and_inaccurate_gets_the_saturation_advice():
    got = codes(AVX2)
    assert got == ["slower_than_fp32", "low_agreement", "no_int8_dot_product", "u8s8_saturation"]
    rows, recs = rows_and_records(AVX2)
    d = {x.code: x for x in diagnose_rows(rows, recs, graph=lambda p: None)}
    assert "--reduce-range" in d["u8s8_saturation"].try_next
    assert "240 us against 134 us" in d["slower_than_fp32"].message


def test_vnni_cpu_gets_no_cpu_diagnosis_and_nothing_when_fast_and_faithful():
    assert codes(VNNI) == ["slower_than_fp32", "low_agreement"]
    assert codes(VNNI, int8_p50=(80e-6, 79e-6, 81e-6), agreement=0.995) == []
    # overlapping CIs are not "slower"
    assert codes(AVX2, int8_p50=(136e-6, 134.5e-6, 137e-6), agreement=0.99) == []


def test_arm_without_dotprod_and_unknown_features():
    assert cpu_facts(PI4)["int8_dot"] is False          # derived from the flags: no asimddp
    assert "no_int8_dot_product" in codes(PI4)
    assert "u8s8_saturation" not in codes(PI4)          # an x86 kernel fact
    assert cpu_facts({"cpu_model": "x"})["known"] is False
    assert codes({"cpu_model": "x"}) == ["slower_than_fp32", "low_agreement"]


def test_graph_facts_on_real_quantized_models(tmp_path):
    fp32 = tiny_models.mobilenet_like(tmp_path / "mn.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8))
    made = {}
    for prec in ("int8-static", "int8-dynamic"):
        out = tmp_path / f"{prec}.json"
        r = CliRunner().invoke(cli, ["quantize", str(fp32), "--precision", prec, "--calib",
                                     str(tmp_path / "calib.npz"), "--cache-dir",
                                     str(tmp_path / "c"), "--json", str(out)])
        assert r.exit_code == 0, r.output
        v = json.loads(out.read_text())
        made[prec] = tmp_path / "c" / "variants" / v["id"] / "model.onnx"
    assert graph_facts(fp32)["quantized"] is False
    static = graph_facts(made["int8-static"])
    assert static["quantized"] and static["integer_ops"] > 0 and static["slow_path"] == 0
    dynamic = graph_facts(made["int8-dynamic"])
    assert dynamic["slow_path"] == 6        # 5 Conv -> ConvInteger, the Gemm -> MatMulInteger
    assert static["conv_widths"] == [8, 8, 16, 16, 32] and static["odd_widths"] == []


def test_diagnoses_reach_every_report_format_escaped(tmp_path):
    from edgeprof.report.write import index_html, summary_md
    rows, recs = rows_and_records(AVX2)
    rows[1]["label"] = "m <int8>"
    diags = [d.to_dict() for d in diagnose_rows(rows, recs, graph=lambda p: None)]
    dec = {"rows": rows, "recommendation": {"reasons": []}, "diagnoses": diags, "batch": 1}
    md = summary_md("t", dec, [], [])
    assert "## Why int8 is slower or less accurate here" in md and "--reduce-range" in md
    html = index_html("t", dec, [], tmp_path, [])
    assert "m &lt;int8&gt;" in html and "m <int8>" not in html and "u8s8_saturation" in html
