"""Applying a pass: identity first (a cached variant is reused and the pass does not run), then a
build in a staging folder, fidelity, and an atomic commit into the cache."""
from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Protocol

from ..variants.cache import Cache, Variant, variant_id

#: how many times each pass actually ran in this process (tests count cache reuse with it)
PASS_CALLS: Counter = Counter()


class Pass(Protocol):
    name: str
    out_format: str

    def config(self) -> dict[str, Any]: ...
    def tool_versions(self) -> dict[str, str]: ...
    def label(self) -> str: ...
    def run(self, parent: Variant, out_path: Path) -> dict[str, Any]: ...


Fidelity = Callable[[Path, Variant], dict[str, Any]]


def apply_pass(cache: Cache, parent: Variant, p: Pass,
               fidelity: Fidelity | None = None) -> tuple[Variant, bool]:
    """Returns (variant, reused_from_cache)."""
    cfg = p.config()
    tools = p.tool_versions()
    vid = variant_id(parent.id, p.name, cfg, tools)
    found = cache.get_verified(vid)  # a damaged entry is discarded (with a warning) and rebuilt
    if found is not None:
        return found, True
    stage = cache.staging()
    try:
        out = stage / f"model.{p.out_format}"
        t0 = time.perf_counter()
        PASS_CALLS[p.name] += 1
        info = p.run(parent, out) or {}
        pass_s = time.perf_counter() - t0
        v = Variant(id=vid, parent=parent.id, root=parent.root, pass_name=p.name, config=cfg,
                    tool_versions=tools, model_file=out.name, format=p.out_format,
                    label=f"{parent.label} {p.label()}".strip(),
                    input_spec=info.get("input_spec", parent.input_spec),
                    timings={"pass_s": pass_s}, notes=list(info.get("notes", [])),
                    extra=dict(info.get("extra", {})), dir=stage)
        if fidelity is not None:
            t1 = time.perf_counter()
            v.fidelity = fidelity(out, v)
            v.timings["fidelity_s"] = time.perf_counter() - t1
        return cache.commit(stage, v), False
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
