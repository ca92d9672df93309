"""The report's plots (matplotlib, Agg). Each function draws one figure from rows/records and
returns the written file names (PNG and SVG), or [] when there is nothing to draw; it decides that
before its first call of ``_plt()``. ``render_all`` renders a report's charts, in parallel in
forked processes where CPUs are idle."""
from __future__ import annotations

import json
import os
import signal
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "frost", "fog", "spatter"),
    "digital": ("brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
                "saturate"),
}


_probing = threading.local()  # set by _draws: _plt() raises _WouldDraw instead of importing


class _WouldDraw(Exception):
    """A chart probed by _draws reached _plt(): it has something to draw."""


def _plt():
    if getattr(_probing, "on", False):
        raise _WouldDraw
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"svg.hashsalt": "edgeprof", "font.size": 9})
    return plt


def _save(fig, out: Path, stem: str) -> list[str]:
    """PNG and SVG, each written whole (a full disk leaves the old file or none, never half)."""
    from ..storage import write_output
    plt = _plt()
    try:
        write_output(out / f"{stem}.png",
                     lambda f: fig.savefig(f, format="png", dpi=110, metadata={"Software": None}))
        if fig.get_layout_engine() is not None:  # the layout the PNG drew, kept for the SVG
            fig.set_layout_engine("none")          # (constrained layout costs as much as a draw)
        write_output(out / f"{stem}.svg",
                     lambda f: fig.savefig(f, format="svg", metadata={"Date": None, "Creator": None}))
    finally:
        plt.close(fig)
    return [f"{stem}.png", f"{stem}.svg"]


Job = tuple[Callable[..., list[str]], tuple]  # a chart function and its arguments


def _draws(job: Job) -> list[str] | None:
    """Probe a chart without drawing it: [] when it has nothing to draw (its final result: every
    chart function returns [] before its first _plt() call), None when it would draw or fails
    (the render then raises as the serial code does)."""
    _probing.on = True
    try:
        return job[0](*job[1])
    except Exception:  # _WouldDraw, or an error the real render will raise
        return None
    finally:
        _probing.on = False


def processes(n_jobs: int) -> int:
    """Processes to render n_jobs drawing charts: ``EDGEPROF_REPORT_PROCESSES`` (1 = serial;
    it may exceed the CPUs, for tests), else min(4, usable CPUs, n_jobs); 1 without os.fork."""
    from ..errors import InputError
    env = os.environ.get("EDGEPROF_REPORT_PROCESSES", "").strip()
    if env:
        try:
            want = int(env)
        except ValueError:
            raise InputError(f"EDGEPROF_REPORT_PROCESSES must be an integer, got {env!r}") from None
    else:
        try:
            want = min(4, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            want = min(4, os.cpu_count() or 1)
    return max(1, min(want, n_jobs)) if hasattr(os, "fork") else 1


def _fork() -> int:
    """os.fork, with SIGINT held until the child has reset it to the default (a Ctrl-C in between
    would raise KeyboardInterrupt in the child's copy of the parent's code)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    pid = -1
    try:
        # Forking with other threads alive (the sweep's idle daemon threads) is safe here: the
        # child only renders with matplotlib's Agg backend (imported, like every module a chart
        # needs, by the parent before the fork) and writes files, then leaves with os._exit.
        # Python >= 3.12 warns about any fork with threads; this one is deliberate.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    finally:
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return pid


def _child(fd: int, jobs: dict[int, Job]) -> None:
    """In a forked child: render the jobs, write {job index: file names} of those that worked
    as JSON to the pipe, and leave with os._exit (no atexit handlers, no flush of the parent's
    stdio buffers). A job that fails is left out: the parent renders it again."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the child; the parent cleans up
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        done = {}
        for i, (fn, args) in jobs.items():
            try:
                done[i] = fn(*args)
            except Exception:
                pass
        data = json.dumps(done).encode()
        while data:
            data = data[os.write(fd, data):]
        code = 0
    except BaseException:
        pass
    finally:
        os._exit(code)


def _reap(pid: int, kill: bool = False) -> None:
    if kill:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _reply(pipe, pid: int, deadline: float) -> dict[int, list[str]]:
    """A child's answer, read to its end; {} when it died, wrote anything but the answer, or
    has not answered by the deadline (then it is killed: a hung child never hangs the report)."""
    import select
    import time
    ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
    raw = pipe.read() if ready else b""
    pipe.close()
    _reap(pid, kill=not ready)
    try:
        got = {int(k): v for k, v in json.loads(raw).items()}
    except (ValueError, AttributeError):
        return {}
    return {k: v for k, v in got.items()
            if isinstance(v, list) and all(isinstance(x, str) for x in v)}


def render_all(jobs: list[Job]) -> list[str]:
    """Render every chart job; their file names in job order, exactly as one after another.

    A chart takes ~0.5 s and nothing else runs while a report is written, so the charts that draw
    are split round-robin into ``processes()`` groups: the parent renders the first, a forked
    child each of the others, sending its file names back over a pipe as JSON. Any job a child
    did not report (an exception, a crash, a kill, bad JSON, no answer in 60 s or 10 times the
    parent's own share) the parent renders itself, so parallelism never loses a chart, and a
    failing chart raises here as in the serial code."""
    import time
    results: dict[int, list[str]] = {}
    todo = []
    for i, job in enumerate(jobs):
        probed = _draws(job)
        if probed is None:
            todo.append(i)
        else:
            results[i] = probed
    n = processes(len(todo))
    groups = [todo[k::n] for k in range(n)]
    children: list[tuple[int, Any, list[int]]] = []  # (pid, read end of its pipe, job indices)
    if n > 1:
        _plt()  # imported before the fork (waits for the sweep's background import to finish)
    try:
        for group in groups[1:]:
            r, w = os.pipe()
            try:
                pid = _fork()
            except OSError:  # no more processes: the parent renders the rest
                os.close(r)
                os.close(w)
                break
            if pid == 0:
                _child(w, {i: jobs[i] for i in group})  # never returns
            os.close(w)
            children.append((pid, os.fdopen(r, "rb"), group))
        t0 = time.monotonic()
        for i in groups[0]:
            results[i] = jobs[i][0](*jobs[i][1])
        deadline = time.monotonic() + max(60.0, 10 * (time.monotonic() - t0))
        while children:
            pid, pipe, group = children[0]
            got = _reply(pipe, pid, deadline)
            children.pop(0)
            results.update({i: got[i] for i in group if i in got})
    except BaseException:
        for pid, pipe, _ in children:  # Ctrl-C or an error in the parent: no child outlives it
            pipe.close()
            _reap(pid, kill=True)
        raise
    for i in todo:  # what a child left undone, one after another as before
        if i not in results:
            results[i] = jobs[i][0](*jobs[i][1])
    return [name for i in range(len(jobs)) for name in results[i]]


def _plain_log_labels(axis) -> None:
    """Log-axis tick labels as plain numbers ("0.2", not 2x10^-1): easier to read, and no
    mathtext (its parser costs ~0.7 s the first time a report uses it)."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):  # LogFormatter picks which ticks get a label; "%g" writes it
        def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
            return f"{x:.3g}"
    axis.set_major_formatter(Plain(labelOnlyBase=False))
    axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.4)))


def _short(label: str, n: int = 34) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def latency_vs_accuracy(rows: list[dict[str, Any]], out: Path) -> list[str]:
    """Each variant a numbered point with both confidence intervals; the key lists the numbers
    (labels beside crowded points would overlap)."""
    pts = [r for r in rows if r.get("p50_s") is not None and r.get("accuracy") is not None]
    k, scale, ylabel = "accuracy", 100, "top-1 accuracy (%), 95 % Wilson CI"
    if not pts:  # a task metric other than top-1: its own figure and unit
        pts = [r for r in rows if r.get("p50_s") is not None and r.get("score") is not None]
        if pts:
            m = pts[0].get("metric", "score")
            k, scale = "score", 1
            ylabel = (f"{m} (95 % CI, " + ("higher" if pts[0].get("higher_is_better", True)
                                          else "lower") + " is better)")
    if not pts:
        return []
    plt = _plt()
    targets = sorted({r["target"] for r in pts})
    fig, axes = plt.subplots(1, len(targets), figsize=(9.5 * len(targets), 4.8), squeeze=False,
                             constrained_layout=True)
    for ax, target in zip(axes[0], targets):
        tp = sorted([r for r in pts if r["target"] == target], key=lambda r: r["p50_s"])
        key = []
        for i, r in enumerate(tp, 1):
            x, y = r["p50_s"] * 1e3, r[k] * scale
            xe = [[max(0.0, x - r["p50_ci_s"][0] * 1e3)], [max(0.0, r["p50_ci_s"][1] * 1e3 - x)]]
            ye = [[max(0.0, y - r[k + "_ci"][0] * scale)], [max(0.0, r[k + "_ci"][1] * scale - y)]]
            front = r.get("on_frontier")
            ax.errorbar([x], [y], xerr=xe, yerr=ye, fmt="o" if front else "s",
                        color="C3" if front else "0.55", ms=7 if front else 5, capsize=3,
                        zorder=3 if front else 2, alpha=1.0 if front else 0.8)
            ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8,
                        fontweight="bold" if front else "normal",
                        color="C3" if front else "0.3")
            key.append(f"{i:>2}  {_short(r['label'], 42)}" + ("  (frontier)" if front else "")
                       + ("  (baseline)" if r.get("is_baseline") else ""))
        fr = sorted([r for r in tp if r.get("on_frontier")], key=lambda r: r["p50_s"])
        if len(fr) > 1:
            ax.plot([r["p50_s"] * 1e3 for r in fr], [r[k] * scale for r in fr], "--",
                    color="C3", lw=1, zorder=1)
        ax.set_xlabel("p50 latency per call (ms), 95 % CI")
        ax.set_ylabel(ylabel)
        ax.set_title(f"latency vs {'accuracy' if k == 'accuracy' else pts[0].get('metric')} on "
                     f"{target} (red: frontier)")
        ax.grid(alpha=0.3)
        ax.text(1.02, 1.0, "\n".join(key), transform=ax.transAxes, va="top", ha="left",
                fontsize=7, family="monospace")
    return _save(fig, out, "latency_vs_accuracy")


def _rob_metric(rob: list[dict[str, Any]]) -> tuple[Any, str, float]:
    """The robustness records' task metric (edgeprof.metrics; top-1 for older records), the
    figure's axis label and the scale of its values (100 for fractions shown in %)."""
    from ..metrics import get_metric, is_fraction
    m = get_metric(next((r.get("metric") for r in rob if r.get("metric")), "top1"))
    if m.name == "top1":
        return m, "top-1 accuracy (%)", 100.0
    return (m, f"{m.name} (%)", 100.0) if is_fraction(m) else (m, m.name, 1.0)


def _cell_score(m: dict[str, Any]) -> float | None:
    """A per-corruption cell's figure: top-1 accuracy, or the task metric's score."""
    return m["accuracy"] if m.get("accuracy") is not None else m.get("score")


def accuracy_vs_severity(records: list[dict[str, Any]], labels: dict[str, str], out: Path) -> list[str]:
    rob = [r for r in records if r["kind"] == "robustness" and r.get("per_corruption")]
    if not rob:
        return []
    metric, ylabel, scale = _rob_metric(rob)
    plt = _plt()
    fams = [(f, names) for f, names in FAMILIES.items()
            if any(n in r["per_corruption"] for r in rob for n in names)]
    fig, axes = plt.subplots(1, len(fams), figsize=(3.6 * len(fams), 3.6), squeeze=False,
                             constrained_layout=True, sharey=True)
    for ax, (fam, names) in zip(axes[0], fams):
        for i, r in enumerate(sorted(rob, key=lambda r: labels.get(r["variant_id"], ""))):
            sev_acc: dict[int, list[float]] = {}
            for n in names:
                for s, m in (r["per_corruption"].get(n) or {}).items():
                    if _cell_score(m) is not None:
                        sev_acc.setdefault(int(s), []).append(_cell_score(m))
            clean = r.get("clean_accuracy") if metric.name == "top1" else r.get("clean_score")
            if not sev_acc or clean is None:
                continue
            xs = [0] + sorted(sev_acc)
            ys = [clean * scale] + [float(np.mean(sev_acc[s])) * scale for s in xs[1:]]
            ax.plot(xs, ys, marker="o", ms=3, color=f"C{i % 10}",
                    label=_short(labels.get(r["variant_id"], r["variant_id"][:12]), 30))
        ax.set_title(f"{fam} (mean over {len([n for n in names if any(n in r['per_corruption'] for r in rob)])})")
        ax.set_xlabel("severity (0 = clean)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=6, loc="lower left")
    return _save(fig, out, "accuracy_vs_severity")


def corruption_heatmap(records: list[dict[str, Any]], labels: dict[str, str], baseline: str | None,
                       out: Path) -> list[str]:
    rob = {r["variant_id"]: r for r in records if r["kind"] == "robustness" and r.get("per_corruption")}
    if not rob or baseline not in rob:
        return []
    base = rob[baseline]
    from ..metrics import error_of
    metric, _, scale = _rob_metric(list(rob.values()))
    names = [n for n in base["per_corruption"]]
    vids = sorted(rob, key=lambda v: labels.get(v, v))
    grid = np.full((len(names), len(vids)), np.nan)
    for j, v in enumerate(vids):
        for i, n in enumerate(names):
            a = [_cell_score(m) for m in (rob[v]["per_corruption"].get(n) or {}).values()]
            b = [_cell_score(m) for m in base["per_corruption"][n].values()]
            if a and b and None not in a + b:  # the drop: error above the baseline's
                grid[i, j] = (error_of(metric, float(np.mean(a)))
                              - error_of(metric, float(np.mean(b)))) * scale
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.1 * len(vids) + 3, 0.32 * len(names) + 1.8),
                           constrained_layout=True)
    lim = max(1.0, float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0)
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(vids)), [_short(labels.get(v, v[:12]), 22) for v in vids],
                  rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    for i in range(len(names)):
        for j in range(len(vids)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:+.1f}", ha="center", va="center", fontsize=6)
    what = "accuracy" if metric.name == "top1" else metric.name
    fig.colorbar(im, ax=ax, label=f"{what} drop vs baseline ({'points' if scale == 100 else 'error'}"
                                  ", mean over severities)")
    ax.set_title(f"{what} drop per corruption against the fp32 baseline")
    return _save(fig, out, "corruption_heatmap")


CDF_POINTS = 600  # > the plot's width in pixels


def latency_distributions(records: list[dict[str, Any]], out: Path, batch: int | None) -> list[str]:
    lat = [r for r in records if r["kind"] == "latency" and (batch is None or r["batch"] == batch)
           and r.get("mode", "burst") == "burst"]
    if not lat:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2), constrained_layout=True)
    for i, r in enumerate(sorted(lat, key=lambda r: (r["target"], r["model"]["name"], r["threads"]))):
        x = np.sort(np.asarray(r["samples_s"])) * 1e3
        y = np.arange(1, len(x) + 1) / len(x)
        if len(x) > CDF_POINTS:  # the steps at CDF_POINTS evenly spaced ranks, ends kept: the
            keep = np.unique(np.linspace(0, len(x) - 1, CDF_POINTS).round().astype(int))
            x, y = x[keep], y[keep]  # same curve at this width, without 10,000 vertices
        ax.step(x, y, where="post", color=f"C{i % 10}", lw=1.2,
                label=_short(f"{r['model']['name']} @{r['target']} t={r['threads']}", 40))
    ax.set_xscale("log")
    _plain_log_labels(ax.xaxis)
    ax.set_xlabel("latency per call (ms, log scale), " +
                  (f"batch {batch}" if batch is not None else "each model at its own batch"))
    ax.set_ylabel("fraction of runs (CDF)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, loc="lower right")
    ax.set_title("latency distributions (every timed run)")
    return _save(fig, out, "latency_cdf")


def size_memory_bars(rows: list[dict[str, Any]], out: Path) -> list[str]:
    rs = [r for r in rows if r.get("model_bytes")]
    if not rs:
        return []
    plt = _plt()
    rs = sorted(rs, key=lambda r: (r["target"], r["label"]))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 0.3 * len(rs) + 1.8), constrained_layout=True)
    names = [_short(f"{r['label']} @{r['target']}", 40) for r in rs]
    y = np.arange(len(rs))
    a1.barh(y, [r["model_bytes"] / 1024 for r in rs], color="C0", label="file")
    a1.barh(y, [(r.get("zlib_bytes") or 0) / 1024 for r in rs], color="C1", height=0.4,
            label="zlib-compressed")
    a1.set_yticks(y, names, fontsize=7)
    a1.set_xlabel("model size (KiB)")
    a1.legend(fontsize=7)
    a2.barh(y, [(r.get("peak_rss_bytes") or 0) / 2**20 for r in rs], color="C2")
    a2.set_yticks(y, [""] * len(rs))
    a2.set_xlabel("peak RSS of the worker (MiB)")
    for a in (a1, a2):
        a.grid(alpha=0.3, axis="x")
        a.invert_yaxis()
    return _save(fig, out, "size_memory")


def op_profile_bars(records: list[dict[str, Any]], out: Path) -> list[str]:
    lat = [r for r in records if r["kind"] == "latency" and (r.get("op_profile") or {}).get("available")]
    if not lat:
        return []
    lat.sort(key=lambda r: r["stats"]["p50_s"])
    picks = [lat[0]] + ([lat[-1]] if len(lat) > 1 else [])
    plt = _plt()
    fig, axes = plt.subplots(1, len(picks), figsize=(5 * len(picks), 3.5), squeeze=False,
                             constrained_layout=True)
    for ax, r, which in zip(axes[0], picks, ("fastest", "slowest")):
        ops = r["op_profile"]["per_op"]
        runs = r["op_profile"].get("runs", 1)
        items = sorted(ops.items(), key=lambda kv: -kv[1]["total_s"])[:10]
        ax.barh([k for k, _ in items], [v["total_s"] / runs * 1e6 for _, v in items], color="C4")
        ax.invert_yaxis()
        ax.set_xlabel("time per inference (us, profiler on)")
        ax.set_title(_short(f"{which}: {r['model']['name']}", 45), fontsize=8)
        ax.grid(alpha=0.3, axis="x")
    return _save(fig, out, "op_profile")


def board_state(records: list[dict[str, Any]], out: Path) -> list[str]:
    series = [(r, [s for s in r.get("state_series") or [] if s[1] is not None or s[2] is not None])
              for r in records if r["kind"] == "latency"]
    series = [(r, s) for r, s in series if s]
    if not series:
        return []
    plt = _plt()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True, constrained_layout=True)
    t0 = min(s[0][0] for _, s in series)
    for i, (r, s) in enumerate(series):
        t = [p[0] - t0 for p in s]
        lab = _short(f"{r['model']['name']} @{r['target']}", 40)
        if any(p[1] is not None for p in s):
            a1.plot(t, [p[1] for p in s], ".", color=f"C{i % 10}", label=lab)
        if any(p[2] is not None for p in s):
            a2.plot(t, [p[2] / 1e6 if p[2] else None for p in s], ".", color=f"C{i % 10}")
    a1.set_ylabel("temperature (C)")
    a2.set_ylabel("mean CPU frequency (MHz)")
    a2.set_xlabel("time since the first round (s)")
    a1.legend(fontsize=6)
    return _save(fig, out, "board_state")


def throughput_curves(records: list[dict[str, Any]], out: Path) -> list[str]:
    """Throughput (samples/s, from p50) and p50 latency against batch size, one line per
    model and thread count, with the p50 confidence interval as error bars."""
    lat = [r for r in records if r["kind"] == "latency" and r.get("mode", "burst") == "burst"]
    if len({r["batch"] for r in lat}) < 2:
        return []
    plt = _plt()
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
        label = _short(f"{name}, {threads} thread{'s' if threads > 1 else ''}", 40)
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
        _plain_log_labels(ax.xaxis)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=6)
    fig.suptitle("Throughput and latency against batch size (error bars: 95 % CI of p50)")
    return _save(fig, out, "throughput")


def sustained_timeline(records: list[dict[str, Any]], out: Path) -> list[str]:
    """Sustained runs: p50 per window, the hottest temperature and the lowest mean CPU frequency
    per window, against time since the run began; a dashed line where the board first
    throttled. Panels without a sensor say so."""
    sus = [r for r in records if r["kind"] == "latency" and str(r.get("mode", "")).startswith(
        "sustained") and r.get("windows")]
    if not sus:
        return []
    plt = _plt()
    fig, axes = plt.subplots(3, 1, figsize=(8, 6.5), sharex=True, constrained_layout=True)
    panels = (("p50_s", 1e3, "p50 per window (ms)"), ("temp_c", 1, "temperature (C)"),
              ("cur_hz", 1e-6, "CPU frequency (MHz)"))
    for i, r in enumerate(sorted(sus, key=lambda r: (r["target"], r["model"]["name"],
                                                      r["threads"]))):
        lab = _short(f"{r['model']['name']} @{r['target']} t={r['threads']}"
                     + (" (interrupted)" if r.get("interrupted") else ""), 48)
        t = [w["t_s"] for w in r["windows"]]
        for ax, (k, scale, _) in zip(axes, panels):
            y = [w[k] * scale if w.get(k) is not None else np.nan for w in r["windows"]]
            if not all(np.isnan(y)):
                ax.plot(t, y, "-o", ms=3, color=f"C{i % 10}", label=lab)
        thr = (r.get("sustained") or {}).get("first_throttle_s")
        if thr is not None:
            for ax in axes:
                ax.axvline(thr, color=f"C{i % 10}", ls="--", lw=0.8)
    for ax, (_, _, ylabel) in zip(axes, panels):
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(0.5, 0.5, "no sensor on the target", transform=ax.transAxes, ha="center",
                    va="center", color="0.5")
    axes[0].legend(fontsize=6)
    axes[-1].set_xlabel("time since the sustained run began (s); dashed: first throttle")
    fig.suptitle("Sustained load: latency, temperature and frequency over time")
    return _save(fig, out, "sustained")
