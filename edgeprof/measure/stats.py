"""Statistics of raw latency samples (host side, scipy). Nothing here is stored instead of the
samples: records keep the raw samples and these derived values beside them."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

P99_MIN_SAMPLES = 100      # below this, p99 is the maximum or an interpolation next to it


def _bootstrap_ci(x: np.ndarray, q: float, confidence: float, n_resamples: int,
                  seed: int) -> tuple[float, float]:
    from scipy import stats

    if len(x) < 2 or np.all(x == x[0]):
        v = float(np.percentile(x, q))
        return v, v

    def stat(sample: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.percentile(sample, q, axis=axis)

    res = stats.bootstrap((x,), stat, vectorized=True, n_resamples=n_resamples,
                          confidence_level=confidence, method="percentile", batch=50,
                          rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize(samples_s: Sequence[float], confidence: float = 0.95, n_resamples: int = 1000,
              seed: int = 0) -> dict[str, Any]:
    """min, p50, p90, p99, max, mean, stdev, IQR, MAD and bootstrap CIs of p50 and p99."""
    from scipy import stats

    x = np.asarray(samples_s, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples")
    p25, p50, p75, p90, p99 = np.percentile(x, [25, 50, 75, 90, 99])
    out: dict[str, Any] = {
        "n": int(x.size),
        "min_s": float(x.min()), "max_s": float(x.max()),
        "mean_s": float(x.mean()), "stdev_s": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "p50_s": float(p50), "p90_s": float(p90), "p99_s": float(p99),
        "iqr_s": float(p75 - p25), "mad_s": float(stats.median_abs_deviation(x)),
        "confidence": confidence,
    }
    out["p50_ci_s"] = list(_bootstrap_ci(x, 50, confidence, n_resamples, seed))
    out["p99_ci_s"] = list(_bootstrap_ci(x, 99, confidence, n_resamples, seed + 1))
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
