"""Weather-like corruptions: snow, frost, fog, spatter.

Snow, frost and spatter build an image-sized layer whose features have a size in pixels of the 224 px
reference. Their lengths are those of the *virtual* size ``(round(H / s), round(W / s))`` (224 on the
short side), so that a 28 px image gets the 224 px corruption as it would look downscaled, not flakes
eight times too large. Frost crops its texture at the virtual size. Snow and spatter build their layer
at ``s_l = max(s, floor)`` of the virtual size (lengths times ``s_l``), i.e. at the image's own size
unless that would make their features much smaller than a pixel, and area-average it to the image:
the thresholds on noise need the features resolved, not the full 224 px. ``floor`` keeps a flake's
noise cell at least a layer pixel (snow) and the liquid's smoothing at least half a pixel, with the
smoothed noise rescaled to the 224 px spread so the thresholds cut the same fraction (spatter).
"""
from __future__ import annotations

import numpy as np

from edgeprof.robust import _ops
from edgeprof.robust._frost import frost_textures

F32 = np.float32


def virtual_size(h: int, w: int, s: float) -> tuple[int, int]:
    return max(1, int(round(h / s))), max(1, int(round(w / s)))


def _gray(x: np.ndarray) -> np.ndarray:
    return x if x.shape[-1] == 1 else _ops.rgb_to_gray(x)


# -- snow -------------------------------------------------------------------------------------------


def layer_scale(h: int, w: int, s: float, floor: float) -> tuple[float, int, int]:
    """``s_l`` and the layer size for an image of ``h x w`` at spatial scale ``s``."""
    hv, wv = virtual_size(h, w, s)
    if s >= floor or s >= 1:
        return 1.0 if (hv, wv) == (h, w) else s, h, w
    s_l = min(1.0, floor)
    return s_l, max(1, int(round(hv * s_l))), max(1, int(round(wv * s_l)))


def _crop_len(n: int, z: float) -> int:
    return int(np.ceil(n / z))


def snow(x: np.ndarray, c: tuple, rng: np.random.Generator, s: float) -> np.ndarray:
    n, h, w, _ = x.shape
    hv, wv = virtual_size(h, w, s)
    z = c[2]
    # only the centre crop of the reference's noise is ever zoomed in: draw just that
    grid = rng.standard_normal(size=(n, _crop_len(hv, z), _crop_len(wv, z)), dtype=F32)
    angles = rng.uniform(-135, -45, size=n)
    s_l, hl, wl = layer_scale(h, w, s, SNOW_FLOOR / z)
    # Bilinear interpolation of the noise grid has variance (1-f)^2 + f^2 (per axis) at fraction f:
    # a coarser layer samples other fractions than the 224 px one, so rescale the noise to the same
    # mean variance (the threshold then keeps the same share of the layer).
    ratio = 1.0
    for nv, nl in ((hv, hl), (wv, wl)):
        ratio *= _interp_variance(nv, z, nv) / _interp_variance(nv, z, nl)
    grid *= F32(c[1] * np.sqrt(ratio))
    grid += F32(c[0])
    return _snow_from_grid(x, c, grid, angles, (hv, wv), (hl, wl), s_l)


SNOW_FLOOR = 1.0  # the layer has at least one pixel per noise cell


def _interp_variance(n_virtual: int, z: float, n_layer: int) -> float:
    f = _grid_plan(n_virtual, z, n_layer)[2].astype(np.float64)
    return float(np.mean((1 - f) ** 2 + f ** 2))


def snow_apply(x: np.ndarray, c: tuple, noise: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Snow given the reference's noise at the virtual size (N, Hv, Wv) and its blur angles."""
    hv, wv = noise.shape[1:3]
    ch, cw = _crop_len(hv, c[2]), _crop_len(wv, c[2])
    top, left = (hv - ch) // 2, (wv - cw) // 2
    grid = noise[:, top:top + ch, left:left + cw]
    return _snow_from_grid(x, c, grid, angles, (hv, wv), (hv, wv), 1.0)


def _grid_plan(n_virtual: int, z: float, n_layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """clipped_zoom's bilinear taps into the crop grid, for a layer of ``n_layer`` pixels spanning the
    virtual size (equal to ``_ops._zoom_axis_plan`` minus the crop offset when the sizes agree)."""
    ch = _crop_len(n_virtual, z)
    out_len = int(round(ch * z))
    trim = (out_len - n_virtual) // 2
    v = (np.arange(n_layer) + 0.5) * (n_virtual / n_layer) - 0.5
    coord = np.clip((v + trim) * (ch - 1) / (out_len - 1), 0, ch - 1) if out_len > 1 else np.zeros(n_layer)
    i0 = np.floor(coord).astype(np.int64)
    return i0, np.minimum(i0 + 1, ch - 1), (coord - i0).astype(F32)


def _snow_from_grid(x: np.ndarray, c: tuple, grid: np.ndarray, angles: np.ndarray, virtual: tuple,
                    layer_hw: tuple, s_l: float) -> np.ndarray:
    _, _, z, thresh, radius, sigma, blend = c
    a0, a1, fa = _grid_plan(virtual[0], z, layer_hw[0])
    b0, b1, fb = _grid_plan(virtual[1], z, layer_hw[1])
    top, bot = grid[:, a0], grid[:, a1]
    y = top + (bot - top) * fa[None, :, None]
    left, right = y[:, :, b0], y[:, :, b1]
    layer = left + (right - left) * fb[None, None, :]
    layer[layer < thresh] = 0
    np.clip(layer, 0, 1, out=layer)
    kernels = _ops.motion_kernels(radius * s_l, sigma * s_l, angles, layer.shape[1:3])
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


SPATTER_FLOOR = (0.25, 1.0)  # layer at >= 56 px on the short side, liquid smoothing >= 1 px


def spatter(x: np.ndarray, c: tuple, rng: np.random.Generator, s: float) -> np.ndarray:
    n, h, w, _ = x.shape
    s_l, hl, wl = layer_scale(h, w, s, max(SPATTER_FLOOR[0], SPATTER_FLOOR[1] / c[2]))
    noise = rng.standard_normal(size=(n, hl, wl), dtype=F32)
    # smoothing white noise with a narrower kernel leaves more spread: rescale it to the 224 px spread
    spread = np.sqrt(np.sum(_ops.gaussian_weights(c[2]) ** 2) / np.sum(_ops.gaussian_weights(c[2] * s_l) ** 2))
    noise *= F32(c[1] * spread ** 2)  # per axis: the 2-D spread is the product of two 1-D ones
    noise += F32(c[0])
    return spatter_apply(x, c, noise, s_l)


def spatter_apply(x: np.ndarray, c: tuple, noise: np.ndarray, s_l: float = 1.0) -> np.ndarray:
    """Spatter given the noise of its liquid layer (N, Hl, Wl), made at ``s_l`` of the virtual size."""
    _, _, sigma, thresh, strength, mud = c
    h, w, ch = x.shape[1:]
    liquid = _ops.gaussian_filter(noise, sigma * s_l, mode="nearest")
    liquid = np.where(liquid < thresh, F32(0), liquid)
    if not mud:
        m = _water_mask(liquid, max(1, int(round(20 * s_l)))) * F32(strength)
        m = _ops.resize_layers(m, h, w)[..., None]
        if ch == 1:
            return x + (np.clip(m * WATER, 0, 1) @ _GRAY_REF)[..., None]
        return x + m * WATER
    m = _ops.gaussian_filter((liquid > thresh).astype(F32), strength * s_l, mode="nearest")
    m = np.where(m < 0.8, F32(0), m)
    m = _ops.resize_layers(m, h, w)[..., None]
    color = MUD * m
    if ch == 1:
        color = (color @ _GRAY_REF)[..., None]
    return x * (1 - m) + color


def _water_mask(liquid: np.ndarray, limit: int = 20) -> np.ndarray:
    """The reference's OpenCV chain: Canny, distance to edges, blur, equalise, emboss, blur; max = 1."""
    from scipy import ndimage

    lu8 = np.clip(liquid * 255, 0, 255).astype(np.uint8)
    edges = canny(lu8, 50, 150)
    dist = truncated_distance(edges, limit)
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
