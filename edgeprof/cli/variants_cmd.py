"""``edgeprof variants`` (the family tree) and ``edgeprof export`` (a variant out of the cache)."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("variants")
@click.argument("model")
@click.option("--cache-dir", type=click.Path(path_type=Path))
def variants(model: str, cache_dir: Path | None) -> None:
    """The family tree of MODEL (path or id prefix): every cached variant of its root."""
    from rich.tree import Tree

    from ..report.terminal import terminal_console
    from ..units import fmt_bytes
    from ..variants.cache import Cache

    cache = Cache(cache_dir)
    ref, v = cache.resolve(model)
    root = cache.get(v.root) if v else None
    if root is None:
        terminal_console().print(f"{ref.name} ({ref.short_id}) has no variants in {cache.root}",
                                 highlight=False)
        return
    everything = cache.all()
    kids: dict[str, list] = {}
    for x in everything:
        if x.parent:
            kids.setdefault(x.parent, []).append(x)

    def label(x) -> str:
        fid = (x.fidelity or {}).get("vs_root") or {}
        first = next(iter(fid.values()), {})
        agree = f", top-1 vs root {first['top1_agreement']:.2%}" if "top1_agreement" in first else ""
        mark = " [bold]<- this[/]" if v is not None and x.id == v.id else ""
        return (f"[bold]{x.short_id}[/] {x.pass_name}: {x.label} ({x.format}, "
                f"{fmt_bytes(x.path.stat().st_size) if x.path.exists() else 'missing'}{agree}){mark}")

    tree = Tree(label(root))

    def grow(node, x) -> None:
        for c in sorted(kids.get(x.id, []), key=lambda c: c.created_utc):
            grow(node.add(label(c)), c)
    grow(tree, root)
    terminal_console().print(tree)


@click.command("export")
@click.argument("variant_id")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Folder.")
@click.option("--cache-dir", type=click.Path(path_type=Path))
def export(variant_id: str, out: Path, cache_dir: Path | None) -> None:
    """Copy a variant's model file, its variant.json and a short README out of the cache."""
    import json
    import shutil

    from ..errors import InputError
    from ..variants.cache import Cache

    cache = Cache(cache_dir)
    v = cache.find(variant_id)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"-o {out}: cannot create: {exc.strerror or exc}")
    name = f"{v.label.replace(' ', '_')}.{v.format}"
    shutil.copyfile(v.path, out / name)
    (out / "variant.json").write_text(json.dumps(v.to_json(), indent=1))
    chain = cache.lineage(v)
    lines = [f"# {v.label}", "", f"Model file: `{name}` (variant `{v.id}`).", "",
             "Lineage (root first):", ""]
    lines += [f"- `{x.short_id}` {x.pass_name}" + (f": `{json.dumps(x.config, sort_keys=True)}`"
                                                  if x.config else "") for x in chain]
    if v.input_spec:
        lines += ["", "Input preprocessing (InputSpec, applied to raw samples):", "",
                  "```json", json.dumps(v.input_spec, indent=1), "```"]
    fid = (v.fidelity or {}).get("vs_root")
    if fid:
        lines += ["", f"Fidelity against the fp32 root on {v.fidelity['rows']} rows:", ""]
        for o, m in fid.items():
            lines.append(f"- {o}: " + ", ".join(f"{k} {m[k]:.4g}" for k in
                                                  ("top1_agreement", "cosine_mean", "max_abs_error",
                                                   "sqnr_db") if m.get(k) is not None))
    (out / "README.md").write_text("\n".join(lines) + "\n")
    click.echo(f"exported {v.short_id} to {out}/{name}")
