"""Result records -> one flat row per (variant, target): the numbers decisions are made on.

Every value carries its interval where one exists (``*_ci``) and its n, so decisions can respect
noise. Drops are relative to a baseline row (the fp32 root of the family by default)."""
from __future__ import annotations

from typing import Any

from ..results import latest_run_errors

ALIASES = {"latency": "p50_s", "p50": "p50_s", "p99": "p99_s", "peak_rss": "peak_rss_bytes",
           "memory": "peak_rss_bytes", "size": "model_bytes", "model_size": "model_bytes",
           "accuracy": "accuracy", "mca": "mean_corruption_accuracy",
           "corruption_accuracy": "mean_corruption_accuracy", "metric_drop": "score_drop",
           "steady_p50": "steady_p50_s", "steady": "steady_p50_s",
           "energy_per_inference": "energy_per_inference_j", "energy": "energy_per_inference_j"}


def build_rows(records: list[dict[str, Any]], threads: int | None = None,
               batch: int | None = 1) -> list[dict[str, Any]]:
    """Latency at (threads, batch) plus accuracy and robustness of each (variant, target)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(rec: dict[str, Any]) -> dict[str, Any]:
        key = (rec["variant_id"], rec["target"])
        if key not in rows:
            m = rec.get("model", {})
            rows[key] = {"variant_id": rec["variant_id"], "target": rec["target"],
                         "label": m.get("name", rec["variant_id"][:12]),
                         "format": m.get("format"), "model_bytes": m.get("model_bytes"),
                         "zlib_bytes": m.get("zlib_bytes"), "root_id": rec.get("root_id"),
                         "errors": []}
        return rows[key]

    lat = [r for r in records if r["kind"] == "latency" and r.get("mode", "burst") == "burst"
           and (batch is None or r["batch"] == batch) and (threads is None or r["threads"] == threads)]
    # with several thread counts and no choice given, keep each variant's fastest setting
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in lat:
        k = (r["variant_id"], r["target"])
        if k not in best or r["stats"]["p50_s"] < best[k]["stats"]["p50_s"]:
            best[k] = r
    for r in best.values():
        x = row(r)
        s = r["stats"]
        x.update(p50_s=s["p50_s"], p50_ci_s=s["p50_ci_s"], p99_s=s["p99_s"], p99_ci_s=s["p99_ci_s"],
                 n_latency=s["n"], threads=r["threads"], batch=r["batch"],
                 peak_rss_bytes=r.get("peak_rss_bytes"), runtime=r.get("runtime"),
                 warnings=[w["code"] for w in r.get("warnings", [])],
                 samples_s=r["samples_s"])
        if r.get("root_id"):
            x["root_id"] = r["root_id"]
    sustained_rows(records, row, threads, batch)
    for r in records:
        if r["kind"] == "accuracy":
            x = row(r)
            x.update(n_accuracy=r["n"], eval_data=r.get("data_file_sha256") or r.get("data_sha256"))
            if "score" in r:  # a task metric other than top-1 (edgeprof.metrics)
                x.update(score=r["score"], score_ci=r["score_ci"], metric=r["metric"],
                         higher_is_better=r["higher_is_better"])
            else:
                x.update(accuracy=r["accuracy"], accuracy_ci=r["accuracy_ci"],
                         correct=r.get("correct"), score=r["accuracy"],
                         score_ci=r["accuracy_ci"], metric="top1", higher_is_better=True)
        elif r["kind"] == "robustness":
            x = row(r)
            for k in ("mean_corruption_accuracy", "mean_corruption_accuracy_ci", "mce",
                      "relative_mce", "ece", "robust_accuracy", "mean_corruption_score",
                      "mean_corruption_score_ci"):
                if k in r:
                    x[k] = r[k]
            if r.get("metric") not in (None, "top1"):  # a task metric drives the corruptions
                x["robustness_metric"] = r["metric"]
                x["robustness_higher_is_better"] = r.get("higher_is_better", True)
            if "mean_corruption_accuracy" in r or "mean_corruption_score" in r:
                x["n_robustness"] = r.get("n")
            worst = None
            for attack, by_eps in (r.get("attacks") or {}).items():
                for eps, m in (by_eps or {}).items():
                    if isinstance(m, dict) and m.get("robust_accuracy") is not None and \
                            (worst is None or m["robust_accuracy"] < worst[0]):
                        budget = f", {m['queries_budget']} queries" if m.get("queries_budget") else ""
                        worst = (m["robust_accuracy"], f"{attack} {eps}{budget}", m.get("n"))
            if worst is not None:
                x["attack_accuracy"], x["attack"], x["n_attack"] = worst
    for r in latest_run_errors(records):
        row(r)["errors"].append(r.get("error", ""))
    if batch is None:
        per_row(list(rows.values()))
    fidelity = {r["variant_id"]: r for r in records if r["kind"] == "fidelity"}
    drift = {r["variant_id"]: r for r in records if r["kind"] == "drift"}  # the latest per variant
    for x in rows.values():
        f = fidelity.get(x["variant_id"])
        if f is not None:
            metric = str(x.get("metric") or "")
            x.update(fidelity_summary(f, metric.split(":", 1)[1] if metric.startswith("agreement:")
                                      else None))
        d = drift.get(x["variant_id"])
        if d is not None:  # measured on the host: a fact of the model and the data
            x.update(field_clip=d.get("field_clip"), drift_findings=d.get("findings") or [])
    return list(rows.values())


def per_row(rows: list[dict[str, Any]]) -> None:
    """Variants of one target measured at different batches (each at its own: a batch-64 ONNX
    root, a batch-1 TFLite child) are compared per row: p50, p99 and their CIs divided by the
    batch, marked ``latency_basis = "per row"``."""
    by_target: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("p50_s") is not None:
            by_target.setdefault(r["target"], []).append(r)
    for trows in by_target.values():
        if len({r["batch"] for r in trows}) < 2:
            continue
        for r in trows:
            b = r["batch"]
            for k in ("p50_s", "p99_s", "steady_p50_s"):
                if r.get(k) is not None:
                    r[k] = r[k] / b
            for k in ("p50_ci_s", "p99_ci_s", "steady_p50_ci_s"):
                if r.get(k):
                    r[k] = [v / b for v in r[k]]
            r["samples_s"] = [v / b for v in r.get("samples_s", [])]
            r["latency_basis"] = "per row"


def sustained_rows(records: list[dict[str, Any]], row: Any, threads: int | None,
                   batch: int | None) -> None:
    """Finished sustained runs (``mode = "sustained"``) add steady-state latency and energy per
    inference to their row (the fastest steady state when several thread counts ran). Where no
    sensor could measure energy, ``unavailable`` says why, so a constraint on it never passes
    silently."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        if r["kind"] != "latency" or r.get("mode") != "sustained" or r.get("interrupted") or \
                (batch is not None and r["batch"] != batch) or \
                (threads is not None and r["threads"] != threads):
            continue
        st = (r.get("sustained") or {}).get("steady_p50_s")
        if st is None:
            continue
        k = (r["variant_id"], r["target"])
        if k not in best or st < best[k]["sustained"]["steady_p50_s"]:
            best[k] = r
    for r in best.values():
        x = row(r)
        sus, e = r["sustained"], r.get("energy") or {}
        x.update(steady_p50_s=sus["steady_p50_s"], steady_p50_ci_s=sus.get("steady_p50_ci_s"),
                 n_steady=sus.get("steady_n"), burst_p50_sustained_s=sus.get("burst_p50_s"),
                 steady_over_burst=sus.get("steady_over_burst"),
                 first_throttle_s=sus.get("first_throttle_s"),
                 first_frequency_drop_s=sus.get("first_frequency_drop_s"),
                 temp_max_c=sus.get("temp_max_c"), sustained_s=r.get("duration_s"),
                 sampling_overhead=(r.get("sampling_overhead") or {}).get("ratio"))
        x.setdefault("threads", r["threads"])
        x.setdefault("batch", r["batch"])
        if e.get("available"):
            x.update(energy_per_inference_j=e["joules_per_inference"],
                     energy_per_inference_ci=e.get("joules_per_inference_ci"),
                     power_w=e.get("mean_w"), idle_power_w=e.get("idle_w"),
                     energy_source=e.get("source"), n_energy=e.get("n_rounds"))
        else:
            x.setdefault("unavailable", {})["energy_per_inference_j"] = \
                e.get("reason") or "no energy figure in the sustained record"


def fidelity_summary(rec: dict[str, Any], output: str | None = None) -> dict[str, Any]:
    """Agreement with the fp32 root on one output (``output``, else the first): top-1 agreement
    and SQNR in dB (None when the outputs are identical: infinite SQNR). Top-1 agreement is
    kept only where it means something: a model with one output, or the output the task metric
    names (``agreement:<output>``); the argmax of one head of a multi-head model (box offsets,
    landmarks) is no class, so only its SQNR is given."""
    vs_root = rec.get("vs_root") or {}
    if not vs_root:
        return {}
    name = output if output in vs_root else next(iter(vs_root))
    m = vs_root[name]
    top1 = m.get("top1_agreement") if (len(vs_root) == 1 or name == output) else None
    return {"top1_agreement": top1, "sqnr_db": m.get("sqnr_db"),
            "fidelity_exact": bool(m.get("exact")), "fidelity_output": name,
            "n_fidelity": m.get("n", rec.get("rows"))}


def add_drops(rows: list[dict[str, Any]], baseline_id: str | None = None) -> str | None:
    """accuracy_drop and corruption_drop (absolute, as fractions) against the baseline row of the
    same target: ``baseline_id`` when given, else each row's own family root. Returns the
    baseline id (the first one found when families differ)."""
    by_target: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_target.setdefault(r["target"], []).append(r)
    chosen = baseline_id
    for target_rows in by_target.values():
        given = None
        if baseline_id:
            given = next((r for r in target_rows if r["variant_id"].startswith(baseline_id)), None)
        roots = {r["variant_id"]: r for r in target_rows if r.get("root_id") == r["variant_id"]}
        for r in target_rows:
            base = given or roots.get(r.get("root_id"))
            if base is None:
                continue
            chosen = chosen or base["variant_id"]
            if r.get("accuracy") is not None and base.get("accuracy") is not None:
                r["accuracy_drop"] = base["accuracy"] - r["accuracy"]
            if r.get("score") is not None and base.get("score") is not None and \
                    r.get("metric") == base.get("metric"):
                # how much worse than the baseline, whichever way the metric points
                d = base["score"] - r["score"]
                r["score_drop"] = d if r.get("higher_is_better", True) else -d
            if r.get("mean_corruption_accuracy") is not None and \
                    base.get("mean_corruption_accuracy") is not None:
                r["corruption_drop"] = base["mean_corruption_accuracy"] - r["mean_corruption_accuracy"]
            elif r.get("mean_corruption_score") is not None and \
                    base.get("mean_corruption_score") is not None and \
                    r.get("robustness_metric") == base.get("robustness_metric"):
                d = base["mean_corruption_score"] - r["mean_corruption_score"]  # positive: worse
                r["corruption_drop"] = d if r.get("robustness_higher_is_better", True) else -d
            r["is_baseline"] = r is base
    return chosen
