"""Why an int8 variant is slower or less accurate than its fp32 root on a target: typed
diagnoses from measured facts (latency CIs, agreement with fp32), the target's CPU features and
the graph onnxruntime actually runs (its optimized graph: which Q/DQ pairs were fused into
integer kernels, which compute stayed in float). Each diagnosis names the next thing to try.

Triggers (decisions): slower than the fp32 root beyond both p50 CIs, or top-1 agreement with it
below 0.98. TFLite variants get graph-free, CPU-level diagnoses only."""
from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

AGREEMENT_FLOOR = 0.98
COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
INTEGER_OPS = {"QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger",
               "DynamicQuantizeLinear", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool",
               "QLinearAveragePool", "QLinearConcat", "QLinearLeakyRelu", "QLinearSigmoid",
               "QAttention", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "FusedConv"}
X86_DOT = {"avx512_vnni", "avx_vnni", "amx_int8"}
ARM_DOT = {"asimddp"}


@dataclass(frozen=True)
class Diagnosis:
    code: str          # slower_than_fp32 | low_agreement | no_int8_dot_product | u8s8_saturation |
                       # unfused_qdq | float_compute | integer_slow_path | odd_channel_widths
    variant_id: str
    target: str
    message: str
    try_next: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_facts(env: dict[str, Any] | None) -> dict[str, Any]:
    """Architecture and int8 dot-product support from a record's env (``cpu_features`` where
    the worker read /proc/cpuinfo)."""
    env = env or {}
    feats = env.get("cpu_features") or {}
    flags = set(feats.get("flags") or [])
    arch = feats.get("arch") or env.get("machine") or ""
    x86 = arch in ("x86_64", "amd64", "i686", "x86")
    known = bool(feats)
    dot = feats.get("int8_dot")
    if dot is None and known:
        dot = bool(flags & (X86_DOT if x86 else ARM_DOT))
    return {"arch": arch, "x86": x86, "int8_dot": dot, "known": known, "flags": sorted(flags),
            "cpu": env.get("cpu_model") or "this CPU"}


def graph_facts(path: str | Path) -> dict[str, Any] | None:
    """What onnxruntime runs for an ONNX file: the optimized graph (written by a CPU session at
    the highest optimization level), counted. None for non-ONNX or unreadable files."""
    path = Path(path)
    if path.suffix != ".onnx" or not path.is_file():
        return None
    import onnx
    import onnxruntime as ort

    source = onnx.load(str(path), load_external_data=False)
    with tempfile.TemporaryDirectory(prefix="edgeprof-opt-") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        so.log_severity_level = 3
        try:
            ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            opt = onnx.load(so.optimized_model_filepath, load_external_data=False)
        except Exception:
            return None
    ops = Counter(n.op_type for n in opt.graph.node)
    produced_by = {o: n for n in opt.graph.node for o in n.output}
    float_compute = [n.name or n.op_type for n in opt.graph.node if n.op_type in COMPUTE_OPS]
    # a DequantizeLinear feeding a float compute op: a Q/DQ pair the optimizer could not fuse
    unfused = [n.name or n.op_type for n in opt.graph.node if n.op_type in COMPUTE_OPS and any(
        produced_by.get(i) is not None and produced_by[i].op_type == "DequantizeLinear"
        for i in n.input[:1])]
    widths = []
    inits = {i.name: i for i in source.graph.initializer}
    src_by_out = {o: n for n in source.graph.node for o in n.output}
    for n in source.graph.node:
        if n.op_type not in ("Conv", "ConvInteger", "QLinearConv") or len(n.input) < 2:
            continue
        w = n.input[3] if n.op_type == "QLinearConv" else n.input[1]
        dq = src_by_out.get(w)
        if dq is not None and dq.op_type == "DequantizeLinear":  # QDQ: the weight behind its DQ
            w = dq.input[0]
        if w in inits:
            widths.append(int(inits[w].dims[0]))
    src_ops = Counter(n.op_type for n in source.graph.node)
    quantized = bool(src_ops.get("QuantizeLinear") or src_ops.get("DequantizeLinear")
                     or any(o in INTEGER_OPS for o in src_ops))
    return {"quantized": quantized, "ops": dict(ops), "source_ops": dict(src_ops),
            "integer_ops": sum(v for k, v in ops.items() if k in INTEGER_OPS),
            "qdq_left": ops.get("QuantizeLinear", 0) + ops.get("DequantizeLinear", 0),
            "float_compute": float_compute, "unfused": unfused,
            "slow_path": sum(src_ops.get(k, 0) for k in ("ConvInteger", "MatMulInteger")),
            "conv_widths": widths,
            "odd_widths": [w for w in widths if w % 8]}


def _is_int8(label: str, facts: dict[str, Any] | None) -> bool:
    if facts is not None:
        return facts["quantized"]
    return "int8" in label


def _op_share(rec: dict[str, Any] | None, kinds: set[str]) -> float | None:
    per_op = ((rec or {}).get("op_profile") or {}).get("per_op") or {}
    total = sum(v["total_s"] for v in per_op.values())
    if not total:
        return None
    return sum(v["total_s"] for k, v in per_op.items() if k in kinds) / total


def diagnose_rows(rows: list[dict[str, Any]], records: list[dict[str, Any]],
                  graph: Any = graph_facts) -> list[Diagnosis]:
    """Diagnoses for every int8 row that is slower than its fp32 root on the same target beyond
    both CIs, or agrees with it on fewer than 98 % of top-1 classes."""
    lat = {(r["variant_id"], r["target"]): r for r in records if r["kind"] == "latency"}
    by_key = {(r["variant_id"], r["target"]): r for r in rows}
    out: list[Diagnosis] = []
    facts_cache: dict[str, Any] = {}
    for row in rows:
        root = by_key.get((row.get("root_id"), row["target"]))
        if root is None or root is row:
            continue
        rec = lat.get((row["variant_id"], row["target"]))
        path = ((rec or {}).get("model") or {}).get("path")
        fmt = row.get("format") or ((rec or {}).get("model") or {}).get("format")
        if path and fmt == "onnx" and path not in facts_cache:
            facts_cache[path] = graph(path)
        facts = facts_cache.get(path) if fmt == "onnx" else None
        if not _is_int8(row.get("label", ""), facts):
            continue
        slower = (row.get("p50_ci_s") and root.get("p50_ci_s")
                  and row["p50_ci_s"][0] > root["p50_ci_s"][1])
        agree = row.get("top1_agreement")
        inaccurate = agree is not None and agree < AGREEMENT_FLOOR
        if not slower and not inaccurate:
            continue
        cpu = cpu_facts((rec or {}).get("env") or (lat.get((root["variant_id"], row["target"]))
                                                      or {}).get("env"))
        vid, tgt = row["variant_id"], row["target"]

        def add(code: str, message: str, try_next: str) -> None:
            out.append(Diagnosis(code, vid, tgt, message, try_next))
        label = row.get("label", vid[:12])
        if slower:
            add("slower_than_fp32",
                f"{label} runs at p50 {row['p50_s'] * 1e6:.0f} us against {root['p50_s'] * 1e6:.0f} us "
                f"for the fp32 root on {tgt} (the CIs do not overlap)",
                "measure on the board itself: int8 speed-ups differ by CPU")
        if inaccurate:
            add("low_agreement",
                f"{label} agrees with the fp32 root on {agree:.1%} of top-1 classes "
                f"(below {AGREEMENT_FLOOR:.0%})",
                "quantize with --sensitivity to rank the layers that lose the most, then keep "
                "the worst in float with --exclude-nodes")
        if cpu["known"] and cpu["int8_dot"] is False:
            what = "VNNI (avx512_vnni/avx_vnni)" if cpu["x86"] else "the dot-product extension (asimddp)"
            add("no_int8_dot_product",
                f"{cpu['cpu']} has no {what}: int8 kernels there multiply through wider "
                "intermediates and often run no faster than fp32",
                "compare with fp16 or fp32 on this CPU, or target a CPU with int8 dot products")
            cfg_rr = "reduce-range" in label or "U8U8" in label
            if cpu["x86"] and inaccurate and fmt == "onnx" and not cfg_rr:
                add("u8s8_saturation",
                    "without VNNI, onnxruntime's x86 int8 kernels add pairs of 8-bit products in "
                    "16-bit registers, which can saturate (onnxruntime's quantization docs)",
                    "quantize with --reduce-range (7-bit weights) or --types U8U8; on the "
                    "AVX2-only EPYC the demo's agreement went from 95.2 % to 99.4 % with it")
        if facts:
            if facts["slow_path"]:
                add("integer_slow_path",
                    f"{facts['slow_path']} ConvInteger/MatMulInteger node(s): dynamic int8 runs "
                    "these through generic integer kernels, usually slower than fp32 convolution",
                    "use int8-static (QLinearConv) for convolutional models")
            share = _op_share(rec, {"QuantizeLinear", "DequantizeLinear"})
            if facts["unfused"]:
                extra = f", {share:.0%} of operator time in Q/DQ" if share else ""
                add("unfused_qdq",
                    f"{len(facts['unfused'])} Q/DQ pair(s) were not fused into integer kernels by "
                    f"onnxruntime ({', '.join(facts['unfused'][:4])}{'...' if len(facts['unfused']) > 4 else ''}"
                    f"{extra}): those layers run in float with extra conversions",
                    "exclude the named nodes from quantization (--exclude-nodes), or try "
                    "--format qoperator")
            elif facts["float_compute"] and facts["integer_ops"]:
                add("float_compute",
                    f"{len(facts['float_compute'])} compute node(s) stay in float "
                    f"({', '.join(facts['float_compute'][:4])})",
                    "quantize them too if --exclude-nodes did not keep them on purpose")
            if facts["odd_widths"] and slower:
                add("odd_channel_widths",
                    f"{len(facts['odd_widths'])} of {len(facts['conv_widths'])} convolutions have "
                    f"output channels that are not a multiple of 8 ({sorted(set(facts['odd_widths']))[:5]}): "
                    "int8 kernels pad them, wasting work",
                    "prune with --round-to 8 (or 16), or keep those layers in float")
    return out
