"""The variant cache (conventions: Models, variants, cache).

Layout under the cache root: ``variants/<id>/`` holds the model file and ``variant.json``;
``tools/<name>-<version>/`` isolated tool environments; ``data/<sha256>/`` derived data. Writes
are atomic: a variant is built in a temporary folder beside its final place and renamed, so a
crash never leaves half an entry.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..models import ModelRef, open_model

SCHEMA = "edgeprof.variant/1"


def cache_root(flag: str | Path | None = None) -> Path:
    """``--cache-dir``, else ``EDGEPROF_CACHE_DIR``, else the user cache dir."""
    if flag:
        return Path(flag)
    env = os.environ.get("EDGEPROF_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs
    return Path(platformdirs.user_cache_dir("edgeprof"))


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def variant_id(parent_id: str, pass_name: str, config: dict[str, Any],
               tool_versions: dict[str, str]) -> str:
    payload = canonical_json({"parent": parent_id, "pass": pass_name, "config": config,
                              "tools": tool_versions})
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class Variant:
    id: str
    parent: str | None
    root: str
    pass_name: str
    config: dict[str, Any]
    tool_versions: dict[str, str]
    model_file: str
    format: str
    label: str
    input_spec: dict[str, Any] | None = None
    source: str | None = None
    fidelity: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    created_utc: str = ""
    dir: Path | None = None

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def path(self) -> Path:
        assert self.dir is not None
        return self.dir / self.model_file

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("dir")
        d["schema"] = SCHEMA
        d["pass"] = d.pop("pass_name")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], directory: Path) -> "Variant":
        d = dict(d)
        d.pop("schema", None)
        d["pass_name"] = d.pop("pass")
        known = set(cls.__dataclass_fields__) - {"dir"}
        return cls(**{k: v for k, v in d.items() if k in known}, dir=directory)


class Cache:
    def __init__(self, root: str | Path | None = None):
        self.root = cache_root(root)
        self.variants_dir = self.root / "variants"

    def _ensure(self) -> None:
        try:
            self.variants_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cache {self.root}: cannot create: {exc.strerror or exc}")

    # -- reading ----------------------------------------------------------------------------
    def get(self, vid: str) -> Variant | None:
        d = self.variants_dir / vid
        meta = d / "variant.json"
        if not meta.is_file():
            return None
        try:
            return Variant.from_json(json.loads(meta.read_text()), d)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{meta}: unreadable variant record ({exc})")

    def all(self) -> list[Variant]:
        if not self.variants_dir.is_dir():
            return []
        out = []
        for d in sorted(self.variants_dir.iterdir()):
            if d.name.startswith("."):
                continue
            v = self.get(d.name)
            if v is not None:
                out.append(v)
        return out

    def find(self, prefix: str) -> Variant:
        """A variant by an unambiguous id prefix (at least 4 hex digits)."""
        p = prefix.lower()
        if len(p) < 4 or any(c not in "0123456789abcdef" for c in p):
            raise InputError(f"{prefix!r} is neither a model file nor a variant id prefix")
        hits = [d.name for d in self.variants_dir.iterdir()
                if d.name.startswith(p)] if self.variants_dir.is_dir() else []
        if not hits:
            raise InputError(f"no variant with id {prefix} in the cache {self.root}")
        if len(hits) > 1:
            raise InputError(f"id prefix {prefix} is ambiguous ({len(hits)} variants); give more digits")
        v = self.get(hits[0])
        if v is None:
            raise InputError(f"variant {prefix} in {self.root} has no variant.json")
        return v

    def resolve(self, arg: str | Path) -> tuple[ModelRef, Variant | None]:
        """MODEL arguments accept a path or an id prefix. A file inside the cache, or a file
        whose bytes are a cached root, resolves to its variant."""
        p = Path(arg)
        if p.exists():
            v = None
            try:
                rel = p.resolve().relative_to(self.variants_dir.resolve())
                v = self.get(rel.parts[0])
            except ValueError:
                pass
            ref = open_model(p)
            v = v or self.get(ref.sha256)
            return (open_model(p, v.id, v.label, v.root, v.input_spec) if v else ref), v
        if os.sep in str(arg) or "." in Path(str(arg)).name:
            open_model(p)  # raises the usual "no such file"
        v = self.find(str(arg))
        return open_model(v.path, v.id, v.label, v.root, v.input_spec), v

    def ref(self, v: Variant) -> ModelRef:
        return open_model(v.path, v.id, v.label, v.root, v.input_spec)

    def lineage(self, v: Variant) -> list[Variant]:
        """From the root down to ``v``."""
        chain = [v]
        while chain[-1].parent:
            parent = self.get(chain[-1].parent)
            if parent is None:
                break
            chain.append(parent)
        return chain[::-1]

    def children(self, vid: str) -> list[Variant]:
        return [v for v in self.all() if v.parent == vid]

    # -- writing ----------------------------------------------------------------------------
    def commit(self, staging: Path, variant: Variant) -> Variant:
        """Move a fully written staging folder into place (atomic rename)."""
        variant.created_utc = variant.created_utc or _dt.datetime.now(_dt.timezone.utc).isoformat(
            timespec="seconds")
        (staging / "variant.json").write_text(json.dumps(variant.to_json(), indent=1))
        final = self.variants_dir / variant.id
        try:
            os.rename(staging, final)
        except OSError:
            if final.exists():  # someone else built the same variant first: theirs is as good
                shutil.rmtree(staging, ignore_errors=True)
            else:
                raise
        variant.dir = final
        return variant

    def update(self, variant: Variant) -> None:
        """Rewrite a committed variant's record (facts that are not part of its identity)."""
        assert variant.dir is not None
        meta = variant.dir / "variant.json"
        tmp = meta.with_name("variant.json.tmp")
        tmp.write_text(json.dumps(variant.to_json(), indent=1))
        tmp.replace(meta)

    def staging(self) -> Path:
        self._ensure()
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.variants_dir))

    def register_root(self, ref: ModelRef, input_spec: dict[str, Any] | None = None,
                      source: str | None = None) -> Variant:
        """A model file enters the cache as a root variant (id = sha256 of its bytes)."""
        existing = self.get(ref.sha256)
        if existing is not None:
            if input_spec is not None and existing.input_spec != input_spec:
                if self.children(existing.id):
                    raise InputError(
                        f"{ref.name} ({existing.short_id}) is cached with another InputSpec and "
                        "has variants built with it; use a new --cache-dir (or remove "
                        f"{self.variants_dir / existing.id} and its children) to change it")
                existing.input_spec = input_spec
                self.update(existing)
            return existing
        stage = self.staging()
        name = "model." + ref.format
        shutil.copyfile(ref.path, stage / name)
        v = Variant(id=ref.sha256, parent=None, root=ref.sha256, pass_name="root", config={},
                    tool_versions={}, model_file=name, format=ref.format,
                    label=Path(ref.name).stem, input_spec=input_spec,
                    source=source or str(ref.path))
        return self.commit(stage, v)
