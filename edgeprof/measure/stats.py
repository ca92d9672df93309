"""Statistics of raw latency samples (host side, scipy). Nothing here is stored instead of the
samples: records keep the raw samples and these derived values beside them."""
from __future__ import annotations

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
    from scipy import stats

    xs = np.sort(np.asarray(x, dtype=np.float64))
    n = xs.size
    if n < 2 or xs[0] == xs[-1]:
        v = float(np.percentile(xs, q))
        return v, v
    k = min(n, max(1, int(np.ceil(q / 100.0 * n))))
    cdf = stats.binom.sf(k - 1, n, np.arange(1, n + 1) / n)   # P(X*_(k) <= x_(j)), rising in j
    alpha = (1.0 - confidence) / 2.0
    lo = xs[min(n - 1, int(np.searchsorted(cdf, alpha)))]
    hi = xs[min(n - 1, int(np.searchsorted(cdf, 1.0 - alpha)))]
    return float(lo), float(hi)


def summarize(samples_s: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
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
        "confidence": confidence, "ci_method": "exact percentile bootstrap of the order statistic",
    }
    out["p50_ci_s"] = list(bootstrap_quantile_ci(x, 50, confidence))
    out["p99_ci_s"] = list(bootstrap_quantile_ci(x, 99, confidence))
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
