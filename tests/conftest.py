"""Shared fixtures: tiny real models, and the strictness rule for optional parts.

Tests that need an optional part (the numpy-1.26 board environment, sshd, Chromium, the converter)
skip with a reason on a developer's machine; under EDGEPROF_STRICT=1 (set by .ci/run) such a skip
is a failure instead.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests import tiny_models

FIXTURES = Path(__file__).parent / "fixtures"
TFLITE = FIXTURES / "tflite"
STRICT = os.environ.get("EDGEPROF_STRICT") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip (or, under EDGEPROF_STRICT=1, fail) when an optional part is missing."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"EDGEPROF_STRICT=1 and a required part is missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True, scope="session")
def _private_default_cache(tmp_path_factory):
    """Commands run without --cache-dir use a cache of this test session, never the user's
    (a model registered there by earlier work would change names in the tests' output)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEPROF_CACHE_DIR", str(tmp_path_factory.mktemp("default-cache")))
    yield
    mp.undo()


def cpu_flags() -> set[str]:
    """This machine's CPU feature flags as the kernel writes them (x86 'flags', aarch64
    'Features')."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def int8_dot_product() -> bool:
    """Whether this CPU has int8 dot-product instructions (x86 VNNI, Arm dotprod). Without them
    onnxruntime's x86 u8s8/s8s8 kernels can saturate the 16-bit intermediate sums, so int8
    agreement with fp32 is lower: a fact about the CPU that tests must allow for."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("models")
    tiny_models.tiny_cnn(d / "cnn.onnx")
    tiny_models.tiny_cnn(d / "cnn_fixed.onnx", batch=1)
    tiny_models.tiny_cnn(d / "cnn_rgb.onnx", channels=3, size=8)
    tiny_models.mlp(d / "mlp.onnx", dim=32, layers=2)
    tiny_models.dynamic_dims(d / "dyn.onnx")
    tiny_models.unsupported_op(d / "unsup.onnx")
    tiny_models.two_inputs(d / "two.onnx")
    return d


@pytest.fixture(scope="session")
def image_data(tmp_path_factory) -> Path:
    """20 grayscale 8x8 uint8 images with labels, NHWC."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(1)
    np.savez(d / "gray.npz", x=rng.integers(0, 256, (20, 8, 8, 1), dtype=np.uint8),
             y=rng.integers(0, 3, 20).astype(np.int64))
    return d / "gray.npz"


FAST = ["--min-time", "0.05s", "--max-time", "0.5s", "--min-runs", "20", "--processes", "1",
        "--warmup-max-time", "0.5s", "--cold-starts", "0", "-q"]
