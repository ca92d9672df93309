"""Data sets: ``.npz`` files (``x`` or one key per input, optional ``y``) and image folders.

Always loaded with ``allow_pickle=False``. Raw samples stay raw here; the InputSpec is applied in
the worker, so the same bytes feed every variant.
"""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

RAW_DTYPES = ("uint8", "float32", "float16", "int8", "int16", "int32", "int64", "bool")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class Dataset:
    path: Path
    x: dict[str, np.ndarray]          # input name (or "x") -> raw samples (N, ...)
    y: np.ndarray | None = None       # int64 labels (N,)
    sha256: str = ""
    classes: list[str] = field(default_factory=list)
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # y_<name> (and y_<name>_offsets)

    @property
    def n(self) -> int:
        return len(next(iter(self.x.values())))

    def npz_path(self, scratch_dir: Path) -> Path:
        """A file the worker can read: the .npz itself, or an image folder saved once as .npz."""
        if self.path.is_file():
            return self.path
        out = Path(scratch_dir) / f"{self.sha256[:16]}.npz"
        if not out.exists():
            tmp = out.with_suffix(".tmp.npz")
            arrays = dict(self.x, **({"y": self.y} if self.y is not None else {}))
            np.savez(tmp, **arrays)
            tmp.replace(out)
        return out


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_array(path: Path, key: str, a: np.ndarray) -> None:
    if a.dtype.name not in RAW_DTYPES:
        raise InputError(f"{path}: '{key}' has dtype {a.dtype}; use uint8 images or float32 "
                         f"(e.g. np.savez(..., {key}=x.astype(np.float32)))")
    if a.ndim < 1 or a.shape[0] == 0:
        raise InputError(f"{path}: '{key}' has no rows (shape {a.shape})")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))[0][0]
        raise InputError(f"{path}: '{key}' contains NaN or inf (first at row {bad})")


def check_npz_file(p: Path) -> None:
    """An .npz is a zip archive; anything else would send numpy to its pickle path, which is
    refused anyway: say what the file is not, rather than how numpy failed."""
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror or exc}")
    if not head:
        raise InputError(f"{p}: is empty (0 bytes)")
    if head != b"PK\x03\x04":
        raise InputError(f"{p}: not an .npz file (np.savez writes a zip archive; this is not one)")


def load_npz(path: str | Path) -> Dataset:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such data file")
    if p.is_dir():
        return load_image_folder(p)
    check_npz_file(p)
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InputError(f"{p}: holds pickled objects, which edgeprof never loads "
                             "(allow_pickle=False); save plain numeric arrays")
        raise InputError(f"{p}: not a readable .npz file ({exc})")
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{p}: not a readable .npz file ({exc})")
    if not arrays:
        raise InputError(f"{p}: holds no arrays")
    y = arrays.pop("y", None)
    labels = {k: arrays.pop(k) for k in [k for k in arrays if k.startswith("y_")]}
    if not arrays:
        raise InputError(f"{p}: has labels 'y' but no inputs (expected 'x' or one key per input)")
    for k, a in arrays.items():
        _check_array(p, k, a)
    counts = {k: len(a) for k, a in arrays.items()}
    if len(set(counts.values())) > 1:
        raise InputError(f"{p}: inputs have different row counts {counts}")
    n = next(iter(counts.values()))
    if y is not None:
        if y.dtype.kind not in "iu":
            raise InputError(f"{p}: labels 'y' must be integers (got {y.dtype})")
        if y.shape != (n,):
            raise InputError(f"{p}: labels 'y' have shape {y.shape}, expected ({n},)")
        y = y.astype(np.int64)
    for k, a in labels.items():  # task labels: (N, ...) per row, or flat values plus offsets
        if a.dtype.kind not in "iuf" or (a.dtype.kind == "f" and not np.all(np.isfinite(a))):
            raise InputError(f"{p}: labels '{k}' must be finite numbers (got {a.dtype})")
        if k.endswith("_offsets"):
            if a.shape != (n + 1,) or a.dtype.kind not in "iu":
                raise InputError(f"{p}: '{k}' must hold {n + 1} integer row offsets")
        elif f"{k}_offsets" not in labels and len(a) != n:
            raise InputError(f"{p}: labels '{k}' have {len(a)} rows, the inputs {n}")
    return Dataset(path=p.resolve(), x=arrays, y=y, sha256=file_sha256(p), labels=labels)


def load_image_folder(root: Path) -> Dataset:
    """``root/<class>/*.png|jpg``, classes sorted by name -> label index."""
    from PIL import Image

    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise InputError(f"{root}: no class folders (expected root/<class>/*.png)")
    images, labels, h = [], [], hashlib.sha256()
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    im.load()
                    arr = np.asarray(im.convert("L" if im.mode in ("L", "1", "I;16") else "RGB"))
            except OSError as exc:
                raise InputError(f"{f}: not a readable image ({exc})")
            images.append(arr if arr.ndim == 3 else arr[..., None])
            labels.append(label)
            h.update(f"{cls}/{f.name}".encode())
            h.update(arr.tobytes())
    if not images:
        raise InputError(f"{root}: no images found")
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise InputError(f"{root}: images differ in size {sorted(shapes)[:3]}; resize them to one size")
    x = np.stack(images).astype(np.uint8)
    return Dataset(path=root.resolve(), x={"x": x}, y=np.asarray(labels, dtype=np.int64),
                   sha256=h.hexdigest(), classes=classes)


def _canonical(a: np.ndarray) -> np.ndarray:
    """Images compare as uint8 whatever their dtype (float32 in [0, 1] is x/255), so the same
    pictures saved in two dtypes still collide in the leakage check."""
    if a.dtype.kind == "f" and a.size and float(a.min()) >= 0.0 and float(a.max()) <= 1.0:
        return np.round(a * 255.0).astype(np.uint8)
    return a


def row_hashes(ds: Dataset) -> set[bytes]:
    """Hashes of each sample's bytes across all inputs (for the leakage check)."""
    keys = sorted(ds.x)
    arrays = {k: _canonical(ds.x[k]) for k in keys}
    return {hashlib.sha256(b"".join(arrays[k][i].tobytes() for k in keys)).digest()
            for i in range(ds.n)}


def check_disjoint(train: Dataset, evaluation: Dataset, what: str = "calibration") -> None:
    overlap = row_hashes(train) & row_hashes(evaluation)
    if overlap:
        raise InputError(f"{len(overlap)} {what} rows also appear in the evaluation data "
                         f"({train.path.name} vs {evaluation.path.name}); that leakage would "
                         "make every accuracy figure a lie: use disjoint splits")
