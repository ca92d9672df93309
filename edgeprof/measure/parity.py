"""The host is not the board: the same file can give other answers on another CPU (int8 kernels
differ: VNNI or not, x86 or Arm). When a run has several targets, each variant's per-row top-1
predictions are compared across targets, against the fp32 root's own cross-target difference
(float kernels differ a little too), and a variant that diverges beyond it is flagged: figures
measured on one machine would have misled about the other.

Pure functions over accuracy records (which keep ``pred``, the per-row top-1, and optionally
``outputs_file``, raw outputs in a side .npz keyed by sha256)."""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

#: a variant is flagged when it disagrees across two targets on at least this much more of the
#: rows than its fp32 root does, and the difference is significant (one-sided two-proportion z)
MARGIN = 0.01
ALPHA = 0.01


def disagreement(a: list[int] | np.ndarray, b: list[int] | np.ndarray) -> tuple[int, int]:
    """(rows where the top-1 differs, rows compared)."""
    a, b = np.asarray(a), np.asarray(b)
    n = min(len(a), len(b))
    return int((a[:n] != b[:n]).sum()), n


def _p_greater(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided p-value that proportion 1 exceeds proportion 2 (pooled z test)."""
    from scipy import special
    if n1 == 0 or n2 == 0:
        return 1.0
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(max(p * (1 - p) * (1 / n1 + 1 / n2), 1e-300))
    return float(special.ndtr(-(k1 / n1 - k2 / n2) / se))


def max_output_error(a_file: str | None, b_file: str | None, base: Path | None) -> float | None:
    """Largest absolute output difference between two targets' raw outputs, relative to the
    output range, when both side files are there."""
    if not a_file or not b_file or base is None:
        return None
    try:
        with np.load(base / a_file, allow_pickle=False) as fa, \
                np.load(base / b_file, allow_pickle=False) as fb:
            x, y = fa["outputs"].astype(np.float64), fb["outputs"].astype(np.float64)
    except (OSError, KeyError, ValueError):
        return None
    n = min(len(x), len(y))
    span = float(x[:n].max() - x[:n].min()) or 1.0
    return float(np.abs(x[:n] - y[:n]).max()) / span


def divergence(records: list[dict[str, Any]], side_dir: Path | None = None) -> list[dict[str, Any]]:
    """Findings for every (variant, pair of targets) whose top-1 predictions disagree beyond
    their fp32 root's cross-target disagreement (by MARGIN, significant at ALPHA)."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        if r["kind"] == "accuracy" and r.get("pred") is not None:
            acc[(r["variant_id"], r["target"])] = r  # the latest per key
    by_variant: dict[str, dict[str, dict[str, Any]]] = {}
    for (vid, tgt), r in acc.items():
        by_variant.setdefault(vid, {})[tgt] = r
    out = []
    for vid, per_target in by_variant.items():
        if len(per_target) < 2:
            continue
        any_rec = next(iter(per_target.values()))
        root = by_variant.get(any_rec.get("root_id") or vid, {})
        for t1, t2 in itertools.combinations(sorted(per_target), 2):
            a, b = per_target[t1], per_target[t2]
            if a.get("data_sha256") != b.get("data_sha256"):
                continue  # other rows: not comparable
            k, n = disagreement(a["pred"], b["pred"])
            rk, rn = (disagreement(root[t1]["pred"], root[t2]["pred"])
                      if t1 in root and t2 in root and vid != any_rec.get("root_id") else (0, 0))
            finding = {"variant_id": vid, "label": (a.get("model") or {}).get("name", vid[:12]),
                       "targets": [t1, t2], "disagreement": k / n if n else 0.0, "n": n,
                       "root_disagreement": rk / rn if rn else None,
                       "accuracy": {t1: a.get("accuracy"), t2: b.get("accuracy")},
                       "max_output_error": max_output_error(a.get("outputs_file"),
                                                            b.get("outputs_file"), side_dir)}
            base_rate = rk / rn if rn else 0.0
            p = _p_greater(k, n, rk, rn) if rn else (0.0 if k else 1.0)
            finding["p_value"] = p
            is_root = vid == any_rec.get("root_id")  # the reference itself is never flagged
            finding["is_root"] = is_root
            finding["diverges"] = bool(not is_root and n and k / n > base_rate + MARGIN
                                       and p < ALPHA)
            if finding["diverges"]:
                acc_txt = ", ".join(f"{t} {finding['accuracy'][t]:.1%}" for t in (t1, t2)
                                    if finding["accuracy"][t] is not None)
                finding["message"] = (
                    f"{finding['label']} gives another top-1 class on {t1} and {t2} for "
                    f"{k / n:.1%} of {n} rows (its fp32 root: "
                    f"{'not measured on both' if not rn else f'{base_rate:.1%}'}); accuracy "
                    f"{acc_txt}: figures measured on one of them would mislead about the other")
                finding["try_next"] = ("decide on the board's own figures; for int8 on x86 "
                                       "without VNNI try --reduce-range")
            out.append(finding)
    return out
