"""``edgeprof robustness``: accuracy under corruptions, calibration and attacks of deployed
variants against their fp32 baseline, measured on the target's runtime."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click


@click.command("robustness")
@click.argument("models", nargs=-1, required=True)
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Evaluation images: .npz ('x' uint8 or float32 NHWC, optional 'y') or an image folder.")
@click.option("--preprocess", type=click.Path(path_type=Path), help="InputSpec TOML of the root model.")
@click.option("--target", "target_name", default="local", show_default=True, metavar="NAME",
              help="Where to run: local, or a board's target file NAME.toml.")
@click.option("--targets-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Look for target files here first.")
@click.option("--accept-new-host-key", is_flag=True, help="Record a board's host key on first contact.")
@click.option("--inventory", type=click.Path(path_type=Path, dir_okay=False),
              help="An Ansible inventory: --group shards the rows across its boards, --target "
                   "picks one host.")
@click.option("--group", default=None, help="Inventory group evaluated as one target: its rows "
              "are split across the boards (same CPU model and runtime versions, else refused).")
@click.option("--max-boards", type=click.IntRange(1, 1024), default=None,
              help="Boards of --group at work at once (the others replace lost ones).")
@click.option("--corruptions", default="all", show_default=True,
              help="ImageNet-C corruptions: all, none, or names separated by commas.")
@click.option("--severities", default="1-5", show_default=True, help="Severities, e.g. 1-5 or 1,3,5.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the random corruptions and attacks.")
@click.option("--attack", "attack_names", metavar="NAMES",
              help="square (black-box, on each variant), fgsm, pgd (transfer, need --torch).")
@click.option("--eps", default="2/255,8/255", show_default=True,
              help="L-inf budgets in the [0, 1] image domain (8/255 = 8 grey levels).")
@click.option("--queries", default=1000, show_default=True, type=int,
              help="Square Attack query budget per image.")
@click.option("--attack-limit", type=int, help="Attack only the first N evaluated images.")
@click.option("--pgd-steps", default=10, show_default=True, type=int)
@click.option("--torch", "torch_factory", metavar="MODULE:FACTORY",
              help="PyTorch source of the transfer attacks (FGSM and PGD).")
@click.option("--weights", type=click.Path(path_type=Path), help="State dict for --torch.")
@click.option("--baseline", help="Baseline model (default: the fp32 root of each model's family).")
@click.option("--limit", type=int, help="Evaluate the first N images only (stated in the records).")
@click.option("--batch", default=250, show_default=True, type=int, help="Rows per inference call.")
@click.option("--metric", default="top1", show_default=True, metavar="NAME",
              help="Task metric that drives the scores and mCE: top1, topk:K, mae, rmse, miou, "
                   "agreement[:output], or module:function. Calibration and attacks are top-1's "
                   "and are skipped (with the reason) for non-classification metrics.")
@click.option("--results", type=click.Path(path_type=Path),
              help="Append records to this JSON Lines file; keys already there are skipped.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the records as JSON.")
@click.option("--cache-dir", type=click.Path(path_type=Path))
@click.option("--wait", is_flag=True, help="If another run is writing --results, wait for it.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.pass_context
def robustness(ctx: click.Context, models: tuple[str, ...], data: Path, preprocess: Path | None,
               target_name: str, targets_dir: Path | None, accept_new_host_key: bool,
               corruptions: str, severities: str, seed: int, attack_names: str | None, eps: str,
               queries: int, attack_limit: int | None, pgd_steps: int, torch_factory: str | None,
               weights: Path | None, baseline: str | None, limit: int | None, batch: int,
               metric: str, results: Path | None, json_out: Path | None, cache_dir: Path | None,
               wait: bool, quiet: bool, inventory: Path | None = None, group: str | None = None,
               max_boards: int | None = None) -> None:
    """Robustness of MODELS (paths or variant ids) against their fp32 baseline: clean and
    corrupted accuracy, mCE, calibration (ECE, NLL, Brier) and adversarial robust accuracy."""
    from ..data import load_npz
    from ..errors import InputError
    from ..metrics import get_metric, is_classification
    from ..report.terminal import terminal_console
    from ..results import ResultStore, check_writable, write_json
    from ..robust import metrics as M
    from ..storage import is_stdout
    from ..robust.evaluate import (ATTACKS, TRANSFER, AttackConfig, RobustnessConfig,
                                       evaluate_robustness, families)
    from ..variants.cache import Cache
    from .progress import progress_bar

    chosen = get_metric(metric)
    sev = M.parse_severities(severities)
    names = [t.strip() for t in (attack_names or "").split(",") if t.strip()]
    for a in names:
        if a not in ATTACKS:
            raise InputError(f"--attack {a!r}: valid attacks are {', '.join(ATTACKS)}")
    if torch_factory and not any(a in TRANSFER for a in names):
        names += list(TRANSFER)
    if any(a in TRANSFER for a in names) and not torch_factory:
        raise InputError("fgsm and pgd are transfer attacks: give the PyTorch source with "
                         "--torch module:factory --weights W.pt")
    if weights and not torch_factory:
        raise InputError("--weights belongs to --torch module:factory; give --torch too")
    eps_given = ctx.get_parameter_source("eps") is not click.core.ParameterSource.DEFAULT
    if eps_given and not names:
        raise InputError("--eps applies to attacks: add --attack square or --torch module:factory")
    eps_list = M.parse_eps(eps)
    for flag, v in (("--queries", queries), ("--limit", limit), ("--attack-limit", attack_limit),
                    ("--pgd-steps", pgd_steps), ("--batch", batch)):
        if v is not None and v < 1:
            raise InputError(f"{flag} {v}: must be at least 1")
    for flag, p in (("--json", json_out), ("--results", results)):
        if p:
            check_writable(p, flag)
    ds = load_npz(data)
    channels = next(iter(ds.x.values())).shape[3] if next(iter(ds.x.values())).ndim == 4 else 1
    config = RobustnessConfig(
        corruptions=M.parse_corruptions(corruptions, channels), severities=sev, seed=seed,
        limit=limit, torch_factory=torch_factory, torch_weights=weights, batch=batch,
        metric=chosen.name,
        attacks=[AttackConfig(name=a, eps=eps_list, queries=queries, limit=attack_limit,
                              steps=pgd_steps) for a in dict.fromkeys(names)])
    if not config.corruptions and not config.attacks:
        raise InputError("nothing to evaluate: --corruptions none and no --attack")
    if not config.corruptions and not is_classification(chosen):
        raise InputError(f"nothing to evaluate: --corruptions none, and attacks score top-1 of a "
                         f"classifier, not --metric {chosen.name}")
    cache = Cache(cache_dir)
    groups = families(cache, list(models), preprocess, baseline)
    store = ResultStore(results, wait=wait)
    try:
        from ..targets.shard import cli_target
        target = cli_target(target_name, targets_dir=targets_dir, inventory=inventory, group=group,
                            max_boards=max_boards, accept_new_host_key=accept_new_host_key,
                            wait=wait)
    except BaseException:
        store.release()
        raise
    ctx.edgeprof_interrupt_note = (f"records written so far are in {results}; rerun the same "
                                   "command to resume" if results else
                                   "nothing was saved (use --results FILE to keep records)")
    records: list[dict[str, Any]] = []
    skipped = []
    try:
        with progress_bar(quiet) as prog:
            for gi, (base_ref, refs) in enumerate(groups):
                def sub(desc: str, frac: float, gi: int = gi) -> None:
                    prog(desc, (gi + frac) / len(groups))
                out = evaluate_robustness(refs, ds, config, target=target,
                                          target_name=target.name, cache_dir=cache.root,
                                          baseline=base_ref, store=store, progress=sub)
                records += out.records
                skipped += out.skipped
    finally:
        getattr(target, "close", lambda: None)()
        store.release()
    console = terminal_console(stderr=is_stdout(json_out))
    for ref in skipped:
        console.print(f"  skipped (already in {results}): {ref.name}", highlight=False)
    for why in dict.fromkeys(w for r in records for w in (r.get("skipped") or {}).values()):
        console.print(f"  note: {why}", highlight=False)
    print_robustness(records, console)
    for board, why in (getattr(target, "lost", None) or {}).items():  # a group (--group)
        console.print(f"  [yellow]board lost[/] {board}: {why}; the other boards of "
                      f"{target.name} evaluated its rows", highlight=False)
    store.check()
    if json_out:
        write_json(json_out, records)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _ci(v: float | None, ci: list[float] | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else f"{v:.1%}"


def print_robustness(records: list[dict[str, Any]], console) -> None:
    from rich import box
    from rich.table import Table

    recs = [r for r in records if r.get("kind") == "robustness"]
    if not recs:
        return
    task = [r for r in recs if r.get("metric", "top1") != "top1"]
    if task:
        print_metric_robustness(task, console)
        recs = [r for r in recs if r not in task]
        if not recs:
            return
    t = Table(title="robustness (95 % Wilson intervals; mCE: baseline = 1.00)", title_justify="left",
              box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("model", "target", "n", "clean acc", "corruption acc", "mCE", "rel mCE",
                "ECE clean", "ECE corr", "agree"):  # every row names where it was measured
        t.add_column(col, justify="left" if col in ("model", "target") else "right",
                     overflow="fold")
    for r in recs:
        cal = r.get("calibration") or {}
        corr = cal.get("corrupted_mean") or {}
        agree = (r.get("agreement_with_baseline") or {}).get("corrupted_mean")
        name = r["model"]["name"] + (" (baseline)" if r.get("baseline_id") == r["variant_id"] else "")
        t.add_row(name, str(r["target"]), str(r["n"]),
                  _ci(r.get("clean_accuracy"), r.get("clean_accuracy_ci")),
                  _ci(r.get("mean_corruption_accuracy"), r.get("mean_corruption_accuracy_ci")),
                  "-" if r.get("mce") is None else f"{r['mce']:.2f}",
                  "-" if r.get("relative_mce") is None else f"{r['relative_mce']:.2f}",
                  "-" if r.get("ece") is None else f"{r['ece']:.3f}",
                  "-" if corr.get("ece") is None else f"{corr['ece']:.3f}", _pct(agree))
    console.print(t)
    rows = [(r, a, label, e) for r in recs for a, per in (r.get("attacks") or {}).items()
            for label, e in per.items()]
    if rows:
        t = Table(title="attacks (L-inf, eps in the [0, 1] image domain)", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("model", "target", "attack", "eps", "robust acc", "n", "queries mean/median",
                    "max |dx|"):
            t.add_column(col, justify="left" if col in ("model", "target", "attack") else "right")
        for r, a, label, e in rows:
            q = "-" if e.get("queries_mean") is None else \
                f"{e['queries_mean']:.0f} / {e['queries_median']:.0f}"
            t.add_row(r["model"]["name"], str(r["target"]), a, label, _pct(e.get("robust_accuracy")), str(e["n"]),
                      q, f"{e['max_linf']:.4f}" + ("" if e.get("within_eps") else " !"))
        console.print(t)


def print_metric_robustness(recs: list[dict[str, Any]], console) -> None:
    """One table per task metric: clean and mean corruption score with their intervals, mCE
    from the metric's error, and top-1 calibration where the metric is a classifier's."""
    from rich import box
    from rich.table import Table

    from ..metrics import format_score, get_metric, is_classification

    for name in dict.fromkeys(r["metric"] for r in recs):
        m = get_metric(name)
        group = [r for r in recs if r["metric"] == name]
        better = "higher" if m.higher_is_better else "lower"
        ci = "Wilson" if m.proportion else "bootstrap over rows"
        rule = group[0].get("error_rule") or ("1 - score" if m.higher_is_better else "score")
        t = Table(title=f"robustness, metric {name} ({better} is better; 95 % intervals: clean "
                        f"{ci}, corruption mean bootstrap over rows; mCE: baseline = 1.00, "
                        f"error = {rule})",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        cols = ["model", "target", "n", f"clean {name}", f"corruption {name}", "mCE", "rel mCE"]
        if is_classification(m):
            cols += ["clean top-1", "ECE clean"]
        for col in cols:
            t.add_column(col, justify="left" if col in ("model", "target") else "right",
                         overflow="fold")

        def sc(v, c):
            if v is None:
                return "-"
            s = format_score(m, v)
            return f"{s} [{format_score(m, c[0])}, {format_score(m, c[1])}]" if c else s

        for r in group:
            name_ = r["model"]["name"] + (" (baseline)" if r.get("baseline_id") == r["variant_id"]
                                          else "")
            row = [name_, str(r["target"]), str(r["n"]),
                   sc(r.get("clean_score"), r.get("clean_score_ci")),
                   sc(r.get("mean_corruption_score"), r.get("mean_corruption_score_ci")),
                   "-" if r.get("mce") is None else f"{r['mce']:.2f}",
                   "-" if r.get("relative_mce") is None else f"{r['relative_mce']:.2f}"]
            if is_classification(m):
                row += [_pct(r.get("clean_accuracy")),
                        "-" if r.get("ece") is None else f"{r['ece']:.3f}"]
            t.add_row(*row)
        console.print(t)
