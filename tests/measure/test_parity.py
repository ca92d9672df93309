"""Cross-target parity as a pure function on synthetic per-row predictions (the same int8 file
on an x86 host and an Arm board gave 89.8 % vs 92.2 %: a divergence the report must show)."""
from __future__ import annotations

import numpy as np

from edgeprof.measure.parity import divergence


def acc(vid, target, pred, root="r", data="d", y=None):
    y = np.zeros(len(pred), int) if y is None else y
    return {"kind": "accuracy", "variant_id": vid, "root_id": root, "target": target,
            "data_sha256": data, "pred": list(map(int, pred)), "model": {"name": vid},
            "accuracy": float((np.asarray(pred) == y).mean())}


def test_int8_diverging_beyond_its_root_is_flagged():
    rng = np.random.default_rng(0)
    n = 1000
    y = rng.integers(0, 10, n)
    root_host = y.copy()
    root_board = y.copy()
    root_board[:3] = (y[:3] + 1) % 10                    # float kernels: 0.3 % differ
    q_host = y.copy()
    q_board = y.copy()
    q_board[:57] = (y[:57] + 1) % 10                     # int8 kernels: 5.7 % differ
    recs = [acc("r", "host", root_host, y=y), acc("r", "pi", root_board, y=y),
            acc("q", "host", q_host, y=y), acc("q", "pi", q_board, y=y)]
    found = {f["variant_id"]: f for f in divergence(recs)}
    assert found["q"]["diverges"] and found["q"]["disagreement"] == 0.057
    assert found["q"]["root_disagreement"] == 0.003 and "pi" in found["q"]["message"]
    assert not found["r"]["diverges"]


def test_no_flag_within_the_roots_own_difference_or_on_other_rows():
    y = np.zeros(500, int)
    a, b = y.copy(), y.copy()
    b[:10] = 1                                            # 2 % for both root and variant
    recs = [acc("r", "host", a), acc("r", "pi", b), acc("q", "host", a), acc("q", "pi", b)]
    assert not any(f["diverges"] for f in divergence(recs))
    # different rows on the two targets: not compared
    recs = [acc("q", "host", a, data="d1"), acc("q", "pi", b, data="d2")]
    assert divergence(recs) == []
    # one target only: nothing to compare
    assert divergence([acc("q", "host", a)]) == []
