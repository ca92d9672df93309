"""``edgeprof corrupt``: apply an ImageNet-C corruption to an .npz image set (and draw a contact sheet)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from edgeprof.errors import InputError

PREVIEW_SAMPLES = 4
_CHUNK_BYTES = 64 * 2 ** 20  # float32 working set per corrupt() call


def load_images(path: Path):
    """Read ``x`` (and ``y``) from an .npz; return (float32 NHWC in [0, 1], original x, y or None)."""
    import numpy as np

    from ..data import check_npz_file

    if not path.is_file():
        raise InputError(f"data file not found: {path}")
    check_npz_file(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:  # any unreadable file: say what it is, not how numpy failed inside
        raise InputError(f"cannot read {path} as .npz: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise InputError(f"{path} is a single array; expected an .npz with an array named 'x'")
    with npz:
        if "x" not in npz.files:
            raise InputError(f"{path} has no array 'x' (found: {', '.join(npz.files) or 'nothing'})")
        try:
            x = npz["x"]
            y = npz["y"] if "y" in npz.files else None
        except ValueError as exc:  # object arrays need pickle, which is refused
            raise InputError(f"cannot read {path}: {exc}".splitlines()[0]) from None
    if x.ndim == 3:
        images = x[..., None]
    elif x.ndim == 4 and x.shape[3] in (1, 3):
        images = x
    else:
        raise InputError(f"x must hold images (N,H,W), (N,H,W,1) or (N,H,W,3); got shape {x.shape}")
    if x.shape[0] == 0:
        raise InputError(f"x in {path} is empty (0 images)")
    if y is not None and (y.ndim != 1 or y.shape[0] != x.shape[0]):
        raise InputError(f"y must have shape ({x.shape[0]},) to match x; got {y.shape}")
    if x.dtype == np.uint8:
        from edgeprof.robust.corruptions import to_float

        return to_float(images), x, y
    if x.dtype.kind != "f":
        raise InputError(f"x must be uint8 (0-255) or float32 (0-1); got {x.dtype}")
    if np.isnan(x).any():
        raise InputError(f"x in {path} contains NaN")
    lo, hi = float(np.min(x)), float(np.max(x))
    if lo < 0 or hi > 1:
        raise InputError(f"float images must lie in [0, 1]; x spans [{lo:g}, {hi:g}]")
    return images.astype(np.float32), x, y


def corrupt_images(images, name: str, severity: int, seed: int):
    """Corrupt in chunks (bounded memory); chunk i uses the seed sequence (seed, i)."""
    import numpy as np

    from edgeprof.robust.corruptions import corrupt

    per_image = int(np.prod(images.shape[1:])) * 4
    step = max(1, _CHUNK_BYTES // per_image)
    parts = [corrupt(images[i:i + step], name, severity, seed=np.random.SeedSequence([seed, k]))
             for k, i in enumerate(range(0, images.shape[0], step))]
    return np.concatenate(parts)


def _like_input(result, original):
    """Back to the input's dtype and shape."""
    from edgeprof.robust.corruptions import to_uint8

    out = to_uint8(result) if original.dtype.name == "uint8" else result.astype(original.dtype)
    return out.reshape(original.shape)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def contact_sheet(path: Path, rows: list, row_labels: list, col_labels: list) -> None:
    """A grid PNG: ``rows`` is a list of rows, each a list of float32 HWC images in [0, 1]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_rows, n_cols = len(rows), len(rows[0])
    fig = Figure(figsize=(1.5 * n_cols + 1.2, 1.5 * n_rows + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r][c]
            if img.shape[2] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(img, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col_labels[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8)
    fig.tight_layout()
    _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


@click.argument("data", type=click.Path(path_type=Path))
@click.option("--corruption", required=True, metavar="NAME",
              help="One of ImageNet-C's 19 corruptions (e.g. gaussian_noise, fog), or 'all'.")
@click.option("--severity", required=True, type=int, metavar="S", help="Severity, 1 (mild) to 5.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the random corruptions.")
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path), metavar="OUT.npz",
              help="Output .npz: 'x' corrupted (input dtype and shape) and 'y' unchanged; with "
                   "'all', one array per corruption, named after it.")
@click.option("--preview", type=click.Path(path_type=Path), default=None, metavar="SHEET.png",
              help="Also write a contact sheet: sample images (rows) clean and at severities 1-5, "
                   "or with 'all' one row per corruption at the given severity.")
def _corrupt_command(data: Path, corruption: str, severity: int, seed: int, out: Path,
                     preview: Path | None) -> None:
    """Corrupt the images in DATA (.npz with 'x', uint8 or float32 NHWC) as ImageNet-C does."""
    import numpy as np

    from edgeprof.robust.corruptions import CORRUPTIONS

    if corruption != "all" and corruption not in CORRUPTIONS:
        raise InputError(f"unknown corruption {corruption!r}; valid: all, {', '.join(CORRUPTIONS)}")
    if not 1 <= severity <= 5:
        raise InputError(f"severity must be 1 to 5, got {severity}")
    images, original, y = load_images(data)
    sample = images[:PREVIEW_SAMPLES]

    if corruption == "all":
        names = [n for n in CORRUPTIONS if not (n == "saturate" and images.shape[3] == 1)]
        arrays = {n: _like_input(corrupt_images(images, n, severity, seed), original) for n in names}
        if y is not None:
            arrays["y"] = y
        _atomic_write(out, lambda f: np.savez(f, **arrays))
        if preview is not None:
            rows = [list(sample)] + [list(corrupt_images(sample, n, severity, seed)) for n in names]
            contact_sheet(preview, rows, ["clean"] + names, [f"#{i}" for i in range(len(sample))])
    else:
        result = corrupt_images(images, corruption, severity, seed)
        arrays = {"x": _like_input(result, original)}
        if y is not None:
            arrays["y"] = y
        _atomic_write(out, lambda f: np.savez(f, **arrays))
        if preview is not None:
            columns = [sample] + [corrupt_images(sample, corruption, s, seed) for s in range(1, 6)]
            rows = [[col[i] for col in columns] for i in range(len(sample))]
            contact_sheet(preview, rows, [f"#{i}" for i in range(len(sample))],
                          ["clean"] + [f"{corruption} {s}" for s in range(1, 6)])
    click.echo(f"wrote {out}" + (f" and {preview}" if preview is not None else ""))


corrupt = click.command("corrupt")(_corrupt_command)
