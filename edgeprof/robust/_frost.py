"""Procedural frost textures, standing in for the photographs ImageNet-C overlays.

ImageNet-C's frost adds a random 224 px crop of one of five photographs of frost on glass. Those files
are not ours to ship, so five textures are generated instead, deterministically (fixed seeds, cached
per size): a diamond-square haze plus branching ice needles (each needle sprouts side branches at
+-60 degrees, as hexagonal ice does), splatted, slightly blurred and saturated. Each texture is then
matched per channel to the mean and standard deviation of one of the five photographs (bluish: red
lowest, blue highest), because those two numbers set how much a frost overlay costs in PSNR.
"""
from __future__ import annotations

import functools

import numpy as np

from edgeprof.robust._ops import plasma_fractal

F32 = np.float32

# (mean R, G, B), (std R, G, B) of the five photographs the reference draws from (frost1..5; its
# second and third files are identical, the textures here differ in structure)
_TARGETS = (
    ((0.305, 0.585, 0.650), (0.106, 0.065, 0.060)),
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089)),
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089)),
    ((0.540, 0.599, 0.648), (0.112, 0.112, 0.117)),
    ((0.441, 0.484, 0.528), (0.174, 0.170, 0.163)),
)
_SEED = 0xF205


def frost_textures(min_side: int) -> np.ndarray:
    """(5, S, S, 3) float32 textures in [0, 1] with S >= min_side (512 unless more is needed)."""
    size = 512
    while size < 1.15 * min_side:
        size *= 2
    return _textures(size)


@functools.lru_cache(maxsize=2)
def _textures(size: int) -> np.ndarray:
    out = np.empty((len(_TARGETS), size, size, 3), dtype=F32)
    for k, (mean, std) in enumerate(_TARGETS):
        rng = np.random.default_rng([_SEED, k, size])
        haze = plasma_fractal(rng, 1, size, 2.0)[0].astype(np.float64)
        g = 0.6 * _standardise(haze) + _standardise(_crystals(rng, size))
        g = _standardise(g)
        out[k] = np.clip(np.asarray(mean) + np.asarray(std) * g[..., None], 0, 1)
    out.flags.writeable = False
    return out


def _standardise(a: np.ndarray) -> np.ndarray:
    return (a - a.mean()) / (a.std() + 1e-12)


def _crystals(rng: np.random.Generator, size: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    n_seeds = max(1, size * size // 1500)
    seeds = rng.uniform(0, size, (n_seeds, 2))
    per_seed = rng.integers(3, 7, n_seeds)
    origin = np.repeat(seeds, per_seed, axis=0)
    angle = rng.uniform(0, 2 * np.pi, len(origin))
    length = rng.uniform(8, 40, len(origin))
    weight = rng.uniform(0.5, 1.0, len(origin))
    # four side branches per needle, alternating sides, shorter towards the tip
    t = np.sort(rng.uniform(0.15, 0.9, (len(origin), 4)), axis=1)
    side = np.where(np.arange(4) % 2 == 0, 1.0, -1.0)[None, :] * rng.choice([-1.0, 1.0], (len(origin), 1))
    b_origin = origin[:, None, :] + (t * length[:, None])[..., None] * np.stack(
        [np.cos(angle), np.sin(angle)], axis=-1)[:, None, :]
    b_angle = angle[:, None] + side * np.pi / 3 + rng.normal(0, 0.08, t.shape)
    b_length = length[:, None] * (1 - t) * 0.6
    seg_origin = np.concatenate([origin, b_origin.reshape(-1, 2)])
    seg_angle = np.concatenate([angle, b_angle.ravel()])
    seg_length = np.concatenate([length, b_length.ravel()])
    seg_weight = np.concatenate([weight, np.repeat(weight, 4) * 0.7])
    # sample every segment at half-pixel steps and splat the samples (the texture wraps around)
    npts = np.ceil(seg_length / 0.5).astype(np.int64) + 1
    seg = np.repeat(np.arange(len(npts)), npts)
    start = np.cumsum(npts) - npts
    u = (np.arange(npts.sum()) - start[seg]) / np.maximum(npts[seg] - 1, 1)
    px = seg_origin[seg, 0] + u * seg_length[seg] * np.cos(seg_angle[seg])
    py = seg_origin[seg, 1] + u * seg_length[seg] * np.sin(seg_angle[seg])
    ix = np.floor(px).astype(np.int64) % size
    iy = np.floor(py).astype(np.int64) % size
    acc = np.bincount(iy * size + ix, weights=seg_weight[seg], minlength=size * size).reshape(size, size)
    acc = gaussian_filter(acc, 0.8, mode="wrap")
    return 1 - np.exp(-1.5 * acc)
