import numpy as np
import pytest

from edgeprof.measure.warmup import is_settled, window_for


def _decay(n, start=10.0, steady=1.0, tau=5.0, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return steady + (start - steady) * np.exp(-t / tau) + rng.normal(0, noise, n) * steady


def first_settled(seq, window=5, rel_tol=0.05):
    for i in range(1, len(seq) + 1):
        if is_settled(seq[:i], window=window, rel_tol=rel_tol):
            return i
    return None


def test_constant_sequence_settles_after_two_windows_plus_first_run():
    assert first_settled([1.0] * 40, window=5) == 11


def test_exponential_warmup_is_detected_only_after_it_has_faded():
    seq = _decay(200, start=20.0, tau=6.0)
    i = first_settled(seq, window=5)
    assert i is not None
    # at the detection point the remaining excess over steady state is small
    assert seq[i - 5:i].mean() < 1.10
    # and it was not declared during the steep part
    assert i > 15


def test_noisy_warmup_settles_and_noise_alone_does_not_block():
    seq = _decay(400, start=5.0, tau=10.0, noise=0.03, seed=3)
    i = first_settled(seq, window=10)
    assert i is not None and i < 150
    assert np.median(seq[i - 10:i]) < 1.15


def test_ever_falling_sequence_never_settles():
    seq = [100 * 0.97 ** i for i in range(200)]  # every window of 5 is 14 % faster
    assert first_settled(seq, window=5) is None


def test_first_run_is_ignored():
    # one huge first run followed by steady samples: settled as soon as two windows exist
    assert first_settled([50.0] + [1.0] * 20, window=3) == 7


def test_slower_newer_window_counts_as_settled():
    # a step up (e.g. another process started) is not warm-up: do not wait forever for it
    assert is_settled([1.0] + [1.0] * 5 + [1.3] * 5, window=5)


def test_window_must_be_positive():
    with pytest.raises(ValueError):
        is_settled([1.0, 2.0], window=0)


@pytest.mark.parametrize("sample_s,expected", [(1e-6, 50), (1e-3, 20), (0.1, 3), (0.0, 50)])
def test_window_for_scales_with_sample_time(sample_s, expected):
    assert window_for(sample_s) == expected
