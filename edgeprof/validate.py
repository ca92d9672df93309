"""Declarative validation of the TOML files (sweep, target, InputSpec) with pydantic.

Each file's shape is a pydantic model (unknown keys forbidden); ``check`` turns pydantic's
errors into edgeprof's one-line ``ORIGIN: KEY: problem`` (the first problem found), so a user
sees the file and the key, never a validation dump. Validators raise ``ValueError`` with the
problem in edgeprof's words; pydantic's own messages are kept for plain type errors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import InputError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base of every file model: unknown keys are an error, values are not coerced across
    types (a string is not a number), instances are frozen."""
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Table(Strict):
    """A table whose keys are fixed but whose values are checked later, with their context
    (types are not coerced either way: ``Any`` fields take the raw TOML value)."""
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML file as a dict, or a one-line InputError naming the file (``what``: "sweep file",
    "target file", ...)."""
    import tomllib
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: no such {what}") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{p}: not valid TOML: {exc}") from None


def _key(loc: tuple[Any, ...], rename: Mapping[str, str]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    if parts:
        parts[0] = rename.get(parts[0], parts[0])
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out


def _message(err: dict[str, Any], allowed: list[str]) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return f"unknown key (known: {', '.join(allowed)})"
    if kind == "missing":
        return "required"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind in ("int_type", "float_type", "string_type", "bool_type", "list_type", "dict_type",
                "int_parsing", "float_parsing"):
        got = type(err.get("input")).__name__
        want = {"int_type": "an integer", "int_parsing": "an integer", "float_type": "a number",
                "float_parsing": "a number", "string_type": "a string", "bool_type": "true or false",
                "list_type": "a list", "dict_type": "a table"}[kind]
        return f"expected {want}, got {got}"
    if kind == "literal_error":
        return f"{err.get('input')!r}: {msg[0].lower()}{msg[1:]}"
    return msg[0].lower() + msg[1:]


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    """The (nested) model whose field ``loc`` leads to: where an unknown key was found."""
    import typing
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            break
        ann = field.annotation
        options = typing.get_args(ann) or (ann,)
        sub = next((o for o in options if isinstance(o, type) and issubclass(o, BaseModel)), None)
        if sub is None:
            break
        model = sub
    return model


def check(model: type[M], raw: Mapping[str, Any], origin: str,
          rename: Mapping[str, str] | None = None) -> M:
    """``raw`` (a parsed TOML table) as ``model``, or a one-line InputError
    ``ORIGIN: KEY: problem`` (``rename`` maps field names to the names the user wrote)."""
    rename = rename or {}
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        inner = _model_at(model, tuple(err["loc"])[:-1])
        allowed = sorted(rename.get(k, k) if inner is model else k for k in inner.model_fields)
        key = _key(tuple(err["loc"]), rename)
        head = f"{origin}: {key}: " if key else f"{origin}: "
        raise InputError(head + _message(err, allowed)) from None
