"""The sweep file (TOML): models, a variant grid in the conventions' words, targets, data, what to
measure and budgets. Lists in a ``[[variants]]`` entry expand as a grid."""
from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..units import parse_duration_s

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static", "int16x8")
RECIPE_KEYS = {"precision", "per_channel", "format", "calib_method", "calib_rows", "types",
               "reduce_range", "sparsity", "scope",
               "channels", "round_to", "finetune_epochs", "to", "name", "exclude_nodes",
               "exclude_ops"}


@dataclass(frozen=True)
class Recipe:
    """One cell of the grid: optional pruning, then a precision in a format."""
    precision: str = "fp32"
    to: str = "onnx"
    per_channel: bool = True
    format: str = "qdq"
    calib_method: str = "minmax"
    calib_rows: int = 200
    types: str = "S8S8"
    reduce_range: bool = False
    sparsity: float | None = None
    scope: str = "global"
    channels: float | None = None
    round_to: int | None = None
    finetune_epochs: int = 0
    name: str | None = None

    def describe(self) -> str:
        parts = []
        if self.channels:
            parts.append(f"channels {self.channels:.0%}" + (" fine-tuned" if self.finetune_epochs else ""))
        if self.sparsity:
            parts.append(f"sparsity {self.sparsity:.0%}")
        if self.to == "tflite":
            parts.append("tflite")
        parts.append(self.precision)
        if self.precision == "int8-static":
            if self.format != "qdq" and self.to == "onnx":
                parts.append(self.format)
            parts.append("per-channel" if self.per_channel else "per-tensor")
            if self.calib_method != "minmax" and self.to == "onnx":
                parts.append(self.calib_method)
            if self.calib_rows != 200:
                parts.append(f"{self.calib_rows} calib rows")
            if self.types != "S8S8" and self.to == "onnx":
                parts.append(self.types)
        if self.reduce_range and self.to == "onnx" and self.precision.startswith("int8"):
            parts.append("reduce-range")
        return self.name or " ".join(parts)


@dataclass
class Plan:
    path: Path
    name: str
    model_path: Path | None
    torch_factory: str | None
    torch_weights: Path | None
    example_shape: list[int] | None
    preprocess: Path | None
    eval_data: Path | None
    calib_data: Path | None
    finetune_data: Path | None
    recipes: list[Recipe]
    targets: list[str]
    threads: list[int]
    batches: list[int] | None
    min_time_s: float
    min_runs: int
    cold_starts: int
    latency: bool
    accuracy: bool
    accuracy_limit: int | None
    robustness: dict[str, Any] | None
    attacks: dict[str, Any] | None
    require: str | None
    objectives: list[tuple[str, str]] | None
    out_dir: Path
    raw: dict[str, Any] = field(default_factory=dict)


def _expand(entry: dict[str, Any], where: str) -> list[Recipe]:
    unknown = set(entry) - RECIPE_KEYS
    if unknown:
        raise InputError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(RECIPE_KEYS)}")
    keys = sorted(entry)
    values = [entry[k] if isinstance(entry[k], list) and k not in ("exclude_nodes", "exclude_ops")
              else [entry[k]] for k in keys]
    out = []
    for combo in itertools.product(*values):
        cfg = dict(zip(keys, combo))
        cfg.pop("exclude_nodes", None), cfg.pop("exclude_ops", None)
        p = cfg.get("precision", "fp32")
        if p not in PRECISIONS:
            raise InputError(f"{where}: precision {p!r} must be one of {', '.join(PRECISIONS)}")
        if cfg.get("to", "onnx") not in ("onnx", "tflite"):
            raise InputError(f"{where}: to = {cfg['to']!r} must be onnx or tflite")
        if p == "int16x8" and cfg.get("to", "onnx") != "tflite":
            raise InputError(f"{where}: int16x8 is TFLite only (add to = \"tflite\")")
        if str(cfg.get("types", "S8S8")).upper() not in ("S8S8", "U8S8", "U8U8"):
            raise InputError(f"{where}: types = {cfg['types']!r} must be S8S8, U8S8 or U8U8")
        if "types" in cfg:
            cfg["types"] = str(cfg["types"]).upper()
        if not isinstance(cfg.get("reduce_range", False), bool):
            raise InputError(f"{where}: reduce_range must be true or false")
        rows = cfg.get("calib_rows", 200)
        if not isinstance(rows, int) or isinstance(rows, bool) or not 1 <= rows <= 100_000:
            raise InputError(f"{where}: calib_rows = {rows!r} must be a whole number from 1 to 100000")
        for k in ("sparsity", "channels"):
            if cfg.get(k) is not None and not 0 < float(cfg[k]) < 1:
                raise InputError(f"{where}: {k} = {cfg[k]} must be between 0 and 1")
        try:
            out.append(Recipe(**cfg))
        except TypeError as exc:
            raise InputError(f"{where}: {exc}")
    return out


def _path(base: Path, value: Any, where: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{where} must be a path string")
    p = Path(value)
    return p if p.is_absolute() else (base / p)


def load_plan(path: str | Path, out_dir: Path | None = None) -> Plan:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p}: no such sweep file")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read: {exc}")
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{p}: not valid TOML: {exc}")
    base = p.resolve().parent
    known = {"name", "model", "data", "variants", "measure", "decide", "out"}
    unknown = set(raw) - known
    if unknown:
        raise InputError(f"{p}: unknown section(s) {sorted(unknown)}; allowed: {sorted(known)}")
    model = raw.get("model") or {}
    if not model.get("path") and not model.get("torch"):
        raise InputError(f"{p}: [model] needs path = \"model.onnx\" or torch = \"module:factory\"")
    data = raw.get("data") or {}
    measure = raw.get("measure") or {}
    decide = raw.get("decide") or {}
    entries = raw.get("variants") or [{"precision": "fp32"}]
    if not isinstance(entries, list):
        raise InputError(f"{p}: [[variants]] must be a list of tables")
    recipes: list[Recipe] = []
    for i, e in enumerate(entries):
        recipes += _expand(e, f"{p} [[variants]] #{i + 1}")
    if not any(r.precision == "fp32" and not r.sparsity and not r.channels and r.to == "onnx"
               for r in recipes):
        recipes.insert(0, Recipe())  # the fp32 baseline is always measured
    recipes = list(dict.fromkeys(recipes))

    def ints(key: str, default: list[int]) -> list[int]:
        v = measure.get(key, default)
        v = v if isinstance(v, list) else [v]
        if not v or not all(isinstance(x, int) and x > 0 for x in v):
            raise InputError(f"{p}: [measure] {key} must be positive integers")
        return v

    objectives = None
    if decide.get("objectives"):
        objectives = []
        for o in decide["objectives"]:
            if not isinstance(o, str) or ":" not in o:
                raise InputError(f"{p}: [decide] objectives are \"key:min\" or \"key:max\"")
            k, d = o.split(":", 1)
            if d not in ("min", "max"):
                raise InputError(f"{p}: [decide] objective {o!r}: direction must be min or max")
            objectives.append((k.strip(), d))
    name = str(raw.get("name") or p.stem)
    return Plan(
        path=p, name=name,
        model_path=_path(base, model.get("path"), "[model] path"),
        torch_factory=model.get("torch"), torch_weights=_path(base, model.get("weights"), "[model] weights"),
        example_shape=[int(x) for x in str(model["example_shape"]).split("x")]
        if model.get("example_shape") else None,
        preprocess=_path(base, model.get("preprocess"), "[model] preprocess"),
        eval_data=_path(base, data.get("eval"), "[data] eval"),
        calib_data=_path(base, data.get("calib"), "[data] calib"),
        finetune_data=_path(base, data.get("finetune"), "[data] finetune"),
        recipes=recipes, targets=list(measure.get("targets", ["local"])),
        threads=ints("threads", [1]),
        batches=ints("batch", [1]) if "batch" in measure else None,  # None: each model's own
        min_time_s=parse_duration_s(measure.get("min_time", "1s"), "[measure] min_time", 0, 600),
        min_runs=int(measure.get("min_runs", 50)), cold_starts=int(measure.get("cold_starts", 1)),
        latency=bool(measure.get("latency", True)), accuracy=bool(measure.get("accuracy", True)),
        accuracy_limit=measure.get("accuracy_limit"),
        robustness=measure.get("robustness"), attacks=measure.get("attacks"),
        require=decide.get("require"), objectives=objectives,
        out_dir=out_dir or Path(raw.get("out") or f"reports/{name}"), raw=raw)


def write_plan_copy(plan: Plan) -> Path:
    """The sweep file beside its results, paths made absolute, so `edgeprof report` can re-read
    the constraints and objectives the sweep ran with."""
    import json

    raw = json.loads(json.dumps(plan.raw))
    for section, keys in (("model", ("path", "weights", "preprocess")),
                          ("data", ("eval", "calib", "finetune"))):
        for k in keys:
            v = (raw.get(section) or {}).get(k)
            if isinstance(v, str) and not Path(v).is_absolute():
                raw[section][k] = str((plan.path.resolve().parent / v).resolve())
    raw["require"] = None
    raw.pop("require")
    raw.setdefault("decide", {})["require"] = plan.require or ""
    raw["out"] = str(plan.out_dir)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    out = plan.out_dir / "sweep.toml"
    out.write_text(_to_toml(raw))
    return out


def _to_toml(d: dict[str, Any]) -> str:
    """A small TOML writer for the sweep file's shapes (tables, arrays of tables, scalars)."""
    import json

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + "}"
        raise TypeError(type(v))
    lines = [f"{k} = {val(v)}" for k, v in d.items() if not isinstance(v, (dict, list))
             or (isinstance(v, list) and not all(isinstance(x, dict) for x in v)) or not v]
    for k, v in d.items():
        if isinstance(v, dict) and v:
            lines += ["", f"[{k}]"] + [f"{kk} = {val(vv)}" for kk, vv in v.items()]
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for x in v:
                lines += ["", f"[[{k}]]"] + [f"{kk} = {val(vv)}" for kk, vv in x.items()]
    return "\n".join(lines) + "\n"
