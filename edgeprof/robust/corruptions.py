"""ImageNet-C's 19 image corruptions at severities 1-5, vectorised over NHWC float32 batches.

The 15 corruptions of Hendrycks & Dietterich (ICLR 2019) and their 4 extra ones, with the per-severity
constants of the authors' script (hendrycks/robustness ``ImageNet-C/create_c/make_imagenet_c.py``),
cross-checked against the ``imagecorruptions`` package (bethgelab, 1.1.2), which adapted that script to
other image sizes and grayscale. ``corrupt(images, name, severity, seed=...)`` is the entry point.

Images are float32 in [0, 1], (N, H, W, 1) or (N, H, W, 3), any size from 8x8; ``to_float`` and
``to_uint8`` convert from and to 8-bit at the edge. Output: same shape, float32, clipped to [0, 1].
A seed makes the random corruptions reproducible. The batch is cut into blocks of a fixed number of
images (``block_size``: about a million values, 6 images at 224x224 RGB, so that a block's passes stay
in cache) that run on a pool of threads (``EDGEPROF_THREADS``, default: the CPUs this process may
use). Block 0 draws from the seed's SeedSequence, block ``k > 0`` from its child ``k``: the result
depends on the seed and on an image's position in the batch, never on the number of threads. Where
blocks fix no draws (the seed-free corruptions) the batch is cut into equal parts, a multiple of the
thread count; a batch that is a single block (small images) spreads spatter's per-image work, once
drawn, over the threads (``split_images``).

``corrupt_uint8`` takes and returns uint8 images, converting per block. It equals
``to_uint8(corrupt(to_float(x)))`` bit for bit except for five corruptions with an 8-bit path of
their own: JPEG and pixelate give PIL's 8-bit result exactly as the reference does (bit for bit;
the float path differs by a level here and there; JPEG through PIL's codec objects, pixelate with
PIL's fixed-point BOX arithmetic redone in numpy for small images), gaussian and speckle noise add
the same draws in 0-255 units (a rare tie apart), and shot noise draws its 8-bit result from the
exact distribution per input level (alias tables; same law, other draws than the float path's
Poisson sampler).

Sizes other than 224 px. Every spatial constant of the reference is in pixels of a 224x224 image. At
another size it is multiplied by ``s = min(H, W) / 224`` (``spatial_scale`` overrides ``s``, e.g. 1.0
for the reference's raw pixel constants), so that a 28x28 image gets what the 224 px corruption looks
like downscaled, not an 8x larger blur. In detail:

- Gaussian blur and glass blur sigmas, defocus radius and anti-alias sigma, motion-blur radius and
  sigma: times ``s``. Glass blur's shuffle distance: ``max(1, round(d * s))`` pixels; a pixel is the
  least it can move, so below ~100 px glass blur is coarser than the downscaled reference.
- A consequence worth knowing: on very small images (8x8, s = 0.036) the blurs of the lower
  severities shrink below a pixel and leave the image almost unchanged, as the 224 px corruption
  would after downscaling; severity still orders the damage.
- Defocus: the disk is sampled by pixel coverage, not at pixel centres, so that it grows smoothly when
  ``r * s`` is a few pixels or less (a point-sampled disk is one tap below r = 1, five at r = 1).
- Elastic: sigma and the affine jitter times ``s``; alpha times ``s**2`` (the displacement scales as
  alpha / sigma and must scale like a length). The 244-based constants are kept (the authors note
  244 should have been 224 and leave it).
- Snow, frost, spatter: their layer's lengths are those of the virtual size ``H / s x W / s`` (224 on
  the short side). Frost crops at the virtual size; snow and spatter build their layer at the image
  size, or finer where their noise features would be under a pixel (snow: one pixel per noise cell;
  spatter: 56 px and a liquid smoothing of at least 1 px), with the noise spread rescaled so the
  thresholds keep the same share, and area-average it to the image (see ``_weather``).
- Fog: none needed; the diamond-square fractal is drawn at the image size (next power of two, as the
  reference), which changes only its finest octaves.
- Zoom blur and pixelate are already relative (zoom factors; pixelate keeps ``int(side * c)``
  pixels, at least 1). Noise, brightness, contrast, saturate and JPEG act per pixel or per 8x8 JPEG
  block and are not scaled.

Deviations from the reference, and why:

- Frost: procedurally generated textures instead of the five photographs (see ``_frost``).
- Glass blur: exact in distribution, including the reference's behaviour that its "swap" of two numpy
  views is a copy (see ``_blur._glass_shuffle``), but without the intermediate 8-bit truncation.
- Motion blur and snow: ImageMagick's MotionBlurImage as imagecorruptions reimplements it in numpy
  (same kernel, integer shifts, edge pixels repeated).
- Spatter: OpenCV's Canny / distance transform / equalizeHist chain is re-done in numpy and scipy
  (exact Euclidean distance instead of OpenCV's 5x5 mask approximation).
- Pixelate: PIL's BOX down, NEAREST up (imagecorruptions; the ImageNet-C script uses BOX up, which
  differs only at exact ties).
- Zoom blur: the zoomed image is trimmed around the centre (ImageNet-C script; imagecorruptions keeps
  the top-left, up to a pixel off).
- Grayscale: brightness adds to the value, snow uses the image as its own luma, frost and spatter
  overlay the luma of their colour layer (imagecorruptions' choices); saturate does not apply.
"""
from __future__ import annotations

import functools
import math
import os
import threading
from typing import Callable

import numpy as np

from edgeprof.errors import InputError, NotApplicable
from edgeprof.robust import _blur, _weather

F32 = np.float32
REFERENCE_SIZE = 224
MIN_SIZE = 8

COMMON = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
          "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
          "elastic_transform", "pixelate", "jpeg_compression")
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS = COMMON + EXTRA
SEVERITIES = (1, 2, 3, 4, 5)
# corruptions that draw nothing at random: same input, same output, whatever the seed
DETERMINISTIC = frozenset({"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate",
                           "jpeg_compression", "gaussian_blur", "saturate"})

_E = 244  # the ImageNet-C script's elastic constants are multiples of 244 (meant 224, kept as is)

# Per-severity constants, copied from make_imagenet_c.py (severity 1 first).
PARAMS: dict[str, tuple] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "gaussian_blur": (1, 2, 3, 4, 6),
    # (sigma, max_delta, iterations)
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    # (radius, alias_blur)
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    # (radius, sigma)
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": (np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                  np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)),
    # (loc, scale, zoom, threshold, blur radius, blur sigma, blend)
    "snow": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
             (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
             (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
    # (image weight, frost weight)
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    # (fog weight, wibble decay)
    "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
    # (loc, scale, sigma, threshold, strength, mud?)
    "spatter": ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    # (saturation factor, offset)
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    "jpeg_compression": (25, 18, 15, 10, 7),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    # (alpha, sigma, affine jitter)
    "elastic_transform": ((_E * 2, _E * 0.7, _E * 0.1), (_E * 2, _E * 0.08, _E * 0.2),
                          (_E * 0.05, _E * 0.01, _E * 0.02), (_E * 0.07, _E * 0.01, _E * 0.02),
                          (_E * 0.12, _E * 0.01, _E * 0.02)),
}


# -- the uint8 edge ---------------------------------------------------------------------------------


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 0-255 -> float32 0-1."""
    x = np.asarray(images, dtype=np.uint8).astype(F32)
    x /= F32(255)
    return x


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float32 0-1 -> uint8 0-255, rounded to the nearest level (values outside [0, 1] clipped)."""
    return _to_uint8_inplace(np.array(images, dtype=F32))


def _to_uint8_inplace(x: np.ndarray) -> np.ndarray:
    """``to_uint8`` using ``x`` (float32, owned by the caller) as its scratch: x * 255 + 0.5 clipped
    to [0.5, 255.5] is clip(x, 0, 1) * 255 + 0.5 in float32, one pass fewer."""
    x *= F32(255)
    x += F32(0.5)
    np.clip(x, F32(0.5), F32(255.5), out=x)
    return x.astype(np.uint8)


def spatial_scale(height: int, width: int) -> float:
    """``s``: the factor applied to the reference's pixel lengths for an image of this size."""
    return min(height, width) / REFERENCE_SIZE


# -- noise ------------------------------------------------------------------------------------------


def _normal(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """Standard normal float32 by Box-Muller: exact, and twice as fast as numpy's float32 ziggurat."""
    size = int(np.prod(shape))
    half = (size + 1) // 2
    u = rng.random(half, dtype=F32)
    np.subtract(F32(1), u, out=u)  # (0, 1], exact in float32; log is 3x faster than log1p(-u)
    np.log(u, out=u)
    u *= F32(-2)
    r = np.sqrt(u, out=u)
    t = rng.random(half, dtype=F32)
    t *= F32(2 * np.pi)
    out = np.empty(2 * half, dtype=F32)
    np.cos(t, out=out[:half])
    np.sin(t, out=out[half:2 * half])
    out[:half] *= r
    out[half:] *= r
    return out[:size].reshape(shape)


def _normal_draws(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The uniform draws behind ``_normal(rng, shape)`` of ``size`` values (the generator's part),
    for ``_box_muller`` to turn into those normals in parts (``_normal`` itself keeps each array hot
    in cache between its draw and its use)."""
    half = (size + 1) // 2
    u = rng.random(half, dtype=F32)
    t = rng.random(half, dtype=F32)
    return u, t


def _box_muller(u: np.ndarray, t: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Values ``lo:hi`` of the normals made from ``_normal_draws``: radius from ``u``, angle from
    ``t``, cosines first, then sines. Elementwise, so any part can be made on its own (in a thread);
    each draw's radius and angle are computed once however many of its two values the part holds."""
    half = len(u)
    out = np.empty(hi - lo, dtype=F32)
    parts = [(start, stop, trig, first) for start, stop, trig, first in
             ((lo, min(hi, half), np.cos, True), (max(lo, half) - half, hi - half, np.sin, False))
             if stop > start]
    if len(parts) == 2 and parts[1][1] <= parts[0][0]:  # disjoint: each part its own draws
        spans = [(p[0], p[1]) for p in parts]
    else:
        spans = [(min(p[0] for p in parts), max(p[1] for p in parts))]
    for r_lo, r_hi in spans:
        r = np.subtract(F32(1), u[r_lo:r_hi])  # (0, 1], exact in float32; log is 3x faster than log1p(-u)
        np.log(r, out=r)
        r *= F32(-2)
        np.sqrt(r, out=r)
        angle = t[r_lo:r_hi] * F32(2 * np.pi)
        for start, stop, trig, first in parts:
            if start < r_lo or stop > r_hi:
                continue
            dst = out[:stop - start] if first else out[hi - lo - (stop - start):]
            trig(angle[start - r_lo:stop - r_lo], out=dst)
            dst *= r[start - r_lo:stop - r_lo]
    return out


def _gaussian_noise(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    noise = _normal(rng, x.shape)
    noise *= F32(c)
    noise += x
    return noise


def _shot_noise(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    return rng.poisson(x * F32(c)).astype(F32) / F32(c)


def _impulse_noise(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    # skimage's s&p: each value is hit with probability c, half of the hits salt, half pepper
    u = rng.random(x.shape, dtype=F32)
    return np.where(u < c, (u < c / 2).astype(F32), x)


def _speckle_noise(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    noise = _normal(rng, x.shape)
    noise *= F32(c)
    noise *= x
    noise += x
    return noise


# uint8 paths of the noises: x and the result in 0-255 levels; same draws as the float path for
# gaussian, speckle and impulse noise (equal up to a rare tie at half a level), exact alias tables
# for shot noise (numpy's Poisson sampler is by far the slowest step of the noises)


def _u8_result(y: np.ndarray) -> np.ndarray:
    """Float32 levels (any range) -> uint8, rounded to the nearest level as to_uint8 does."""
    y += F32(0.5)
    np.clip(y, 0, F32(255.5), out=y)
    return y.astype(np.uint8)


def _gaussian_noise_u8(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    noise = _normal(rng, x.shape)
    noise *= F32(255 * c)
    noise += x
    return _u8_result(noise)


def _speckle_noise_u8(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    noise = _normal(rng, x.shape)
    noise *= F32(c)
    noise += F32(1)
    noise *= x
    return _u8_result(noise)


def _impulse_noise_u8(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    u = rng.random(x.shape, dtype=F32)  # the float path's draws
    return np.where(u < c, np.where(u < c / 2, np.uint8(255), np.uint8(0)), x)


def _shot_noise_u8(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    """clip(Poisson(c * x / 255) / c, 0, 1) in 8 bits, drawn from its exact distribution per input level:
    one alias table per level over the outcomes k = 0..c (k >= c saturates), 24-bit probabilities."""
    thr, alias, levels, bits = _shot_tables(int(c))
    r = rng.bit_generator.random_raw((x.size + 1) // 2).view(np.uint32)[:x.size].reshape(x.shape)
    idx = x.astype(np.uint16) << np.uint16(bits)
    idx |= (r >> np.uint32(32 - bits)).astype(np.uint16)
    r &= np.uint32(0xFFFFFF)
    k = np.where(r < thr[idx], (idx & np.uint16((1 << bits) - 1)).astype(np.uint8), alias[idx])
    return levels[k]


@functools.lru_cache(maxsize=8)
def _shot_tables(c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    bits = max(1, (c).bit_length())  # 2^bits > c bins: outcomes 0..c, the rest empty
    k = np.arange(c, dtype=np.float64)
    lam = np.arange(256, dtype=np.float64)[:, None] * (c / 255.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        logpmf = k[None, :] * np.log(lam) - lam - np.array([math.lgamma(v + 1) for v in k])[None, :]
    pmf = np.exp(np.where(lam > 0, logpmf, np.where(k[None, :] == 0, 0.0, -np.inf)))
    p = np.zeros((256, 1 << bits))
    p[:, :c] = pmf
    p[:, c] = np.maximum(0.0, 1.0 - pmf.sum(axis=1))  # Poisson(lam) >= c: clipped to 1
    thr, alias = _alias_tables(p / p.sum(axis=1, keepdims=True))
    levels = to_uint8(np.minimum(np.arange(c + 1, dtype=F32) / F32(c), F32(1)))
    levels = np.concatenate([levels, np.full((1 << bits) - c - 1, 255, np.uint8)])
    return thr.ravel(), alias.ravel(), levels, bits


def _alias_tables(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias tables for each row of ``p`` (rows sum to 1): thresholds scaled to 2^24."""
    rows, k = p.shape
    thr = np.ones((rows, k))
    alias = np.tile(np.arange(k), (rows, 1))
    for row in range(rows):
        q = p[row] * k
        small = [i for i in range(k) if q[i] < 1.0]
        large = [i for i in range(k) if q[i] >= 1.0]
        while small and large:
            lo, hi = small.pop(), large[-1]
            thr[row, lo], alias[row, lo] = q[lo], hi
            q[hi] -= 1.0 - q[lo]
            if q[hi] < 1.0:
                large.pop()
                small.append(hi)
    return np.minimum(np.round(thr * 2 ** 24), 2 ** 24).astype(np.uint32), alias.astype(np.uint8)


# -- colour and digital -----------------------------------------------------------------------------


def _value(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV value and minimum of an RGB batch, plane by plane (numpy is slow on a trailing axis of 3)."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    return np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)


def _per_pixel(a: np.ndarray, channels: int) -> np.ndarray:
    """(N, H, W) -> (N, H, W, C) by repetition: broadcasting over a trailing 3 is slower than a copy."""
    return np.repeat(a, channels).reshape(a.shape + (channels,))


def _brightness(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    # HSV with only V changed is a per-pixel rescale of RGB; a black pixel (V = 0, hue 0) turns grey
    if x.shape[3] == 1:
        return x + F32(c)
    v, _ = _value(x)
    v_new = np.minimum(v + F32(c), F32(1))
    scale = np.divide(v_new, v, out=np.zeros_like(v), where=v > 0)
    out = x * _per_pixel(scale, 3)
    black = v <= 0
    if black.any():
        out[black] = c
    return out


def _contrast(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    n, h, w, ch = x.shape
    # per-image, per-channel means through one matrix product (numpy's strided mean is slow)
    means = np.matmul(np.full((1, h * w), 1.0 / (h * w), dtype=F32), x.reshape(n, h * w, ch))
    # the bias tiled along one row only, added to every row (a contiguous broadcast, unlike one over
    # a trailing axis of 3)
    bias = np.tile(means.reshape(n, ch) * F32(1 - c), (1, w)).reshape(n, 1, w * ch)
    out = x * F32(c)
    out.reshape(n, h, w * ch)[...] += bias
    return out


def _saturate(x: np.ndarray, c: tuple, rng: np.random.Generator, s: float) -> np.ndarray:
    # In HSV each channel is V * (1 - S * g(H)); with H and V fixed, changing S to S' maps a channel to
    # V - (V - x) * S' / S. Grey pixels have S = 0 and hue 0 (red): they become (V, V(1-S'), V(1-S')).
    if x.shape[3] != 3:
        raise NotApplicable("saturate needs RGB images; these are grayscale")
    v, lo = _value(x)
    delta = v - lo
    sat = np.divide(delta, v, out=np.zeros_like(v), where=v > 0)
    sat_new = np.clip(sat * F32(c[0]) + F32(c[1]), 0, 1)
    ratio = np.divide(sat_new, sat, out=np.zeros_like(v), where=delta > 0)
    v3 = _per_pixel(v, 3)
    out = x - v3
    out *= _per_pixel(ratio, 3)
    out += v3
    if c[1] > 0:  # grey pixels take hue 0
        grey = delta <= 0
        grey_v = v[grey][:, None]
        dim = grey_v * (1 - sat_new[grey][:, None])
        out[grey] = np.concatenate([grey_v, dim, dim], axis=1)
    return out


def _jpeg(x: np.ndarray, c: int, rng: np.random.Generator, s: float) -> np.ndarray:
    return to_float(_jpeg_u8(to_uint8(x), c, rng, s))


def _pil_image(img: np.ndarray):
    """A PIL image of one contiguous (H, W, C) uint8 image."""
    from PIL import Image

    h, w, c = img.shape
    mode = "L" if c == 1 else "RGB"
    return Image.frombuffer(mode, (w, h), np.ascontiguousarray(img), "raw", mode, 0, 1)


def _jpeg_u8(u8: np.ndarray, c: int, rng: np.random.Generator, s: float) -> np.ndarray:
    """PIL's JPEG encode and decode at quality ``c``, image by image (PIL has no batch JPEG), as the
    reference does it: through PIL's codec objects directly when they give the bytes and pixels of
    ``Image.save`` / ``Image.open`` (checked once per geometry, see ``_jpeg_codec``), skipping the
    plugin layers' Python around each call; else through save and open."""
    import io

    from PIL import Image

    n, h, w, ch = u8.shape
    out = np.empty_like(u8)
    codec = _jpeg_codec("L" if ch == 1 else "RGB", int(c), h, w)
    for i, img in enumerate(u8):
        if codec is not None:
            out[i] = _jpeg_direct(img, codec)
            continue
        buf = io.BytesIO()
        _pil_image(img).save(buf, "JPEG", quality=int(c))
        buf.seek(0)
        with Image.open(buf, formats=("JPEG",)) as im:
            out[i] = np.asarray(im).reshape(img.shape)
    return out


def _jpeg_direct(img: np.ndarray, codec: tuple) -> np.ndarray:
    """One (H, W, C) uint8 image through PIL's JPEG encoder and decoder objects."""
    from PIL import Image

    config, dec_mode, dec_args = codec
    h, w, ch = img.shape
    mode = "L" if ch == 1 else "RGB"
    enc = Image._getencoder(mode, "jpeg", mode, config)
    try:
        enc.setimage(_pil_image(img).im, (0, 0, w, h))
        chunks = []
        while True:
            _, err, data = enc.encode(1 << 16)
            chunks.append(data)
            if err:
                break
    finally:
        enc.cleanup()
    if err < 0:
        raise OSError(f"JPEG encoder error {err}")
    decoded = Image.new(dec_mode, (w, h))
    dec = Image._getdecoder(dec_mode, "jpeg", dec_args, ())
    try:
        dec.setimage(decoded.im, (0, 0, w, h))
        _, err = dec.decode(b"".join(chunks))
    finally:
        dec.cleanup()
    if err < 0:
        raise OSError(f"JPEG decoder error {err}")
    return np.frombuffer(decoded.tobytes(), dtype=np.uint8).reshape(img.shape)


@functools.lru_cache(maxsize=32)
def _jpeg_codec(mode: str, quality: int, h: int, w: int) -> tuple | None:
    """(encoder config, decoded mode, decoder args) as ``Image.save(..., "JPEG", quality=q)`` and
    ``Image.open`` set them up in the installed PIL, or None unless the direct path then gives the
    same pixels as save and open on a noise image of this size."""
    import io

    from PIL import Image

    try:
        noise = np.random.default_rng(0).integers(0, 256, (h, w, 1 if mode == "L" else 3), dtype=np.uint8)
        im = _pil_image(noise)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf, formats=("JPEG",)) as ref:
            (tile,) = ref.tile
            codec = (tuple(im.encoderconfig), ref.mode, tile.args)
            expected = np.asarray(ref).reshape(noise.shape)
        if tile.offset != 0 or not np.array_equal(_jpeg_direct(noise, codec), expected):
            return None
        return codec
    except Exception:  # any change in PIL's internals: the plain path
        return None


def _pixelate_u8(u8: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    """The reference itself, bit for bit: PIL BOX down, NEAREST up, on the 8-bit image. Small images
    run PIL's fixed-point arithmetic in numpy on the whole block (checked against the installed PIL
    once per geometry, see ``_ops.pixelate_order``); larger ones let PIL do the BOX pass image by
    image (its C pass beats numpy's gathers along a row) and do the up-scale in numpy."""
    from PIL import Image

    from edgeprof.robust import _ops

    n, h, w, ch = u8.shape
    small_h, small_w = max(1, int(h * c)), max(1, int(w * c))
    order = _ops.pixelate_order(h, w, ch, small_h, small_w) if h * w * ch <= _PIXELATE_NUMPY_VALUES else None
    if order is not None:
        return _ops.pil_pixelate_u8(u8, small_h, small_w, order)
    small = np.empty((n, small_h, small_w, ch), dtype=np.uint8)
    for i, img in enumerate(u8):
        im = _pil_image(img).resize((small_w, small_h), Image.BOX)
        small[i] = np.frombuffer(im.tobytes(), dtype=np.uint8).reshape(small_h, small_w, ch)
    return _ops.nearest_up_u8(small, h, w)


_PIXELATE_NUMPY_VALUES = 40_000  # values per image up to which the numpy path beats PIL (~115 px RGB)


def _pixelate(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    from edgeprof.robust._ops import box_pixelate

    h, w = x.shape[1:3]
    return box_pixelate(x, max(1, int(h * c)), max(1, int(w * c)))


_FUNCS: dict[str, Callable] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise, "defocus_blur": _blur.defocus_blur, "glass_blur": _blur.glass_blur,
    "motion_blur": _blur.motion_blur, "zoom_blur": _blur.zoom_blur, "gaussian_blur": _blur.gaussian_blur,
    "elastic_transform": _blur.elastic_transform, "snow": _weather.snow, "frost": _weather.frost,
    "fog": _weather.fog, "spatter": _weather.spatter, "brightness": _brightness, "contrast": _contrast,
    "saturate": _saturate, "jpeg_compression": _jpeg, "pixelate": _pixelate,
}
# corruptions with their own 8-bit path in corrupt_uint8 (uint8 in, uint8 out)
_U8_FUNCS: dict[str, Callable] = {"jpeg_compression": _jpeg_u8, "pixelate": _pixelate_u8,
                                  "gaussian_noise": _gaussian_noise_u8, "speckle_noise": _speckle_noise_u8,
                                  "impulse_noise": _impulse_noise_u8, "shot_noise": _shot_noise_u8}


# -- blocks and threads -----------------------------------------------------------------------------

BLOCK_VALUES = 1 << 20  # values per block: ~4 MiB of float32, so a block's passes stay in cache


def block_size(height: int, width: int, channels: int) -> int:
    """Images per block: fixed by the image size alone, so results never depend on the thread count."""
    return max(1, BLOCK_VALUES // (height * width * channels))


def threads() -> int:
    """Threads for the blocks: ``EDGEPROF_THREADS``, else the CPUs this process may run on."""
    env = os.environ.get("EDGEPROF_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise InputError(f"EDGEPROF_THREADS must be a positive integer, got {env!r}") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_POOL: tuple | None = None  # (pid, size, executor); rebuilt after a fork or a change of size
_POOL_LOCK = threading.Lock()


def _executor(size: int):
    from concurrent.futures import ThreadPoolExecutor

    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid() or _POOL[1] != size:
            _POOL = (os.getpid(), size, ThreadPoolExecutor(size, thread_name_prefix="edgeprof-corrupt"))
        return _POOL[2]


def _seed_sequence(seed) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    try:
        return np.random.SeedSequence(seed)
    except (TypeError, ValueError) as exc:
        raise InputError(f"seed must be a non-negative integer or a SeedSequence, got {seed!r}") from exc


def _block_rng(ss: np.random.SeedSequence, k: int) -> np.random.Generator:
    """Block 0 draws from ``ss`` itself (a batch of one block gets the draws of a single generator
    seeded with ``seed``); block ``k > 0`` from child ``k``, made without spawning, which would
    change the caller's SeedSequence."""
    if k == 0:
        return np.random.default_rng(ss)
    child = np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + (k,), pool_size=ss.pool_size)
    return np.random.default_rng(child)


def _in_blocks(n: int, block: int, work: Callable[[int, slice], None], even: bool = False) -> None:
    """``work(k, rows)`` for every block, on the thread pool when there is more than one block.

    ``even``: for corruptions that draw nothing, where blocks are only a unit of work, the batch is
    cut into equal parts instead, as many as the blocks rounded up to a multiple of the thread count
    while a part keeps at least a quarter block (no short last block that leaves a thread idle)."""
    count = -(-n // block)
    if even:  # parts of at least a quarter block: tiny batches are not worth a thread hand-off
        t = threads()
        count = max(count, min(n, -(-count // t) * t, 4 * n // block))
        bounds = [n * k // count for k in range(count + 1)]
        jobs = [(k, slice(bounds[k], bounds[k + 1])) for k in range(count)]
    else:
        jobs = [(k, slice(k * block, min(n, (k + 1) * block))) for k in range(count)]
    size = min(threads(), count)
    if size <= 1:
        _SPLIT.free = True  # a lone block may spread its per-image work over the threads
        try:
            for k, rows in jobs:
                work(k, rows)
        finally:
            _SPLIT.free = False
        return
    for f in [_executor(size).submit(work, k, rows) for k, rows in jobs]:
        f.result()


_SPLIT = threading.local()  # .free: this thread runs the batch's only block
_INNER: tuple | None = None  # (pid, size, executor) for split_images; never the blocks' pool


def split_images(n: int, work: Callable[[slice], None], min_images: int = 2) -> None:
    """``work(rows)`` over consecutive slices of ``n`` images: on the threads when the batch is a single
    block (small images: one block holds a thousand), else inline. Only for work that is independent
    per image and draws nothing at random, so the result is the same whatever the split."""
    size = min(threads(), n // max(1, min_images)) if getattr(_SPLIT, "free", False) else 1
    if size <= 1:
        work(slice(0, n))
        return
    global _INNER
    from concurrent.futures import ThreadPoolExecutor

    with _POOL_LOCK:
        if _INNER is None or _INNER[0] != os.getpid() or _INNER[1] != size:
            _INNER = (os.getpid(), size, ThreadPoolExecutor(size, thread_name_prefix="edgeprof-split"))
        pool = _INNER[2]
    bounds = [n * i // size for i in range(size + 1)]
    futures = [pool.submit(work, slice(a, b)) for a, b in zip(bounds[1:-1], bounds[2:])]
    work(slice(bounds[0], bounds[1]))  # the caller takes the first share
    for f in futures:
        f.result()


# -- entry point ------------------------------------------------------------------------------------


def check_images(images: np.ndarray) -> np.ndarray:
    """Validate a float NHWC batch and return it as float32; raises InputError with one line."""
    x = np.asarray(images)
    if x.dtype.kind != "f":
        raise InputError(f"images must be float32 in [0, 1] (got {x.dtype}); convert uint8 with to_float")
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise InputError(f"images must be NHWC with 1 or 3 channels, got shape {x.shape}")
    if x.shape[1] < MIN_SIZE or x.shape[2] < MIN_SIZE:
        raise InputError(f"images must be at least {MIN_SIZE}x{MIN_SIZE}, got {x.shape[1]}x{x.shape[2]}")
    x = x.astype(F32, copy=False)
    if not np.isfinite(x).all():
        raise InputError("images contain NaN or infinite values")
    return x


def corrupt(images: np.ndarray, name: str, severity: int, *,
            seed: int | np.random.SeedSequence | None = None, spatial_scale: float | None = None) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1-5) to a float32 NHWC batch in [0, 1].

    ``seed`` (an int or a SeedSequence; None: fresh entropy) seeds numpy's PCG64, one generator per
    block of images (see the module's docstring); the SeedSequence itself is left untouched.
    ``spatial_scale`` defaults to ``min(H, W) / 224``; pass 1.0 to use the reference's pixel
    constants unchanged.
    Raises InputError for a bad name, severity or batch, NotApplicable for saturate on grayscale.
    """
    _check_name_severity(name, severity)
    x = check_images(images)
    s = _check_call(x, name, spatial_scale)
    out = np.empty(x.shape, dtype=F32)
    if x.shape[0] == 0:
        return out
    if x.min() < 0 or x.max() > 1:
        x = np.clip(x, 0, 1)
    func, c, ss = _FUNCS[name], PARAMS[name][int(severity) - 1], _seed_sequence(seed)

    def work(k: int, rows: slice) -> None:
        y = np.asarray(func(x[rows], c, _block_rng(ss, k), s), dtype=F32)
        np.clip(y, 0, 1, out=out[rows])

    _in_blocks(x.shape[0], block_size(*x.shape[1:]), work, even=name in DETERMINISTIC)
    return out


def _check_call(x: np.ndarray, name: str, spatial_scale: float | None) -> float:
    """Validate what depends on the batch; return the spatial scale ``s``."""
    if name == "saturate" and x.shape[3] != 3:
        raise NotApplicable("saturate needs RGB images; these are grayscale")
    s = globals()["spatial_scale"](x.shape[1], x.shape[2]) if spatial_scale is None else float(spatial_scale)
    if not s > 0:
        raise InputError(f"spatial_scale must be positive, got {spatial_scale!r}")
    return s


def _check_name_severity(name: str, severity: int) -> None:
    if name not in _FUNCS:
        raise InputError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise InputError(f"severity must be an integer from 1 to 5, got {severity!r}")


def corrupt_uint8(images: np.ndarray, name: str, severity: int, *,
                  seed: int | np.random.SeedSequence | None = None,
                  spatial_scale: float | None = None) -> np.ndarray:
    """``corrupt`` for uint8 NHWC images (0-255), returning uint8: the conversions happen per block.

    Equals ``to_uint8(corrupt(to_float(images), ...))`` with the same seed, bit for bit, except for
    JPEG, pixelate, shot, gaussian and speckle noise (see the module's docstring).
    """
    _check_name_severity(name, severity)
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise InputError(f"images must be uint8 (got {x.dtype}); use corrupt() for float32 in [0, 1]")
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise InputError(f"images must be NHWC with 1 or 3 channels, got shape {x.shape}")
    if x.shape[1] < MIN_SIZE or x.shape[2] < MIN_SIZE:
        raise InputError(f"images must be at least {MIN_SIZE}x{MIN_SIZE}, got {x.shape[1]}x{x.shape[2]}")
    s = _check_call(x, name, spatial_scale)
    out = np.empty(x.shape, dtype=np.uint8)
    if x.shape[0] == 0:
        return out
    c, ss = PARAMS[name][int(severity) - 1], _seed_sequence(seed)
    native, func = _U8_FUNCS.get(name), _FUNCS[name]

    def work(k: int, rows: slice) -> None:
        rng = _block_rng(ss, k)
        if native is not None:
            out[rows] = native(x[rows], c, rng, s)
        else:
            y = func(to_float(x[rows]), c, rng, s)
            out[rows] = _to_uint8_inplace(y if y.dtype == F32 and y.flags.writeable else np.array(y, dtype=F32))

    _in_blocks(x.shape[0], block_size(*x.shape[1:]), work, even=name in DETERMINISTIC)
    return out
