"""Sustained load: what a board does after minutes of continuous inference (heat, frequency caps,
throttling), and energy per inference where a sensor exists.

``run_sustained`` keeps one worker busy for a duration in rounds (the worker reads temperature,
frequency, throttle flags and power/energy sensors before and after every round, outside the
timed loop); the analysis is pure functions over the recorded rounds: per-window latency, burst
p50 (first window) against steady-state p50 (last third), time to the first throttle flag and to
the first frequency drop, and energy: mean active power, idle power measured before, and joules
per inference with a bootstrap CI over rounds. Ctrl-C keeps the rounds measured so far (the
record is marked ``interrupted``)."""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

FREQ_DROP = 0.05          # a frequency 5 % below the first window's counts as a drop
THROTTLE_FLAGS = {"throttled", "arm frequency capped", "soft temperature limit"}


def _max_temp(snap: dict[str, Any]) -> float | None:
    temps = list((snap.get("temp_c") or {}).values())
    return max(temps) if temps else None


def _mean_freq(snap: dict[str, Any]) -> float | None:
    f = [v for v in (snap.get("cur_hz") or {}).values() if v]
    return sum(f) / len(f) if f else None


def _energy(snap: dict[str, Any]) -> float | None:
    e = snap.get("energy_j") or {}
    return sum(e.values()) if e else None


def _power(snap: dict[str, Any]) -> float | None:
    w = snap.get("power_w") or {}
    return sum(w.values()) if w else None


def windows(rounds: list[dict[str, Any]], window_s: float) -> list[dict[str, Any]]:
    """Rounds ({t0, t1, samples_s, before, after}) grouped into windows of ``window_s`` from the
    first round's start: p50 of the window's samples, temperature, frequency, throttle flags."""
    if not rounds:
        return []
    start = rounds[0]["t0"]
    out: dict[int, dict[str, Any]] = {}
    for r in rounds:
        k = int((r["t0"] - start) // window_s)
        w = out.setdefault(k, {"t_s": k * window_s, "samples_s": [], "temp_c": [], "hz": [],
                               "flags": set()})
        w["samples_s"] += list(r["samples_s"])
        for snap in (r["before"], r["after"]):
            t, f = _max_temp(snap), _mean_freq(snap)
            if t is not None:
                w["temp_c"].append(t)
            if f is not None:
                w["hz"].append(f)
            w["flags"] |= set(((snap.get("throttled") or {}).get("flags")) or [])
    res = []
    for k in sorted(out):
        w = out[k]
        res.append({"t_s": w["t_s"], "n": len(w["samples_s"]),
                    "p50_s": float(np.median(w["samples_s"])) if w["samples_s"] else None,
                    "temp_c": max(w["temp_c"]) if w["temp_c"] else None,
                    "cur_hz": min(w["hz"]) if w["hz"] else None,
                    "throttle_flags": sorted(w["flags"])})
    return res


def summarize(wins: list[dict[str, Any]]) -> dict[str, Any]:
    """Burst (first window) against steady state (last third of the windows), and when the board
    first throttled or dropped its frequency."""
    if not wins:
        return {"windows": 0}
    third = wins[-max(1, len(wins) // 3):]
    burst = wins[0]["p50_s"]
    steady = float(np.median([w["p50_s"] for w in third if w["p50_s"] is not None]))
    f0 = wins[0]["cur_hz"]
    drop = next((w["t_s"] for w in wins if f0 and w["cur_hz"] and w["cur_hz"] < f0 * (1 - FREQ_DROP)),
                None)
    thr = next((w["t_s"] for w in wins if THROTTLE_FLAGS & set(w["throttle_flags"])), None)
    temps = [w["temp_c"] for w in wins if w["temp_c"] is not None]
    return {"windows": len(wins), "burst_p50_s": burst, "steady_p50_s": steady,
            "steady_over_burst": steady / burst if burst else None,
            "first_frequency_drop_s": drop, "first_throttle_s": thr,
            "temp_start_c": temps[0] if temps else None, "temp_end_c": temps[-1] if temps else None,
            "temp_max_c": max(temps) if temps else None}


def energy(rounds: list[dict[str, Any]], idle: list[dict[str, Any]], batch: int = 1,
           seed: int = 0) -> dict[str, Any]:
    """Mean power during the rounds and joules per inference (energy counters where they exist,
    else the mean of power readings before and after each round), idle power subtracted as its
    own figure; a 95 % bootstrap CI over rounds."""
    per_round_w, per_round_j = [], []
    for r in rounds:
        dt = r["t1"] - r["t0"]
        e0, e1 = _energy(r["before"]), _energy(r["after"])
        if e0 is not None and e1 is not None and e1 >= e0 and dt > 0:
            w = (e1 - e0) / dt
        else:
            p = [x for x in (_power(r["before"]), _power(r["after"])) if x is not None]
            if not p:
                continue
            w = sum(p) / len(p)
        calls = len(r["samples_s"])
        if calls:
            per_round_w.append(w)
            per_round_j.append(w * dt / (calls * batch))
    if not per_round_w:
        return {"available": False,
                "reason": "no readable power or energy sensor on this target (hwmon "
                          "power*_input/energy*_input, powercap energy_uj)"}
    idle_w = None
    if len(idle) >= 2:
        e0, e1 = _energy(idle[0]), _energy(idle[-1])
        dt = idle[-1]["t_unix_s"] - idle[0]["t_unix_s"]
        if e0 is not None and e1 is not None and e1 >= e0 and dt > 0:
            idle_w = (e1 - e0) / dt
        else:
            p = [x for x in (_power(s) for s in idle) if x is not None]
            idle_w = sum(p) / len(p) if p else None
    rng = np.random.default_rng(seed)
    j = np.asarray(per_round_j)
    boot = j[rng.integers(0, len(j), size=(2000, len(j)))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    out = {"available": True, "mean_w": float(np.mean(per_round_w)), "n_rounds": len(j),
           "joules_per_inference": float(j.mean()), "joules_per_inference_ci": [float(lo), float(hi)],
           "idle_w": idle_w}
    if idle_w is not None:
        frac = max(0.0, 1 - idle_w / out["mean_w"]) if out["mean_w"] else 0.0
        out["active_joules_per_inference"] = out["joules_per_inference"] * frac
    return out


def run_sustained(worker: Any, duration_s: float, round_s: float = 0.5, window_s: float = 10.0,
                  idle_s: float = 1.0, batch: int = 1,
                  progress: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    """Continuous rounds on a loaded worker for ``duration_s``; idle power first. Returns the
    rounds and their analysis; on Ctrl-C, what was measured so far with ``interrupted``."""
    idle = [worker.request("env")["env"]["snapshot"]]
    time.sleep(idle_s)
    idle.append(worker.request("env")["env"]["snapshot"])
    rounds: list[dict[str, Any]] = []
    est = 1e-3
    t_start = time.monotonic()
    interrupted = False
    try:
        while time.monotonic() - t_start < duration_s:
            n = max(1, min(100_000, int(round_s / max(est, 1e-7))))
            t0 = time.time()
            rep = worker.request("round", n=n)
            t1 = time.time()
            rounds.append({"t0": t0, "t1": t1, "samples_s": rep["samples_s"],
                           "before": rep["before"], "after": rep["after"]})
            est = float(np.median(rep["samples_s"]))
            if progress:
                progress("sustained load", min(1.0, (time.monotonic() - t_start) / duration_s))
    except KeyboardInterrupt:
        interrupted = True
    wins = windows(rounds, window_s)
    return {"rounds": rounds, "windows": wins, "summary": summarize(wins),
            "energy": energy(rounds, idle, batch), "interrupted": interrupted,
            "window_s": window_s,
            "duration_s": (rounds[-1]["t1"] - rounds[0]["t0"]) if rounds else 0.0}


def sustained_record(ref: Any, target: str, threads: int, batch: int, res: dict[str, Any],
                     load: dict[str, Any], env: dict[str, Any] | None, data_sha256: str | None,
                     cap_per_window: int = 2000) -> dict[str, Any]:
    """A latency record with ``mode = "sustained"``: the windows (raw samples capped per window;
    the statistics of each window are computed before capping), the summary, energy, and a
    state series for the report's board-state plot. Interrupted runs say so (a rerun measures
    them again)."""
    from ..results import new_record
    from .stats import summarize as stats_of

    samples = [s for r in res["rounds"] for s in r["samples_s"]]
    wins = []
    for w, r in zip(res["windows"], _window_samples(res["rounds"], res["windows"],
                                                    res["window_s"])):
        wins.append(dict(w, samples_s=r[:cap_per_window], samples_capped=len(r) > cap_per_window))
    series = [[s["t_unix_s"], _max_temp(s), _mean_freq(s), (s.get("throttled") or {}).get("value")]
              for r in res["rounds"] for s in (r["before"], r["after"])]
    rec = new_record(
        "latency", mode="sustained", variant_id=ref.id, root_id=ref.root_id or ref.id,
        target=target, threads=threads, batch=batch, data_sha256=data_sha256,
        model={"name": ref.name, "path": str(ref.path), "format": ref.format,
               "model_bytes": ref.model_bytes, "zlib_bytes": ref.zlib_bytes},
        runtime=load.get("runtime"), runtime_version=load.get("runtime_version"),
        stats=stats_of(samples) if samples else None, duration_s=res["duration_s"],
        windows=wins, sustained=res["summary"], energy=res["energy"], state_series=series,
        interrupted=res["interrupted"], env=env, samples_s=[], warnings=[])
    return rec


def _window_samples(rounds: list[dict[str, Any]], wins: list[dict[str, Any]],
                    window_s: float) -> list[list[float]]:
    """The raw samples of each window (the grouping of ``windows``)."""
    if not rounds:
        return [[] for _ in wins]
    start = rounds[0]["t0"]
    out: dict[float, list[float]] = {}
    for r in rounds:
        out.setdefault(int((r["t0"] - start) // window_s) * window_s, []).extend(r["samples_s"])
    return [out.get(w["t_s"], []) for w in wins]


def parse_cooldown(text: str | None) -> dict[str, Any] | None:
    """``55C``: wait until the board's hottest sensor is below 55 C; ``30s``: wait 30 s."""
    if not text:
        return None
    from ..errors import InputError
    from ..units import parse_duration_s
    t = text.strip()
    if t.upper().endswith("C"):
        try:
            return {"below_c": float(t[:-1])}
        except ValueError:
            raise InputError(f"--cooldown {text!r}: a temperature like 55C or a time like 30s") \
                from None
    return {"wait_s": parse_duration_s(t, "--cooldown", 0.0, 3600.0)}


def cool_down(worker: Any, cooldown: dict[str, Any] | None, target: str,
              timeout_s: float = 1800.0, poll_s: float = 2.0) -> dict[str, Any] | None:
    """Wait before a measurement so heat from the previous one does not penalise it; what was
    waited is returned for the record. A temperature on a target without a sensor is refused."""
    if not cooldown:
        return None
    from ..errors import InputError
    t0 = time.monotonic()
    if "wait_s" in cooldown:
        time.sleep(cooldown["wait_s"])
        return {"rule": f"wait {cooldown['wait_s']:g} s", "waited_s": time.monotonic() - t0}
    temp = _max_temp(worker.request("env")["env"]["snapshot"])
    if temp is None:
        raise InputError(f"--cooldown {cooldown['below_c']:g}C: {target} exposes no temperature "
                         "sensor; use a time instead (e.g. --cooldown 30s)")
    start = temp
    while temp is not None and temp >= cooldown["below_c"] and time.monotonic() - t0 < timeout_s:
        time.sleep(poll_s)
        temp = _max_temp(worker.request("env")["env"]["snapshot"])
    return {"rule": f"below {cooldown['below_c']:g} C", "waited_s": time.monotonic() - t0,
            "temp_start_c": start, "temp_end_c": temp,
            "reached": temp is not None and temp < cooldown["below_c"]}


def profile_sustained(targets: list[Any], settings: Any, refs: list[Any], store: Any,
                      data: Any, spec: Any, sus: dict[str, Any],
                      progress: Callable[[str, float], None]) -> tuple[list, list]:
    """`edgeprof profile --sustained`: each (target, model) at the first thread count and batch
    (the model's own when none is given), one after another (heat is the point), each after its
    cool-down. Records are appended as each finishes; Ctrl-C keeps the windows measured so far
    (the record says ``interrupted`` and a rerun measures it again)."""
    import tempfile

    from ..errors import EdgeprofError
    from ..inputspec import worker_spec
    from ..modelinfo import model_batch
    from ..results import new_record

    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    jobs = [(t, r) for t in targets for r in refs]
    threads = settings.threads[0]
    with tempfile.TemporaryDirectory(prefix="edgeprof-sus-") as scratch:
        for i, (t, ref) in enumerate(jobs):
            batch = settings.batches[0] if settings.batches else (model_batch(ref.path) or 1)
            key = (ref.id, t.name, threads, batch, "latency",
                   data.sha256 if data is not None else None, "sustained")
            label = f"{ref.name} t={threads} b={batch} on {t.name}"
            if store.has(key):
                skipped.append(label)
                continue

            def prog(desc: str, frac: float, i: int = i) -> None:
                progress(f"{label}: {desc}", (i + frac) / len(jobs))
            interrupted = None
            try:
                inputs = {"synthetic": {"seed": settings.seed}}
                if data is not None:
                    raw_dtype = next(iter(data.x.values())).dtype.name
                    inputs = {"npz": t.stage(data.npz_path(scratch))}
                with t.start_worker(f"{ref.name} sustained") as w:
                    load = w.request("load", path=t.stage(ref.path), threads=threads, batch=batch,
                                     shapes=settings.shapes, inputs=inputs,
                                     spec=worker_spec(spec, raw_dtype) if data is not None else None)
                    cooled = cool_down(w, sus.get("cooldown"), t.name)
                    env = w.request("env")["env"]
                    res = run_sustained(w, sus["duration_s"], window_s=sus["window_s"],
                                        batch=batch, progress=prog)
                rec = sustained_record(ref, t.name, threads, batch, res, load, env,
                                       data.sha256 if data is not None else None)
                rec["cooldown"] = cooled
                if res["interrupted"]:
                    interrupted = KeyboardInterrupt()
            except EdgeprofError as exc:
                rec = new_record("error", variant_id=ref.id, root_id=ref.root_id or ref.id,
                                 target=t.name, threads=threads, batch=batch, mode="sustained",
                                 data_sha256=data.sha256 if data is not None else None,
                                 model={"name": ref.name}, phase="sustained", error=str(exc))
            if rec.get("interrupted"):
                rec["mode"] = "sustained-interrupted"  # not the finished key: a rerun measures it
            store.append(rec)
            records.append(rec)
            if interrupted is not None:
                raise interrupted
    return records, skipped
