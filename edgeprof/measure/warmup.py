"""When have timings settled? A pure function, so it can be tested on synthetic sequences.

Warm-up (caches, allocator arenas, lazy kernel selection, frequency ramp) makes the first runs
slower and then fades. We compare the medians of the last two windows of samples: the warm-up is
over once the newer window is no longer faster than the older one by more than ``rel_tol``.
Medians make a single outlier harmless; requiring two full windows means at least ``2 * window``
runs are spent warming up, never a fixed count.
"""
from __future__ import annotations

from statistics import median
from typing import Sequence


def is_settled(samples_s: Sequence[float], window: int = 5, rel_tol: float = 0.05) -> bool:
    """True when the last ``window`` samples are not faster than the ``window`` before them by
    more than ``rel_tol`` (relative to the newer median). The very first run never counts."""
    if window < 1:
        raise ValueError("window must be >= 1")
    xs = list(samples_s)[1:]  # the first run pays one-off costs; never judge by it
    if len(xs) < 2 * window:
        return False
    newer = median(xs[-window:])
    older = median(xs[-2 * window:-window])
    if newer <= 0:
        return True
    return (older - newer) / newer <= rel_tol


def window_for(sample_s: float, target_window_s: float = 0.02, lo: int = 3, hi: int = 50) -> int:
    """Window size so that one window lasts about ``target_window_s`` (fast models get more
    samples per window, slow ones a few)."""
    if sample_s <= 0:
        return hi
    return max(lo, min(hi, int(target_window_s / sample_s)))
