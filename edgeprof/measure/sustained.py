"""Sustained load: what a board does after minutes of continuous inference (heat, frequency caps,
throttling), and energy per inference where a sensor exists.

``run_sustained`` keeps one worker busy for a duration in rounds. Rounds alternate between
sampled and unsampled: a sampled round has the worker read temperature, frequency, throttle flags
and power/energy sensors before and after it (outside the timed loop) and, where the target file
names an ``energy_command`` (an external meter), that command running on the host; an unsampled
round reads nothing. Pairs of neighbouring rounds give what sampling costs (``sampling_overhead``)
from the same worker under the same heat. The analysis is pure functions over the recorded
rounds: per-window latency, burst p50 (first window) against steady-state p50 (last third), time
to the first throttle flag and to the first frequency drop, and energy: mean active power, idle
power measured before, and joules per inference with a bootstrap CI over rounds. Ctrl-C keeps the
rounds measured so far (the record is marked ``interrupted`` and a rerun measures it again)."""
from __future__ import annotations

import re
import subprocess
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

FREQ_DROP = 0.05          # a frequency 5 % below the first window's counts as a drop
THROTTLE_FLAGS = {"throttled", "arm frequency capped", "soft temperature limit"}
SAMPLE_PERIOD_S = 0.5     # energy_command: one reading every this long while sampling


def _max_temp(snap: dict[str, Any] | None) -> float | None:
    temps = list(((snap or {}).get("temp_c") or {}).values())
    return max(temps) if temps else None


def _mean_freq(snap: dict[str, Any] | None) -> float | None:
    f = [v for v in ((snap or {}).get("cur_hz") or {}).values() if v]
    return sum(f) / len(f) if f else None


def _energy(snap: dict[str, Any] | None) -> float | None:
    e = (snap or {}).get("energy_j") or {}
    return sum(e.values()) if e else None


def _power(snap: dict[str, Any] | None) -> float | None:
    w = (snap or {}).get("power_w") or {}
    return sum(w.values()) if w else None


# --------------------------------------------------------------------------------------------
# energy_command: an external meter read on the host
# --------------------------------------------------------------------------------------------

_WATTS = re.compile(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(mW|W|w)?\s*")


def parse_watts(text: str) -> float | None:
    """The last non-empty line of a meter command's output as watts: ``3.2``, ``3.2 W`` or
    ``3200 mW``; None when it is not a number."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    m = _WATTS.fullmatch(lines[-1]) if lines else None
    if not m:
        return None
    return float(m.group(1)) * (1e-3 if m.group(2) == "mW" else 1.0)


class EnergySampler:
    """Runs ``energy_command`` (an argument list, never a shell) on the host from a thread, one
    reading every ``period_s`` while sampling is on; each reading is stamped with the midpoint of
    the command's run on ``clock`` (the clock the rounds are stamped with), so readings can be
    aligned to rounds. ``pause()`` returns only when no command is running."""

    def __init__(self, argv: Sequence[str], period_s: float = SAMPLE_PERIOD_S,
                 clock: Callable[[], float] = time.time, timeout_s: float = 10.0):
        self.argv, self.period_s, self.clock, self.timeout_s = list(argv), period_s, clock, timeout_s
        self.samples: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self._on, self._stop, self._busy = threading.Event(), threading.Event(), threading.Lock()
        self._thread: threading.Thread | None = None

    def read(self) -> tuple[float, float]:
        """One reading (time, watts); a command that fails is a one-line InputError."""
        from ..errors import InputError
        from ..targets.worker import one_line
        t0 = self.clock()
        try:
            res = subprocess.run(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, timeout=self.timeout_s, text=True)
        except FileNotFoundError:
            raise InputError(f"energy_command {self.argv[0]!r}: no such program on this "
                             "host") from None
        except subprocess.TimeoutExpired:
            raise InputError(f"energy_command {self.argv[0]!r} gave no reading within "
                             f"{self.timeout_s:g} s") from None
        except OSError as exc:
            raise InputError(f"energy_command {self.argv[0]!r}: {one_line(exc)}") from None
        t1 = self.clock()
        if res.returncode != 0:
            tail = (res.stderr or "").strip().splitlines()[-1:] or [""]
            raise InputError(f"energy_command {self.argv[0]!r} exited with status "
                             f"{res.returncode}" + (f": {tail[0][:200]}" if tail[0] else ""))
        watts = parse_watts(res.stdout)
        if watts is None or not np.isfinite(watts) or watts < 0:
            out = (res.stdout or "").strip()[-60:]
            raise InputError(f"energy_command {self.argv[0]!r} printed {out!r}: expected watts "
                             "such as 3.2")
        return (t0 + t1) / 2, watts

    def start(self) -> None:
        """One reading now (a command that does not work is refused before any load), then the
        thread, sampling."""
        self.samples.append(self.read())
        self._thread = threading.Thread(target=self._loop, name="edgeprof-energy", daemon=True)
        self._on.set()
        self._thread.start()

    def pause(self) -> None:
        self._on.clear()
        with self._busy:   # a command under way finishes before the unsampled round starts
            pass

    def resume(self) -> None:
        self._on.set()

    def stop(self) -> None:
        self._stop.set()
        self._on.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 1)

    def _loop(self) -> None:
        from ..errors import InputError
        while not self._stop.is_set():
            self._on.wait()
            if self._stop.is_set():
                return
            t = time.monotonic()
            with self._busy:
                if not self._on.is_set():
                    continue
                try:
                    self.samples.append(self.read())
                except InputError as exc:
                    if len(self.errors) < 20:
                        self.errors.append(str(exc))
            self._stop.wait(max(0.0, self.period_s - (time.monotonic() - t)))

    def between(self, t0: float, t1: float) -> list[float]:
        return [w for t, w in self.samples if t0 <= t <= t1]


def meter_watts(samples: Sequence[tuple[float, float]], t0: float, t1: float,
                reach_s: float) -> float | None:
    """Mean power over a round [t0, t1] from a meter's stamped readings: the mean of the readings
    taken during the round; else, for a round shorter than the meter's period, the readings
    interpolated at the round's middle when one lies within ``reach_s`` of it; else None."""
    inside = [w for t, w in samples if t0 <= t <= t1]
    if inside:
        return float(np.mean(inside))
    if not samples:
        return None
    ts = np.asarray([t for t, _ in samples])
    ws = np.asarray([w for _, w in samples])
    mid = (t0 + t1) / 2
    if float(np.min(np.abs(ts - mid))) > reach_s:
        return None
    order = np.argsort(ts)
    return float(np.interp(mid, ts[order], ws[order]))


# --------------------------------------------------------------------------------------------
# analysis: pure functions over rounds
# --------------------------------------------------------------------------------------------

def windows(rounds: list[dict[str, Any]], window_s: float) -> list[dict[str, Any]]:
    """Rounds ({t0, t1, samples_s, before, after}) grouped into windows of ``window_s`` from the
    first round's start: p50 of the window's samples, temperature, frequency, throttle flags
    (from the sampled rounds; an unsampled round has no snapshots)."""
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
            if not snap:
                continue
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
            "steady_windows": len(third),
            "first_frequency_drop_s": drop, "first_throttle_s": thr,
            "temp_start_c": temps[0] if temps else None, "temp_end_c": temps[-1] if temps else None,
            "temp_max_c": max(temps) if temps else None}


NO_SENSOR = ("no readable power or energy sensor on this target (hwmon power*_input/"
             "energy*_input, powercap energy_uj) and no energy_command in its target file")


def energy(rounds: list[dict[str, Any]], idle: list[dict[str, Any]], batch: int = 1,
           seed: int = 0, idle_meter_w: float | None = None,
           meter_error: str | None = None) -> dict[str, Any]:
    """Mean power during the sampled rounds and joules per inference, idle power subtracted as
    its own figure; a 95 % bootstrap CI over rounds. Sources, first found: an energy_command's
    readings aligned to the rounds (``meter_w``), energy counters (hwmon energy*_input, RAPL),
    the mean of power readings before and after each round."""
    use_meter = any(r.get("meter_w") is not None for r in rounds)
    per_round_w, per_round_j, sources = [], [], set()
    for r in rounds:
        if not r.get("sampled", True):
            continue
        dt = r["t1"] - r["t0"]
        if use_meter:
            w = r.get("meter_w")
            if w is None:
                continue
            sources.add("energy_command")
        else:
            e0, e1 = _energy(r["before"]), _energy(r["after"])
            if e0 is not None and e1 is not None and e1 >= e0 and dt > 0:
                w = (e1 - e0) / dt
                sources.add("energy counters")
            else:
                p = [x for x in (_power(r["before"]), _power(r["after"])) if x is not None]
                if not p:
                    continue
                w = sum(p) / len(p)
                sources.add("power readings")
        calls = len(r["samples_s"])
        if calls and dt > 0:
            per_round_w.append(w)
            per_round_j.append(w * dt / (calls * batch))
    if not per_round_w:
        return {"available": False,
                "reason": (f"energy_command gave no reading: {meter_error}" if meter_error
                           else NO_SENSOR)}
    idle_w = idle_meter_w if use_meter else None
    if not use_meter and len(idle) >= 2:
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
    out = {"available": True, "source": ", ".join(sorted(sources)),
           "mean_w": float(np.mean(per_round_w)), "n_rounds": len(j),
           "joules_per_inference": float(j.mean()), "joules_per_inference_ci": [float(lo), float(hi)],
           "confidence": 0.95, "idle_w": idle_w}
    if idle_w is not None:
        frac = max(0.0, 1 - idle_w / out["mean_w"]) if out["mean_w"] else 0.0
        out["active_joules_per_inference"] = out["joules_per_inference"] * frac
    return out


def sampling_overhead(rounds: list[dict[str, Any]], what: str, seed: int = 0) -> dict[str, Any] | None:
    """What sampling costs: each sampled round against the unsampled round right after it (the
    same worker, the same heat). ``ratio``: p50 of the sampled rounds' samples over p50 of the
    unsampled ones; ``pair_ratio`` and its 95 % CI: the geometric mean of per-pair p50 ratios,
    bootstrapped over pairs."""
    pairs = [(a, b) for a, b in zip(rounds, rounds[1:])
             if a.get("sampled", True) and b.get("sampled", True) is False
             and a["samples_s"] and b["samples_s"]]
    if not pairs:
        return None
    on = [s for a, _ in pairs for s in a["samples_s"]]
    off = [s for _, b in pairs for s in b["samples_s"]]
    logs = np.log([np.median(a["samples_s"]) / np.median(b["samples_s"]) for a, b in pairs])
    rng = np.random.default_rng(seed)
    boot = logs[rng.integers(0, len(logs), size=(2000, len(logs)))].mean(axis=1)
    lo, hi = np.exp(np.percentile(boot, [2.5, 97.5]))
    p_on, p_off = float(np.median(on)), float(np.median(off))
    return {"what": what, "n_pairs": len(pairs), "p50_sampled_s": p_on, "p50_unsampled_s": p_off,
            "ratio": p_on / p_off if p_off > 0 else None,
            "pair_ratio": float(np.exp(logs.mean())), "pair_ratio_ci": [float(lo), float(hi)]}


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------

def run_sustained(worker: Any, duration_s: float, round_s: float = 0.5, window_s: float = 10.0,
                  idle_s: float = 1.0, batch: int = 1,
                  progress: Callable[[str, float], None] | None = None,
                  energy_command: Sequence[str] | None = None,
                  clock: Callable[[], float] = time.time,
                  sample_period_s: float = SAMPLE_PERIOD_S) -> dict[str, Any]:
    """Continuous rounds on a loaded worker for ``duration_s`` (on ``clock``, which also stamps
    the rounds and the meter's readings), idle power first; rounds alternate sampled and
    unsampled. Returns the rounds and their analysis; on Ctrl-C, what was measured so far with
    ``interrupted``. A failing ``energy_command`` is refused (InputError) before any round."""
    sampler = EnergySampler(energy_command, sample_period_s, clock) if energy_command else None
    if sampler is not None:
        sampler.start()
    rounds: list[dict[str, Any]] = []
    idle: list[dict[str, Any]] = []
    idle_meter_w = None
    interrupted = False
    try:
        i0 = clock()
        idle.append(worker.request("env")["env"]["snapshot"])
        time.sleep(idle_s)
        idle.append(worker.request("env")["env"]["snapshot"])
        if sampler is not None:
            got = sampler.between(i0 - sample_period_s, clock())
            idle_meter_w = float(np.mean(got)) if got else None
        est = 1e-3
        t_start = clock()
        while clock() - t_start < duration_s:
            sampled = len(rounds) % 2 == 0
            if sampler is not None and sampled:
                sampler.resume()
            elif sampler is not None:
                sampler.pause()
            n = max(1, min(100_000, int(round_s / max(est, 1e-7))))
            t0 = clock()
            rep = worker.request("round", n=n, snapshots=sampled)
            t1 = clock()
            rounds.append({"t0": t0, "t1": t1, "samples_s": rep["samples_s"], "sampled": sampled,
                           "before": rep.get("before"), "after": rep.get("after")})
            est = float(np.mean(rep["samples_s"]))  # rounds of about round_s of wall time
            if progress:
                progress("sustained load", min(1.0, (clock() - t_start) / duration_s))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if sampler is not None:
            sampler.stop()
    meter_error = None
    if sampler is not None:
        reach = max(2 * sample_period_s, round_s)
        for r in rounds:
            if r["sampled"]:
                r["meter_w"] = meter_watts(sampler.samples, r["t0"], r["t1"], reach)
        meter_error = sampler.errors[0] if sampler.errors else None
    wins = windows(rounds, window_s)
    what = "sensor reads before and after each round" + \
        (f" and energy_command {sampler.argv[0]!r} on the host" if sampler is not None else "")
    return {"rounds": rounds, "windows": wins, "summary": summarize(wins),
            "energy": energy(rounds, idle, batch, idle_meter_w=idle_meter_w,
                             meter_error=meter_error),
            "sampling_overhead": sampling_overhead(rounds, what),
            "meter_samples": list(sampler.samples) if sampler is not None else None,
            "interrupted": interrupted, "window_s": window_s,
            "duration_s": (rounds[-1]["t1"] - rounds[0]["t0"]) if rounds else 0.0}


def sustained_record(ref: Any, target: str, threads: int, batch: int, res: dict[str, Any],
                     load: dict[str, Any], env: dict[str, Any] | None, data_sha256: str | None,
                     cap_per_window: int = 2000, side_dir: Any = None) -> dict[str, Any]:
    """A latency record with ``mode = "sustained"``: the windows (raw samples capped per window;
    the statistics of each window are computed before capping; every sample goes to a side file
    ``samples/<sha256>.npz`` beside the results when ``side_dir`` is given), the summary with the
    steady state's CI, energy, the sampling overhead and a state series for the report's plot.
    Interrupted runs say so (a rerun measures them again)."""
    from ..results import new_record
    from .stats import summarize as stats_of

    samples = [s for r in res["rounds"] for s in r["samples_s"]]
    per_window = _window_samples(res["rounds"], res["windows"], res["window_s"])
    wins, capped = [], False
    for w, r in zip(res["windows"], per_window):
        capped |= len(r) > cap_per_window
        wins.append(dict(w, samples_s=r[:cap_per_window], samples_capped=len(r) > cap_per_window))
    summary = dict(res["summary"])
    steady = [s for r in per_window[-summary.get("steady_windows", 0):] for s in r] \
        if summary.get("steady_windows") else []
    if steady:
        st = stats_of(steady)
        summary.update(steady_p50_ci_s=st["p50_ci_s"], steady_n=st["n"])
    series = [[s["t_unix_s"], _max_temp(s), _mean_freq(s), (s.get("throttled") or {}).get("value")]
              for r in res["rounds"] for s in (r["before"], r["after"]) if s]
    rec = new_record(
        "latency", mode="sustained", variant_id=ref.id, root_id=ref.root_id or ref.id,
        target=target, threads=threads, batch=batch, data_sha256=data_sha256,
        model={"name": ref.name, "path": str(ref.path), "format": ref.format,
               "model_bytes": ref.model_bytes, "zlib_bytes": ref.zlib_bytes},
        runtime=load.get("runtime"), runtime_version=load.get("runtime_version"),
        stats=stats_of(samples) if samples else None, duration_s=res["duration_s"],
        n_rounds=len(res["rounds"]), windows=wins, sustained=summary, energy=res["energy"],
        sampling_overhead=res.get("sampling_overhead"), state_series=series,
        interrupted=res["interrupted"], env=env, samples_s=[], warnings=[])
    if capped and side_dir is not None and samples:
        rec["samples_file"] = _samples_side_file(side_dir, samples)
    return rec


def _samples_side_file(side_dir: Any, samples: list[float]) -> str | None:
    """Every raw sample of a sustained run in ``samples/<sha256>.npz`` beside the results (None:
    not written, the capped windows stay in the record)."""
    from ..storage import side_npz
    return side_npz(side_dir, "samples", "samples_s", np.asarray(samples, dtype=np.float64))


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


# --------------------------------------------------------------------------------------------
# cool-down between measurements
# --------------------------------------------------------------------------------------------

def parse_cooldown(text: str | None, flag: str = "--cooldown") -> dict[str, Any] | None:
    """``55C``: wait until the board's hottest sensor is below 55 C; ``30s``: wait 30 s."""
    if not text:
        return None
    from ..errors import InputError
    from ..units import parse_duration_s
    t = str(text).strip()
    if t.upper().endswith("C"):
        try:
            c = float(t[:-1])
        except ValueError:
            raise InputError(f"{flag} {text!r}: a temperature like 55C or a time like 30s") \
                from None
        if not -40.0 <= c <= 150.0:  # (nan fails too) a board's sensor reads in this range
            raise InputError(f"{flag} {text!r}: a temperature from -40C to 150C")
        return {"below_c": c}
    return {"wait_s": parse_duration_s(t, flag, 0.0, 3600.0)}


def check_cooldown(worker: Any, cooldown: dict[str, Any] | None, target: str) -> float | None:
    """The target's hottest temperature now; a cool-down to a temperature on a target without a
    temperature sensor is refused (InputError), before anything is measured."""
    if not cooldown or "below_c" not in cooldown:
        return None
    from ..errors import InputError
    temp = _max_temp(worker.request("env")["env"]["snapshot"])
    if temp is None:
        raise InputError(f"--cooldown {cooldown['below_c']:g}C: {target} exposes no temperature "
                         "sensor; use a time instead (e.g. --cooldown 30s)")
    return temp


def cool_down(worker: Any, cooldown: dict[str, Any] | None, target: str,
              timeout_s: float = 1800.0, poll_s: float = 2.0) -> dict[str, Any] | None:
    """Wait before a measurement so heat from the previous one does not penalise it; what was
    waited is returned for the record. A temperature on a target without a sensor is refused."""
    if not cooldown:
        return None
    t0 = time.monotonic()
    if "wait_s" in cooldown:
        time.sleep(cooldown["wait_s"])
        return {"rule": f"wait {cooldown['wait_s']:g} s", "waited_s": time.monotonic() - t0}
    temp = check_cooldown(worker, cooldown, target)
    start = temp
    while temp is not None and temp >= cooldown["below_c"] and time.monotonic() - t0 < timeout_s:
        time.sleep(poll_s)
        temp = _max_temp(worker.request("env")["env"]["snapshot"])
    return {"rule": f"below {cooldown['below_c']:g} C", "waited_s": time.monotonic() - t0,
            "temp_start_c": start, "temp_end_c": temp,
            "reached": temp is not None and temp < cooldown["below_c"]}


def energy_command_of(target: Any) -> list[str] | None:
    """The target file's ``energy_command`` (None for ``local`` and boards without one)."""
    cmd = getattr(getattr(target, "spec", None), "energy_command", None)
    return list(cmd) if cmd else None


def profile_sustained(targets: list[Any], settings: Any, refs: list[Any], store: Any,
                      data: Any, spec: Any, sus: dict[str, Any],
                      progress: Callable[[str, float], None],
                      side_dir: Any = None) -> tuple[list, list]:
    """A sustained run of each (target, model, threads, batch) (the model's own batch when none
    is given), one after another (heat is the point), each after its cool-down. Records are
    appended as each finishes; configurations already in the store are skipped. Ctrl-C keeps
    the windows measured so far (the record says ``interrupted`` and a rerun measures it again).
    A cool-down or energy_command the target cannot honour is refused (InputError)."""
    import tempfile

    from ..errors import EdgeprofError, InputError
    from ..inputspec import InputSpec, worker_spec
    from ..modelinfo import model_batch
    from ..results import RecordKey, new_record

    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    jobs = [(t, r, th, b) for t in targets for r in refs for th in settings.threads
            for b in (settings.batches or (model_batch(r.path) or 1,))]
    with tempfile.TemporaryDirectory(prefix="edgeprof-sus-") as scratch:
        for i, (t, ref, threads, batch) in enumerate(jobs):
            key = RecordKey.latency(ref.id, t.name, threads, batch,
                                    data.sha256 if data is not None else None, "sustained")
            label = f"{ref.name} t={threads} b={batch} on {t.name}"
            if store.has(key):
                skipped.append(label)
                continue

            def prog(desc: str, frac: float, i: int = i, label: str = label) -> None:
                progress(f"{label}: {desc}", (i + frac) / len(jobs))
            interrupted = None
            try:
                inputs: dict[str, Any] = {"synthetic": {"seed": settings.seed}}
                wspec = None
                if data is not None:
                    raw_dtype = next(iter(data.x.values())).dtype.name
                    inputs = {"npz": t.stage(data.npz_path(scratch))}
                    own = spec if spec is not None else (
                        InputSpec.from_dict(ref.input_spec) if ref.input_spec else None)
                    wspec = worker_spec(own, raw_dtype)
                with t.start_worker(f"{ref.name} sustained") as w:
                    load = w.request("load", path=t.stage(ref.path), threads=threads, batch=batch,
                                     shapes=settings.shapes, inputs=inputs, spec=wspec)
                    cooled = cool_down(w, sus.get("cooldown"), t.name)
                    env = w.request("env")["env"]
                    res = run_sustained(w, sus["duration_s"], window_s=sus["window_s"],
                                        batch=batch, progress=prog,
                                        energy_command=energy_command_of(t))
                rec = sustained_record(ref, t.name, threads, batch, res, load, env,
                                       data.sha256 if data is not None else None,
                                       side_dir=side_dir)
                rec["cooldown"] = cooled
                if energy_command_of(t):
                    rec["energy_command"] = energy_command_of(t)
                if res["interrupted"]:
                    interrupted = KeyboardInterrupt()
            except InputError:
                raise  # the target cannot do what was asked (a temperature, a meter): refused
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
