"""InputSpec: how raw samples become model input (conventions: Preprocessing).

The host reads and checks it; the worker applies it (``targets.worker.apply_input_spec``), so one
implementation serves local runs and boards alike.
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

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
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"{where}: unknown key(s) {sorted(unknown)}; "
                             f"allowed: {sorted(cls.__dataclass_fields__)}")
        layout = raw.get("layout")
        if layout is not None and str(layout).upper() not in LAYOUTS:
            raise InputError(f"{where}: layout {layout!r} must be NCHW or NHWC")
        data_layout = raw.get("data_layout")
        if data_layout is not None and str(data_layout).upper() not in LAYOUTS:
            raise InputError(f"{where}: data_layout {data_layout!r} must be NCHW or NHWC")
        order = str(raw.get("channel_order", "RGB")).upper()
        if order not in ORDERS:
            raise InputError(f"{where}: channel_order {order!r} must be RGB or BGR")
        dtype = raw.get("dtype")
        if dtype is not None and dtype not in DTYPES:
            raise InputError(f"{where}: dtype {dtype!r} must be one of {', '.join(DTYPES)}")

        def floats(key: str) -> tuple[float, ...] | None:
            v = raw.get(key)
            if v is None:
                return None
            vals = v if isinstance(v, (list, tuple)) else [v]
            try:
                out = tuple(float(x) for x in vals)
            except (TypeError, ValueError):
                raise InputError(f"{where}: {key} must be a number or a list of numbers")
            if key == "std" and any(x == 0 for x in out):
                raise InputError(f"{where}: std must not contain 0")
            return out

        resize = raw.get("resize")
        if resize is not None:
            if (not isinstance(resize, (list, tuple)) or len(resize) != 2
                    or not all(isinstance(r, int) and r > 0 for r in resize)):
                raise InputError(f"{where}: resize must be [H, W] with positive integers")
            resize = (int(resize[0]), int(resize[1]))
        scale = raw.get("scale")
        if scale is not None and not isinstance(scale, (int, float)):
            raise InputError(f"{where}: scale must be a number")
        return cls(layout=str(layout).upper() if layout else None,
                   data_layout=str(data_layout).upper() if data_layout else None,
                   channel_order=order,
                   scale=float(scale) if scale is not None else None, mean=floats("mean"),
                   std=floats("std"), dtype=dtype, resize=resize)


def load_spec(path: str | Path) -> InputSpec:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p}: no such preprocessing file")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read: {exc}")
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{p}: not valid TOML: {exc}")
    return InputSpec.from_dict(raw, where=str(p))


def worker_spec(spec: InputSpec | None, raw_dtype: str) -> dict[str, Any] | None:
    """The dict the worker applies; None lets the worker use the conventions' default."""
    if spec is None:
        return None
    d = spec.to_dict()
    if d["scale"] is None:
        d["scale"] = 1.0 / 255.0 if raw_dtype == "uint8" else 1.0
    return {"*": d}
