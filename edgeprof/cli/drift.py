"""``edgeprof drift``: is the field data still the data a static int8 variant was calibrated on?
Clipped activation shares per quantized tensor, input drift and output agreement (see
:mod:`edgeprof.measure.drift`)."""
from __future__ import annotations

from pathlib import Path

import click


def _pct(x: float) -> str:
    return f"{x * 100:.3g} %" if 0 < x < 0.01 else f"{x * 100:.1f} %"


def _short(name: str, width: int = 56) -> str:
    """A tensor name for the table: a fused TFLite name ('a;b;c') by its first part."""
    if len(name) <= width:
        return name
    head = name.split(";")[0] + ";..." if ";" in name else name
    return head if len(head) <= width else name[: width - 3] + "..."


@click.command("drift")
@click.argument("variant")
@click.option("--calib", required=True, type=click.Path(path_type=Path),
              help="The calibration data the variant was quantized with (checked by sha256).")
@click.option("--field", "field_data", required=True, type=click.Path(path_type=Path),
              help="Field data (.npz, raw rows as for --calib).")
@click.option("--rows", default=500, show_default=True, type=int,
              help="Read at most N rows of each set (calibration, held-out, field).")
@click.option("--json", "json_out", type=click.Path(path_type=Path),
              help="Write the whole result as JSON.")
@click.option("--cache-dir", type=click.Path(path_type=Path))
def drift(variant: str, calib: Path, field_data: Path, rows: int, json_out: Path | None,
          cache_dir: Path | None) -> None:
    """Clipping of a static int8 VARIANT's activations on field data against its calibration
    set, input drift, and int8-vs-fp32 agreement on field rows against held-out rows. VARIANT:
    an ONNX int8-static variant (QDQ or QOperator) or a full-integer TFLite one (int8-static,
    int16x8)."""
    import json

    from ..measure.drift import drift as run_drift
    from ..report.terminal import terminal_console
    from ..results import check_writable

    if json_out is not None:
        check_writable(json_out, "--json")
    r = run_drift(variant, calib, field_data, cache_dir=cache_dir, rows=rows)
    console = terminal_console()

    def out(text: str, **_: object) -> None:
        console.print(text, highlight=False, markup=False)
    base = r.baseline["role"].split(" (")[0]
    out(f"drift of {r.variant_id[:12]} ({r.label}, {r.format}) against fp32 {r.reference_id[:12]}",
        highlight=False)
    out(f"calibration: {Path(r.calib['path']).name} ({r.calib['calib_rows']} rows calibrated); "
        f"baseline: {r.baseline['role']} {r.baseline['rows'][0]}-{r.baseline['rows'][1]}; "
        f"field: {Path(r.field['path']).name} ({r.field['n']} rows)", highlight=False)
    out(f"clipped activations, all quantized tensors: calibration {_pct(r.overall['calib'])}, "
        f"{base} {_pct(r.overall['baseline'])}, field {_pct(r.overall['field'])}", highlight=False)
    w = max([len(_short(t.tensor)) for t in r.tensors[:10]] + [6])
    out(f"  {'tensor':<{w}}  {'calib %':>9}  {'held %':>9}  {'field %':>9}  {'field rows':>10}",
        highlight=False)
    for t in r.tensors[:10]:
        out(f"  {_short(t.tensor):<{w}}  {t.calib_share * 100:9.4f}  "
            f"{t.baseline_share * 100:9.4f}  "
            f"{t.field_share * 100:9.4f}  {t.field_rows_share * 100:9.1f}%", highlight=False)
    if len(r.tensors) > 10:
        out(f"  ... {len(r.tensors) - 10} more tensors in --json", highlight=False)
    inp = r.input_drift
    ch = max(inp["channels"], key=lambda c: abs(c["mean_shift_sd"]))
    tests = ", ".join(f"{t['statistic']} KS {t['ks']:.2f} p={t['p']:.2g}" for t in inp["tests"])
    out(f"input drift: channel {ch['channel']} mean {ch['mean_shift_sd']:+.2f} sd, std x "
        f"{ch['std_ratio'] if ch['std_ratio'] is not None else float('nan'):.2f}; {tests} "
        f"(Bonferroni p={inp['p_corrected']:.2g})", highlight=False)
    a = r.agreement
    if a.get("metric"):
        out(f"int8 vs fp32 top-1 agreement: field {_pct(a['field']['agree'])} "
            f"(n={a['field']['n']}), {base} {_pct(a['baseline']['agree'])} "
            f"(n={a['baseline']['n']}); drop {a['drop'] * 100:+.1f} points, 95 % CI "
            f"{a['drop_ci'][0] * 100:+.1f} to {a['drop_ci'][1] * 100:+.1f}", highlight=False)
    else:
        out(f"agreement: {a.get('note')}", highlight=False)
    for n in r.notes:
        out(f"note: {n}", highlight=False)
    if not r.findings:
        out("findings: none (thresholds: " + ", ".join(f"{k}={v:g}" for k, v in
                                                       r.thresholds.items()) + ")", highlight=False)
    for f in r.findings:
        out(f"[{f.code}] {f.message}", highlight=False)
        out(f"  try: {f.try_next}", highlight=False)
    if json_out is not None:
        from ..storage import write_text
        write_text(json_out, json.dumps(r.to_dict(), indent=1) + "\n", "--json")
