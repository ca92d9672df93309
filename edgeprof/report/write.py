"""The report folder: a self-contained ``index.html`` (images embedded, no remote assets, every
text escaped), ``summary.md``, ``results.csv`` (one flat row per variant and target), the plots
as PNG and SVG, ``decision.json`` and the results JSON Lines. Rendering depends on the records
only, so ``edgeprof report RESULTS`` re-renders the same files."""
from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from ..results import latest_run_errors, read_records
from ..storage import write_output, write_text
from ..units import fmt_seconds
from . import charts
from . import columns as C


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """results.csv: the raw fields of every column of the variants table (report.columns)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(C.csv_header())
    for r in sorted(rows, key=lambda r: (r["target"], r["label"])):
        w.writerow(C.csv_row(r))
    write_text(path, buf.getvalue())


# the cells' formats live with the column specification (report.columns)
metric_name, corr_name = C.metric_name, C.corr_name


def _collect(records: list[dict[str, Any]]) -> tuple[dict[str, dict], list[tuple[str, str]], list[str]]:
    envs: dict[str, dict] = {}
    warnings: list[tuple[str, str]] = []
    errors: list[str] = []
    for r in latest_run_errors(records):
        errors.append(f"{(r.get('model') or {}).get('name', r.get('variant_id'))} "
                      f"[{r.get('phase', '')}{' @' + r['target'] if r.get('target') else ''}]: "
                      f"{r.get('error')}")
    for r in records:
        if r["kind"] == "latency":
            if r.get("env") and r["target"] not in envs:
                envs[r["target"]] = r["env"]
            for w in r.get("warnings", []):
                warnings.append((f"{r['model']['name']} @{r['target']} threads={r['threads']} "
                                 f"batch={r['batch']}", w["message"]))
    return envs, warnings, errors


def _recs(dec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(heading suffix, recommendation) per target; no suffix when there is one target."""
    recs = dec.get("recommendations") or {"": dec["recommendation"]}
    return [(f" on {t}" if len(recs) > 1 else "", r) for t, r in recs.items()]


def _recommendation_md(dec: dict[str, Any]) -> list[str]:
    req = dec.get("require") or "none"
    lines: list[str] = []
    for on, rec in _recs(dec):
        if rec.get("chosen"):
            lines += [f"**Recommended{on}: {rec['chosen_label']}** (`{rec['chosen'][:12]}`), "
                      f"constraints: `{req}`.", ""]
        elif rec.get("closest"):
            lines += [f"**No variant meets every constraint{on}** (`{req}`). Closest: "
                      f"{rec['closest_label']} (`{rec['closest'][:12]}`), which misses:", ""]
            lines += [f"- {m}" for m in rec["missing"]]
            lines.append("")
        else:
            lines += [f"**No recommendation{on}**: nothing was measured.", ""]
        lines += [f"- {r}" for r in rec["reasons"]] + [""]
    return lines


def _rows_md(rows: list[dict[str, Any]]) -> list[str]:
    cols = C.in_view("md")
    align = {"left": "---", "right": "--:", "center": ":-:"}
    out = ["| " + " | ".join(c.header(rows, "md") for c in cols) + " |",
           "|" + "|".join(align[c.align] for c in cols) + "|"]
    for r in C.sorted_rows(rows):
        out.append("| " + " | ".join(c.cell(r, "md") for c in cols) + " |")
    return out + [""]


def _features(env: dict[str, Any]) -> str:
    """``, features avx2 f16c fma (...)`` after the CPU model; empty for records written before
    the worker recorded ``cpu_features``."""
    if "cpu_features" not in env:
        return ""
    from ..targets import describe_cpu_features
    return ", features " + describe_cpu_features(env["cpu_features"])


def summary_md(title: str, dec: dict[str, Any], records: list[dict[str, Any]],
               images: list[str]) -> str:
    envs, warnings, errors = _collect(records)
    lines = [f"# {title}", ""] + _recommendation_md(dec)
    lines += [f"Latency {batch_text(dec)}; accuracy and drops against the baseline "
              f"`{(dec.get('baseline') or '')[:12]}`.", ""] + _rows_md(dec["rows"])
    for img in images:
        if img.endswith(".png"):
            lines += [f"![{img}]({img})", ""]
    for t, env in sorted(envs.items()):
        lines.append(f"- target `{t}`: {env.get('cpu_model') or 'unknown CPU'}{_features(env)}, "
                     f"{env.get('cores')} cores, {env.get('os')}, Python {env.get('python')}; "
                     f"unavailable: {', '.join(env.get('unavailable') or []) or 'nothing'}")
    diags = dec.get("diagnoses") or []
    if diags:
        lines += ["", "## Why int8 is slower or less accurate here", ""]
        lines += [f"- `{d['code']}` ({labels_of(dec).get(d['variant_id'], d['variant_id'][:12])} "
                  f"@{d['target']}): {d['message']}. Try: {d['try_next']}." for d in diags]
    parity = dec.get("parity") or []
    if parity:
        lines += ["", "## The host is not the board", "",
                  f"Top-1 predictions compared across targets on the same rows for "
                  f"{len(parity)} (variant, pair of targets); flagged when a variant disagrees "
                  "beyond its fp32 root's own cross-target disagreement by 1 point (p < 0.01).",
                  ""]
        flagged = [f for f in parity if f.get("diverges")]
        lines += [f"- **{f['label']}**: {f['message']}. Try: {f['try_next']}." for f in flagged]
        if not flagged:
            lines.append("- no variant diverges across targets beyond its fp32 root.")
    drift = drift_rows(dec)
    if drift:
        lines += ["", "## Field data against the calibration set", "",
                  "`field_clip`: the share of field rows in which the worst quantized tensor "
                  "clips (outside the int8 range its calibration baked in).", ""]
        for r in drift:
            lines.append(f"- **{r['label']}**: field_clip {r['field_clip']:.1%}")
            lines += [f"  - `{f['code']}`: {f['message']}. Try: {f['try_next']}."
                      for f in r.get("drift_findings") or []]
    lines += sustained_md(dec)
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w[0]}: {w[1]}" for w in warnings]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


def sustained_md(dec: dict[str, Any]) -> list[str]:
    """Burst against steady state and energy per inference of every row with a sustained run."""
    rows = [r for r in dec.get("rows", []) if r.get("steady_p50_s") is not None]
    if not rows:
        return []
    out = ["", "## Sustained load", "",
           "Burst p50 (first window) against steady-state p50 (last third of the windows); "
           "energy per inference with its 95 % CI where a sensor exists."
           + (" The recommendation ranks by steady state."
              if "steady_p50_s" in ((dec.get("ranks") or {}).values() or [dec.get("rank")])
              else ""), ""]
    for r in sorted(rows, key=lambda r: (r["target"], r["steady_p50_s"])):
        thr = r.get("first_throttle_s")
        line = (f"- **{r['label']}** @{r['target']}: burst "
                f"{fmt_seconds(r.get('burst_p50_sustained_s'))} -> steady "
                f"{fmt_seconds(r['steady_p50_s'])}"
                + (f" (x{r['steady_over_burst']:.2f})" if r.get("steady_over_burst") else "")
                + (f", first throttle at {thr:.0f} s" if thr is not None else ", no throttle flag"))
        if r.get("energy_per_inference_j") is not None:
            ci = r.get("energy_per_inference_ci") or [None, None]
            line += (f"; {r['energy_per_inference_j'] * 1e3:.3g} mJ per inference"
                     + (f" [{ci[0] * 1e3:.3g}, {ci[1] * 1e3:.3g}]" if ci[0] is not None else "")
                     + f" at {r.get('power_w') or 0:.2f} W ({r.get('energy_source')})")
        else:
            why = (r.get("unavailable") or {}).get("energy_per_inference_j", "not measured")
            line += f"; energy unavailable: {why}"
        out.append(line)
    return out


def drift_rows(dec: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per variant with a drift measurement (drift is a fact of model and data)."""
    seen: dict[str, dict[str, Any]] = {}
    for r in dec.get("rows", []):
        if r.get("field_clip") is not None and r["variant_id"] not in seen:
            seen[r["variant_id"]] = r
    return sorted(seen.values(), key=lambda r: -r["field_clip"])


def batch_text(dec: dict[str, Any]) -> str:
    """'per call at batch 1', or, for variants each measured at its own batch, per call or (when
    their batches differ on a target) per row."""
    if dec.get("batch", 1) is not None:
        return f"per call at batch {dec.get('batch', 1)}"
    if any(r.get("latency_basis") == "per row" for r in dec.get("rows", [])):
        return ("per row (p50 / batch: the variants run at different batches, each at its own, "
                "so their latency is compared per row)")
    return "per call, each model at its own batch"


def labels_of(dec: dict[str, Any]) -> dict[str, str]:
    return {r["variant_id"]: r["label"] for r in dec.get("rows", [])}


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1200px;color:#222;padding:0 1em}h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;
border-bottom:1px solid #ddd}table{border-collapse:collapse;font-size:.85em;margin:1em 0}
td,th{border:1px solid #ddd;padding:.3em .5em;text-align:right}td:first-child,th:first-child,
td.l{text-align:left}tr.front td:first-child{font-weight:600}.rec{background:#eef7ee;
border-left:4px solid #3a3;padding:.8em 1em}.norec{background:#fdf1e6;border-left:4px solid #d80;
padding:.8em 1em}img{max-width:100%;height:auto;display:block;margin:1em 0}.muted{color:#777}
code{background:#f4f4f4;padding:0 .2em}"""


def index_html(title: str, dec: dict[str, Any], records: list[dict[str, Any]],
               out: Path, images: list[str]) -> str:
    envs, warnings, errors = _collect(records)
    req = dec.get("require") or "none"
    h = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>",
         "<meta name=viewport content='width=device-width,initial-scale=1'>",
         f"<style>{CSS}</style></head><body>", f"<h1>{_e(title)}</h1>"]
    for on, rec in _recs(dec):
        if rec.get("chosen"):
            h.append(f"<div class=rec><p><b>Recommended{_e(on)}: {_e(rec['chosen_label'])}</b> "
                     f"(<code>{_e(rec['chosen'][:12])}</code>) under <code>{_e(req)}</code></p><ul>")
        else:
            head = (f"No variant meets every constraint{_e(on)} (<code>{_e(req)}</code>). "
                    f"Closest: <b>{_e(rec.get('closest_label'))}</b>, which misses:"
                    if rec.get("closest") else f"No recommendation{_e(on)}: nothing was measured.")
            h.append(f"<div class=norec><p>{head}</p><ul>")
            h += [f"<li>{_e(m)}</li>" for m in rec.get("missing", [])]
        h += [f"<li>{_e(r)}</li>" for r in rec["reasons"]]
        h.append("</ul></div>")
    h.append(f"<h2>Variants</h2><p class=muted>Latency {_e(batch_text(dec))}"
             f" (p50 with its 95 % bootstrap CI and n); accuracy with its 95 % Wilson CI and n; "
             f"drops are absolute against the baseline <code>{_e((dec.get('baseline') or '')[:12])}"
             f"</code>. Agreement / SQNR: top-1 agreement and signal-to-quantization-noise ratio of "
             f"the first output against the fp32 root, measured when the variant was built. "
             f"Frontier: not dominated beyond the confidence intervals.</p><table><tr>")
    cols = C.in_view("html")
    h += [f"<th>{_e(c.header(dec['rows'], 'html'))}</th>" for c in cols] + ["</tr>"]
    for r in C.sorted_rows(dec["rows"]):
        cls = " class=front" if r.get("on_frontier") else ""
        h.append(f"<tr{cls}>" + "".join(f"<td>{_e(c.cell(r, 'html'))}</td>" for c in cols)
                 + "</tr>")
    h.append("</table>")
    captions = {
        "latency_vs_accuracy": "Latency against accuracy. Red: the frontier; error bars: 95 % CIs. "
                               "Up and to the left is better.",
        "accuracy_vs_severity": "Accuracy against corruption severity, one panel per family.",
        "corruption_heatmap": "Accuracy drop per corruption against the baseline (red: worse).",
        "latency_cdf": "Every timed run: the distribution of latency per variant and target.",
        "throughput": "Throughput and latency against batch size (from p50, with its CI).",
        "size_memory": "Model file size (and compressed) and the worker's peak RSS.",
        "op_profile": "Per-operator time of the fastest and slowest variants (profiler on).",
        "board_state": "Temperature and frequency over the run (where the target exposes them).",
    }
    diags = dec.get("diagnoses") or []
    if diags:
        h.append("<h2>Why int8 is slower or less accurate here</h2><p class=muted>Int8 variants "
                 "slower than their fp32 root beyond both CIs, or agreeing with it on fewer than "
                 "98 % of top-1 classes, with the target's CPU features and the graph onnxruntime "
                 "runs.</p><table><tr><th>variant</th><th>target</th><th>diagnosis</th>"
                 "<th>what happened</th><th>try next</th></tr>")
        names = labels_of(dec)
        for d in diags:
            h.append("<tr>" + "".join(f"<td class=l>{_e(c)}</td>" for c in (
                names.get(d["variant_id"], d["variant_id"][:12]), d["target"], d["code"],
                d["message"], d["try_next"])) + "</tr>")
        h.append("</table>")
    parity = dec.get("parity") or []
    if parity:
        h.append("<h2>The host is not the board</h2><p class=muted>Top-1 predictions of each "
                 "variant compared across targets on the same rows, against its fp32 root's own "
                 "cross-target disagreement (flagged: 1 point beyond it, p &lt; 0.01).</p>"
                 "<table><tr><th>variant</th><th>targets</th><th>disagreement</th>"
                 "<th>fp32 root</th><th>max output error</th><th>verdict</th></tr>")
        for f in parity:
            root = f.get("root_disagreement")
            err = f.get("max_output_error")
            cells = (f["label"], " vs ".join(f["targets"]), f"{f['disagreement']:.1%} of {f['n']}",
                     "-" if root is None else f"{root:.1%}",
                     "-" if err is None else f"{err:.2%} of range",
                     f.get("message", "within the root's own difference") if f.get("diverges")
                     else "within the root's own difference")
            h.append("<tr>" + "".join(f"<td class=l>{_e(c)}</td>" for c in cells) + "</tr>")
        h.append("</table>")
    sustained = sustained_md(dec)
    if sustained:  # the same lines as summary.md: title, what they mean, one item per row
        h.append(f"<h2>{_e(sustained[1].lstrip('# '))}</h2><p class=muted>{_e(sustained[3])}</p><ul>")
        h += [f"<li>{_e(line[2:].replace('**', ''))}</li>" for line in sustained[5:]]
        h.append("</ul>")
    from ..measure.spread import board_spread
    spread = board_spread(records)
    if spread:
        h.append("<h2>Boards of a group</h2><p class=muted>p50 per board; spread = slowest - "
                 "fastest, relative to the group's median p50; \"~noise\" when the boards' 95 % "
                 "CIs overlap.</p><table><tr>" + "".join(
                     f"<th>{c}</th>" for c in ("model", "group", "boards", "median p50",
                                               "spread", "per board")) + "</tr>")
        for e in spread:
            rel = "" if e["relative_spread"] is None else f" ({e['relative_spread']:.1%})"
            cells = (e["model"], e["group"], e["boards"], fmt_seconds(e["median_p50_s"]),
                     fmt_seconds(e["spread_s"]) + rel + ("" if e["beyond_noise"] else " ~noise"),
                     ", ".join(f"{b} {fmt_seconds(v)}" for b, v in e["p50_s"].items()))
            h.append("<tr>" + "".join(f"<td class=l>{_e(c)}</td>" for c in cells) + "</tr>")
        h.append("</table>")
    drift = drift_rows(dec)
    if drift:
        h.append("<h2>Field data against the calibration set</h2><p class=muted>field_clip: the "
                 "share of field rows in which the worst quantized tensor clips (outside the "
                 "int8 range its calibration baked in).</p><table><tr><th>variant</th>"
                 "<th>field_clip</th><th>finding</th><th>try next</th></tr>")
        for r in drift:
            fs = r.get("drift_findings") or [{"message": "no finding", "try_next": ""}]
            for f in fs:
                h.append("<tr>" + "".join(f"<td class=l>{_e(c)}</td>" for c in (
                    r["label"], f"{r['field_clip']:.1%}", f["message"], f["try_next"])) + "</tr>")
        h.append("</table>")
    h.append("<h2>Plots</h2>")
    for img in images:
        if not img.endswith(".png"):
            continue
        data = base64.b64encode((out / img).read_bytes()).decode("ascii")
        stem = img[:-4]
        h.append(f"<figure><img alt='{_e(stem)}' src='data:image/png;base64,{data}'>"
                 f"<figcaption class=muted>{_e(captions.get(stem, stem))} "
                 f"(<a href='{_e(stem)}.svg'>SVG</a>)</figcaption></figure>")
    h.append("<h2>Targets</h2><ul>")
    for t, env in sorted(envs.items()):
        v = env.get("versions") or {}
        h.append(f"<li><b>{_e(t)}</b>: {_e(env.get('cpu_model') or 'unknown CPU')}"
                 f"{_e(_features(env))}, "
                 f"{_e(env.get('cores'))} cores, {_e(env.get('os'))}, Python {_e(env.get('python'))}, "
                 f"numpy {_e(v.get('numpy'))}, onnxruntime {_e(v.get('onnxruntime'))}, LiteRT "
                 f"{_e(v.get('ai_edge_litert'))}; unavailable: "
                 f"{_e(', '.join(env.get('unavailable') or []) or 'nothing')}</li>")
    h.append("</ul>")
    if warnings:
        h.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{_e(a)}: {_e(b)}</li>" for a, b in warnings)
                 + "</ul>")
    if errors:
        h.append("<h2>Errors</h2><ul>" + "".join(f"<li>{_e(e)}</li>" for e in errors) + "</ul>")
    h.append("<p class=muted>Files: summary.md, results.csv, results.jsonl (every record with raw "
             "samples), decision.json, plots as PNG and SVG.</p></body></html>")
    return "\n".join(h) + "\n"


def write_report(out: Path, dec: dict[str, Any], results_path: Path, title: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    records = list(read_records(results_path))
    if results_path.resolve() != (out / "results.jsonl").resolve():
        write_output(out / "results.jsonl", lambda f: f.write(results_path.read_bytes()))
    labels = {r["variant_id"]: r["label"] for r in dec["rows"]}
    images = charts.render_all([  # in parallel where CPUs are idle (EDGEPROF_REPORT_PROCESSES)
        (charts.latency_vs_accuracy, (dec["rows"], out)),
        (charts.accuracy_vs_severity, (records, labels, out)),
        (charts.corruption_heatmap, (records, labels, dec.get("baseline"), out)),
        (charts.latency_distributions, (records, out, dec.get("batch", 1))),
        (charts.throughput_curves, (records, out)),
        (charts.size_memory_bars, (dec["rows"], out)),
        (charts.op_profile_bars, (records, out)),
        (charts.board_state, (records, out)),
        (charts.sustained_timeline, (records, out)),
    ])
    write_csv(out / "results.csv", dec["rows"])
    write_text(out / "decision.json", json.dumps(dec, indent=1, sort_keys=True, default=str))
    write_text(out / "summary.md", summary_md(title, dec, records, images))
    write_text(out / "index.html", index_html(title, dec, records, out, images))
    return out / "index.html"
