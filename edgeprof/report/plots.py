"""Plots (matplotlib, Agg; imported only when a report is written)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def throughput_curves(records: list[dict[str, Any]], path: Path) -> Path | None:
    """Throughput (samples/s, from p50) and p50 latency against batch size, one line per
    model and thread count, with the p50 confidence interval as error bars."""
    lat = [r for r in records if r["kind"] == "latency"]
    if len({r["batch"] for r in lat}) < 2:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in lat:
        groups.setdefault((r["model"]["name"], r["threads"]), []).append(r)
    for (name, threads), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r["batch"])
        b = [r["batch"] for r in rs]
        p50 = [r["stats"]["p50_s"] for r in rs]
        lo = [r["stats"]["p50_ci_s"][0] for r in rs]
        hi = [r["stats"]["p50_ci_s"][1] for r in rs]
        thr = [bb / p for bb, p in zip(b, p50)]
        label = f"{name}, {threads} thread{'s' if threads > 1 else ''}"
        ax_t.errorbar(b, thr, yerr=[[t - bb / h for t, bb, h in zip(thr, b, hi)],
                                    [bb / l_ - t for t, bb, l_ in zip(thr, b, lo)]],
                      marker="o", capsize=3, label=label)
        ax_l.errorbar(b, [p * 1e3 for p in p50],
                      yerr=[[(p - l_) * 1e3 for p, l_ in zip(p50, lo)],
                            [(h - p) * 1e3 for p, h in zip(p50, hi)]],
                      marker="o", capsize=3, label=label)
    batches = sorted({r["batch"] for r in lat})
    for ax, ylabel in ((ax_t, "throughput (samples/s, from p50)"), (ax_l, "p50 latency per call (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle("Throughput and latency against batch size (error bars: 95 % CI of p50)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
