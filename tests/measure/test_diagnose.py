import numpy as np

from edgeprof.measure.diagnose import diagnose
from edgeprof.measure.stats import summarize


def codes(*args, **kw):
    return {d.code for d in diagnose(*args, **kw)}


def steady(n=300, seed=0):
    return np.random.default_rng(seed).normal(1e-3, 1e-5, n)


def test_clean_run_has_no_warnings():
    x = steady()
    assert codes(summarize(x), x, first_inference_s=2e-3) == set()


def test_unstable_when_iqr_exceeds_ten_percent():
    x = np.random.default_rng(0).uniform(0.7e-3, 1.3e-3, 300)
    assert "unstable" in codes(summarize(x), x, None)


def test_slow_first_run():
    x = steady()
    assert "slow_first_run" in codes(summarize(x), x, first_inference_s=0.05)


def test_too_few_samples_for_p99():
    x = steady(40)
    assert "few_samples_p99" in codes(summarize(x), x, None)


def test_warmup_not_settled_is_reported():
    x = steady()
    assert "warmup_not_settled" in codes(summarize(x), x, None, warmup_settled=False)


def test_throttling_and_frequency_change_from_snapshots():
    x = steady()
    snaps = [{"cur_hz": {"0": 1_800_000_000, "1": 1_800_000_000}, "temp_c": {"cpu": 60.0},
              "throttled": None},
             {"cur_hz": {"0": 1_000_000_000, "1": 1_800_000_000}, "temp_c": {"cpu": 82.0},
              "throttled": {"value": 0x20002, "flags": ["arm frequency capped",
                                                         "arm frequency capping occurred"]}}]
    found = diagnose(summarize(x), x, None, snapshots=snaps)
    by_code = {d.code: d.message for d in found}
    assert "throttled" in by_code and "arm frequency capped" in by_code["throttled"]
    assert "frequency_changed" in by_code and "cpu0" in by_code["frequency_changed"]
    assert "cpu1" not in by_code["frequency_changed"]


def test_stable_frequency_is_not_flagged():
    x = steady()
    snaps = [{"cur_hz": {"0": 1_500_000_000}, "temp_c": None, "throttled": {"value": 0, "flags": []}}] * 3
    assert codes(summarize(x), x, None, snapshots=snaps) == set()


def test_many_outliers_are_reported_few_are_not():
    x = steady(1000)
    x[:5] = 1e-2
    assert "outliers" not in codes(summarize(x), x, None)
    x[:100] = 1e-2
    assert "outliers" in codes(summarize(x), x, None)
