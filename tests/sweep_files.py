"""A small sweep file over the bundled demo model and data, shared by the sweep and report tests."""
from __future__ import annotations

from pathlib import Path

from edgeprof.demo import DATA_DIR


def demo_sweep(path: Path, name: str = "t", model: Path | None = None,
               precisions: str = '["fp32", "int8-static"]', measure: str = "",
               require: str = "accuracy_drop<=1%", min_time: str = "0.1s",
               cold_starts: int = 0) -> Path:
    """Write a sweep TOML at ``path``; ``measure`` adds lines to the [measure] table."""
    path.write_text(f'''
name = "{name}"
[model]
path = "{model or DATA_DIR / 'fashion_cnn.onnx'}"
preprocess = "{DATA_DIR / 'preprocess.toml'}"
[data]
eval = "{DATA_DIR / 'eval.npz'}"
calib = "{DATA_DIR / 'calib.npz'}"
[[variants]]
precision = {precisions}
[measure]
min_time = "{min_time}"
min_runs = 20
cold_starts = {cold_starts}
{measure}
[decide]
require = "{require}"
''')
    return path
