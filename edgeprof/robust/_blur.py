"""Blur and geometric corruptions: defocus, glass, motion, zoom, Gaussian blur, elastic transform.

Each public function takes a float32 NHWC batch, the severity's reference constants ``c``, a numpy
Generator and the spatial scale ``s`` (see ``corruptions``); the ``*_apply`` functions take the random
draws explicitly so that tests can replay the reference implementation's draws.
"""
from __future__ import annotations

import functools

import numpy as np

from edgeprof.robust import _ops

F32 = np.float32


def defocus_blur(x: np.ndarray, c: tuple, rng: np.random.Generator, s: float) -> np.ndarray:
    radius, alias_blur = c
    kernel = _ops.disk_kernel(radius * s, alias_blur * s)
    return _ops.correlate2d(x, kernel, "mirror")  # cv2.filter2D's default border


def gaussian_blur(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    return _ops.gaussian_filter(x, c * s, mode="nearest")  # skimage.filters.gaussian's default mode


def zoom_blur(x: np.ndarray, c: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
    n, h, w, ch = x.shape
    zooms = tuple(float(z) for z in c)
    if h * w > _ZOOM_SPARSE_MAX_PIXELS:
        out = x.copy()
        for z in zooms:
            out += _ops.clipped_zoom(x, z)
        return out / (len(zooms) + 1)
    # The average of the image and its zooms is one fixed linear map: a sparse (HW, HW) matrix with
    # ~35 entries a row, applied to every image and channel at once.
    op = _zoom_operator(h, w, zooms)
    cols = np.ascontiguousarray(np.moveaxis(x, 0, 2)).reshape(h * w, n * ch)  # (H, W, N, C)
    out = (op @ cols).reshape(h, w, n, ch)
    return np.ascontiguousarray(np.moveaxis(out, 2, 0))


_ZOOM_SPARSE_MAX_PIXELS = 300_000


@functools.lru_cache(maxsize=16)
def _zoom_operator(h: int, w: int, zooms: tuple):
    from scipy import sparse

    def axis_matrix(size: int, z: float):
        i0, i1, frac = _ops._zoom_axis_plan(size, z)
        rows = np.arange(size)
        return sparse.csr_matrix((np.concatenate([1 - frac, frac]), (np.tile(rows, 2), np.concatenate([i0, i1]))),
                                 shape=(size, size), dtype=np.float64)

    total = sparse.identity(h * w, format="csr", dtype=np.float64)
    for z in zooms:
        total = total + sparse.kron(axis_matrix(h, z), axis_matrix(w, z), format="csr")
    return (total / (len(zooms) + 1)).astype(F32).tocsr()


# -- motion -----------------------------------------------------------------------------------------


def motion_blur(x: np.ndarray, c: tuple, rng: np.random.Generator, s: float) -> np.ndarray:
    angles = rng.uniform(-45, 45, size=x.shape[0])
    return motion_blur_apply(x, c, s, angles)


def motion_blur_apply(x: np.ndarray, c: tuple, s: float, angles_deg: np.ndarray) -> np.ndarray:
    radius, sigma = c
    kernels = _ops.motion_kernels(radius * s, sigma * s, angles_deg, x.shape[1:3])
    return _ops.correlate2d(x, kernels, "nearest")  # the reference's shift() repeats edge pixels


# -- glass ------------------------------------------------------------------------------------------


def glass_blur(x: np.ndarray, c: tuple, rng: np.random.Generator, s: float) -> np.ndarray:
    delta, iterations = _glass_delta(c, s), c[2]
    n, h, w, _ = x.shape
    side_h, side_w = max(h - 2 * delta, 0), max(w - 2 * delta, 0)
    offsets = [rng.integers(-delta, delta, size=(n, side_h, side_w, 2)) for _ in range(iterations)]
    return glass_blur_apply(x, c, s, offsets)


def _glass_delta(c: tuple, s: float) -> int:
    return max(1, int(round(c[1] * s)))


def glass_blur_apply(x: np.ndarray, c: tuple, s: float, offsets: list) -> np.ndarray:
    """Blur, locally shuffle with the given offsets ((N, H-2d, W-2d, 2) ``(dy, dx)`` per iteration), blur.

    ``offsets[i][n, a, b]`` is the draw for pixel ``(d + 1 + a, d + 1 + b)``; the reference visits these
    pixels in reverse raster order.
    """
    sigma = c[0] * s
    delta = _glass_delta(c, s)
    y = _ops.gaussian_filter(x, sigma, mode="nearest")
    for off in offsets:
        y = _glass_shuffle(y, off, delta)
    return _ops.gaussian_filter(y, sigma, mode="nearest")


def _glass_shuffle(x: np.ndarray, off: np.ndarray, delta: int) -> np.ndarray:
    """One pass of the reference's pixel shuffle, resolved in closed form.

    The reference loops ``h`` from ``H - d`` down to ``d + 1`` and ``w`` likewise, executing
    ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on an (H, W, 3) array. The right-hand side holds two
    *views*, so the statement copies ``x[h', w']`` into ``x[h, w]`` and leaves ``x[h', w']`` as it was:
    it is a copy, not a swap. Each pixel is written once, at its own step, so its final value is the
    final value of its source if that source was written earlier (later in raster order, inside the
    loop's range), else the source's original value. Those chains are followed by pointer jumping.
    """
    n, h, w, ch = x.shape
    side_h, side_w = off.shape[1:3]
    if side_h == 0 or side_w == 0:
        return x
    hh = np.arange(delta + 1, delta + 1 + side_h)
    ww = np.arange(delta + 1, delta + 1 + side_w)
    p_row = np.broadcast_to(hh[None, :, None], (n, side_h, side_w))
    p_col = np.broadcast_to(ww[None, None, :], (n, side_h, side_w))
    q_row = p_row + off[..., 0]
    q_col = p_col + off[..., 1]
    p_lin = (p_row * w + p_col).reshape(n, -1)
    q_lin = (q_row * w + q_col).reshape(n, -1)
    q_in = ((q_row > delta) & (q_row <= h - delta) & (q_col > delta) & (q_col <= w - delta)).reshape(n, -1)

    hw = h * w
    base = (np.arange(n) * hw)[:, None]
    jump = np.arange(n * hw).reshape(n, hw)  # where to continue: a source written earlier, else itself
    final = jump.copy()  # the pixel read when the chain stops there
    written_before = q_in & (q_lin > p_lin)
    jump[np.arange(n)[:, None], p_lin] = np.where(written_before, q_lin, p_lin) + base
    final[np.arange(n)[:, None], p_lin] = q_lin + base
    jump = jump.ravel()
    while True:
        nxt = np.take(jump, jump)
        if np.array_equal(nxt, jump):
            break
        jump = nxt
    src = np.take(final.ravel(), jump)
    return np.take(x.reshape(n * hw, ch), src, axis=0).reshape(x.shape)


# -- elastic ----------------------------------------------------------------------------------------


def elastic_transform(x: np.ndarray, c: tuple, rng: np.random.Generator, s: float) -> np.ndarray:
    n, h, w, _ = x.shape
    affine = c[2] * s
    pts_delta = rng.uniform(-affine, affine, size=(n, 3, 2))
    u_dx = rng.uniform(-1, 1, size=(n, h, w))
    u_dy = rng.uniform(-1, 1, size=(n, h, w))
    return elastic_apply(x, c, s, pts_delta, u_dx, u_dy)


def affine_points(h: int, w: int) -> np.ndarray:
    """The three (x, y) anchor points of the reference's random affine, before perturbation."""
    cx, cy = w // 2, h // 2
    sq = min(h, w) // 3
    return np.array([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]], dtype=np.float64)


def affine_warp(x: np.ndarray, pts_delta: np.ndarray) -> np.ndarray:
    """cv2.warpAffine(getAffineTransform(p, p + delta), BORDER_REFLECT_101), per image, bilinear."""
    n, h, w, _ = x.shape
    src = affine_points(h, w)
    dst = src[None] + pts_delta
    a = np.concatenate([src, np.ones((3, 1))], axis=1)  # (3, 3)
    m = np.linalg.solve(a[None], dst).transpose(0, 2, 1)  # (N, 2, 3): dst = M @ [x, y, 1]
    full = np.concatenate([m, np.broadcast_to([[[0.0, 0.0, 1.0]]], (n, 1, 3))], axis=1)
    inv = np.linalg.inv(full)  # warpAffine samples the source at M^-1 (x, y)
    yy, xx = np.mgrid[0:h, 0:w].astype(F32)
    inv = inv.astype(F32)
    sx = inv[:, 0, 0, None, None] * xx + inv[:, 0, 1, None, None] * yy + inv[:, 0, 2, None, None]
    sy = inv[:, 1, 0, None, None] * xx + inv[:, 1, 1, None, None] * yy + inv[:, 1, 2, None, None]
    return _ops.remap_bilinear(x, sy, sx, "mirror")


def displacement(u: np.ndarray, sigma: float, alpha: float) -> np.ndarray:
    """``gaussian(u, sigma, mode='reflect', truncate=3) * alpha`` for a batch of fields (N, H, W)."""
    return _ops.gaussian_filter(u, sigma, mode="reflect", truncate=3.0) * F32(alpha)


def elastic_apply(x: np.ndarray, c: tuple, s: float, pts_delta: np.ndarray, u_dx: np.ndarray,
                  u_dy: np.ndarray) -> np.ndarray:
    """ImageNet-C's elastic transform: a random affine, then a smooth random displacement field.

    Lengths (sigma, affine jitter) scale with ``s``; alpha scales with ``s**2`` so that the
    displacement, which goes as alpha / sigma, scales with ``s`` like every other length.
    """
    alpha, sigma = c[0] * s * s, c[1] * s
    n, h, w, _ = x.shape
    y = affine_warp(x, pts_delta)
    dx = displacement(u_dx, sigma, alpha)
    dy = displacement(u_dy, sigma, alpha)
    rows, cols = np.mgrid[0:h, 0:w].astype(F32)
    return _ops.remap_bilinear(y, rows[None] + dy, cols[None] + dx, "reflect")
