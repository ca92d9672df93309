"""Statistics of raw latency samples (host side, scipy). Nothing here is stored instead of the
samples: records keep the raw samples and these derived values beside them.

Distribution functions come from ``scipy.special`` (bdtrc, ndtri, stdtrit: what scipy.stats'
binom.sf, norm.ppf and t.ppf evaluate), which imports in a third of the time of scipy.stats: the
stop rule runs these in every profile and sweep."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

P99_MIN_SAMPLES = 100      # below this, p99 is the maximum or an interpolation next to it


def bootstrap_quantile_ci(x: np.ndarray, q: float, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the q-th percentile, computed exactly.

    Resampling n values with replacement, the bootstrap quantile (the k-th order statistic,
    k = ceil(q/100 n)) is at most x_(j) exactly when at least k resampled values are <= x_(j):
    P = P(Binomial(n, j/n) >= k). That is the limit of infinitely many bootstrap resamples
    (Efron's exact bootstrap of order statistics): no Monte-Carlo error, O(n) instead of
    resamples x n, which matters at 10,000 samples per setting."""
    from scipy import special

    xs = np.sort(np.asarray(x, dtype=np.float64))
    n = xs.size
    if n < 2 or xs[0] == xs[-1]:
        v = float(np.percentile(xs, q))
        return v, v
    k = min(n, max(1, int(np.ceil(q / 100.0 * n))))
    cdf = special.bdtrc(k - 1, n, np.arange(1, n + 1) / n)  # P(X*_(k) <= x_(j)), rising in j
    alpha = (1.0 - confidence) / 2.0
    lo = xs[min(n - 1, int(np.searchsorted(cdf, alpha)))]
    hi = xs[min(n - 1, int(np.searchsorted(cdf, 1.0 - alpha)))]
    return float(lo), float(hi)


def summarize(samples_s: Sequence[float], confidence: float = 0.95,
              groups: Sequence[Sequence[float]] | None = None, seed: int = 0) -> dict[str, Any]:
    """min, p50, p90, p99, max, mean, stdev, IQR, MAD and bootstrap CIs of p50 and p99.

    ``groups``: the same samples split by process. With several, ``p50_ci_s``/``p99_ci_s`` are
    two-level (processes, then samples), the single-level ones stay as ``*_ci_within_s``, and
    the between-process spread is added."""
    x = np.asarray(samples_s, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples")
    p25, p50, p75, p90, p99 = np.percentile(x, [25, 50, 75, 90, 99])
    out: dict[str, Any] = {
        "n": int(x.size),
        "min_s": float(x.min()), "max_s": float(x.max()),
        "mean_s": float(x.mean()), "stdev_s": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "p50_s": float(p50), "p90_s": float(p90), "p99_s": float(p99),
        "iqr_s": float(p75 - p25), "mad_s": float(np.median(np.abs(x - np.median(x)))),
        "confidence": confidence, "ci_method": "exact percentile bootstrap of the order statistic",
    }
    out["p50_ci_within_s"] = out["p50_ci_s"] = list(bootstrap_quantile_ci(x, 50, confidence))
    out["p99_ci_within_s"] = out["p99_ci_s"] = list(bootstrap_quantile_ci(x, 99, confidence))
    gs = [g for g in (groups or []) if len(g)]
    out["processes"] = max(1, len(gs))
    out["between_process_spread"] = None
    if len(gs) > 1:
        out["p50_ci_s"] = list(two_level_quantile_ci(gs, 50, confidence, seed=seed))
        out["p99_ci_s"] = list(two_level_quantile_ci(gs, 99, confidence, seed=seed))
        out.update(between_process(gs, float(p50)))
        out["ci_method"] = (f"two-level percentile bootstrap ({N_BOOT} resamples of processes, "
                            "then of samples within each); *_within_s: exact single-level")
    return out


def outliers(samples_s: Sequence[float], threshold: float = 3.5) -> np.ndarray:
    """Indices whose modified z-score 0.6745 (x - median) / MAD exceeds ``threshold``
    (Iglewicz & Hoaglin; hyperfine flags outliers the same way). They are flagged, never dropped."""
    x = np.asarray(samples_s, dtype=np.float64)
    med = np.median(x)
    mad = np.median(np.abs(x - med))
    if mad == 0:
        return np.flatnonzero(x != med) if np.count_nonzero(x != med) < x.size / 2 else np.array([], int)
    return np.flatnonzero(np.abs(0.6745 * (x - med) / mad) > threshold)


# -- several processes: truth across fresh processes -------------------------------------------

N_BOOT = 2000
PROCESS_BOUND_FRACTION = 0.5   # every process's own p50 known this much better than the target
BETWEEN_OVER_OWN = 9.0        # processes differ by 3 sd of their p50s' own noise (a chance of 1e-4)


def process_groups(samples_s: Sequence[float], rounds: Sequence[int],
                   process_of_round: Sequence[int] | None) -> list[np.ndarray]:
    """Split a record's samples (in round order) into one array per process."""
    x = np.asarray(samples_s, dtype=np.float64)
    if not process_of_round:
        return [x]
    parts = np.split(x, np.cumsum([int(k) for k in rounds])[:-1])
    k = max(int(p) for p in process_of_round) + 1
    return [np.concatenate([parts[i] for i, p in enumerate(process_of_round) if p == j] or
                           [np.empty(0)]) for j in range(k)]


def _bootstrap_quantiles(groups: Sequence[np.ndarray], q: float, n_boot: int, seed: int,
                         within: bool = True) -> np.ndarray:
    """Replicates of the pooled q-th percentile under a two-level bootstrap: draw k processes
    with replacement, then (``within``) resample each drawn process's samples with replacement.

    No resample is ever materialised. A replicate's quantile is found by bisection over the
    pooled sorted values; what a drawn process contributes at or below a value is a binomial
    count, and at a value between two already drawn counts it is the binomial bridge
    c_lo + Binomial(c_hi - c_lo, (F(mid) - F(lo)) / (F(hi) - F(lo))). That is exactly the
    distribution of resampling, at about log2(n) steps of (n_boot x k) binomial draws: 10,000
    samples x 5 processes take a few milliseconds instead of 20 million random indices."""
    rng = np.random.default_rng(seed)
    gs = [np.sort(np.asarray(g, dtype=np.float64)) for g in groups if len(g)]
    k = len(gs)
    values = np.unique(np.concatenate(gs))
    m = values.size
    # cdf[i, j + 1] = share of process i's samples <= values[j]; column 0 is "below everything"
    cdf = np.zeros((k, m + 1))
    for i, g in enumerate(gs):
        cdf[i, 1:] = np.searchsorted(g, values, side="right") / g.size
    sizes = np.array([g.size for g in gs])
    pick = rng.integers(0, k, size=(n_boot, k))              # processes drawn per replicate
    n = sizes[pick]                                          # (n_boot, k) resample sizes
    need = np.ceil(q / 100.0 * n.sum(axis=1)).clip(min=1)    # rank of the quantile (inverted cdf)
    lo = np.zeros(n_boot, dtype=np.int64)                    # index into cdf columns: count < need
    hi = np.full(n_boot, m, dtype=np.int64)                  # count >= need
    c_lo = np.zeros((n_boot, k), dtype=np.int64)
    c_hi = n.copy()
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        active = (hi - lo) > 1
        f_lo, f_hi, f_mid = cdf[pick, lo[:, None]], cdf[pick, hi[:, None]], cdf[pick, mid[:, None]]
        if within:
            span = f_hi - f_lo
            p = np.divide(f_mid - f_lo, span, out=np.zeros_like(span), where=span > 0)
            c_mid = c_lo + rng.binomial(c_hi - c_lo, p.clip(0.0, 1.0))
        else:
            c_mid = np.rint(f_mid * n).astype(np.int64)
        up = c_mid.sum(axis=1) >= need                       # the quantile is at or below mid
        move_hi, move_lo = active & up, active & ~up
        hi = np.where(move_hi, mid, hi)
        lo = np.where(move_lo, mid, lo)
        c_hi = np.where(move_hi[:, None], c_mid, c_hi)
        c_lo = np.where(move_lo[:, None], c_mid, c_lo)
    return values[hi - 1]


def _per_process(gs: Sequence[np.ndarray], q: float,
                 confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Each process's q-th percentile and the standard error of each (from its exact bootstrap
    CI read as a normal interval): what the spread between processes is split by, into their
    own noise and what lies between them."""
    from scipy import special

    z = float(special.ndtri(1.0 - (1.0 - confidence) / 2.0))
    own = [bootstrap_quantile_ci(g, q, confidence) for g in gs]
    return (np.array([np.percentile(g, q) for g in gs]),
            np.array([(h - l) / (2 * z) for l, h in own]))


def two_level_quantile_ci(groups: Sequence[Sequence[float]], q: float = 50,
                          confidence: float = 0.95, n_boot: int = N_BOOT,
                          seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap CI of the pooled q-th percentile across processes: processes are
    resampled, then samples within each (a hierarchical bootstrap), so the interval holds the
    process-to-process variance that one process's samples cannot show. Seeded: the same
    samples give the same interval. One process: the exact single-level interval."""
    gs = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    if len(gs) < 2:
        return bootstrap_quantile_ci(gs[0] if gs else np.empty(0), q, confidence)
    from scipy import special

    reps = _bootstrap_quantiles(gs, q, n_boot, seed)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    est = float(np.percentile(np.concatenate(gs), q))
    # Few processes: resampling k of them sees their spread with factor (k-1)/k and as if it
    # were known, so 3 processes would cover ~75 % instead of 95 %. The between-process share of
    # the bootstrap variance (per-process quantiles' variance less their own sampling variance,
    # a method-of-moments split) is therefore scaled up as a Student t with k-1 degrees of
    # freedom would; identical processes (no between share) keep the bootstrap interval.
    k = len(gs)
    qs, se = _per_process(gs, q, confidence)
    v_between = max(0.0, float(qs.var(ddof=1)) - float(np.mean(se ** 2))) / k
    v_boot = float(reps.var())
    if v_between > 0 and v_boot > 0:
        z = float(special.ndtri(1.0 - alpha))
        t = float(special.stdtrit(k - 1, 1.0 - alpha))
        widened = v_boot + v_between * ((t / z) ** 2 - (k - 1) / k)
        f = float(np.sqrt(max(1.0, widened / v_boot)))
        lo, hi = est - f * (est - lo), est + f * (hi - est)
    # a percentile interval can miss the point estimate on very lopsided replicates; keep it in
    return float(min(lo, est)), float(max(hi, est))


def between_process(groups: Sequence[Sequence[float]], p50_s: float) -> dict[str, Any]:
    """Per-process medians and their range relative to the pooled p50."""
    meds = [float(np.median(g)) for g in groups if len(g)]
    spread = (max(meds) - min(meds)) / p50_s if p50_s > 0 and len(meds) > 1 else 0.0
    return {"process_p50_s": meds, "between_process_spread": spread}


@dataclass(frozen=True)
class StopRule:
    """When a configuration has been measured enough: the p50 CI (two-level with several
    processes) within ``rel_ci`` of the p50 once the lower bounds are met, else an upper bound.
    ``rel_ci`` 0: no precision target, stop at the lower bounds (a fixed amount of work)."""
    rel_ci: float = 0.01
    min_time_s: float = 0.2
    max_time_s: float = 10.0
    min_runs: int = 50
    max_runs: int = 10_000
    confidence: float = 0.95

    @property
    def name(self) -> str:
        return "fixed" if self.rel_ci <= 0 else "p50 CI half-width / p50 <= rel_ci"

    def check(self, groups: Sequence[Sequence[float]], seed: int = 0) -> StopState:
        """Pure: the decision for samples so far (one sequence per process). Checked after each
        round, never per sample; the bootstrap costs milliseconds."""
        gs = [np.asarray(g, dtype=np.float64) for g in groups]
        n = int(sum(g.size for g in gs))
        t = float(sum(g.sum() for g in gs))
        if n == 0:
            return StopState(False)
        upper = ("max_runs" if n >= self.max_runs else
                 "max_time" if t >= self.max_time_s else None)
        lower_met = n >= self.min_runs and t >= self.min_time_s
        if not lower_met and upper is None:
            return StopState(False)
        if self.rel_ci <= 0:
            return StopState(True, "lower_bounds" if lower_met else upper, None)
        reached = relative_half_width(gs, self.confidence, seed)
        if lower_met and reached <= self.rel_ci:
            return StopState(True, "precision", reached)
        if upper is not None:
            return StopState(True, upper, reached)
        if len([g for g in gs if g.size]) > 1 and self._process_bound(gs):
            return StopState(True, "process_bound", reached)
        return StopState(False, None, reached)

    def _process_bound(self, gs: Sequence[np.ndarray]) -> bool:
        """More samples cannot reach the target: what keeps the pooled CI wide is the processes
        differing (more processes would help, more samples would not). Either

        - every process's own p50 is already known far better than the target, or
        - the processes' p50s differ by clearly more than their own sampling noise (variance
          ``BETWEEN_OVER_OWN`` times it) and that difference alone, with every process's p50
          known exactly, would keep the two-level half-width (Student t with k-1 degrees of
          freedom, as in ``two_level_quantile_ci``) above the target.

        The second catches a configuration whose processes differ by a few percent after a
        fraction of a second instead of after every process's p50 is known to half the target
        (several seconds at 100 us). A stop it calls too early is still recorded as reached."""
        from scipy import special

        if any(float(np.median(g)) <= 0 for g in gs):
            return False
        meds, se = _per_process(gs, 50, self.confidence)
        z = float(special.ndtri(1.0 - (1.0 - self.confidence) / 2.0))
        if np.all(z * se / meds <= PROCESS_BOUND_FRACTION * self.rel_ci):
            return True
        v_own, v_q = float(np.mean(se ** 2)), float(np.var(meds, ddof=1))
        if v_q < BETWEEN_OVER_OWN * v_own:
            return False
        t = float(special.stdtrit(len(meds) - 1, 1.0 - (1.0 - self.confidence) / 2.0))
        floor = t * np.sqrt((v_q - v_own) / len(meds))
        return bool(floor > self.rel_ci * float(np.median(np.concatenate(gs))))

    def to_record(self, state: StopState) -> dict[str, Any]:
        return {"rule": self.name, "rel_ci_target": self.rel_ci if self.rel_ci > 0 else None,
                "reached_rel_ci": state.reached_rel_ci, "reason": state.reason}


@dataclass(frozen=True)
class StopState:
    done: bool
    reason: str | None = None          # precision | process_bound | max_time | max_runs | lower_bounds
    reached_rel_ci: float | None = None


def relative_half_width(groups: Sequence[Sequence[float]], confidence: float = 0.95,
                        seed: int = 0) -> float:
    """Half the p50 CI's width over the p50 (two-level with several processes)."""
    gs = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    p50 = float(np.percentile(np.concatenate(gs), 50))
    lo, hi = two_level_quantile_ci(gs, 50, confidence, seed=seed)
    return (hi - lo) / 2 / p50 if p50 > 0 else float("inf")
