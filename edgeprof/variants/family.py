"""From a MODEL argument (path or id prefix) to a cached variant, its root, and the worker-side
InputSpec of any variant in the family."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from ..inputspec import InputSpec, load_spec, worker_spec
from .cache import Cache, Variant


def open_variant(cache: Cache, model: str, preprocess: Path | None = None) -> tuple[Variant, Variant]:
    """(variant, root). A model file not yet in the cache becomes a root variant; a root's
    InputSpec comes from ``--preprocess``; children inherit theirs."""
    ref, v = cache.resolve(model)
    spec = load_spec(preprocess).to_dict() if preprocess else None
    if v is None:
        v = cache.register_root(ref, input_spec=spec)
    elif spec is not None:
        if v.parent is not None:
            raise InputError(f"--preprocess applies to a root model; {v.short_id} is a "
                             f"{v.pass_name} variant that inherits its InputSpec")
        v = cache.register_root(ref, input_spec=spec)
    root = cache.get(v.root) or v
    return v, root


def spec_for_worker(input_spec: dict[str, Any] | None, raw_dtype: str = "uint8") -> dict[str, Any] | None:
    if input_spec is None:
        return None
    return worker_spec(InputSpec.from_dict(input_spec), raw_dtype)


def resolve_models(args: list[str] | tuple[str, ...], cache_dir: Path | None = None) -> list:
    """MODEL arguments (paths or variant id prefixes) -> ModelRefs carrying variant ids."""
    cache = Cache(cache_dir)
    return [cache.resolve(a)[0] for a in args]
