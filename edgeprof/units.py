"""Parsing of the CLI's units: shapes, lists, durations, fractions and sizes. Errors are InputError."""
from __future__ import annotations

import re

from .errors import InputError

_SIZE = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
         "kib": 2**10, "mib": 2**20, "gib": 2**30}
_TIME = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "": 1.0, "min": 60.0, "m": 60.0,
         "h": 3600.0}
_ENERGY = {"nj": 1e-9, "uj": 1e-6, "µj": 1e-6, "mj": 1e-3, "j": 1.0}


def parse_shape(text: str) -> tuple[str, list[int]]:
    """``name=1x3x224x224`` -> ("name", [1, 3, 224, 224])."""
    m = re.fullmatch(r"\s*([^=\s]+)\s*=\s*(\d+(?:\s*[x,]\s*\d+)*)\s*", text or "")
    if not m:
        raise InputError(f"malformed --shape {text!r}: expected NAME=DxDx... such as input=1x3x224x224")
    dims = [int(d) for d in re.split(r"\s*[x,]\s*", m.group(2))]
    if any(d <= 0 for d in dims):
        raise InputError(f"malformed --shape {text!r}: every dimension must be a positive integer")
    return m.group(1), dims


def parse_int_list(text: str, flag: str, lo: int = 1, hi: int = 1 << 20) -> list[int]:
    """``1,2,4`` -> [1, 2, 4], each within [lo, hi]."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected integers separated by commas, such as 1,2")
    if not values:
        raise InputError(f"{flag} is empty")
    for v in values:
        if not lo <= v <= hi:
            raise InputError(f"{flag} {v} is out of range ({lo} to {hi})")
    return list(dict.fromkeys(values))


def parse_duration_s(text: str | float, flag: str, lo: float = 0.0, hi: float = 3600.0) -> float:
    """``2s``, ``500ms``, ``10m`` (or ``10min``), ``1h``, ``1.5`` (seconds) -> seconds within
    [lo, hi]."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e-?\d+)?)\s*(ns|us|ms|min|m|h|s|)\s*", str(text))
    if not m:
        raise InputError(f"{flag} {text!r}: expected a duration such as 2s or 500ms")
    value = float(m.group(1)) * _TIME[m.group(2)]
    if not lo <= value <= hi:
        raise InputError(f"{flag} {text} is out of range ({lo:g} s to {hi:g} s)")
    return value


def parse_fraction(text: str | float, flag: str) -> float:
    """``0.5%`` -> 0.005, ``0.005`` -> 0.005."""
    s = str(text).strip()
    try:
        value = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected a fraction such as 0.5% or 0.005")
    return value


def parse_energy_j(text: str | float, flag: str) -> float:
    """``5mJ`` -> 0.005, ``500uJ`` -> 0.0005, ``0.002`` (joules) -> 0.002."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e-?\d+)?)\s*([nuµm]?[jJ]|)\s*", str(text))
    if not m:
        raise InputError(f"{flag} {text!r}: expected an energy such as 5mJ or 0.5J")
    return float(m.group(1)) * _ENERGY[(m.group(2) or "j").lower()]


def parse_size_bytes(text: str | int, flag: str) -> int:
    """``256MiB`` -> 268435456."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?i?[bB]?)\s*", str(text))
    if not m or m.group(2).lower() not in _SIZE:
        raise InputError(f"{flag} {text!r}: expected a size such as 256MiB or 1.5GB")
    return int(float(m.group(1)) * _SIZE[m.group(2).lower()])


def fmt_seconds(s: float | None, compact: bool = False) -> str:
    if s is None:
        return "-"
    sep = "" if compact else " "
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(s) >= f:
            return f"{s / f:.3g}{sep}{unit}"
    return f"{s / 1e-9:.3g}{sep}ns"


def fmt_bytes(n: int | None, compact: bool = False) -> str:
    if n is None:
        return "-"
    sep = "" if compact else " "
    for unit, f in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= f:
            return f"{n / f:.3g}{sep}{unit}"
    return f"{n}{sep}B"
