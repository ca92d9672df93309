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
    np.copyto(layer, F32(0), where=layer < thresh)
    np.clip(layer, 0, 1, out=layer)
    kernels = _ops.motion_kernels(radius * s_l, sigma * s_l, angles, layer.shape[1:3])
    layer = _ops.correlate2d(layer[..., None], kernels, "nearest")
    layer *= F32(255)
    np.round(layer, out=layer)
    layer /= F32(255)  # the reference passes the layer through an 8-bit image
    layer = _ops.resize_layers(layer, x.shape[1], x.shape[2])
    ch = x.shape[3]
    lift = _gray(x) * F32(1.5)
    lift += F32(0.5)
    lift = np.maximum(x, _channels(lift, ch))
    lift *= F32(1 - blend)
    out = x * F32(blend)
    out += lift
    layer = layer + layer[:, ::-1, ::-1]
    out += _channels(layer, ch)
    return out


# -- frost ------------------------------------------------------------------------------------------


def frost(x: np.ndarray, c: tuple, rng: np.random.Generator, s: float) -> np.ndarray:
    n, h, w, ch = x.shape
    hv, wv = virtual_size(h, w, s)
    tex = frost_textures(max(hv, wv))
    k, size = tex.shape[0], tex.shape[1]
    idx = rng.integers(k, size=n)
    top = rng.integers(0, size - hv + 1, size=n)
    left = rng.integers(0, size - wv + 1, size=n)
    crop = np.empty((n, hv, wv, 3), dtype=F32)
    for i in range(n):  # slices copy whole rows: 10x a fancy-indexed gather
        crop[i] = tex[idx[i], top[i]:top[i] + hv, left[i]:left[i] + wv]
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
    """``(x + c * fractal) * max / (max + c)``, the image's maximum per image, folded into one scale."""
    n, h, w = x.shape[:3]
    max_val = x.reshape(n, -1).max(axis=1).astype(np.float64)
    scale = (max_val / (max_val + c[0])).astype(F32)
    fog_layer = fractal[:, :h, :w] * (F32(c[0]) * scale)[:, None, None]
    out = x * scale[:, None, None, None]
    out += _channels(fog_layer, x.shape[3])
    return out


def _channels(layer: np.ndarray, ch: int) -> np.ndarray:
    """(N, H, W) or (N, H, W, 1) -> (N, H, W, ch) by repetition: numpy is slow at broadcasting over a
    trailing axis of 3, fast at adding two contiguous arrays."""
    return np.repeat(layer, ch).reshape(layer.shape[:3] + (ch,))


# -- spatter ----------------------------------------------------------------------------------------

WATER = np.array([175, 238, 238], dtype=F32) / 255  # pale turquoise
MUD = np.array([63, 42, 20], dtype=F32) / 255
_GRAY_REF = np.array([0.2989, 0.5870, 0.1140], dtype=F32)  # imagecorruptions' rgb2gray


SPATTER_FLOOR = (0.25, 1.0)  # layer at >= 56 px on the short side, liquid smoothing >= 1 px


def spatter(x: np.ndarray, c: tuple, rng: np.random.Generator, s: float) -> np.ndarray:
    n, h, w, _ = x.shape
    s_l, hl, wl = layer_scale(h, w, s, max(SPATTER_FLOOR[0], SPATTER_FLOOR[1] / c[2]))
    from edgeprof.robust.corruptions import _box_muller, _normal_draws, split_images

    # Box-Muller normals (2.5x numpy's float32 ziggurat): the draws here, the rest per image below
    u, t = _normal_draws(rng, n * hl * wl)
    # smoothing white noise with a narrower kernel leaves more spread: rescale it to the 224 px spread
    spread = np.sqrt(np.sum(_ops.gaussian_weights(c[2]) ** 2) / np.sum(_ops.gaussian_weights(c[2] * s_l) ** 2))
    out = np.empty(x.shape, dtype=F32)

    def part(rows: slice) -> None:  # per image once drawn: a lone block spreads this over the threads
        noise = _box_muller(u, t, rows.start * hl * wl, rows.stop * hl * wl).reshape(-1, hl, wl)
        noise *= F32(c[1] * spread ** 2)  # per axis: the 2-D spread is the product of two 1-D ones
        noise += F32(c[0])
        out[rows] = spatter_apply(x[rows], c, noise, s_l)

    split_images(n, part)
    return out


def spatter_apply(x: np.ndarray, c: tuple, noise: np.ndarray, s_l: float = 1.0) -> np.ndarray:
    """Spatter given the noise of its liquid layer (N, Hl, Wl), made at ``s_l`` of the virtual size."""
    _, _, sigma, thresh, strength, mud = c
    h, w, ch = x.shape[1:]
    liquid = _ops.gaussian_filter(noise, sigma * s_l, mode="nearest")
    np.copyto(liquid, F32(0), where=liquid < thresh)
    if not mud:
        m = _water_mask(liquid, max(1, int(round(20 * s_l))))
        m *= F32(strength)
        m = _ops.resize_layers(m, h, w)[..., None]
        if ch == 1:
            return x + (np.clip(m * WATER, 0, 1) @ _GRAY_REF)[..., None]
        # x + m * WATER, with the colour tiled along whole rows (a trailing broadcast of 3 is slow)
        n = x.shape[0]
        out = np.repeat(m, 3).reshape(n, h, w * 3)
        out *= np.tile(WATER, w)
        out += x.reshape(n, h, w * 3)
        return out.reshape(x.shape)
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
    dist = _emboss_blur(equalize_hist(dist.astype(np.uint8)))
    m = lu8.astype(F32)
    m *= dist
    peak = m.max(axis=(1, 2), keepdims=True)
    m /= np.where(peak > 0, peak, F32(1))  # m >= 0: an image whose peak is 0 is all 0
    return m


_EMBOSS = (((-1, -1), -2), ((-1, 0), -1), ((0, -1), -1), ((0, 0), 1), ((0, 1), 1), ((1, 0), 1), ((1, 1), 2))
_THIRDS = np.rint(np.arange(9 * 255 + 1) / 9).astype(F32)  # rint(S / 9) for every 3x3 sum of levels


def _emboss_blur(img: np.ndarray) -> np.ndarray:
    """The reference's emboss (3x3, clipped to 0-255) then 3x3 mean (rounded) on uint8 (N, H, W) images,
    both with mirrored edges (BORDER_REFLECT_101), in int16: every intermediate is an integer."""
    n, h, w = img.shape
    p = np.pad(img.astype(np.int16), ((0, 0), (1, 1), (1, 1)), mode="reflect")
    e = np.zeros((n, h, w), dtype=np.int16)
    for (dr, dc), k in _EMBOSS:
        tap = p[:, 1 + dr:1 + dr + h, 1 + dc:1 + dc + w]
        if k == 1:
            e += tap
        elif k == -1:
            e -= tap
        else:
            e += tap * np.int16(k)
    np.clip(e, 0, 255, out=e)
    q = np.pad(e, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    rows = q[:, :, :-2] + q[:, :, 1:-1]
    rows += q[:, :, 2:]
    total = rows[:, :-2] + rows[:, 1:-1]
    total += rows[:, 2:]
    return np.take(_THIRDS, total)


def truncated_distance(mask: np.ndarray, limit: int) -> np.ndarray:
    """min(Euclidean distance to the nearest True pixel, limit) for a batch (N, H, W) of masks.

    Exact (OpenCV's DIST_L2 with a 5x5 mask approximates it): the distance along each row to the
    nearest edge on either side, up to ``limit + 1``, comes from running maxima/minima of edge
    positions over windows doubling up to that length; then the column pass takes the minimum of
    ``dy^2 + row^2`` over the ``2 * limit + 1`` rows that can be within the limit. Squared distances
    are integers up to ``2 (limit + 1)^2``: uint8 or uint16 while that fits, so each pass moves few
    bytes.
    """
    n, h, w = mask.shape
    big = (limit + 1) ** 2
    dt = np.uint8 if 2 * big < 2 ** 8 else np.uint16 if 2 * big < 2 ** 16 else np.int64
    it = np.int16 if w + 2 * limit + 2 < 2 ** 15 else np.int32
    cols = np.arange(w, dtype=it)
    on = mask.astype(it)  # arithmetic, not np.where: several times faster on a strided mask
    left = on * (cols + it(limit + 1))
    left -= it(limit + 1)  # an edge's column, else beyond the limit to the left
    right = on * (cols - it(w + limit + 1))
    right += it(w + limit + 1)  # ... else beyond it to the right
    span = 1  # left[j]: the last edge in (j - span, j]; right[j]: the first in [j, j + span)
    spare_l, spare_r = np.empty_like(left), np.empty_like(right)
    while span < limit + 1 and span < w:  # farther edges than limit + 1 only need to stay that far
        # into the spare buffers (an in-place update of overlapping slices would copy them first)
        np.maximum(left[:, :, span:], left[:, :, :-span], out=spare_l[:, :, span:])
        spare_l[:, :, :span] = left[:, :, :span]
        np.minimum(right[:, :, :-span], right[:, :, span:], out=spare_r[:, :, :-span])
        spare_r[:, :, -span:] = right[:, :, -span:]
        left, spare_l, right, spare_r = spare_l, left, spare_r, right
        span *= 2
    np.subtract(cols, left, out=left)
    right -= cols
    near = np.minimum(left, right, out=left)
    np.minimum(near, it(limit + 1), out=near)
    near = near.astype(dt)
    padded = np.full((n, h + 2 * limit, w), big, dtype=dt)
    row = padded[:, limit:limit + h]
    np.multiply(near, near, out=row)
    best = row.copy()
    pair = np.empty_like(best)
    for dy in range(1, limit + 1):
        np.minimum(padded[:, limit - dy:limit - dy + h], padded[:, limit + dy:limit + dy + h], out=pair)
        pair += dt(dy * dy)
        np.minimum(best, pair, out=best)
    np.minimum(best, dt(limit * limit), out=best)  # sqrt(limit^2) is limit exactly
    return np.sqrt(best.astype(np.float32))


def canny(img: np.ndarray, low: float, high: float) -> np.ndarray:
    """cv2.Canny(img, low, high) for a batch (N, H, W) of uint8 images: 3x3 Sobel, L1 magnitude.

    Computed on each image grown by a ring of one pixel whose magnitude is zero (the Sobel taps
    repeat the edge pixels), flattened: a pixel's neighbours are then fixed offsets in one
    contiguous array and the images never touch. Non-maximum suppression runs on whole arrays (most
    pixels of a spatter layer pass the low threshold, so gathering those that do is slower).
    """
    from scipy import ndimage

    n, h, w = img.shape
    h2, w2 = h + 2, w + 2
    # 3x3 Sobel in int16 (|g| <= 1020), image by image (never across the batch)
    q = np.pad(img, ((0, 0), (2, 2), (2, 2)), mode="edge").astype(np.int16)
    dx = q[:, :, 2:] - q[:, :, :-2]
    gxi = dx[:, :-2] + dx[:, 2:]
    gxi += dx[:, 1:-1] * np.int16(2)
    dy = q[:, 2:] - q[:, :-2]
    gyi = dy[:, :, :-2] + dy[:, :, 2:]
    gyi += dy[:, :, 1:-1] * np.int16(2)
    ax, ay = np.abs(gxi).ravel(), np.abs(gyi).ravel()
    size = n * h2 * w2
    edge = w2 + 1
    mpe = np.zeros(size + 2 * edge, dtype=np.int16)  # the flat magnitude, room for the offsets
    mp = mpe[edge:edge + size]
    np.add(ax, ay, out=mp)
    ring = mp.reshape(n, h2, w2)
    ring[:, 0] = ring[:, -1] = 0
    ring[:, :, 0] = ring[:, :, -1] = 0
    # OpenCV's integer direction test: tan(22.5 deg) as 13573 / 2^15; a pixel must beat its first
    # neighbour along the direction strictly, its second one or equal
    ax32 = ax.astype(np.int32)
    tg22 = ax32 * np.int32(13573)
    y = ay.astype(np.int32)
    y <<= 15
    horiz = y < tg22
    ax32 <<= 16
    ax32 += tg22
    vert = y > ax32
    same_sign = (gxi ^ gyi).ravel() >= 0

    def beats(offset: int) -> np.ndarray:
        out = mp > mpe[edge - offset:edge - offset + size]
        out &= mp >= mpe[edge + offset:edge + offset + size]
        return out

    # the test of each direction on whole arrays, then the pixel's own one picked by boolean logic
    # (np.where with a patchy condition costs far more than four comparisons)
    diag = beats(w2 + 1)
    diag &= same_sign
    np.logical_not(same_sign, out=same_sign)
    same_sign &= beats(w2 - 1)
    diag |= same_sign  # the diagonal direction's test
    vert_ok = beats(w2)
    vert_ok &= vert
    np.logical_not(vert, out=vert)
    diag &= vert
    diag |= vert_ok  # not horizontal: vertical or diagonal
    cand = beats(1)
    cand &= horiz
    np.logical_not(horiz, out=horiz)
    diag &= horiz
    cand |= diag
    cand &= mp > low
    strong = cand & (mp > high)
    # 8-connected components, the batch labelled as one tall 2-D image (the rings keep images apart)
    labels = np.empty((n * h2, w2), dtype=np.intp)  # index-sized: the gathers below convert nothing
    count = ndimage.label(cand.reshape(n * h2, w2), structure=np.ones((3, 3), dtype=bool), output=labels)
    labels = labels.ravel()
    good = np.zeros(count + 1, dtype=bool)
    good[labels[np.flatnonzero(strong)]] = True  # the components holding a strong pixel
    good[0] = False
    return np.take(good, labels).reshape(n, h2, w2)[:, 1:-1, 1:-1]


def equalize_hist(img: np.ndarray) -> np.ndarray:
    """cv2.equalizeHist for a batch (N, H, W) of uint8 images."""
    n = img.shape[0]
    total = img[0].size
    hist = np.stack([np.bincount(im.ravel(), minlength=256) for im in img])
    first = np.argmax(hist > 0, axis=1)
    h_first = hist[np.arange(n), first]
    cdf = np.cumsum(hist, axis=1)
    denom = np.where(total - h_first > 0, total - h_first, 1)
    lut = np.rint((cdf - h_first[:, None]) * (255.0 / denom[:, None]))
    lut = np.clip(lut, 0, 255)
    lut[np.arange(256)[None, :] <= first[:, None]] = 0
    flat_img = h_first == total  # a single grey level: OpenCV fills with that level
    lut[flat_img] = first[flat_img, None]
    lut = lut.astype(np.uint8)
    return np.stack([np.take(lut[i], im) for i, im in enumerate(img)])
