"""The bundled demo: a small Fashion-MNIST CNN and its data, usable offline.

Nothing here imports torch. The PyTorch definition lives in :mod:`edgeprof.demo.model`
(``--torch edgeprof.demo.model:fashion_cnn``); the files are (re)made by
``python -m edgeprof.demo.train``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CLASS_NAMES", "DATA_DIR", "FILE_NAMES", "class_names", "demo_paths"]

DATA_DIR: Path = Path(__file__).resolve().parent / "data"

#: key -> file name inside DATA_DIR
FILE_NAMES: dict[str, str] = {
    "pt": "fashion_cnn.pt",
    "onnx": "fashion_cnn.onnx",
    "eval": "eval.npz",
    "calib": "calib.npz",
    "train_subset": "train_subset.npz",
    "preprocess": "preprocess.toml",
    "json": "demo.json",
}

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def demo_paths() -> dict[str, Path]:
    """Paths of the demo files, keyed ``pt``, ``onnx``, ``eval``, ``calib``, ``train_subset``,
    ``preprocess``, ``json``. The files exist in an installed package; they are not checked here."""
    return {key: DATA_DIR / name for key, name in FILE_NAMES.items()}


def class_names() -> list[str]:
    """The ten Fashion-MNIST class names, index = label."""
    return list(CLASS_NAMES)
