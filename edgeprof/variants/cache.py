"""The variant cache (conventions: Models, variants, cache).

Layout under the cache root: ``variants/<id>/`` holds the model file and ``variant.json``;
``tools/<name>-<version>/`` isolated tool environments; ``data/<sha256>/`` derived data;
``calibration/<key>/`` activation ranges and ``preprocessed/<key>/`` quantization pre-processed
graphs, each shared by every variant built from the same inputs (see :class:`Derived`). Writes
are atomic: a variant is built in a temporary folder beside its final place and renamed, so a
crash never leaves half an entry.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import time
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..data import file_sha256
from ..errors import InputError
from ..models import ModelRef, open_model

SCHEMA = "edgeprof.variant/1"
#: model files up to this size are hashed every time they are reused (about 0.2 s at 256 MiB);
#: larger ones are checked by size, and by hash with EDGEPROF_VERIFY=1 or `variants --verify`
HASH_ALWAYS_BYTES = 256 * 1024 * 1024
log = logging.getLogger("edgeprof")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    model_sha256: str = ""            # of the model file as built: reuse verifies it
    model_bytes: int | None = None
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
    def __init__(self, root: str | Path | None = None, verify: bool | None = None):
        self.root = cache_root(root)
        self.variants_dir = self.root / "variants"
        self.verify = (os.environ.get("EDGEPROF_VERIFY") == "1") if verify is None else verify
        self._checked: set[str] = set()  # entries verified in this process

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

    # -- integrity ---------------------------------------------------------------------------
    def damage(self, v: Variant, full: bool | None = None) -> str | None:
        """Why a cached entry cannot be trusted (None when it can): its model file missing, of
        another size, or (for files up to 256 MiB, or ``full``) of another sha256 than when it
        was built. A root's expected sha256 is its id. Entries from before sizes were recorded
        are checked by hash where one is known (roots)."""
        path = v.path
        want = v.model_sha256 or (v.id if v.pass_name == "root" else "")
        if not path.is_file():
            return f"its model file {path.name} is missing"
        size = path.stat().st_size
        if v.model_bytes is not None and size != v.model_bytes:
            return f"its model file is {size} bytes, {v.model_bytes} when it was built"
        full = self.verify if full is None else full
        if want and (full or size <= HASH_ALWAYS_BYTES) and v.id not in self._checked:
            if file_sha256(path) != want:
                return "its model file's sha256 differs from the one recorded when it was built"
            self._checked.add(v.id)
        return None

    def discard(self, v: Variant, why: str) -> None:
        """Set a damaged entry aside (renamed, then removed) so it can be built again."""
        log.warning("cached variant %s (%s) is damaged: %s; rebuilding it", v.short_id, v.label, why)
        assert v.dir is not None
        trash = self.variants_dir / f".damaged-{v.id}-{os.getpid()}"
        try:
            os.rename(v.dir, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def get_verified(self, vid: str) -> Variant | None:
        """A cached variant fit for reuse; a damaged one is discarded (None: build it again)."""
        v = self.get(vid)
        if v is None:
            return None
        why = self.damage(v)
        if why is None:
            return v
        self.discard(v, why)
        return None

    def checked(self, v: Variant) -> Variant:
        """Refuse to hand out a damaged entry (for commands that cannot rebuild it)."""
        why = self.damage(v)
        if why is None:
            return v
        if v.pass_name == "root" and v.source and Path(v.source).is_file():
            ref = open_model(v.source)
            if ref.sha256 == v.id:  # the original file is still there: copy it in again
                log.warning("cached root %s (%s) was damaged (%s); copied again from %s",
                            v.short_id, v.label, why, v.source)
                shutil.copyfile(ref.path, v.path)
                self._checked.add(v.id)
                return v
        raise InputError(f"cached variant {v.short_id} ({v.label}) is damaged: {why}; rerun the "
                         f"command that built it (it rebuilds damaged entries) or remove {v.dir}")

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
        return self.checked(v)

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
            if v is not None:
                v = self.checked(v)
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
        model = staging / variant.model_file
        variant.model_sha256 = file_sha256(model)
        variant.model_bytes = model.stat().st_size
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
        """A build folder named with its owner's pid; folders of builds whose process is gone
        (killed mid-build) are removed first."""
        self._ensure()
        self.remove_orphans()
        return Path(tempfile.mkdtemp(prefix=f".staging-{os.getpid()}-", dir=self.variants_dir))

    def remove_orphans(self) -> list[Path]:
        removed = []
        for d in self.variants_dir.glob(".staging-*"):
            owner = d.name.split("-")[1] if d.name.count("-") >= 2 else ""
            if owner.isdigit():
                gone = not _pid_alive(int(owner))
            else:  # from before staging folders carried a pid: gone after a day
                try:
                    gone = time.time() - d.stat().st_mtime > 86400
                except OSError:
                    continue
            if gone:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
        return removed

    def register_root(self, ref: ModelRef, input_spec: dict[str, Any] | None = None,
                      source: str | None = None) -> Variant:
        """A model file enters the cache as a root variant (id = sha256 of its bytes)."""
        existing = self.get(ref.sha256)
        why = self.damage(existing) if existing is not None else None
        if existing is not None and why is not None:
            log.warning("cached root %s (%s) was damaged (%s); copied again from %s",
                        existing.short_id, existing.label, why, ref.path)
            shutil.copyfile(ref.path, existing.path)
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


def root_of(v: Variant) -> Path | None:
    """The cache root holding a committed variant (None for one outside a cache)."""
    if v.dir is None or v.dir.parent.name != "variants":
        return None
    return v.dir.parent.parent


class Derived:
    """One file per key under ``<root>/<kind>/<key>/``, with its sha256 beside it: intermediate
    results that several variants share (activation ranges, pre-processed graphs). Written
    atomically (a folder renamed into place); a file whose bytes no longer match is discarded."""

    def __init__(self, root: Path, kind: str):
        self.dir = Path(root) / kind

    def get(self, key: str, name: str) -> Path | None:
        f, s = self.dir / key / name, self.dir / key / "sha256"
        if not (f.is_file() and s.is_file()):
            return None
        if file_sha256(f) != s.read_text().strip():
            log.warning("cached %s %s is damaged (sha256 differs); computing it again",
                        self.dir.name, key[:12])
            self.discard(key)
            return None
        return f

    def discard(self, key: str) -> None:
        trash = self.dir / f".damaged-{key}-{os.getpid()}"
        try:
            os.rename(self.dir / key, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def put(self, key: str, src: Path, name: str) -> Path:
        """Store a copy of ``src``; when another process stored the key first, theirs stays."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for d in self.dir.glob(".staging-*"):
            owner = d.name.split("-")[1]
            if owner.isdigit() and not _pid_alive(int(owner)):
                shutil.rmtree(d, ignore_errors=True)
        stage = Path(tempfile.mkdtemp(prefix=f".staging-{os.getpid()}-", dir=self.dir))
        try:
            shutil.copyfile(src, stage / name)
            (stage / "sha256").write_text(file_sha256(stage / name))
            os.rename(stage, self.dir / key)
        except OSError:
            shutil.rmtree(stage, ignore_errors=True)
            if not (self.dir / key / name).is_file():
                raise
        return self.dir / key / name
