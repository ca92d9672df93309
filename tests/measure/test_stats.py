import numpy as np
import pytest

from edgeprof.measure.stats import outliers, summarize


def test_percentiles_match_numpy_and_known_values():
    x = np.arange(1, 101, dtype=float) * 1e-3  # 1..100 ms
    s = summarize(x)
    assert s["n"] == 100
    assert s["min_s"] == pytest.approx(1e-3) and s["max_s"] == pytest.approx(0.1)
    assert s["p50_s"] == pytest.approx(np.percentile(x, 50))
    assert s["p90_s"] == pytest.approx(np.percentile(x, 90))
    assert s["p99_s"] == pytest.approx(np.percentile(x, 99))
    assert s["mean_s"] == pytest.approx(0.0505)
    assert s["stdev_s"] == pytest.approx(np.std(x, ddof=1))
    assert s["iqr_s"] == pytest.approx(np.percentile(x, 75) - np.percentile(x, 25))
    lo, hi = s["p50_ci_s"]
    assert lo <= s["p50_s"] <= hi and lo < hi


def test_median_ci_covers_the_true_median_about_95_percent_of_the_time():
    # log-normal latencies with a known median exp(mu); 120 independent experiments
    mu, sigma, trials = np.log(2e-3), 0.3, 120
    rng = np.random.default_rng(42)
    covered = 0
    for t in range(trials):
        x = rng.lognormal(mu, sigma, 200)
        lo, hi = summarize(x)["p50_ci_s"]
        covered += lo <= np.exp(mu) <= hi
    # binomial(120, 0.95): 0.88 .. 0.995 holds with overwhelming probability;
    # a broken interval (zero width, or wrong percentile) falls far outside
    assert 0.88 <= covered / trials <= 0.995


def test_p99_ci_is_wider_than_p50_ci_for_a_long_tail():
    rng = np.random.default_rng(0)
    x = rng.lognormal(np.log(1e-3), 0.5, 1000)
    s = summarize(x)
    w50 = s["p50_ci_s"][1] - s["p50_ci_s"][0]
    w99 = s["p99_ci_s"][1] - s["p99_ci_s"][0]
    assert w99 > 3 * w50


def test_constant_samples_have_a_zero_width_interval():
    s = summarize([1e-3] * 30)
    assert s["p50_ci_s"] == [1e-3, 1e-3] and s["iqr_s"] == 0.0


def test_empty_samples_are_refused():
    with pytest.raises(ValueError):
        summarize([])


def test_outliers_flags_injected_spikes_only():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.99e-3, 1.01e-3, 500)  # bounded noise: no sample is an outlier by itself
    x[[10, 200, 450]] = 5e-3
    assert sorted(outliers(x).tolist()) == [10, 200, 450]


def test_exact_bootstrap_matches_resampling_bootstrap():
    """The closed form against scipy.stats.bootstrap with many resamples (an independent
    Monte-Carlo computation of the same percentile interval)."""
    from scipy import stats as st

    from edgeprof.measure.stats import bootstrap_quantile_ci
    rng = np.random.default_rng(5)
    x = rng.lognormal(np.log(1e-3), 0.3, 301)
    for q in (50, 99):
        lo, hi = bootstrap_quantile_ci(x, q)
        ref = st.bootstrap((x,), lambda s, axis=-1: np.quantile(s, q / 100, axis=axis,
                                                                method="inverted_cdf"),
                           vectorized=True, n_resamples=20000, method="percentile",
                           rng=np.random.default_rng(0)).confidence_interval
        xs = np.sort(x)
        # the two agree to within one order statistic (Monte-Carlo error of the resampling)
        j = lambda v: int(np.searchsorted(xs, v))  # noqa: E731
        assert abs(j(lo) - j(ref.low)) <= 1 and abs(j(hi) - j(ref.high)) <= 1, (q, lo, hi, ref)


def test_rounds_grow_with_what_was_measured_within_their_bounds():
    # pure arithmetic of the round schedule (no worker): rounds start at min_time / MIN_ROUNDS,
    # then add a quarter of what the configuration measured, never above round_s, never past
    # max_time by more than one base round, never more runs than max_runs / MIN_ROUNDS
    from edgeprof.measure.profiler import MIN_ROUNDS, Profiler, Settings, _Proc, _Run
    s = Settings(min_time_s=0.2, max_time_s=10.0, round_s=0.2, max_runs=1_000_000)
    prof = Profiler(target=None, settings=s)
    run = _Run(model=None, threads=1, batch=1, procs=[_Proc(i) for i in range(3)])
    est = 1e-4
    base = prof._round_size(run, est)
    near = lambda a, b: abs(a - b) <= 1  # noqa: E731 (float sums of the samples)
    assert near(base, 0.2 / MIN_ROUNDS / est)
    run.samples = [est] * 6000                       # 0.6 s measured: a quarter over 3 is 0.05 s
    assert near(prof._round_size(run, est), 0.05 / est)
    run.samples = [est] * 60_000                     # 6 s: capped at round_s
    assert near(prof._round_size(run, est), 0.2 / est)
    run.samples = [est] * 99_500                     # 9.95 s of 10: back to the base round
    assert prof._round_size(run, est) == base
    few = Profiler(target=None, settings=Settings(max_runs=100))
    assert few._round_size(_Run(model=None, threads=1, batch=1, procs=[_Proc(0)]), 1e-6) == 20
    # how many stop checks 5 s of samples takes (one per pass over the 3 processes): log-like
    run.samples, checks = [], 0
    while sum(run.samples) < 5.0:
        run.samples += [est] * (3 * prof._round_size(run, est))
        checks += 1
    assert checks < 25  # 0.04 s rounds throughout would take 42
