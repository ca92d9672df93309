"""Terminal tables (rich) for result records."""
from __future__ import annotations

from typing import Any, Iterable

from rich import box
from rich.console import Console
from rich.table import Table

from ..units import fmt_bytes, fmt_seconds


def terminal_console(stderr: bool = False) -> Console:
    """A console for stdout (stderr when stdout carries data, e.g. ``--json -``); logs and pipes
    get a wide page instead of rich's 80 columns."""
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(width=140, stderr=stderr)


def cold_median(rec: dict[str, Any]) -> float | None:
    totals = (rec.get("cold_start") or {}).get("total_s")
    return sorted(totals)[len(totals) // 2] if totals else None


def _ci(stats: dict[str, Any], key: str) -> str:
    """``6.31 us ±0.4%``: the estimate and the half-width of its 95 % CI, relative."""
    value = stats[f"{key}_s"]
    lo, hi = stats.get(f"{key}_ci_s") or (value, value)
    half = max(hi - value, value - lo) / value if value > 0 else 0.0
    return f"{fmt_seconds(value, compact=True)}±{half:.1%}"


def latency_table(records: Iterable[dict[str, Any]]) -> Table:
    t = Table(title="latency per call (p50, p99 ± half-width of the 95 % bootstrap CI)",
              title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("model", overflow="fold", min_width=12)
    t.add_column("target", overflow="fold")  # every row names the machine it was measured on
    lat = [r for r in records if r.get("kind") == "latency"]
    modes = any(r.get("mode", "burst") != "burst" for r in lat)
    if modes:  # burst and sustained records side by side: say which is which
        t.add_column("mode")
    for col in ("thr", "b", "p50", "p90", "p99", "n", "first", "cold", "RSS", "size"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in sorted(lat, key=lambda r: (r["model"]["name"], r["target"], r["threads"], r["batch"],
                                        r.get("mode", "burst"))):
        s, m = r["stats"], r["model"]
        t.add_row(m["name"], str(r["target"]), *([r.get("mode", "burst")] if modes else []),
                  str(r["threads"]), str(r["batch"]), _ci(s, "p50"),
                  fmt_seconds(s["p90_s"], compact=True), _ci(s, "p99"), str(s["n"]),
                  fmt_seconds(r.get("first_inference_s"), compact=True),
                  fmt_seconds(cold_median(r), compact=True),
                  fmt_bytes(r.get("peak_rss_bytes"), compact=True),
                  fmt_bytes(m["model_bytes"], compact=True))
    return t


def spread_table(entries: list[dict[str, Any]]) -> Table:
    """Boards of one inventory group: p50 per board, the group's median and the spread."""
    t = Table(title="boards of a group (p50 per board; spread = slowest - fastest, relative to "
                    "the median)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("model", "group", "thr", "b", "boards", "median p50", "spread", "fastest",
                "slowest", "per board"):
        t.add_column(col, justify="right" if col in ("thr", "b", "boards", "median p50",
                                                     "spread") else "left", overflow="fold")
    for e in entries:
        rel = "" if e["relative_spread"] is None else f" ({e['relative_spread']:.1%})"
        t.add_row(e["model"], e["group"], str(e["threads"]), str(e["batch"]), str(e["boards"]),
                  fmt_seconds(e["median_p50_s"], compact=True),
                  fmt_seconds(e["spread_s"], compact=True) + rel
                  + ("" if e["beyond_noise"] else " ~noise"),
                  e["fastest"], e["slowest"],
                  ", ".join(f"{b} {fmt_seconds(v, compact=True)}" for b, v in e["p50_s"].items()))
    return t


def op_table(rec: dict[str, Any], top: int = 10) -> Table | None:
    ops = rec.get("op_profile")
    if not ops:
        return None
    t = Table(title=f"operator time: {rec['model']['name']} on {rec['target']} t={rec['threads']} "
                    f"b={rec['batch']}",
              title_justify="left")
    if not ops.get("available"):
        t.add_column("unavailable")
        t.add_row(ops.get("reason", ""))
        return t
    per_op = ops["per_op"]
    total = sum(v["total_s"] for v in per_op.values()) or 1.0
    runs = ops.get("runs", 1)
    for col in ("op type", "per inference", "share", "calls/inference"):
        t.add_column(col, justify="left" if col == "op type" else "right")
    for op, v in sorted(per_op.items(), key=lambda kv: -kv[1]["total_s"])[:top]:
        t.add_row(op, fmt_seconds(v["total_s"] / runs), f"{v['total_s'] / total:.1%}",
                  f"{v['calls'] / runs:.3g}")
    return t


def print_records(records: list[dict[str, Any]], console: Console) -> None:
    lat = [r for r in records if r.get("kind") == "latency"]
    if lat:
        console.print(latency_table(lat))
    from ..measure.spread import board_spread
    spread = board_spread(lat)
    if spread:  # every board of an inventory group: the group's median and board-to-board spread
        console.print(spread_table(spread))
    for r in lat:
        for w in r.get("warnings", []):
            console.print(f"  [yellow]warning[/] {r['model']['name']} on {r['target']} "
                          f"t={r['threads']} "
                          f"b={r['batch']}: {w['message']}", highlight=False)
    for r in lat:
        sus, e = r.get("sustained"), r.get("energy") or {}
        if sus and sus.get("windows"):
            def us(v: Any) -> str:
                return fmt_seconds(v, compact=True) if v is not None else "-"
            when = (f"first throttle at {sus['first_throttle_s']:.0f} s"
                    if sus.get("first_throttle_s") is not None else "no throttle flag")
            drop = (f", frequency drop at {sus['first_frequency_drop_s']:.0f} s"
                    if sus.get("first_frequency_drop_s") is not None else "")
            console.print(f"  sustained {r['model']['name']} on {r['target']}: burst p50 "
                          f"{us(sus['burst_p50_s'])} -> steady {us(sus['steady_p50_s'])} "
                          f"(x{sus['steady_over_burst']:.2f}) over {r['duration_s']:.0f} s, "
                          f"{when}{drop}" + (" [interrupted]" if r.get("interrupted") else ""),
                          highlight=False)
            if e.get("available"):
                idle = "-" if e.get("idle_w") is None else f"{e['idle_w']:.2f} W"
                lo, hi = e["joules_per_inference_ci"]
                console.print(f"  energy {e['mean_w']:.2f} W, {e['joules_per_inference'] * 1e3:.3f} "
                              f"mJ per inference [{lo * 1e3:.3f}, {hi * 1e3:.3f}], idle {idle}",
                              highlight=False)
            elif e:
                console.print(f"  energy unavailable: {e.get('reason')}", highlight=False)
            o = r.get("sampling_overhead") or {}
            if o.get("ratio"):
                console.print(f"  sampling cost: p50 sampled / unsampled rounds x{o['ratio']:.4f} "
                              f"({o['n_pairs']} pairs; {o['what']})", highlight=False)
    for r in lat:
        t = op_table(r)
        if t is not None:
            console.print(t)


def print_info(info: dict[str, Any], console: Console) -> None:
    """`edgeprof inspect` output."""
    macs = info.get("macs")
    mac_text = f"{macs:,} (batch {info.get('macs_batch', 1)})" if macs is not None else "unknown"
    if macs is not None and info.get("macs_unknown_nodes"):
        mac_text += f", plus unknown for {len(info['macs_unknown_nodes'])} node(s)"
    opsets = ", ".join(f"{k} {v}" for k, v in (info.get("opsets") or {}).items())
    head = [("model", f"{info['name']} ({info['variant_id'][:12]})"),
            ("format", info["format"] + (f", opset {opsets}" if opsets else "")),
            ("size", f"{fmt_bytes(info['model_bytes'])} ({fmt_bytes(info['zlib_bytes'])} zlib)"),
            ("parameters", f"{info['params']:,}"),
            ("weight dtypes", ", ".join(f"{k} {v:,}" for k, v in info["weight_dtypes"].items()) or "-"),
            ("MACs", mac_text),
            ("nodes", str(info["nodes"]))]
    for k, v in head:
        console.print(f"[bold]{k:>13}[/]  {v}", highlight=False)
    io = Table(box=box.SIMPLE_HEAD, title="inputs and outputs", title_justify="left")
    for col in ("", "name", "shape", "dtype"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for v in info[kind]:
            shape = "x".join(str(d) if d is not None else "?" for d in v["shape"])
            q = f" (scale {v['quant'][0]:.3g}, zero {v['quant'][1]})" if v.get("quant") else ""
            io.add_row(kind[:-1], v["name"], shape, v["dtype"] + q)
    console.print(io)
    console.print("[bold]operators[/]  " + ", ".join(f"{k} x{v}" for k, v in info["op_counts"].items()),
                  highlight=False)
    sup = info.get("support", {})
    if sup.get("supported") is True:
        console.print(f"[green]runs on target '{sup['target']}'[/] ({sup.get('runtime', '')}): "
                      "every operator is supported", highlight=False)
    elif sup.get("supported") is False:
        for m in sup.get("missing", []):
            console.print(f"[red]not supported[/] on '{sup['target']}': {m['op']} "
                          f"(node '{m['node']}', version {m['version']})", highlight=False)
    else:
        console.print(f"support on '{sup.get('target')}': unknown ({sup.get('reason', '')})",
                      highlight=False)


def _fid_row(name: str, m: dict[str, Any]) -> list[str]:
    sq = "exact" if m.get("exact") else (f"{m['sqnr_db']:.1f} dB" if m.get("sqnr_db") is not None else "-")
    top1 = f"{m['top1_agreement']:.2%}" if m.get("top1_agreement") is not None else "-"
    rel = f"{m['relative_max_error']:.2%}" if m.get("relative_max_error") is not None else "-"
    return [name, str(m["n"]), top1, f"{m['cosine_mean']:.5f}", f"{m['max_abs_error']:.3g}", rel, sq]


def print_variant(v: Any, reused: bool, console: Console, lineage: list[Any] = ()) -> None:
    """A variant after a pass: identity, lineage, notes, fidelity and sensitivity."""
    how = "reused from the cache" if reused else f"built in {v.timings.get('pass_s', 0):.2f} s"
    console.print(f"[bold]{v.short_id}[/]  {v.label}  ({how})", highlight=False)
    console.print(f"  file: {v.path} ({fmt_bytes(v.path.stat().st_size)})", highlight=False)
    if lineage:
        console.print("  lineage: " + " -> ".join(f"{x.short_id} {x.pass_name}" for x in lineage),
                      highlight=False)
    for note in v.notes:
        console.print(f"  [yellow]warning[/] {note}", highlight=False)
    fid = v.fidelity or {}
    for which in ("vs_parent", "vs_root"):
        if which not in fid:
            continue
        t = Table(title=f"fidelity {which.replace('_', ' ')} ({fid.get('data_role', 'data')}, "
                        f"{fid['rows']} rows)", title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("output", "n", "top-1 agree", "cosine", "max |err|", "rel. max", "SQNR"):
            t.add_column(col, justify="left" if col == "output" else "right")
        for name, m in fid[which].items():
            t.add_row(*_fid_row(name, m))
        console.print(t)
    sens = v.extra.get("sensitivity") if v.extra else None
    if sens:
        t = Table(title="per-layer sensitivity: each layer quantized alone, worst first",
                  title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("rank", "node", "op", "SQNR", "top-1 agree", "max |err|"):
            t.add_column(col, justify="right" if col in ("rank", "SQNR") else "left")
        for r in sens[:15]:
            t.add_row(str(r["rank"]), r["node"], r["op"],
                      "exact" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f} dB",
                      f"{r['top1_agreement']:.2%}" if r.get("top1_agreement") is not None else "-",
                      f"{r['max_abs_error']:.3g}")
        console.print(t)
        console.print("  keep the worst layers in float with --exclude-nodes NAME[,NAME]",
                      highlight=False)


def print_decision(dec: dict[str, Any], counts: dict[str, int], console: Console,
                   report: Any = None) -> None:
    """The sweep's ending: the variants, the frontier and the recommendation with its reasons."""
    from . import columns as C
    from .write import batch_text
    t = Table(title=f"variants (latency {batch_text(dec)}; drops vs baseline)",
              title_justify="left", box=box.SIMPLE_HEAD)
    cols = C.in_view("term")
    for c in cols:
        t.add_column(c.header(dec["rows"], "term"), justify=c.align)
    for r in C.sorted_rows(dec["rows"]):
        t.add_row(*(c.cell(r, "term") for c in cols))
    console.print(t)
    recs = dec.get("recommendations") or {"": dec["recommendation"]}
    for target, rec in recs.items():
        on = f" on {target}" if len(recs) > 1 else ""
        if rec.get("chosen"):
            console.print(f"[bold green]recommended{on}[/]: {rec['chosen_label']} "
                          f"({rec['chosen'][:12]})", highlight=False)
        elif rec.get("closest"):
            console.print(f"[bold yellow]no variant meets every constraint{on}[/]; closest: "
                          f"{rec['closest_label']}, which misses: " + "; ".join(rec["missing"]),
                          highlight=False)
        for reason in rec.get("reasons", []):
            console.print(f"  - {reason}", highlight=False)
    names = {r["variant_id"]: r["label"] for r in dec["rows"]}
    for d in dec.get("diagnoses") or []:
        console.print(f"[yellow]int8[/] {names.get(d['variant_id'], d['variant_id'][:12])} "
                      f"@{d['target']}: {d['message']}; try: {d['try_next']}", highlight=False)
    for f in dec.get("parity") or []:
        if f.get("diverges"):
            console.print(f"[yellow]host vs board[/] {f['message']}; try: {f['try_next']}",
                          highlight=False)
    console.print("  " + ", ".join(f"{k} {v}" for k, v in counts.items()), highlight=False)
    if report is not None:
        console.print(f"report: {report}", highlight=False)
