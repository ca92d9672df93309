"""summary.md: a short Markdown report of result records (every figure with its n and CI)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..units import fmt_bytes, fmt_seconds


def _ci(lo: float, hi: float, fmt=fmt_seconds) -> str:
    return f"[{fmt(lo)}, {fmt(hi)}]"


def summary_markdown(records: list[dict[str, Any]], title: str,
                     images: list[str] = ()) -> str:
    lines = [f"# {title}", ""]
    lat = sorted((r for r in records if r["kind"] == "latency"),
                 key=lambda r: (r["model"]["name"], r["threads"], r["batch"]))
    env = next((r["env"] for r in lat if r.get("env")), None)
    if env:
        lines += [f"Target `local`: {env.get('cpu_model') or 'unknown CPU'}, {env.get('cores')} "
                  f"cores, Python {env.get('python')}, numpy {env['versions'].get('numpy')}, "
                  f"onnxruntime {env['versions'].get('onnxruntime')}, LiteRT "
                  f"{env['versions'].get('ai_edge_litert')}. Unavailable here: "
                  f"{', '.join(env.get('unavailable') or []) or 'nothing'}.", ""]
    for r in records:
        if r["kind"] == "accuracy":
            lo, hi = r["accuracy_ci"]
            lines += [f"**Accuracy** of {r['model']['name']}: {r['accuracy']:.2%} "
                      f"(95 % Wilson CI {lo:.2%} to {hi:.2%}, n = {r['n']}).", ""]
    if lat:
        lines += ["## Latency per call", "",
                  "| model | runtime | threads | batch | p50 [95 % CI] | p99 [95 % CI] | n | "
                  "throughput | first inference | session | peak RSS | model adds | size (zlib) |",
                  "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in lat:
            s = r["stats"]
            lines.append(
                f"| {r['model']['name']} | {r['runtime']} | {r['threads']} | {r['batch']} | "
                f"{fmt_seconds(s['p50_s'])} {_ci(*s['p50_ci_s'])} | "
                f"{fmt_seconds(s['p99_s'])} {_ci(*s['p99_ci_s'])} | {s['n']} | "
                f"{s['throughput_per_s']:.0f}/s | {fmt_seconds(r['first_inference_s'])} | "
                f"{fmt_seconds(r['session_s'])} | {fmt_bytes(r['peak_rss_bytes'])} | "
                f"{fmt_bytes(r['model_rss_bytes'])} | {fmt_bytes(r['model']['model_bytes'])} "
                f"({fmt_bytes(r['model']['zlib_bytes'])}) |")
        lines.append("")
        cold = [r for r in lat if r.get("cold_start")]
        if cold:
            lines += ["Cold start (fresh process: Python start, imports, session, first inference; "
                      "median of the runs):", ""]
            for r in cold:
                c = r["cold_start"]
                med = {k: sorted(v)[len(v) // 2] for k, v in c.items()}
                lines.append(f"- {r['model']['name']} threads={r['threads']} batch={r['batch']}: "
                             f"{fmt_seconds(med['total_s'])} (n = {len(c['total_s'])}; numpy import "
                             f"{fmt_seconds(med['numpy_import_s'])}, runtime import "
                             f"{fmt_seconds(med['runtime_import_s'])}, session "
                             f"{fmt_seconds(med['session_s'])}, first inference "
                             f"{fmt_seconds(med['first_inference_s'])}) against a warm p50 of "
                             f"{fmt_seconds(r['stats']['p50_s'])}")
            lines.append("")
        for img in images:
            lines += [f"![{img}]({img})", ""]
        warn = [(r, w) for r in lat for w in r.get("warnings", [])]
        if warn:
            lines += ["## Warnings", ""]
            lines += [f"- {r['model']['name']} threads={r['threads']} batch={r['batch']}: "
                      f"{w['message']}" for r, w in warn]
            lines.append("")
        ops = next((r for r in lat if (r.get("op_profile") or {}).get("available")), None)
        if ops:
            per_op = ops["op_profile"]["per_op"]
            total = sum(v["total_s"] for v in per_op.values()) or 1.0
            runs = ops["op_profile"].get("runs", 1)
            lines += [f"## Operator time ({ops['model']['name']}, threads={ops['threads']}, "
                      f"batch={ops['batch']}, {runs} profiled runs)", "",
                      "| operator | per inference | share |", "|---|--:|--:|"]
            for op, v in sorted(per_op.items(), key=lambda kv: -kv[1]["total_s"]):
                lines.append(f"| {op} | {fmt_seconds(v['total_s'] / runs)} | "
                             f"{v['total_s'] / total:.1%} |")
            lines.append("")
    return "\n".join(lines)


def write_summary(path: Path, records: list[dict[str, Any]], title: str,
                  images: list[str] = ()) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(summary_markdown(records, title, images))
    tmp.replace(path)
