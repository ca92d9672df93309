"""Robustness metrics against hand-computed values and an independent loop implementation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgeprof.errors import InputError
from edgeprof.robust import metrics as M


def ece_reference(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Guo et al. (2017)'s binning written as their published loop: bins (lo, hi] from
    linspace(0, 1, n_bins + 1), weight |B|/n, gap |accuracy - mean confidence|."""
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs((pred[inside] == labels[inside]).mean() - conf[inside].mean())
    return total


def test_ece_hand_computed():
    # confidences 0.9 (right), 0.8 (wrong), 0.7 (right), 0.55 (wrong), 0.92 (wrong): 0.9 and 0.92
    # share the bin (13/15, 14/15], accuracy 1/2, mean confidence 0.91
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55], [0.08, 0.92]])
    labels = np.array([0, 1, 1, 0, 0])
    expected = (2 * abs(0.5 - 0.91) + 0.8 + 0.3 + 0.55) / 5
    assert M.ece(probs, labels) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.494)


def test_ece_matches_the_published_loop_on_random_outputs():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (500, 10))
    labels = rng.integers(0, 10, 500)
    probs = np.exp(M.log_probabilities(logits))
    assert M.ece(probs, labels) == pytest.approx(ece_reference(probs, labels), abs=1e-12)


def test_nll_and_brier_hand_computed():
    logits = np.array([[2.0, 0.0], [0.0, 0.0]])
    labels = np.array([0, 1])
    logp = M.log_probabilities(logits)
    assert M.nll(logp, labels) == pytest.approx((math.log(1 + math.exp(-2)) + math.log(2)) / 2)
    # (0.1^2 + 0.1^2) and (0.8^2 + 0.8^2): mean 0.65
    assert M.brier(np.array([[0.9, 0.1], [0.8, 0.2]]), labels) == pytest.approx(0.65)


def test_outputs_that_are_probabilities_are_not_softmaxed_again():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert M.looks_like_probabilities(probs)
    assert not M.looks_like_probabilities(np.log(probs))
    res = M.classification(probs, np.array([0, 1]))
    assert res["nll"] == pytest.approx((-math.log(0.7) - math.log(0.1)) / 2)
    assert res["accuracy"] == 0.5 and res["n"] == 2


def test_corruption_error_tiny_table():
    err = {"noise": {1: 0.2, 2: 0.4}, "blur": {1: 0.1, 2: 0.3}}
    base = {"noise": {1: 0.4, 2: 0.6}, "blur": {1: 0.2, 2: 0.2}}
    ce = M.corruption_errors(err, base)
    assert ce == pytest.approx({"noise": 0.6 / 1.0, "blur": 0.4 / 0.4})
    assert M.mce(ce) == pytest.approx(0.8)
    # relative: clean errors 0.05 (variant) and 0.1 (baseline)
    rel = M.relative_corruption_errors(err, 0.05, base, 0.1)
    assert rel == pytest.approx({"noise": (0.15 + 0.35) / (0.3 + 0.5), "blur": (0.05 + 0.25) / 0.2})
    assert M.mce(rel) == pytest.approx((0.625 + 1.5) / 2)


def test_undefined_ratios_are_none_and_left_out_of_the_mean():
    err = {"a": {1: 0.1}, "b": {1: 0.2}}
    base = {"a": {1: 0.0}, "b": {1: 0.4}}
    ce = M.corruption_errors(err, base)
    assert ce["a"] is None and ce["b"] == pytest.approx(0.5)
    assert M.mce(ce) == pytest.approx(0.5)
    # the baseline does not degrade on "b": relative CE undefined
    rel = M.relative_corruption_errors({"b": {1: 0.3}}, 0.1, {"b": {1: 0.1}}, 0.1)
    assert rel == {"b": None} and M.mce(rel) is None


def test_mean_corruption_accuracy_and_its_interval_at_n_images():
    acc = {"a": {1: 0.9, 2: 0.7}, "b": {1: 0.6, 2: 0.4}}
    m, ci = M.mean_corruption_accuracy(acc, 100)
    assert m == pytest.approx(0.65)
    assert ci[0] < 0.65 < ci[1]
    # the interval is that of 65 successes in 100 (n images), not of 260 in 400 (pooled cells)
    from edgeprof.measure.accuracy import wilson_interval
    assert ci == pytest.approx(list(wilson_interval(65, 100)))
    assert M.mean_corruption_accuracy({}, 100) == (None, None)


def test_agreement_and_total_variation():
    assert M.agreement(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 0.75
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    q = np.array([[0.0, 1.0], [0.5, 0.5]])
    assert M.total_variation(p, q) == pytest.approx(0.5)


def test_check_outputs_rejects_labels_outside_the_model_classes():
    with pytest.raises(InputError, match=r"labels range 0\.\.12 but the model has 10 classes"):
        M.check_outputs(np.zeros((3, 10)), np.array([0, 12, 3]), 3, "m")
    with pytest.raises(InputError, match="classifier"):
        M.check_outputs(np.zeros((3,)), None, 3, "m")
    with pytest.raises(InputError, match="NaN"):
        M.check_outputs(np.full((3, 2), np.nan), None, 3, "m")


@pytest.mark.parametrize("text, expected", [
    ("1-5", [1, 2, 3, 4, 5]), ("1,3,5", [1, 3, 5]), ("5,1,1", [1, 5]), ("2-3,5", [2, 3, 5]),
    ([1, 3], [1, 3]), (4, [4])])
def test_parse_severities(text, expected):
    assert M.parse_severities(text) == expected


@pytest.mark.parametrize("text, match", [
    ("0", "outside 1-5"), ("6", "outside 1-5"), ("0-3", "outside 1-5"), ("5-1", "low to high"),
    ("x", "expected severities"), ("", "empty")])
def test_parse_severities_errors(text, match):
    with pytest.raises(InputError, match=match):
        M.parse_severities(text)


def test_parse_eps():
    assert M.parse_eps("2/255,8/255") == [("2/255", 2 / 255), ("8/255", 8 / 255)]
    assert M.parse_eps(["0.03", 1]) == [("0.03", 0.03), ("1", 1.0)]


@pytest.mark.parametrize("text", ["0", "1.5", "-1/255", "8/0", "nan", "abc", "300/255"])
def test_parse_eps_errors(text):
    with pytest.raises(InputError, match=r"eps|expected a number"):
        M.parse_eps(text)


def test_parse_corruptions():
    assert "saturate" not in M.parse_corruptions("all", channels=1)
    assert "saturate" in M.parse_corruptions("all", channels=3)
    assert M.parse_corruptions("none") == []
    assert M.parse_corruptions("fog, contrast,fog") == ["fog", "contrast"]
    with pytest.raises(InputError, match="unknown corruption 'smog'; valid: all, none, gaussian_noise"):
        M.parse_corruptions("smog")
    with pytest.raises(InputError, match="grayscale"):
        M.parse_corruptions("saturate", channels=1)
