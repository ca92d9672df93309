"""Weather-like corruptions: snow, frost, fog, spatter.

Snow, frost and spatter build an image-sized layer whose features have a size in pixels of the 224 px
reference. For another size the layer is built at the *virtual* size ``(round(H / s), round(W / s))``
(224 on the short side) and resampled to the image (area average when shrinking), so that a 28 px
image gets the 224 px corruption as it would look downscaled, not flakes eight times too large.
"""
from __future__ import annotations

import numpy as np

from edgeprof.robustness import _ops
from edgeprof.robustness._frost import frost_textures

F32 = np.float32


def virtual_size(h: int, w: int, s: float) -> tuple[int, int]:
    return max(1, int(round(h / s))), max(1, int(round(w / s)))


def _gray(x: np.ndarray) -> np.ndarray:
    return x if x.shape[-1] == 1 else _ops.rgb_to_gray(x)


# -- snow -------------------------------------------------------------------------------------------


def snow(x: np.ndarray, c: tuple, rng: np.random.Generator, s: float) -> np.ndarray:
    n, h, w, _ = x.shape
    hv, wv = virtual_size(h, w, s)
    noise = rng.normal(c[0], c[1], size=(n, hv, wv)).astype(F32)
    angles = rng.uniform(-135, -45, size=n)
    return snow_apply(x, c, noise, angles)


def snow_apply(x: np.ndarray, c: tuple, noise: np.ndarray, angles: np.ndarray) -> np.ndarray:
    _, _, _, thresh, radius, sigma, blend = c
    layer = _ops.clipped_zoom(noise, c[2])
    layer = np.clip(np.where(layer < thresh, F32(0), layer), 0, 1)
    kernels = _ops.motion_kernels(radius, sigma, angles, layer.shape[1:3])
    layer = _ops.correlate2d(layer[..., None], kernels, "nearest")
    layer = np.round(layer * 255) / 255  # the reference passes the layer through an 8-bit image
    layer = _ops.resize_layers(layer, x.shape[1], x.shape[2])
    x = blend * x + (1 - blend) * np.maximum(x, _gray(x) * 1.5 + 0.5)
    return x + layer + layer[:, ::-1, ::-1]


# -- frost ------------------------------------------------------------------------------------------


def frost(x: np.ndarray, c: tuple, rng: np.random.Generator, s: float) -> np.ndarray:
    n, h, w, ch = x.shape
    hv, wv = virtual_size(h, w, s)
    tex = frost_textures(max(hv, wv))
    k, size = tex.shape[0], tex.shape[1]
    idx = rng.integers(k, size=n)
    top = rng.integers(0, size - hv + 1, size=n)
    left = rng.integers(0, size - wv + 1, size=n)
    crop = tex[idx[:, None, None], top[:, None, None] + np.arange(hv)[None, :, None],
               left[:, None, None] + np.arange(wv)[None, None, :]]
    crop = _ops.resize_layers(crop, h, w)
    if ch == 1:
        crop = _ops.rgb_to_gray(crop)
    return c[0] * x + c[1] * crop


# -- fog --------------------------------------------------------------------------------------------


def fog(x: np.ndarray, c: tuple, rng: np.random.Generator, s: float) -> np.ndarray:
    """Fog needs no scaling: the fractal is drawn at the image's own size and is scale-free."""
    n, h, w, _ = x.shape
    mapsize = _next_pow2(max(h, w))
    fractal = _ops.plasma_fractal(rng, n, mapsize, c[1])
    return fog_apply(x, c, fractal)


def _next_pow2(v: int) -> int:
    return 1 << (int(v) - 1).bit_length()


def fog_apply(x: np.ndarray, c: tuple, fractal: np.ndarray) -> np.ndarray:
    h, w = x.shape[1:3]
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    x = x + c[0] * fractal[:, :h, :w, None]
    return x * max_val / (max_val + c[0])


# -- spatter ----------------------------------------------------------------------------------------

WATER = np.array([175, 238, 238], dtype=F32) / 255  # pale turquoise
MUD = np.array([63, 42, 20], dtype=F32) / 255
_GRAY_REF = np.array([0.2989, 0.5870, 0.1140], dtype=F32)  # imagecorruptions' rgb2gray


def spatter(x: np.ndarray, c: tuple, rng: np.random.Generator, s: float) -> np.ndarray:
    n, h, w, _ = x.shape
    hv, wv = virtual_size(h, w, s)
    noise = rng.normal(c[0], c[1], size=(n, hv, wv)).astype(F32)
    return spatter_apply(x, c, noise)


def spatter_apply(x: np.ndarray, c: tuple, noise: np.ndarray) -> np.ndarray:
    _, _, sigma, thresh, strength, mud = c
    h, w, ch = x.shape[1:]
    liquid = _ops.gaussian_filter(noise, sigma, mode="nearest")
    liquid = np.where(liquid < thresh, F32(0), liquid)
    if not mud:
        m = _water_mask(liquid) * F32(strength)
        m = _ops.resize_layers(m, h, w)[..., None]
        if ch == 1:
            return x + (np.clip(m * WATER, 0, 1) @ _GRAY_REF)[..., None]
        return x + m * WATER
    m = _ops.gaussian_filter((liquid > thresh).astype(F32), strength, mode="nearest")
    m = np.where(m < 0.8, F32(0), m)
    m = _ops.resize_layers(m, h, w)[..., None]
    color = MUD * m
    if ch == 1:
        color = (color @ _GRAY_REF)[..., None]
    return x * (1 - m) + color


def _water_mask(liquid: np.ndarray) -> np.ndarray:
    """The reference's OpenCV chain: Canny, distance to edges, blur, equalise, emboss, blur; max = 1."""
    from scipy import ndimage

    lu8 = np.clip(liquid * 255, 0, 255).astype(np.uint8)
    edges = canny(lu8, 50, 150)
    dist = truncated_distance(edges, 20)
    dist = np.floor(ndimage.uniform_filter(dist, size=(1, 3, 3), mode="mirror"))
    dist = equalize_hist(dist.astype(np.uint8)).astype(F32)
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=F32)
    dist = np.clip(ndimage.correlate(dist, emboss[None], mode="mirror"), 0, 255)
    dist = np.rint(ndimage.uniform_filter(dist, size=(1, 3, 3), mode="mirror"))
    m = lu8.astype(F32) * dist
    peak = m.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, m / np.where(peak > 0, peak, 1), F32(0))


def truncated_distance(mask: np.ndarray, limit: int) -> np.ndarray:
    """min(Euclidean distance to the nearest True pixel, limit) for a batch (N, H, W) of masks.

    Exact (OpenCV's DIST_L2 with a 5x5 mask approximates it): the squared distance along each row
    comes from running maxima/minima of edge positions, then the column pass takes the minimum of
    ``dy^2 + row^2`` over the ``2 * limit + 1`` rows that can be within the limit.
    """
    n, h, w = mask.shape
    big = np.float32((limit + 1) ** 2)
    cols = np.arange(w, dtype=np.float32)
    left = np.where(mask, cols, -np.inf).astype(np.float32)
    np.maximum.accumulate(left, axis=2, out=left)
    right = np.where(mask, cols, np.inf).astype(np.float32)
    right = np.minimum.accumulate(right[:, :, ::-1], axis=2)[:, :, ::-1]
    row = np.minimum(np.minimum((cols - left) ** 2, (right - cols) ** 2), big)
    padded = np.full((n, h + 2 * limit, w), big, dtype=np.float32)
    padded[:, limit:limit + h] = row
    best = row.copy()
    for dy in range(1, limit + 1):
        d2 = np.float32(dy * dy)
        np.minimum(best, padded[:, limit - dy:limit - dy + h] + d2, out=best)
        np.minimum(best, padded[:, limit + dy:limit + dy + h] + d2, out=best)
    return np.minimum(np.sqrt(best), np.float32(limit))


def canny(img: np.ndarray, low: float, high: float) -> np.ndarray:
    """cv2.Canny(img, low, high) for a batch (N, H, W) of uint8 images: 3x3 Sobel, L1 magnitude."""
    from scipy import ndimage

    f = img.astype(F32)
    # ndimage.sobel would also smooth across the batch axis: build it from 1-D passes instead
    diff, smooth = np.array([-1, 0, 1], dtype=F32), np.array([1, 2, 1], dtype=F32)
    gx = ndimage.correlate1d(ndimage.correlate1d(f, diff, axis=2, mode="nearest"), smooth, axis=1, mode="nearest")
    gy = ndimage.correlate1d(ndimage.correlate1d(f, diff, axis=1, mode="nearest"), smooth, axis=2, mode="nearest")
    mag = np.abs(gx) + np.abs(gy)
    p = np.pad(mag, ((0, 0), (1, 1), (1, 1)))
    c = p[:, 1:-1, 1:-1]

    def nb(dr: int, dc: int) -> np.ndarray:
        return p[:, 1 + dr:p.shape[1] - 1 + dr, 1 + dc:p.shape[2] - 1 + dc]

    ax, ay = np.abs(gx), np.abs(gy)
    tg22 = ax * np.float32(0.41421356)
    horiz = ay < tg22
    vert = ay > tg22 + 2 * ax
    same_sign = (gx * gy) >= 0
    keep_h = (c > nb(0, -1)) & (c >= nb(0, 1))
    keep_v = (c > nb(-1, 0)) & (c >= nb(1, 0))
    keep_d1 = (c > nb(-1, -1)) & (c >= nb(1, 1))
    keep_d2 = (c > nb(-1, 1)) & (c >= nb(1, -1))
    keep = np.where(horiz, keep_h, np.where(vert, keep_v, np.where(same_sign, keep_d1, keep_d2)))
    cand = keep & (mag > low)
    strong = cand & (mag > high)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected within an image, never across images
    labels, count = ndimage.label(cand, structure=structure)
    good = np.zeros(count + 1, dtype=bool)
    good[np.unique(labels[strong])] = True
    good[0] = False
    return good[labels]


def equalize_hist(img: np.ndarray) -> np.ndarray:
    """cv2.equalizeHist for a batch (N, H, W) of uint8 images."""
    n = img.shape[0]
    total = img[0].size
    flat = img.reshape(n, -1).astype(np.int64)
    hist = np.bincount((flat + 256 * np.arange(n)[:, None]).ravel(), minlength=256 * n).reshape(n, 256)
    first = np.argmax(hist > 0, axis=1)
    h_first = hist[np.arange(n), first]
    cdf = np.cumsum(hist, axis=1)
    denom = np.where(total - h_first > 0, total - h_first, 1)
    lut = np.rint((cdf - h_first[:, None]) * (255.0 / denom[:, None]))
    lut = np.clip(lut, 0, 255)
    lut[np.arange(256)[None, :] <= first[:, None]] = 0
    flat_img = h_first == total  # a single grey level: OpenCV fills with that level
    lut[flat_img] = first[flat_img, None]
    out = np.take_along_axis(lut, flat, axis=1)
    return out.reshape(img.shape).astype(np.uint8)
