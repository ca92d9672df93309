"""Model files: validation, format, identity (sha256) and sizes."""
from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

FORMATS = ("onnx", "tflite")


@dataclass(frozen=True)
class ModelRef:
    path: Path
    format: str           # "onnx" | "tflite"
    sha256: str           # root variant id: sha256 of the file's bytes
    model_bytes: int
    zlib_bytes: int       # what the file costs to ship compressed (zlib level 6)
    variant_id: str | None = None   # the lineage id when the file is a cached variant
    label: str | None = None        # the variant's readable name
    root_id: str | None = None      # the family's root (the file itself when it is a root)
    # the variant's InputSpec (conventions: inherited from the parent, recorded per variant)
    input_spec: dict | None = field(default=None, hash=False, compare=False)

    @property
    def id(self) -> str:
        """The variant id: a cached variant's lineage hash, else the file's sha256 (a root)."""
        return self.variant_id or self.sha256

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def name(self) -> str:
        return self.label or self.path.name


def _looks_like_onnx(data: bytes) -> bool:
    try:
        import onnx
        m = onnx.load_model_from_string(data)
    except Exception:
        return False
    return len(m.graph.node) > 0 or len(m.graph.input) > 0


def open_model(path: str | Path, variant_id: str | None = None,
               label: str | None = None, root_id: str | None = None,
               input_spec: dict | None = None) -> ModelRef:
    """Check that ``path`` is a readable ONNX or TFLite model; one-line errors otherwise."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not a model file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror or exc}")
    if not data:
        raise InputError(f"{p}: is empty (0 bytes)")
    is_tflite = data[4:8] == b"TFL3"
    suffix = p.suffix.lower()
    if suffix == ".tflite" and not is_tflite:
        hint = "; it looks like an ONNX model: name it .onnx" if _looks_like_onnx(data) else ""
        raise InputError(f"{p}: not a TFLite model (no TFL3 identifier){hint}")
    if is_tflite:
        fmt = "tflite"
        if len(data) < 16:
            raise InputError(f"{p}: truncated TFLite file ({len(data)} bytes)")
    else:
        fmt = "onnx"
        try:
            import onnx
            m = onnx.load_model_from_string(data)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{p}: not a valid ONNX or TFLite model (truncated or corrupt: {first})")
        if not m.graph.node and not m.graph.output:
            raise InputError(f"{p}: not a valid ONNX or TFLite model (no graph found)")
    return ModelRef(path=p.resolve(), format=fmt, sha256=hashlib.sha256(data).hexdigest(),
                    model_bytes=len(data), zlib_bytes=len(zlib.compress(data, 6)),
                    variant_id=variant_id, label=label, root_id=root_id, input_spec=input_spec)
