"""The sweep file (TOML): models, a variant grid in the conventions' words, targets, data, what to
measure and budgets. Lists in a ``[[variants]]`` entry expand as a grid."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import StrictBool

from ..errors import InputError
from ..validate import Table, read_toml
from ..units import parse_duration_s, parse_fraction

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
    models: list["ModelEntry"] = field(default_factory=list)
    model_name: str | None = None
    field_data: Path | None = None     # rows from the field: drift of static int8 variants
    metric: str = "top1"               # the task metric of the accuracy phase (edgeprof.metrics)
    processes: int = 3                 # fresh worker processes per latency configuration
    rel_ci: float = 0.01               # stop rule: p50 CI half-width / p50
    max_time_s: float = 10.0           # stop rule: at most this long per configuration
    inventory: Path | None = None      # an Ansible inventory: its group's hosts are targets
    # sustained = "10m" (window, cooldown): a sustained-load record per configuration
    sustained: dict[str, Any] | None = None
    cooldown: dict[str, Any] | None = None  # before each configuration: {"below_c"} | {"wait_s"}
    group: str = "all"

    def model_plans(self) -> list["Plan"]:
        """One plan per model of a ``[[models]]`` sweep (the grid applies to each); the plan
        itself for a single ``[model]``."""
        if len(self.models) <= 1:
            return [self]
        import dataclasses
        return [dataclasses.replace(
            self, model_path=m.path, torch_factory=m.torch, torch_weights=m.weights,
            example_shape=m.example_shape, preprocess=m.preprocess,
            eval_data=m.eval or self.eval_data, calib_data=m.calib or self.calib_data,
            finetune_data=m.finetune or self.finetune_data, model_name=m.name)
            for m in self.models]


MODEL_KEYS = {"path", "torch", "weights", "example_shape", "preprocess", "name", "eval", "calib",
              "finetune"}


@dataclass(frozen=True)
class ModelEntry:
    """One model of a sweep: a file or a PyTorch factory, its InputSpec and, optionally, its own
    data (a model with other inputs needs other rows)."""
    name: str | None
    path: Path | None
    torch: str | None
    weights: Path | None
    example_shape: list[int] | None
    preprocess: Path | None
    eval: Path | None = None
    calib: Path | None = None
    finetune: Path | None = None


class _Measure(Table):
    """``[measure]``: where and what to measure (values checked by load_plan)."""
    targets: Any = None
    threads: Any = None
    batch: Any = None
    min_time: Any = None
    max_time: Any = None
    min_runs: Any = None
    rel_ci: Any = None
    processes: Any = None
    cold_starts: Any = None
    latency: StrictBool | None = None
    accuracy: StrictBool | None = None
    accuracy_limit: Any = None
    metric: Any = None
    robustness: dict[str, Any] | None = None
    attacks: dict[str, Any] | None = None
    inventory: Any = None
    group: Any = None
    sustained: Any = None
    window: Any = None
    cooldown: Any = None


class _Data(Table):
    eval: Any = None
    calib: Any = None
    finetune: Any = None
    field: Any = None


class _Decide(Table):
    require: Any = None
    objectives: Any = None


class SweepFile(Table):
    """The sections of a sweep file and the keys of the tables whose keys are fixed
    (``[model]``/``[[models]]`` and ``[[variants]]`` are checked by their own parsers, which
    name the entry)."""
    name: Any = None
    model: Any = None
    models: Any = None
    data: _Data | None = None
    variants: Any = None
    measure: _Measure | None = None
    decide: _Decide | None = None
    out: Any = None


def _model_entry(base: Path, m: Any, where: str) -> ModelEntry:
    if not isinstance(m, dict):
        raise InputError(f"{where} must be a table")
    unknown = set(m) - MODEL_KEYS
    if unknown:
        raise InputError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(MODEL_KEYS)}")
    if not m.get("path") and not m.get("torch"):
        raise InputError(f"{where} needs path = \"model.onnx\" or torch = \"module:factory\"")
    try:
        shape = [int(x) for x in str(m["example_shape"]).split("x")] if m.get("example_shape") else None
    except ValueError:
        raise InputError(f"{where} example_shape {m['example_shape']!r}: expected 1x3x224x224")
    return ModelEntry(
        name=str(m["name"]) if m.get("name") else None, path=_path(base, m.get("path"), f"{where} path"),
        torch=m.get("torch"), weights=_path(base, m.get("weights"), f"{where} weights"),
        example_shape=shape, preprocess=_path(base, m.get("preprocess"), f"{where} preprocess"),
        eval=_path(base, m.get("eval"), f"{where} eval"),
        calib=_path(base, m.get("calib"), f"{where} calib"),
        finetune=_path(base, m.get("finetune"), f"{where} finetune"))


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


def _int_in(v: Any, where: str, lo: int, hi: int, p: Path) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise InputError(f"{p}: {where} = {v!r} must be a whole number from {lo} to {hi}")
    return v


def _metric(value: Any, base: Path, p: Path) -> str:
    """[measure] metric, checked now (a typo fails before any work); a user metric's file path
    is made absolute against the sweep file."""
    from ..metrics import get_metric
    if not isinstance(value, str):
        raise InputError(f"{p}: [measure] metric must be a string, e.g. \"top1\" or \"mae\"")
    mod, _, fn = value.rpartition(":")
    if mod.endswith(".py") and not Path(mod).is_absolute():
        value = f"{(base / mod).resolve()}:{fn}"
    try:
        get_metric(value)
    except InputError as exc:
        raise InputError(f"{p}: [measure] {exc}".replace("--metric ", "metric ")) from None
    return value


def _cooldown(measure: dict[str, Any], p: Path) -> dict[str, Any] | None:
    from ..measure.sustained import parse_cooldown
    v = measure.get("cooldown")
    if v is not None and not isinstance(v, str):
        raise InputError(f"{p}: [measure] cooldown must be a string such as \"55C\" or \"30s\"")
    return parse_cooldown(v, f"{p}: [measure] cooldown")


def _sustained(measure: dict[str, Any], p: Path) -> dict[str, Any] | None:
    """[measure] sustained = "10m" (window = "10s"): continuous load per configuration."""
    if measure.get("sustained") in (None, False, ""):
        if "window" in measure:
            raise InputError(f"{p}: [measure] window applies to sustained = \"10m\"; add it")
        return None
    return {"duration_s": parse_duration_s(measure["sustained"], f"{p}: [measure] sustained",
                                           1.0, 24 * 3600.0),
            "window_s": parse_duration_s(measure.get("window", "10s"), f"{p}: [measure] window",
                                         0.1, 3600.0),
            "cooldown": _cooldown(measure, p)}


def _path(base: Path, value: Any, where: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{where} must be a path string")
    p = Path(value)
    return p if p.is_absolute() else (base / p)


def load_plan(path: str | Path, out_dir: Path | None = None) -> Plan:
    p = Path(path)
    raw = read_toml(p, "sweep file")
    base = p.resolve().parent
    from ..validate import check
    check(SweepFile, raw, str(p))  # sections and keys; values are checked below, in context
    if raw.get("model") and raw.get("models"):
        raise InputError(f"{p}: give [model] (one model) or [[models]] (several), not both")
    if raw.get("models") is not None:
        if not isinstance(raw["models"], list) or not raw["models"]:
            raise InputError(f"{p}: [[models]] must be a non-empty list of tables")
        model_entries = [_model_entry(base, m, f"{p} [[models]] #{i + 1}")
                         for i, m in enumerate(raw["models"])]
    else:
        model_entries = [_model_entry(base, raw.get("model") or {}, f"{p}: [model]")]
    names = [e.name or (e.path.stem if e.path else e.torch) for e in model_entries]
    if len(set(names)) != len(names):
        raise InputError(f"{p}: [[models]] names must differ (got {names}); add name = \"...\"")
    first = model_entries[0]
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
        model_path=first.path, torch_factory=first.torch, torch_weights=first.weights,
        example_shape=first.example_shape, preprocess=first.preprocess, models=model_entries,
        eval_data=_path(base, data.get("eval"), "[data] eval"),
        calib_data=_path(base, data.get("calib"), "[data] calib"),
        finetune_data=_path(base, data.get("finetune"), "[data] finetune"),
        field_data=_path(base, data.get("field"), "[data] field"),
        recipes=recipes, targets=list(measure.get("targets", ["local"])),
        threads=ints("threads", [1]),
        batches=ints("batch", [1]) if "batch" in measure else None,  # None: each model's own
        min_time_s=parse_duration_s(measure.get("min_time", "0.2s"), "[measure] min_time", 0, 600),
        min_runs=int(measure.get("min_runs", 50)), cold_starts=int(measure.get("cold_starts", 1)),
        latency=bool(measure.get("latency", True)), accuracy=bool(measure.get("accuracy", True)),
        accuracy_limit=measure.get("accuracy_limit"),
        metric=_metric(measure.get("metric", "top1"), base, p),
        processes=_int_in(measure.get("processes", 3), "[measure] processes", 1, 64, p),
        rel_ci=parse_fraction(str(measure.get("rel_ci", "1%")), "[measure] rel_ci"),
        max_time_s=parse_duration_s(measure.get("max_time", "10s"), "[measure] max_time", 0, 36000),
        inventory=_path(base, measure.get("inventory"), "[measure] inventory"),
        group=str(measure.get("group", "all")),
        sustained=_sustained(measure, p), cooldown=_cooldown(measure, p),
        robustness=measure.get("robustness"), attacks=measure.get("attacks"),
        require=decide.get("require"), objectives=objectives,
        out_dir=out_dir or Path(raw.get("out") or f"reports/{name}"), raw=raw)


def write_plan_copy(plan: Plan) -> Path:
    """The sweep file beside its results, paths made absolute, so `edgeprof report` can re-read
    the constraints and objectives the sweep ran with."""
    import json

    raw = json.loads(json.dumps(plan.raw))
    base = plan.path.resolve().parent
    tables = [raw.get("model") or {}, raw.get("data") or {}, raw.get("measure") or {}] + \
        list(raw.get("models") or [])
    for table in tables:
        for k in ("path", "weights", "preprocess", "eval", "calib", "finetune", "field", "inventory"):
            v = table.get(k)
            if isinstance(v, str) and not Path(v).is_absolute():
                table[k] = str((base / v).resolve())
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
