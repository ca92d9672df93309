"""Evaluation images for robustness, and the cache of derived sets (corrupted, adversarial).

Corruptions and attacks act on raw images as float32 in [0, 1], NHWC (conventions). A derived set
is written back in the evaluation data's raw form so that every variant is fed exactly as for
clean data, through its own InputSpec, unchanged:

- corrupted sets of uint8 data are stored as uint8 after rounding (as ImageNet-C's files are);
- adversarial sets of uint8 data are stored as float32 values x 255, not rounded, so that an
  attack's eps holds exactly (the InputSpec's ``scale = 1/255`` maps them back to [0, 1]);
- sets of float32 data stay float32 in [0, 1].

Each set is generated once per key and kept under ``<cache>/data/<sha256 of the key>/set.npz``
with a ``meta.json`` naming the key; a folder is written under a temporary name and renamed, so
a crash leaves no half entry. A corrupted set's key is (data sha256, corruption, severity, seed,
rows), rows being the first N rows evaluated (``--limit``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import Dataset
from ..errors import InputError

F32 = np.float32
KEY_VERSION = 1
_CHUNK_BYTES = 64 * 2 ** 20  # float32 working set per corrupt() call (as `edgeprof corrupt`)


@dataclass
class ImageSet:
    """The first ``n`` rows of an evaluation set's single image input."""

    data: Dataset
    name: str                 # the input's key in the npz ("x" or the model input's name)
    n: int
    raw_dtype: str            # "uint8" or "float32"
    shape: tuple[int, ...]    # raw shape of one row: (H, W) or (H, W, C)

    @property
    def raw(self) -> np.ndarray:
        return self.data.x[self.name][: self.n]

    @property
    def labels(self) -> np.ndarray | None:
        return None if self.data.y is None else self.data.y[: self.n]

    @property
    def channels(self) -> int:
        return 1 if len(self.shape) == 2 else int(self.shape[2])

    def float01(self, stop: int | None = None) -> np.ndarray:
        """Rows [0, stop) as float32 NHWC in [0, 1]."""
        x = self.raw[: self.n if stop is None else min(stop, self.n)]
        if x.ndim == 3:
            x = x[..., None]
        if self.raw_dtype == "uint8":
            return x.astype(F32) / F32(255)
        return x.astype(F32, copy=False)

    def to_raw(self, x01: np.ndarray, exact: bool) -> np.ndarray:
        """float32 NHWC in [0, 1] -> the data's raw domain and row shape. ``exact``: uint8 data
        becomes float32 x 255 (attacks, eps kept); otherwise rounded to uint8 (corruptions)."""
        from .corruptions import to_uint8

        if self.raw_dtype == "uint8":
            out = x01 * F32(255) if exact else to_uint8(x01)
        else:
            out = x01.astype(F32, copy=False)
        return out.reshape((len(out),) + self.shape)


def image_set(data: Dataset, limit: int | None = None) -> ImageSet:
    """Check that ``data`` holds images the corruptions and attacks can act on."""
    if len(data.x) != 1:
        raise InputError(f"{data.path.name}: robustness evaluates models with one image input; "
                         f"the data has {len(data.x)} inputs ({', '.join(data.x)})")
    name, x = next(iter(data.x.items()))
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3)):
        raise InputError(f"{data.path.name}: '{name}' must hold images NHWC with 1 or 3 channels "
                         f"(or N,H,W grayscale); got shape {x.shape}")
    if x.shape[1] < 8 or x.shape[2] < 8:
        raise InputError(f"{data.path.name}: images must be at least 8x8, got "
                         f"{x.shape[1]}x{x.shape[2]}")
    if x.dtype == np.uint8:
        raw_dtype = "uint8"
    elif x.dtype.kind == "f":
        if not np.all(np.isfinite(x)):
            raise InputError(f"{data.path.name}: '{name}' contains NaN or inf")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise InputError(f"{data.path.name}: float images must lie in [0, 1] (corruptions and "
                             f"attacks act in that domain); '{name}' spans [{lo:g}, {hi:g}]")
        raw_dtype = "float32"
    else:
        raise InputError(f"{data.path.name}: images must be uint8 (0-255) or float32 (0-1); "
                         f"'{name}' is {x.dtype}")
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit}: must be at least 1")
    n = data.n if limit is None else min(int(limit), data.n)
    if n == 0:
        raise InputError(f"{data.path.name}: has no rows")
    return ImageSet(data=data, name=name, n=n, raw_dtype=raw_dtype, shape=tuple(x.shape[1:]))


def key_digest(key: dict[str, Any]) -> str:
    payload = json.dumps(dict(key, v=KEY_VERSION), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


class DataCache:
    """``<cache>/data/<sha256>/set.npz``: derived sets made once, reused by every later run."""

    def __init__(self, cache_root: str | Path):
        self.dir = Path(cache_root) / "data"
        self.generated = 0
        self.reused = 0

    def path_for(self, key: dict[str, Any]) -> Path:
        return self.dir / key_digest(key) / "set.npz"

    def get(self, key: dict[str, Any], make: Callable[[], dict[str, np.ndarray]]) -> Path:
        """The set's npz, calling ``make`` (arrays to save) only when no entry exists."""
        final = self.path_for(key)
        if final.is_file():
            self.reused += 1
            return final
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.dir))
        except OSError as exc:
            raise InputError(f"cache {self.dir}: cannot write: {exc.strerror or exc}") from None
        try:
            arrays = make()
            np.savez(stage / "set.npz", **arrays)
            (stage / "meta.json").write_text(json.dumps(dict(key, v=KEY_VERSION), indent=1))
            try:
                os.rename(stage, final.parent)
            except OSError:
                if not final.is_file():  # not a concurrent writer's finished entry
                    raise
                shutil.rmtree(stage, ignore_errors=True)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        self.generated += 1
        return final


def corrupted_key(images: ImageSet, corruption: str, severity: int, seed: int) -> dict[str, Any]:
    return {"kind": "corrupted", "data_sha256": images.data.sha256, "input": images.name,
            "corruption": corruption, "severity": int(severity), "seed": int(seed),
            "rows": images.n}


def corrupt_rows(images: ImageSet, corruption: str, severity: int, seed: int) -> np.ndarray:
    """The evaluated rows corrupted, in the data's raw form. Chunks of about 64 MiB of float32,
    chunk k seeded with SeedSequence([seed, k]): the rule of ``edgeprof corrupt``, so both make
    the same images from the same rows and seed, and memory stays bounded."""
    from .corruptions import corrupt

    step = max(1, _CHUNK_BYTES // (int(np.prod(images.shape)) * 4))
    out_dtype = np.uint8 if images.raw_dtype == "uint8" else F32
    out = np.empty((images.n,) + images.shape, dtype=out_dtype)
    raw = images.raw
    for k, i in enumerate(range(0, images.n, step)):
        chunk = raw[i:i + step]
        if chunk.ndim == 3:
            chunk = chunk[..., None]
        c01 = chunk.astype(F32) / F32(255) if images.raw_dtype == "uint8" else chunk.astype(F32)
        done = corrupt(c01, corruption, severity, seed=np.random.SeedSequence([seed, k]))
        out[i:i + step] = images.to_raw(done, exact=False)
    return out


def corrupted_set(cache: DataCache, images: ImageSet, corruption: str, severity: int,
                  seed: int = 0) -> Path:
    """The npz of ``corruption`` at ``severity`` on the evaluated rows, generated once."""

    def make() -> dict[str, np.ndarray]:
        arrays = {images.name: corrupt_rows(images, corruption, severity, seed)}
        if images.labels is not None:
            arrays["y"] = images.labels
        return arrays

    return cache.get(corrupted_key(images, corruption, severity, seed), make)
