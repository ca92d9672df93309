"""InputSpec: how raw samples become model input (conventions: Preprocessing).

The host reads and checks it; the worker applies it (``targets.worker.apply_input_spec``), so one
implementation serves local runs and boards alike.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import field_validator

from .validate import Strict

LAYOUTS = ("NCHW", "NHWC")
ORDERS = ("RGB", "BGR")
DTYPES = ("float32", "float16", "uint8", "int8", "int16", "int32", "int64")


@dataclass(frozen=True)
class InputSpec:
    layout: str | None = None          # None: inferred from the model's input shape
    data_layout: str | None = None     # the data's, used only when its shape leaves it open
    channel_order: str = "RGB"
    scale: float | None = None         # None: 1/255 for uint8 data, else 1
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    dtype: str | None = None           # None: the model input's dtype
    resize: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["data_layout"] is None:  # absent unless given: specs (and variant ids) stay as before
            del d["data_layout"]
        for k in ("mean", "std", "resize"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "InputSpec") -> "InputSpec":
        """Checked by the declarative schema (``InputSpecFile``): one line naming the key."""
        from .validate import check
        f = check(InputSpecFile, raw, where)
        return cls(layout=f.layout, data_layout=f.data_layout, channel_order=f.channel_order,
                   scale=f.scale, mean=f.mean, std=f.std, dtype=f.dtype, resize=f.resize)


def _floats(v: Any) -> tuple[float, ...] | None:
    if v is None:
        return None
    vals = v if isinstance(v, (list, tuple)) else [v]
    if not vals or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in vals):
        raise ValueError("must be a number or a list of numbers")
    return tuple(float(x) for x in vals)


class InputSpecFile(Strict):
    """The keys of an InputSpec TOML file and what each may hold."""
    layout: Any = None
    data_layout: Any = None
    channel_order: Any = "RGB"
    scale: float | None = None
    mean: Any = None
    std: Any = None
    dtype: Any = None
    resize: Any = None

    @field_validator("layout", "data_layout")
    @classmethod
    def _layout(cls, v: Any) -> str | None:
        if v is None:
            return None
        if not isinstance(v, str) or v.upper() not in LAYOUTS:
            raise ValueError(f"{v!r} must be NCHW or NHWC")
        return v.upper()

    @field_validator("channel_order")
    @classmethod
    def _order(cls, v: Any) -> str:
        if not isinstance(v, str) or v.upper() not in ORDERS:
            raise ValueError(f"{v!r} must be RGB or BGR")
        return v.upper()

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: Any) -> str | None:
        if v is not None and v not in DTYPES:
            raise ValueError(f"{v!r} must be one of {', '.join(DTYPES)}")
        return v

    @field_validator("mean")
    @classmethod
    def _mean(cls, v: Any) -> tuple[float, ...] | None:
        return _floats(v)

    @field_validator("std")
    @classmethod
    def _std(cls, v: Any) -> tuple[float, ...] | None:
        out = _floats(v)
        if out is not None and any(x == 0 for x in out):
            raise ValueError("must not contain 0")
        return out

    @field_validator("resize")
    @classmethod
    def _resize(cls, v: Any) -> tuple[int, int] | None:
        if v is None:
            return None
        if (not isinstance(v, (list, tuple)) or len(v) != 2
                or not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in v)):
            raise ValueError("must be [H, W] with positive integers")
        return int(v[0]), int(v[1])


def load_spec(path: str | Path) -> InputSpec:
    from .validate import read_toml
    return InputSpec.from_dict(read_toml(path, "preprocessing file"), where=str(path))


def worker_spec(spec: InputSpec | None, raw_dtype: str) -> dict[str, Any] | None:
    """The dict the worker applies; None lets the worker use the conventions' default."""
    if spec is None:
        return None
    d = spec.to_dict()
    if d["scale"] is None:
        d["scale"] = 1.0 / 255.0 if raw_dtype == "uint8" else 1.0
    return {"*": d}
