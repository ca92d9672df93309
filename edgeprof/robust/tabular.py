"""Perturbations for non-image inputs: float32 arrays of any shape (N, ...), one sample per row.

Each function returns a new float32 array of the input's shape; statistics are taken per sample
(over every axis but the first), so a batch's samples do not influence one another.
"""
from __future__ import annotations

import math

import numpy as np

from edgeprof.errors import InputError

F32 = np.float32


def _check(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise InputError(f"expected a numeric array, got dtype {a.dtype}")
    if a.ndim < 1:
        raise InputError("expected an array of shape (N, ...), got a scalar")
    a = a.astype(F32, copy=False)
    if not np.isfinite(a).all():
        raise InputError("input contains NaN or infinite values")
    return a


def gaussian_noise_snr(x: np.ndarray, snr_db: float, *, seed: int | None = None) -> np.ndarray:
    """Add white Gaussian noise at ``snr_db`` decibels: noise power = mean(x^2) / 10^(snr/10).

    Signal power is each sample's mean square; an all-zero sample gets no noise (its SNR is
    undefined).
    """
    if not math.isfinite(snr_db):
        raise InputError(f"snr_db must be a finite number, got {snr_db!r}")
    a = _check(x)
    if a.size == 0:
        return a.copy()
    power = np.mean(np.square(a.reshape(a.shape[0], -1), dtype=np.float64), axis=1)
    sigma = np.sqrt(power / 10.0 ** (snr_db / 10.0)).astype(F32).reshape((-1,) + (1,) * (a.ndim - 1))
    rng = np.random.default_rng(seed)
    return a + rng.standard_normal(a.shape, dtype=F32) * sigma


def feature_dropout(x: np.ndarray, fraction: float, *, seed: int | None = None) -> np.ndarray:
    """Set ``round(fraction * features)`` randomly chosen features of each sample to zero.

    Exactly that many per sample (chosen without replacement), not a Bernoulli draw per value, so
    the damage is the same for every sample. No rescaling of the kept features.
    """
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"fraction must be between 0 and 1, got {fraction!r}")
    a = _check(x)
    if a.size == 0:
        return a.copy()
    n = a.shape[0]
    flat = a.reshape(n, -1).copy()
    k = int(round(fraction * flat.shape[1]))
    if k:
        rng = np.random.default_rng(seed)
        drop = np.argpartition(rng.random(flat.shape), k - 1, axis=1)[:, :k]
        np.put_along_axis(flat, drop, F32(0), axis=1)
    return flat.reshape(a.shape)


def scale(x: np.ndarray, factor: float) -> np.ndarray:
    """Multiply every value by ``factor`` (a gain error, e.g. a sensor's calibration drift)."""
    if not math.isfinite(factor):
        raise InputError(f"factor must be a finite number, got {factor!r}")
    return _check(x) * F32(factor)
