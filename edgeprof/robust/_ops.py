"""Vectorised image operations behind the corruptions (float32, NHWC batches).

Every function here works on a whole batch at once; the reference code does the same work one image at
a time with OpenCV, scikit-image, ImageMagick or PIL. Boundary modes are named as in scipy.ndimage:
``nearest`` (edge pixel repeated, OpenCV BORDER_REPLICATE), ``reflect`` (``dcba|abcd``, half-sample
symmetric) and ``mirror`` (``dcb|abcd``, OpenCV BORDER_REFLECT_101, the OpenCV default).
"""
from __future__ import annotations

import functools
import math

import numpy as np

F32 = np.float32


# ---------------------------------------------------------------------------------------------------
# index mapping for boundary modes


def fold_index(idx: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Map integer indices (any range) into ``[0, n)`` according to a boundary mode."""
    idx = np.asarray(idx)
    if n == 1:
        return np.zeros_like(idx)
    if mode == "nearest":
        return np.clip(idx, 0, n - 1)
    if mode == "reflect":
        period = 2 * n
        r = np.mod(idx, period)
        return np.where(r < n, r, period - 1 - r)
    if mode == "mirror":
        period = 2 * n - 2
        r = np.mod(idx, period)
        return np.where(r < n, r, period - r)
    raise ValueError(f"unknown boundary mode {mode!r}")


def filter_matrix(n: int, weights: np.ndarray, mode: str) -> np.ndarray:
    """Dense (n, n) matrix of a centred 1-D correlation with the boundary mode folded in.

    ``(M @ v)[i] == sum_t weights[t] * v[fold(i + t - r)]`` with ``r = len(weights) // 2``; kernels
    longer than the signal (elastic's sigma of 170 px on a 224 px image) fold several times, exactly
    as scipy.ndimage does.
    """
    r = len(weights) // 2
    rows = np.repeat(np.arange(n), len(weights))
    cols = fold_index(np.arange(n)[:, None] + np.arange(-r, len(weights) - r)[None, :], n, mode).ravel()
    m = np.zeros((n, n), dtype=np.float64)
    np.add.at(m, (rows, cols), np.tile(np.asarray(weights, dtype=np.float64), n))
    return m


def gaussian_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's Gaussian kernel (radius ``int(truncate * sigma + 0.5)``), normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    if sigma <= 0 or radius == 0:
        return np.ones(1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def gaussian_filter(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0,
                    axes: tuple[int, int] = (1, 2)) -> np.ndarray:
    """Separable Gaussian blur of a batch over two spatial axes (scikit-image's ``gaussian``).

    Short kernels use scipy's correlate1d; kernels longer than ~a third of the side become one dense
    filter matrix per axis (a matrix product, faster than hundreds of taps).
    """
    from scipy.ndimage import correlate1d

    w = gaussian_weights(sigma, truncate)
    out = np.asarray(x, dtype=F32)
    if len(w) == 1:
        return out.copy()
    for ax in axes:
        n = out.shape[ax]
        if len(w) > max(n // 3, 33):
            m = filter_matrix(n, w, mode).astype(F32)
            out = np.moveaxis(np.tensordot(m, np.moveaxis(out, ax, 0), axes=(1, 0)), 0, ax)
        else:
            out = correlate1d(out, w.astype(F32), axis=ax, mode=mode)
    return np.ascontiguousarray(out, dtype=F32)


# ---------------------------------------------------------------------------------------------------
# 2-D correlation through the FFT (shared or per-image kernels)


def correlate2d(x: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """``out[n, i, j, c] = sum_{a,b} k[a, b] * x[n, fold(i + a - ra), fold(j + b - rb), c]``.

    ``kernel`` is (kh, kw) for the whole batch or (N, kh, kw) per image; odd sizes. Computed with a
    batched real FFT of the padded batch (channels as planes), so the cost does not grow with the
    kernel's size; the FFT length covers the padded image, so nothing wraps around.
    """
    from scipy import fft as sfft

    k = np.asarray(kernel, dtype=F32)
    if k.ndim == 2:
        k = k[None]
    kh, kw = k.shape[1:]
    rh, rw = kh // 2, kw // 2
    n, h, w, c = x.shape
    planes = np.pad(np.moveaxis(np.asarray(x, dtype=F32), 3, 1), ((0, 0), (0, 0), (rh, rh), (rw, rw)),
                    mode=_PAD_MODE[mode])
    shape = (sfft.next_fast_len(h + 2 * rh, real=True), sfft.next_fast_len(w + 2 * rw, real=True))
    with sfft.set_workers(1):  # the blocks of a batch already run in parallel
        spec = sfft.rfft2(planes, s=shape)
        if k.shape[0] == 1:  # one kernel for the batch (defocus): its spectrum is cached
            kspec = _kernel_spectrum(k.tobytes(), k.shape[1:], shape)[None, None]
        else:
            kspec = np.conj(sfft.rfft2(k, s=shape))[:, None]
        spec *= kspec
        out = sfft.irfft2(spec, s=shape)[:, :, :h, :w]
    return np.ascontiguousarray(np.moveaxis(out, 1, 3), dtype=F32)


@functools.lru_cache(maxsize=16)
def _kernel_spectrum(kernel: bytes, kshape: tuple, shape: tuple) -> np.ndarray:
    from scipy import fft as sfft

    k = np.frombuffer(kernel, dtype=F32).reshape(kshape)
    spec = np.conj(sfft.rfft2(k, s=shape))
    spec.flags.writeable = False
    return spec


# ---------------------------------------------------------------------------------------------------
# kernels


def disk_kernel(radius: float, alias_blur: float, supersample: int = 8) -> np.ndarray:
    """Anti-aliased disk: each tap is the fraction of its pixel inside the circle, then a small Gaussian.

    The reference samples the disk at pixel centres (``x^2 + y^2 <= r^2``) and blurs it with a 3x3
    (r <= 8) or 5x5 Gaussian of sigma ``alias_blur``. Sampling by pixel coverage instead keeps the
    kernel a smooth function of the radius, which matters once the radius is scaled below a few
    pixels (a point-sampled disk jumps from one tap to five at r = 1).
    """
    r = max(float(radius), 1e-6)
    half = int(math.ceil(r + 0.5))
    ss = (np.arange(supersample) + 0.5) / supersample - 0.5
    grid = np.arange(-half, half + 1)
    fine = (grid[:, None] + ss[None, :]).ravel()
    inside = (fine[:, None] ** 2 + fine[None, :] ** 2) <= r * r
    k = inside.reshape(2 * half + 1, supersample, 2 * half + 1, supersample).mean(axis=(1, 3))
    k = k / k.sum()
    ksize = 3 if radius <= 8 else 5
    if alias_blur > 0:
        g = np.exp(-0.5 * (np.arange(ksize) - ksize // 2) ** 2 / alias_blur ** 2)
        g /= g.sum()
        k = np.pad(k, ksize // 2)
        from scipy.ndimage import convolve1d
        k = convolve1d(convolve1d(k, g, axis=0, mode="constant"), g, axis=1, mode="constant")
    return (k / k.sum()).astype(F32)


def motion_kernels(radius: float, sigma: float, angles_deg: np.ndarray, max_extent: tuple[int, int]
                   ) -> np.ndarray:
    """Per-image motion-blur kernels, ImageMagick's MotionBlurImage as reimplemented by imagecorruptions.

    Tap i (0 <= i < 2*radius+1) has the one-sided Gaussian weight ``exp(-i^2 / 2 sigma^2)`` and reads
    the pixel at offset ``(ceil(i sin a - 0.5), ceil(i cos a - 0.5))``; taps whose shift reaches the
    image size are dropped (the reference's ``break``). Returns (N, 2R+1, 2R+1) correlation kernels.
    """
    width = 2 * int(round(radius)) + 1
    sig = max(float(sigma), 1e-3)
    i = np.arange(width, dtype=np.float64)
    weights = np.exp(-i ** 2 / (2 * sig ** 2))
    weights /= weights.sum()
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    oy = np.ceil(i[None, :] * np.sin(a)[:, None] - 0.5).astype(np.int64)
    ox = np.ceil(i[None, :] * np.cos(a)[:, None] - 0.5).astype(np.int64)
    # the reference stops at the first tap whose shift reaches the image border
    ok = np.cumprod((np.abs(oy) < max_extent[0]) & (np.abs(ox) < max_extent[1]), axis=1).astype(bool)
    r = width - 1
    k = np.zeros((len(a), 2 * r + 1, 2 * r + 1), dtype=np.float64)
    n_idx = np.repeat(np.arange(len(a)), width)
    np.add.at(k, (n_idx, (oy + r).ravel(), (ox + r).ravel()), (weights[None, :] * ok).ravel())
    return k.astype(F32)


# ---------------------------------------------------------------------------------------------------
# resampling


def _zoom_axis_plan(n: int, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of the reference's ``clipped_zoom`` along one axis.

    Centre crop of ``ceil(n / z)`` pixels, scipy.ndimage.zoom(order=1) to ``round(ch * z)`` (scipy's
    corner-aligned coordinates ``o * (ch - 1) / (out - 1)``), then the centred ``n`` pixels (the
    ImageNet-C script trims the centre; imagecorruptions keeps the top-left, at most one pixel off).
    """
    ch = int(math.ceil(n / z))
    top = (n - ch) // 2
    out_len = int(round(ch * z))
    trim = (out_len - n) // 2
    o = np.arange(trim, trim + n, dtype=np.float64)
    coord = o * (ch - 1) / (out_len - 1) if out_len > 1 else np.zeros(n)
    i0 = np.floor(coord).astype(np.int64)
    frac = coord - i0
    i1 = np.minimum(i0 + 1, ch - 1)
    return top + i0, top + i1, frac.astype(F32)


def clipped_zoom(x: np.ndarray, z: float) -> np.ndarray:
    """Zoom a batch (N, H, W, ...) into its centre by ``z`` (bilinear), keeping the size."""
    h, w = x.shape[1], x.shape[2]
    a0, a1, fa = _zoom_axis_plan(h, z)
    b0, b1, fb = _zoom_axis_plan(w, z)
    extra = (1,) * (x.ndim - 2)
    top, bot = x[:, a0], x[:, a1]
    y = top + (bot - top) * fa.reshape((1, h) + extra)
    left, right = y[:, :, b0], y[:, :, b1]
    return left + (right - left) * fb.reshape((1, 1, w) + extra[1:])


def fold_coord(c: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Fold real coordinates into the range where bilinear interpolation needs no boundary handling.

    Linear interpolation of a symmetrically extended signal is itself symmetric, so folding the
    coordinate gives the same value as folding the two integer taps.
    """
    if n == 1 or mode == "nearest":
        return np.clip(c, 0, n - 1)
    if mode == "reflect":  # symmetric about -0.5 and n - 0.5
        lo, hi, period = F32(-0.5), F32(n - 0.5), 2 * n
    elif mode == "mirror":  # symmetric about 0 and n - 1
        lo, hi, period = F32(0), F32(n - 1), 2 * n - 2
    else:
        raise ValueError(f"unknown boundary mode {mode!r}")
    if c.min() < lo - (hi - lo) or c.max() > hi + (hi - lo):  # more than one reflection away
        c = np.mod(c - lo, F32(period)) + lo
    c = np.where(c < lo, 2 * lo - c, c)
    return np.where(c > hi, 2 * hi - c, c)


_PAD_MODE = {"nearest": "edge", "reflect": "symmetric", "mirror": "reflect"}


def remap_bilinear(x: np.ndarray, src_y: np.ndarray, src_x: np.ndarray, mode: str) -> np.ndarray:
    """Sample a batch (N, H, W, C) at per-image coordinates (N, H, W) with bilinear interpolation.

    Matches scipy.ndimage.map_coordinates(order=1) for ``reflect`` and OpenCV's remap/warpAffine
    (INTER_LINEAR) for ``mirror`` = BORDER_REFLECT_101. Coordinates are folded first and the batch is
    padded by one pixel, so the four taps are plain offsets of one flat index; channels are handled
    as separate planes (numpy is slow on a trailing axis of length 3).
    """
    n, h, w, c = x.shape
    sy = fold_coord(np.asarray(src_y, dtype=F32), h, mode)
    sx = fold_coord(np.asarray(src_x, dtype=F32), w, mode)
    y0 = np.floor(sy)
    x0 = np.floor(sx)
    fy = (sy - y0).reshape(-1)
    fx = (sx - x0).reshape(-1)
    hp, wp = h + 2, w + 2
    planes = np.pad(np.moveaxis(np.asarray(x, dtype=F32), 3, 0), ((0, 0), (0, 0), (1, 1), (1, 1)),
                    mode=_PAD_MODE[mode]).reshape(c, -1)
    base = (np.arange(n, dtype=np.intp) * hp + 1).reshape(n, 1, 1)
    k = ((y0.astype(np.intp) + base) * wp + x0.astype(np.intp) + 1).reshape(-1)
    k01, k10, k11 = k + 1, k + wp, k + wp + 1
    out = np.empty((n, h, w, c), dtype=F32)
    for ch in range(c):
        p = planes[ch]
        q00, q01, q10, q11 = np.take(p, k), np.take(p, k01), np.take(p, k10), np.take(p, k11)
        q01 -= q00
        q01 *= fx
        q01 += q00  # top row
        q11 -= q10
        q11 *= fx
        q11 += q10  # bottom row
        q11 -= q01
        q11 *= fy
        q11 += q01
        out[..., ch] = q11.reshape(n, h, w)
    return out


@functools.lru_cache(maxsize=64)
def resize_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) resampling matrix: area average when shrinking, bilinear when enlarging."""
    if n_out == n_in:
        return np.eye(n_out, dtype=F32)
    m = np.zeros((n_out, n_in), dtype=np.float64)
    if n_out < n_in:  # weight = overlap of input pixel [j, j+1) with output pixel i's span
        edges = np.arange(n_out + 1) * (n_in / n_out)
        j = np.arange(n_in)[None, :]
        m = np.clip(np.minimum(j + 1, edges[1:, None]) - np.maximum(j, edges[:-1, None]), 0, None)
    else:
        coord = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        j0 = np.floor(coord).astype(int)
        j1 = np.minimum(j0 + 1, n_in - 1)
        np.add.at(m, (np.arange(n_out), j0), 1 - (coord - j0))
        np.add.at(m, (np.arange(n_out), j1), coord - j0)
    m /= m.sum(axis=1, keepdims=True)
    return m.astype(F32)


def resize_layers(layers: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize a batch of layers (N, h0, w0) or (N, h0, w0, C) to (h, w) with resize_matrix."""
    h0, w0 = layers.shape[1], layers.shape[2]
    if (h0, w0) == (h, w):
        return layers
    x = np.asarray(layers, dtype=F32)
    n, rest = x.shape[0], x.shape[3:]
    if h0 % h == 0 and w0 % w == 0:  # whole factors: the area average is a plain block mean
        fh, fw = h0 // h, w0 // w
        rows = x.reshape((n, h, fh, w0) + rest)  # sums of whole rows first, then of runs along them
        acc = rows[:, :, 0].copy()
        for k in range(1, fh):
            acc += rows[:, :, k]
        acc = acc.reshape((n, h, w, fw) + rest)
        out = acc[:, :, :, 0].copy()
        for k in range(1, fw):
            out += acc[:, :, :, k]
        out *= F32(1 / (fh * fw))
        return out
    c = int(np.prod(rest)) if rest else 1
    # batched matrix products, no transposes: rows first, then columns (channels ride along)
    y = np.matmul(resize_matrix(h, h0), x.reshape(n, h0, w0 * c))  # (N, h, w0 * c)
    y = np.matmul(resize_matrix(w, w0), y.reshape(n * h, w0, c))  # (N * h, w, c)
    return np.ascontiguousarray(y.reshape((n, h, w) + rest), dtype=F32)


def pil_box_bounds(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Input range [lo, hi) that PIL's BOX filter averages for each output pixel (down-scaling).

    PIL centres output pixel i at ``(i + 0.5) * scale`` and keeps the input pixels whose centres fall
    within half a scale of it (the box ``(-0.5, 0.5]``), all with weight 1.
    """
    scale = n_in / n_out
    i = np.arange(n_out)
    centre = (i + 0.5) * scale
    support = 0.5 * scale
    xmin = np.maximum((centre - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((centre + support + 0.5).astype(np.int64), n_in)
    j = np.arange(n_in)
    # weight of input j: box((j - centre + 0.5) * (1 / scale)), box(t) = 1 for -0.5 < t <= 0.5
    t = (j[None, :] - centre[:, None] + 0.5) * (1.0 / scale)
    inside = (t > -0.5) & (t <= 0.5) & (j[None, :] >= xmin[:, None]) & (j[None, :] < xmax[:, None])
    lo = np.argmax(inside, axis=1)
    hi = n_in - np.argmax(inside[:, ::-1], axis=1)
    return lo, hi


def _box_down(x: np.ndarray, axis: int, n_small: int) -> np.ndarray:
    """PIL's BOX down-scale along one axis: its boxes are runs ``[lo, hi)`` of the input, so the sum is
    the run's first pixel plus ``k``-th pixels for ``k < max run length`` (each one ``take`` of the
    small size; a take along an axis copies whole contiguous rows, unlike ``add.reduceat``)."""
    n = x.shape[axis]
    lo, hi = pil_box_bounds(n, n_small)
    length = hi - lo
    shape = [1] * x.ndim
    shape[axis] = n_small
    small = np.take(x, lo, axis=axis)
    for k in range(1, int(length.max())):
        tap = np.take(x, np.minimum(lo + k, n - 1), axis=axis)
        if (length > k).all():
            small += tap
        else:
            tap *= (length > k).astype(F32).reshape(shape)
            small += tap
    small *= (1.0 / length).astype(F32).reshape(shape)
    return small


def _nearest_up(x: np.ndarray, axis: int, n: int) -> np.ndarray:
    """PIL's NEAREST up-scale along one axis: each small pixel repeated over a run."""
    n_small = x.shape[axis]
    return np.repeat(x, np.bincount(_nearest_map(n_small, n), minlength=n_small), axis=axis)


def box_pixelate(x: np.ndarray, small_h: int, small_w: int) -> np.ndarray:
    """PIL ``resize((small_w, small_h), BOX).resize((W, H), NEAREST)`` on a batch (N, H, W, C)."""
    h, w = x.shape[1:3]
    small = _box_down(_box_down(x, 1, small_h), 2, small_w)
    # up along W first: the final repeat along H then copies whole rows
    return _nearest_up(_nearest_up(small, 2, w), 1, h)


def _nearest_map(n_small: int, n: int) -> np.ndarray:
    """Source index of each of the ``n`` pixels of PIL's NEAREST up-scale from ``n_small``: PIL walks
    the source coordinate by repeated addition; cumsum repeats its rounding."""
    step = np.full(n, n_small / n)
    step[0] = 0.5 * n_small / n
    return np.minimum(np.cumsum(step).astype(np.int64), n_small - 1)


_PIL_PRECISION = 22  # PIL's PRECISION_BITS for 8-bit resampling: 32 - 8 - 2


def _box_down_u8(x: np.ndarray, axis: int, n_small: int, channels: int) -> np.ndarray:
    """One pass of PIL's 8-bit BOX down-scale along ``axis`` of a uint8 array whose last axis
    interleaves ``channels`` values per pixel when ``axis`` is that last axis.

    PIL's fixed-point arithmetic, exactly: each output is a run ``[lo, hi)`` of inputs with weight
    ``1 / len`` stored as ``int(0.5 + 2^22 / len)``, summed from ``2^21`` and shifted right by 22
    (clipped to 255). That is a function of the run's integer sum and length, tabulated: the sums
    (integers, in 16 bits while they fit) index one table per run length."""
    last = axis == x.ndim - 1
    n = x.shape[axis] // (channels if last else 1)
    lo, hi = pil_box_bounds(n, n_small)
    length = hi - lo
    table, offset = _box_tables(tuple(np.unique(length).tolist()))
    base = offset[np.searchsorted(np.unique(length), length)]
    if last:  # pixel runs -> runs of interleaved values
        lo = (lo[:, None] * channels + np.arange(channels)).ravel()
        length = np.repeat(length, channels)
        base = np.repeat(base, channels)
    shape = [1] * x.ndim
    shape[axis] = len(lo)
    step = channels if last else 1
    dt = np.uint16 if len(table) <= 1 << 16 else np.uint32
    acc = np.take(x, lo, axis=axis).astype(dt)
    acc += base.astype(dt).reshape(shape)
    for k in range(1, int(length.max())):
        tap = np.take(x, np.minimum(lo + k * step, x.shape[axis] - 1), axis=axis)
        if not (length > k).all():
            tap *= (length > k).astype(np.uint8).reshape(shape)
        acc += tap
    return np.take(table, acc)


@functools.lru_cache(maxsize=64)
def _box_tables(lengths: tuple) -> tuple[np.ndarray, np.ndarray]:
    """PIL's 8-bit result for every integer sum ``s`` of a run of each length, tables end to end."""
    parts, offsets, at = [], [], 0
    for n in lengths:
        kk = int(0.5 + (1.0 / n) * (1 << _PIL_PRECISION))  # normalize_coeffs_8bpc
        s = np.arange(255 * n + 1, dtype=np.int64)
        parts.append(np.minimum((s * kk + (1 << (_PIL_PRECISION - 1))) >> _PIL_PRECISION, 255).astype(np.uint8))
        offsets.append(at)
        at += 255 * n + 1
    return np.concatenate(parts), np.array(offsets, dtype=np.int64)


def pil_pixelate_u8(x: np.ndarray, small_h: int, small_w: int, order: str = "hv") -> np.ndarray:
    """PIL ``resize((small_w, small_h), BOX).resize((W, H), NEAREST)`` on a uint8 batch (N, H, W, C),
    bit for bit: the two BOX passes in ``order`` ("hv": horizontal first, as libImaging's
    ImagingResampleInner; see ``pixelate_order``), the first one rounded to 8 bits as PIL's
    intermediate image, then the nearest up-scale as two gathers (columns, then whole rows)."""
    n, h, w, c = x.shape
    rows = x.reshape(n, h, w * c)
    for p in order:
        if p == "h" and small_w != w:
            rows = _box_down_u8(rows, 2, small_w, c)
        elif p == "v" and small_h != h:
            rows = _box_down_u8(rows, 1, small_h, 1)
    return nearest_up_u8(rows.reshape(n, -1, small_w, c), h, w)


def nearest_up_u8(small: np.ndarray, h: int, w: int) -> np.ndarray:
    """PIL's NEAREST up-scale of a uint8 batch (N, h0, w0, C) to (N, H, W, C)."""
    n, sh, sw, c = small.shape
    cols = (_nearest_map(sw, w)[:, None] * c + np.arange(c)).ravel()
    wide = np.take(small.reshape(n, sh, sw * c), cols, axis=2)
    return np.take(wide, _nearest_map(sh, h), axis=1).reshape(n, h, w, c)


@functools.lru_cache(maxsize=64)
def pixelate_order(h: int, w: int, c: int, small_h: int, small_w: int) -> str | None:
    """The pass order ("hv" or "vh") in which ``pil_pixelate_u8`` equals the installed PIL for this
    geometry, checked once on a noise image (the orders differ on almost every such image), or
    None when neither does (then PIL itself must run)."""
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (1, h, w, c), dtype=np.uint8)
    img = Image.fromarray(noise[0, :, :, 0] if c == 1 else noise[0])
    ref = np.asarray(img.resize((small_w, small_h), Image.BOX).resize((w, h), Image.NEAREST)).reshape(h, w, c)
    for order in ("hv", "vh"):
        if np.array_equal(pil_pixelate_u8(noise, small_h, small_w, order)[0], ref):
            return order
    return None


# ---------------------------------------------------------------------------------------------------
# colour


GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=F32)  # OpenCV's RGB2GRAY


def rgb_to_gray(x: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) -> (N, H, W, 1) luma with OpenCV's weights."""
    # plane by plane: a contraction over a trailing axis of 3 is ten times slower in numpy
    out = x[..., 0] * GRAY_WEIGHTS[0]
    out += x[..., 1] * GRAY_WEIGHTS[1]
    out += x[..., 2] * GRAY_WEIGHTS[2]
    return out.astype(F32, copy=False)[..., None]


# ---------------------------------------------------------------------------------------------------
# fractal noise


def plasma_fractal(rng: np.random.Generator, n: int, mapsize: int, wibbledecay: float) -> np.ndarray:
    """Diamond-square height maps, (n, mapsize, mapsize) in [0, 1], as ImageNet-C's fog uses them."""
    if mapsize & (mapsize - 1):
        raise ValueError("mapsize must be a power of two")
    a = np.zeros((n, mapsize, mapsize), dtype=np.float64)
    step = mapsize
    wibble = 100.0

    def wibbled(arr: np.ndarray) -> np.ndarray:
        return arr / 4 + wibble * rng.uniform(-wibble, wibble, arr.shape)

    while step >= 2:
        half = step // 2
        corners = a[:, 0:mapsize:step, 0:mapsize:step]
        acc = corners + np.roll(corners, -1, axis=1)
        acc = acc + np.roll(acc, -1, axis=2)
        a[:, half:mapsize:step, half:mapsize:step] = wibbled(acc)
        dr = a[:, half:mapsize:step, half:mapsize:step]
        ul = a[:, 0:mapsize:step, 0:mapsize:step]
        lt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2)
        a[:, 0:mapsize:step, half:mapsize:step] = wibbled(lt)
        tt = dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1)
        a[:, half:mapsize:step, 0:mapsize:step] = wibbled(tt)
        step //= 2
        wibble /= wibbledecay
    a -= a.min(axis=(1, 2), keepdims=True)
    return (a / a.max(axis=(1, 2), keepdims=True)).astype(F32)
