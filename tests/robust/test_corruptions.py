"""Image corruptions, non-image perturbations and ``edgeprof corrupt``.

Reference values come from tests/fixtures/corruptions/reference.npz, written by make_reference.py
beside it with imagecorruptions 1.1.2 in its own environment (never the code under test). Its images
are rounded to 8 bits, so a perfect implementation differs from them by a rounding error uniform in
+-0.5/255: a mean absolute error of about 0.25/255 = 0.00098. ``ROUNDING`` below allows for that.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from edgeprof.cli import cli
from edgeprof.errors import InputError, NotApplicable
from edgeprof.robust import _blur, _ops, _weather, tabular
from edgeprof.robust import corruptions as corruptions_module
from edgeprof.robust.corruptions import (CORRUPTIONS, DETERMINISTIC, PARAMS, corrupt, corrupt_uint8,
                                             spatial_scale, to_float, to_uint8)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "corruptions" / "reference.npz"
ROUNDING = 0.0012  # mean |error| of 8-bit rounding (0.00098) plus float32 slack
RANDOM = [n for n in CORRUPTIONS if n not in DETERMINISTIC]


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def clean_rgb(ref):
    return to_float(ref["clean_rgb"])[None]


@pytest.fixture(scope="module")
def clean_gray(ref):
    return to_float(ref["clean_gray"])[None, ..., None]


def mae(a, b) -> float:
    return float(np.mean(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def psnr(a, b) -> np.ndarray:
    """Per-image PSNR in dB for [0, 1] images (N, H, W, C)."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, axis=(1, 2, 3))
    return 10 * np.log10(1 / np.maximum(mse, 1e-12))


# -- the contract: shape, dtype, range, determinism, sizes ------------------------------------------


def test_registry_lists_19_corruptions_with_5_severities():
    assert len(CORRUPTIONS) == 19 and len(set(CORRUPTIONS)) == 19
    assert set(PARAMS) == set(CORRUPTIONS)
    assert all(len(PARAMS[n]) == 5 for n in CORRUPTIONS)


def test_uint8_edge_round_trips_and_rounds():
    levels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    f = to_float(levels)
    assert f.dtype == np.float32 and f.min() == 0 and f.max() == 1
    assert np.array_equal(to_uint8(f), levels)
    assert to_uint8(np.float32([[0.4 / 255, 0.6 / 255, 254.6 / 255, -0.2, 1.7]])).tolist() == [[0, 1, 255, 0, 255]]


SHAPES = {"8gray": (2, 8, 8, 1), "28gray": (3, 28, 28, 1), "224rgb": (1, 224, 224, 3)}


@pytest.mark.parametrize("name, shape", [pytest.param(n, s, id=f"{n}-{k}") for n in CORRUPTIONS
                                         for k, s in SHAPES.items() if not (n == "saturate" and s[3] == 1)])
def test_contract(name, shape):
    x = np.random.default_rng(3).random(shape, dtype=np.float32)
    a = corrupt(x, name, 5, seed=7)
    assert a.shape == x.shape and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    assert np.array_equal(a, corrupt(x, name, 5, seed=7))
    other = corrupt(x, name, 5, seed=8)
    if name in DETERMINISTIC:
        assert np.array_equal(a, other)
    else:
        assert not np.array_equal(a, other)


def test_saturate_on_grayscale_is_not_applicable():
    with pytest.raises(NotApplicable, match="saturate") as err:
        corrupt(np.zeros((1, 16, 16, 1), np.float32), "saturate", 1)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad, match", [
    (dict(name="blurry"), "unknown corruption 'blurry'; valid: gaussian_noise, shot_noise"),
    (dict(severity=0), "severity"), (dict(severity=6), "severity"), (dict(severity=2.5), "severity"),
    (dict(severity=True), "severity"),
    (dict(x=np.zeros((16, 16, 3), np.float32)), "NHWC"), (dict(x=np.zeros((1, 16, 16, 2), np.float32)), "NHWC"),
    (dict(x=np.zeros((1, 7, 16, 3), np.float32)), "at least 8x8"),
    (dict(x=np.zeros((1, 16, 16, 3), np.uint8)), "to_float"),
    (dict(x=np.full((1, 16, 16, 3), np.nan, np.float32)), "NaN"),
])
def test_bad_arguments_raise_one_line_input_errors(bad, match):
    args = dict(x=np.zeros((1, 16, 16, 3), np.float32), name="fog", severity=1) | bad
    with pytest.raises(InputError, match=match) as err:
        corrupt(args["x"], args["name"], args["severity"])
    assert "\n" not in str(err.value)
    if "name" in bad:  # the message lists every valid name
        assert all(n in str(err.value) for n in CORRUPTIONS)


def test_empty_batch_and_out_of_range_input():
    assert corrupt(np.zeros((0, 16, 16, 3), np.float32), "fog", 3).shape == (0, 16, 16, 3)
    y = corrupt(np.full((1, 16, 16, 1), 1.5, np.float32), "contrast", 1)  # clipped first, then corrupted
    assert np.allclose(y, 1.0)


# -- scaling to the image size ----------------------------------------------------------------------


def test_spatial_scale_is_one_at_224_and_proportional_elsewhere():
    assert spatial_scale(224, 224) == 1.0
    assert spatial_scale(28, 56) == pytest.approx(0.125)
    x = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    for name in ("defocus_blur", "motion_blur", "snow"):
        assert np.array_equal(corrupt(x, name, 3, seed=1), corrupt(x, name, 3, seed=1, spatial_scale=1.0))
    small = x[:, :28, :28]
    assert not np.allclose(corrupt(small, "defocus_blur", 5), corrupt(small, "defocus_blur", 5, spatial_scale=1.0))


def test_batch_members_do_not_influence_each_other(clean_rgb):
    """Corrupting a batch equals corrupting each image alone with the same random draws."""
    rng = np.random.default_rng(5)
    x = np.concatenate([clean_rgb, clean_rgb[:, ::-1], rng.random(clean_rgb.shape, dtype=np.float32)])
    n, h, w, _ = x.shape

    def same(fn, *per_image):
        batch = fn(x, *per_image)
        for i in range(n):
            assert np.allclose(batch[i], fn(x[i:i + 1], *[a[i:i + 1] for a in per_image])[0], atol=1e-5)

    for name in sorted(DETERMINISTIC):
        same(lambda b, name=name: corrupt(b, name, 4))
    same(lambda b, a: _blur.motion_blur_apply(b, PARAMS["motion_blur"][2], 1.0, a), rng.uniform(-45, 45, n))
    same(lambda b, o: _blur.glass_blur_apply(b, PARAMS["glass_blur"][3], 1.0, [o]),
         rng.integers(-3, 3, (n, h - 6, w - 6, 2)))
    same(lambda b, d, u, v: _blur.elastic_apply(b, PARAMS["elastic_transform"][4], 0.3, d, u, v),
         rng.uniform(-2, 2, (n, 3, 2)), rng.uniform(-1, 1, (n, h, w)), rng.uniform(-1, 1, (n, h, w)))
    for sev in (1, 4):
        c = PARAMS["spatter"][sev - 1]
        same(lambda b, z, c=c: _weather.spatter_apply(b, c, z), rng.normal(c[0], c[1], (n, h, w)).astype(np.float32))
    c = PARAMS["snow"][2]
    same(lambda b, z, a: _weather.snow_apply(b, c, z, a), rng.normal(c[0], c[1], (n, h, w)).astype(np.float32),
         rng.uniform(-135, -45, n))
    same(lambda b, f: _weather.fog_apply(b, PARAMS["fog"][1], f), rng.random((n, h, w), dtype=np.float32))


@pytest.mark.parametrize("name", sorted(DETERMINISTIC - {"saturate", "jpeg_compression"}))
def test_grayscale_equals_rgb_with_equal_channels(name, clean_gray):
    rgb = np.repeat(clean_gray, 3, axis=3)
    assert np.allclose(corrupt(clean_gray, name, 3)[..., 0], corrupt(rgb, name, 3)[..., 0], atol=1e-5)


# -- damage grows with severity ---------------------------------------------------------------------


def reference_curve(ref, name):
    """The reference's mean PSNR per severity on the fixture image, or None where none is stored."""
    names = list(ref["psnr_names"])
    if name in names:
        return ref["psnr"][names.index(name)]
    if name in DETERMINISTIC:
        clean = to_float(ref["clean_rgb"])[None]
        return np.array([psnr(to_float(ref[f"rgb__{name}__{s}"])[None], clean)[0] for s in range(1, 6)])
    return None


FLAT_DB = 0.25  # a reference step within +-0.25 dB is flat; ours may then rise by that much too


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_damage_grows_with_severity_as_in_the_reference(name, ref, clean_rgb):
    """PSNR falls from each severity to the next, except where the reference's own curve rises.

    At the reference's pixel constants (spatial_scale=1), on 64 seeded copies of the fixture image
    (a fixed seed, so the test is deterministic).
    """
    x = np.repeat(clean_rgb, 1 if name in DETERMINISTIC else 64, axis=0)
    ours = [float(psnr(corrupt(x, name, s, seed=11, spatial_scale=1.0), x).mean()) for s in range(1, 6)]
    theirs = reference_curve(ref, name)
    if theirs is None:  # elastic: the ImageNet-C script's constants, which imagecorruptions changed
        # severities 1-2 are large smooth warps (affine jitter 24 and 49 px), 3-5 small local ones (5 px)
        assert [round(c[2], 2) for c in PARAMS[name]] == [24.4, 48.8, 4.88, 4.88, 4.88]
        theirs = np.array([0.0, 0.0, 99.0, 0.0, 0.0])  # exempt only the 2 -> 3 step
    checked = 0
    for s in range(4):
        ref_step, step = theirs[s + 1] - theirs[s], ours[s + 1] - ours[s]
        if ref_step > FLAT_DB:
            continue  # the reference itself gets better here (e.g. saturate 2 -> 3 multiplies S by 2)
        if ref_step < -FLAT_DB:  # the reference falls: so must we
            assert step < 0, f"{name}: PSNR {ours} does not fall at severity {s + 2}"
        else:  # the reference is flat: so may we be
            assert step <= FLAT_DB + max(ref_step, 0), f"{name}: PSNR {ours} rises at severity {s + 2}"
        checked += 1
    assert checked >= 2


def test_damage_grows_at_default_scale_on_28px_grayscale(clean_gray):
    """With sizes scaled, severity 5 still damages a 28x28 image more than severity 1."""
    x = np.concatenate([clean_gray, clean_gray[:, ::-1]])[:, 4:60:2, 4:60:2]
    x = np.repeat(x, 8, axis=0)
    for name in CORRUPTIONS:
        if name in ("saturate", "elastic_transform"):  # RGB only; elastic: see the test above
            continue
        p1, p5 = (float(psnr(corrupt(x, name, s, seed=2), x).mean()) for s in (1, 5))
        assert p5 < p1 + FLAT_DB, name
        assert p5 < 40, f"{name} at severity 5 leaves a 28 px image nearly untouched"


# -- agreement with the reference -------------------------------------------------------------------

# Mean absolute error allowed against the reference's seed-free outputs, in [0, 1] units.
TOLERANCE = {
    # the reference adds 0.1/0.3/0.5 to 8-bit levels: x.5 ties, which the fixture rounds half to even
    "brightness": 0.0021,
    # PIL rounds its intermediate (horizontally resized) image to 8 bits; we stay in float
    "pixelate": 0.0022,
    # coverage-sampled disk and a zero-padded anti-alias blur (see disk_kernel) differ from the
    # point-sampled disk on its rim pixels; largest at radius 8-10 (severities 4-5)
    "defocus_blur": 0.009,
}


@pytest.mark.parametrize("sev", range(1, 6))
@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_seed_free_corruptions_match_the_reference(name, sev, ref, clean_rgb, clean_gray):
    tol = TOLERANCE.get(name, ROUNDING)
    ours = corrupt(clean_rgb, name, sev, spatial_scale=1.0)[0]
    assert mae(ours, to_float(ref[f"rgb__{name}__{sev}"])) <= tol
    if name != "saturate":
        ours = corrupt(clean_gray, name, sev, spatial_scale=1.0)[0, ..., 0]
        assert mae(ours, to_float(ref[f"gray__{name}__{sev}"])) <= tol


@pytest.mark.parametrize("sev", range(1, 6))
def test_motion_blur_matches_the_reference_at_a_fixed_angle(sev, ref, clean_rgb):
    out = _blur.motion_blur_apply(clean_rgb, PARAMS["motion_blur"][sev - 1], 1.0, ref["motion_angles"][sev - 1:sev])
    assert mae(np.clip(out, 0, 1)[0], to_float(ref[f"motion__{sev}"])) <= ROUNDING


@pytest.mark.parametrize("sev", range(1, 6))
def test_glass_blur_shuffle_is_exactly_the_reference_loop(sev, ref, clean_rgb):
    """Closed-form shuffle == the reference's sequential copy loop, pixel for pixel, given its draws."""
    c = PARAMS["glass_blur"][sev - 1]
    offsets = ref[f"glass_offsets__{sev}"].astype(np.int64)
    y = ref[f"glass_before__{sev}"].astype(np.float32)[None]
    for off in offsets:
        y = _blur._glass_shuffle(y, off[None], c[1])
    assert np.array_equal(y[0], ref[f"glass_shuffled__{sev}"])
    out = _blur.glass_blur_apply(clean_rgb, c, 1.0, [o[None] for o in offsets])
    # the reference truncates the blurred image to 8 bits before shuffling: a bias of -0.5/255
    assert mae(np.clip(out, 0, 1)[0], to_float(ref[f"glass__{sev}"])) <= 0.0025


@pytest.mark.parametrize("sev", range(1, 6))
def test_elastic_warp_matches_the_reference_given_its_noise(sev, ref, clean_rgb):
    """imagecorruptions' displacement step (smoothing + bilinear warp), replayed with its noise."""
    u = ref[f"elastic_noise__{sev}"]
    alpha = 250 * [0.05, 0.065, 0.085, 0.1, 0.12][sev - 1]
    sigma, max_d = 64 * 0.01, 64 * 0.005  # imagecorruptions' constants for a 64 px image
    dx = _blur.displacement(u[0:1] * max_d, sigma, alpha)
    dy = _blur.displacement(u[1:2] * max_d, sigma, alpha)
    rows, cols = np.mgrid[0:64, 0:64].astype(np.float32)
    out = _ops.remap_bilinear(clean_rgb, rows[None] + dy, cols[None] + dx, "reflect")
    assert mae(np.clip(out, 0, 1)[0], to_float(ref[f"elastic__{sev}"])) <= ROUNDING


@pytest.mark.parametrize("i", [0, 1])
def test_affine_step_matches_opencv_warp_affine(i, ref, clean_rgb):
    out = _blur.affine_warp(clean_rgb, ref[f"affine_delta__{i}"][None].astype(np.float64))
    # OpenCV interpolates at 1/32 pixel; the difference stays within the rounding allowance
    assert mae(out[0], to_float(ref[f"affine__{i}"])) <= ROUNDING


@pytest.mark.parametrize("sev", range(1, 6))
def test_spatter_matches_the_reference_given_its_noise(sev, ref, clean_rgb):
    out = _weather.spatter_apply(clean_rgb, PARAMS["spatter"][sev - 1], ref[f"spatter_noise__{sev}"][None])
    # exact Euclidean distance instead of OpenCV's 5x5 chamfer mask, and a numpy Canny
    assert mae(np.clip(out, 0, 1)[0], to_float(ref[f"spatter__{sev}"])) <= 0.003


class ReplayRng:
    """Hands out recorded uniform draws in order, as the reference drew them."""

    def __init__(self, draws):
        self.draws, self.pos = draws, 0

    def uniform(self, low, high, shape):
        k = int(np.prod(shape))
        out = self.draws[self.pos:self.pos + k].reshape(shape)
        self.pos += k
        return out


@pytest.mark.parametrize("sev", range(1, 6))
def test_fog_matches_the_reference_given_its_draws(sev, ref, clean_rgb):
    c = PARAMS["fog"][sev - 1]
    replay = ReplayRng(ref[f"fog_draws__{sev}"])
    fractal = _ops.plasma_fractal(replay, 1, 64, c[1])
    assert replay.pos == ref[f"fog_draws__{sev}"].size
    assert mae(np.clip(_weather.fog_apply(clean_rgb, c, fractal), 0, 1)[0], to_float(ref[f"fog__{sev}"])) <= ROUNDING


# Extra allowance (dB) beyond sampling error where the implementation knowingly differs.
PSNR_EXTRA_DB = {
    "frost": 0.5,  # procedural textures matched in mean and spread, not the photographs
    "spatter": 0.8,  # OpenCV's Canny and chamfer distance re-done in numpy (see the replay test)
    "snow": 0.2,  # zoom trimmed around the centre (ImageNet-C) instead of the top-left
}


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur",
                                  "motion_blur", "snow", "frost", "fog", "spatter"])
def test_random_corruptions_damage_as_much_as_the_reference(name, ref, clean_rgb):
    """Mean PSNR over 64 draws, at the reference's pixel constants, vs the reference's 64 draws.

    Allowed: 3 standard errors of a difference of two 64-draw means (our spread stands in for the
    reference's), plus PSNR_EXTRA_DB.
    """
    x = np.repeat(clean_rgb, 64, axis=0)
    row = ref["psnr"][list(ref["psnr_names"]).index(name)]
    for sev in range(1, 6):
        p = psnr(corrupt(x, name, sev, seed=0, spatial_scale=1.0), x)
        allowed = 3 * np.sqrt(2) * p.std(ddof=1) / np.sqrt(len(p)) + PSNR_EXTRA_DB.get(name, 0.0)
        assert abs(p.mean() - row[sev - 1]) <= allowed, f"{name} {sev}: {p.mean():.2f} vs {row[sev - 1]:.2f} dB"


# -- noise statistics against the published parameters ---------------------------------------------


def clipped_normal_moments(sigma: float, a: float) -> tuple[float, float]:
    """Mean and std of clip(N(0, sigma^2), -a, a)."""
    t = a / sigma
    ey2 = sigma ** 2 * (2 * stats.norm.cdf(t) - 1) - 2 * a * sigma * stats.norm.pdf(t) + 2 * a * a * stats.norm.sf(t)
    return 0.0, float(np.sqrt(ey2))


@pytest.mark.parametrize("sev", range(1, 6))
def test_noise_statistics_follow_the_published_parameters(sev):
    """On a mid-grey batch (98,304 values) the perturbation has the published spread."""
    x = np.full((8, 64, 64, 3), 0.5, np.float32)
    n = x.size

    def check(delta, mean, std):
        assert abs(delta.mean() - mean) <= 5 * std / np.sqrt(n)
        assert delta.std() == pytest.approx(std, rel=0.015)  # 1/sqrt(2n) = 0.23 % standard error

    sigma = PARAMS["gaussian_noise"][sev - 1]
    check(corrupt(x, "gaussian_noise", sev, seed=sev) - x, *clipped_normal_moments(sigma, 0.5))
    sigma = PARAMS["speckle_noise"][sev - 1]  # x + x * N(0, sigma^2): sigma scaled by x = 0.5
    check(corrupt(x, "speckle_noise", sev, seed=sev) - x, *clipped_normal_moments(0.5 * sigma, 0.5))

    lam = PARAMS["shot_noise"][sev - 1]  # clip(Poisson(0.5 lam) / lam, 0, 1)
    k = np.arange(0, 400)
    vals = np.minimum(k / lam, 1.0) - 0.5
    pmf = stats.poisson.pmf(k, 0.5 * lam)
    mean = float((pmf * vals).sum())
    check(corrupt(x, "shot_noise", sev, seed=sev) - x, mean, float(np.sqrt((pmf * (vals - mean) ** 2).sum())))

    amount = PARAMS["impulse_noise"][sev - 1]  # half of the hit values to 0, half to 1
    y = corrupt(x, "impulse_noise", sev, seed=sev)
    half = amount / 2
    for level in (0.0, 1.0):
        assert abs(np.mean(y == level) - half) <= 5 * np.sqrt(half * (1 - half) / n)
    assert np.all((y == 0) | (y == 1) | (y == 0.5))


# -- the uint8 path, blocks and threads -------------------------------------------------------------

# corrupt_uint8 draws these from their own 8-bit paths; every other one equals the float path bit for bit
U8_OWN = {"jpeg_compression", "pixelate", "shot_noise", "gaussian_noise", "speckle_noise"}


@pytest.fixture()
def small_blocks(monkeypatch):
    """Blocks of 2 images for 32x32 RGB, so that a batch of 5 runs as 3 blocks on the thread pool."""
    monkeypatch.setattr(corruptions_module, "BLOCK_VALUES", 2 * 32 * 32 * 3)
    monkeypatch.setenv("EDGEPROF_THREADS", "3")


def _batch(ref, n=5):
    rgb = ref["clean_rgb"][::2, ::2]  # 32x32
    views = [rgb, rgb[::-1], rgb[:, ::-1], np.swapaxes(rgb, 0, 1), rgb[::-1, ::-1]]
    return np.stack([np.ascontiguousarray(views[i % 5]) for i in range(n)])


def test_uint8_path_equals_the_float_path(ref, small_blocks):
    x = _batch(ref)
    for name in CORRUPTIONS:
        ours = corrupt_uint8(x, name, 3, seed=5)
        assert ours.dtype == np.uint8 and ours.shape == x.shape
        via_float = to_uint8(corrupt(to_float(x), name, 3, seed=5))
        diff = np.abs(ours.astype(int) - via_float)
        if name in ("gaussian_noise", "speckle_noise"):  # same draws in 0-255 units: a rare tie apart
            assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3, name
        elif name == "pixelate":  # PIL rounds its intermediate to 8 bits, the float path does not
            assert diff.max() <= 1, name
        elif name not in U8_OWN:
            assert diff.max() == 0, name


def test_uint8_jpeg_and_pixelate_are_the_reference_bit_for_bit(ref):
    x = ref["clean_rgb"][None]
    for name in ("jpeg_compression", "pixelate"):
        for sev in range(1, 6):
            assert np.array_equal(corrupt_uint8(x, name, sev, spatial_scale=1.0)[0], ref[f"rgb__{name}__{sev}"])


def test_results_do_not_depend_on_the_thread_count(ref, small_blocks, monkeypatch):
    x = _batch(ref)
    for name in RANDOM:
        monkeypatch.setenv("EDGEPROF_THREADS", "1")
        one = corrupt(to_float(x), name, 2, seed=9), corrupt_uint8(x, name, 2, seed=9)
        monkeypatch.setenv("EDGEPROF_THREADS", "3")
        three = corrupt(to_float(x), name, 2, seed=9), corrupt_uint8(x, name, 2, seed=9)
        assert np.array_equal(one[0], three[0]) and np.array_equal(one[1], three[1]), name
        # blocks draw independently: the blocks of identical images differ
        if name != "frost":  # frost's random crop can coincide on a 32 px image
            same = corrupt(np.repeat(to_float(x[:1]), 5, axis=0), name, 2, seed=9)
            assert not np.array_equal(same[0], same[2]), name


def test_a_single_block_split_over_threads_gives_the_same_result(ref, monkeypatch):
    """Small images make one block whose per-image work (spatter) and seed-free corruptions (cut
    into equal parts) spread over the threads: the result is the same for any thread count."""
    x = np.stack([ref["clean_gray"][i::8, j::8] for i in range(3) for j in range(3)])[..., None][:, :28, :28]
    for name in ["spatter", *sorted(DETERMINISTIC - {"saturate"})]:
        monkeypatch.setenv("EDGEPROF_THREADS", "1")
        one = corrupt(to_float(x), name, 3, seed=4), corrupt_uint8(x, name, 3, seed=4)
        monkeypatch.setenv("EDGEPROF_THREADS", "3")
        three = corrupt(to_float(x), name, 3, seed=4), corrupt_uint8(x, name, 3, seed=4)
        assert np.array_equal(one[0], three[0]) and np.array_equal(one[1], three[1]), name


@pytest.mark.parametrize("h, w, ch", [(224, 224, 3), (28, 28, 1), (37, 53, 3), (61, 20, 1), (130, 150, 3),
                                      (250, 90, 1), (9, 8, 3)])
def test_uint8_pixelate_and_jpeg_equal_pil_at_any_size(h, w, ch):
    """The 8-bit paths (numpy's fixed-point BOX pass, PIL's codec objects) against PIL's own calls."""
    from PIL import Image

    x = np.random.default_rng(h * w).integers(0, 256, (2, h, w, ch), dtype=np.uint8)
    x[1] = np.clip(np.linspace(0, 300, w)[None, :, None] + x[1] // 8, 0, 255).astype(np.uint8)  # smooth
    for sev in (1, 3, 5):
        pix, jpg = corrupt_uint8(x, "pixelate", sev), corrupt_uint8(x, "jpeg_compression", sev)
        c, q = PARAMS["pixelate"][sev - 1], PARAMS["jpeg_compression"][sev - 1]
        for i in range(2):
            im = Image.fromarray(x[i, ..., 0] if ch == 1 else x[i])
            small = (max(1, int(w * c)), max(1, int(h * c)))
            want = np.asarray(im.resize(small, Image.BOX).resize((w, h), Image.NEAREST)).reshape(h, w, ch)
            assert np.array_equal(pix[i], want), (sev, i)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=q)
            buf.seek(0)
            assert np.array_equal(jpg[i], np.asarray(Image.open(buf)).reshape(h, w, ch)), (sev, i)


def test_truncated_distance_is_the_exact_euclidean_distance():
    from scipy import ndimage

    rng = np.random.default_rng(2)
    for shape, p, limit in [((3, 40, 57), 0.01, 10), ((2, 31, 18), 0.05, 3), ((2, 64, 64), 0.002, 20)]:
        mask = rng.random(shape) < p
        mask[:, 0, 0] = True  # an edge in every image
        ours = _weather.truncated_distance(mask, limit)
        exact = np.stack([ndimage.distance_transform_edt(~m) for m in mask])
        assert np.allclose(ours, np.minimum(exact, limit), atol=1e-5)


def test_a_seed_sequence_is_not_consumed(ref, small_blocks):
    x = to_float(_batch(ref))
    ss = np.random.SeedSequence([4, 2])
    a = corrupt(x, "gaussian_noise", 1, seed=ss)
    assert ss.n_children_spawned == 0
    assert np.array_equal(a, corrupt(x, "gaussian_noise", 1, seed=ss))
    assert np.array_equal(a, corrupt(x, "gaussian_noise", 1, seed=np.random.SeedSequence([4, 2])))


@pytest.mark.parametrize("sev", [1, 3, 5])
def test_uint8_shot_noise_follows_the_poisson_law(sev):
    """The alias tables draw clip(Poisson(c x) / c, 0, 1) exactly: spread and mean at two grey levels."""
    lam = PARAMS["shot_noise"][sev - 1]
    for level in (64, 200):
        x = np.full((8, 64, 64, 3), level, np.uint8)
        y = corrupt_uint8(x, "shot_noise", sev, seed=sev).astype(np.float64)
        k = np.arange(0, 400)
        pmf = stats.poisson.pmf(k, level / 255 * lam)
        vals = np.floor(np.minimum(k / lam, 1.0) * 255 + 0.5)
        mean = float((pmf * vals).sum())
        std = float(np.sqrt((pmf * (vals - mean) ** 2).sum()))
        assert abs(y.mean() - mean) <= 5 * std / np.sqrt(y.size)
        assert y.std() == pytest.approx(std, rel=0.015)
        assert set(np.unique(y)) <= set(vals[pmf > 0])


@pytest.mark.parametrize("bad, match", [
    (np.zeros((1, 16, 16, 3), np.float32), "uint8"), (np.zeros((16, 16, 3), np.uint8), "NHWC"),
    (np.zeros((1, 6, 16, 1), np.uint8), "at least 8x8"),
])
def test_uint8_path_bad_input_is_one_line(bad, match):
    with pytest.raises(InputError, match=match) as err:
        corrupt_uint8(bad, "fog", 1)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="severity"):
        corrupt_uint8(np.zeros((1, 16, 16, 3), np.uint8), "fog", 7)
    assert corrupt_uint8(np.zeros((0, 16, 16, 3), np.uint8), "fog", 1).shape == (0, 16, 16, 3)


# -- non-image inputs -------------------------------------------------------------------------------


def test_gaussian_noise_at_a_given_snr():
    x = np.random.default_rng(0).normal(0, 2.0, (16, 50, 8)).astype(np.float32)
    for snr_db in (0.0, 10.0, 20.0):
        y = tabular.gaussian_noise_snr(x, snr_db, seed=1)
        assert y.shape == x.shape and y.dtype == np.float32
        ratio = np.mean(x.astype(np.float64) ** 2, axis=(1, 2)) / np.mean((y - x).astype(np.float64) ** 2, axis=(1, 2))
        assert 10 * np.log10(ratio).mean() == pytest.approx(snr_db, abs=0.1)  # 400 values a sample
    assert np.array_equal(tabular.gaussian_noise_snr(x, 5, seed=3), tabular.gaussian_noise_snr(x, 5, seed=3))
    zero = np.zeros((2, 4), np.float32)
    assert np.array_equal(tabular.gaussian_noise_snr(zero, 10, seed=0), zero)


def test_feature_dropout_zeroes_exactly_the_fraction_per_sample():
    x = np.random.default_rng(0).random((10, 5, 8), dtype=np.float32) + 1
    y = tabular.feature_dropout(x, 0.25, seed=4)
    zeros = (y == 0).reshape(10, -1).sum(axis=1)
    assert np.all(zeros == 10)
    assert np.array_equal(y[y != 0], x[y != 0])
    assert np.array_equal(y, tabular.feature_dropout(x, 0.25, seed=4))
    assert not np.array_equal(y, tabular.feature_dropout(x, 0.25, seed=5))
    assert np.array_equal(tabular.feature_dropout(x, 0.0, seed=4), x)
    assert np.all(tabular.feature_dropout(x, 1.0, seed=4) == 0)


def test_scaling_and_bad_perturbation_arguments():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(tabular.scale(x, 0.5), x * 0.5)
    for call in (lambda: tabular.feature_dropout(x, 1.5), lambda: tabular.gaussian_noise_snr(x, float("nan")),
                 lambda: tabular.scale(x, float("inf")), lambda: tabular.scale(np.array([np.nan]), 2.0),
                 lambda: tabular.scale(np.float32(3), 2.0)):
        with pytest.raises(InputError):
            call()


# -- the command line -------------------------------------------------------------------------------


def run(args):
    return CliRunner().invoke(cli, ["corrupt", *map(str, args)])


@pytest.fixture()
def gray_npz(tmp_path, ref):
    x = np.stack([ref["clean_gray"], ref["clean_gray"][::-1], ref["clean_gray"].T])[:, ::2, ::2]  # (3, 32, 32)
    path = tmp_path / "gray.npz"
    np.savez(path, x=x, y=np.array([0, 1, 2], np.int64))
    return path


def test_cli_corrupts_uint8_grayscale_and_keeps_labels(tmp_path, gray_npz):
    out, sheet = tmp_path / "out.npz", tmp_path / "sheet.png"
    result = run([gray_npz, "--corruption", "zoom_blur", "--severity", "3", "-o", out, "--preview", sheet])
    assert result.exit_code == 0, result.output
    with np.load(out, allow_pickle=False) as z:
        x, y = z["x"], z["y"]
    with np.load(gray_npz, allow_pickle=False) as z:
        x0 = z["x"]
    assert x.dtype == np.uint8 and x.shape == x0.shape and y.tolist() == [0, 1, 2]
    expected = to_uint8(corrupt(to_float(x0)[..., None], "zoom_blur", 3))[..., 0]
    assert np.array_equal(x, expected)
    from PIL import Image
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 100  # 3 rows, 6 columns


def test_cli_float_rgb_all_corruptions_is_seeded(tmp_path, ref):
    data = tmp_path / "rgb.npz"
    np.savez(data, x=to_float(ref["clean_rgb"])[None, ::2, ::2].repeat(2, axis=0))
    outs = []
    for i in range(2):
        out = tmp_path / f"all{i}.npz"
        args = [data, "--corruption", "all", "--severity", "2", "--seed", "5", "-o", out]
        result = run(args + (["--preview", tmp_path / "all.png"] if i == 0 else []))
        assert result.exit_code == 0, result.output
        with np.load(out, allow_pickle=False) as z:
            outs.append({k: z[k] for k in z.files})
    assert sorted(outs[0]) == sorted(CORRUPTIONS)
    assert all(outs[0][k].dtype == np.float32 and outs[0][k].shape == (2, 32, 32, 3) for k in outs[0])
    assert all(np.array_equal(outs[0][k], outs[1][k]) for k in outs[0])
    assert (tmp_path / "all.png").stat().st_size > 1000


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case", ["missing", "not_npz", "no_x", "dims", "channels", "dtype", "nan", "empty",
                                  "range", "small", "name", "severity0", "severity6", "saturate_gray", "labels"])
def test_cli_bad_input_is_one_line_and_exit_1(case, tmp_path):
    good = np.zeros((2, 16, 16), np.uint8)
    data = {
        "missing": tmp_path / "nope.npz",
        "not_npz": tmp_path / "text.npz",
        "no_x": _write(tmp_path / "d.npz", images=good),
        "dims": _write(tmp_path / "d.npz", x=np.zeros((2, 16), np.uint8)),
        "channels": _write(tmp_path / "d.npz", x=np.zeros((2, 16, 16, 4), np.uint8)),
        "dtype": _write(tmp_path / "d.npz", x=np.zeros((2, 16, 16), np.int64)),
        "nan": _write(tmp_path / "d.npz", x=np.full((2, 16, 16), np.nan, np.float32)),
        "empty": _write(tmp_path / "d.npz", x=np.zeros((0, 16, 16), np.uint8)),
        "range": _write(tmp_path / "d.npz", x=np.full((2, 16, 16), 255.0, np.float32)),
        "small": _write(tmp_path / "d.npz", x=np.zeros((2, 4, 4), np.uint8)),
        "labels": _write(tmp_path / "d.npz", x=good, y=np.zeros(3, np.int64)),
    }.get(case, None)
    if case == "not_npz":
        data.write_text("hello")
    if data is None:
        data = _write(tmp_path / "d.npz", x=good)
    name = {"name": "blurry", "saturate_gray": "saturate"}.get(case, "fog")
    severity = {"severity0": 0, "severity6": 6}.get(case, 1)
    result = run([data, "--corruption", name, "--severity", severity, "-o", tmp_path / "o.npz"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    assert not (tmp_path / "o.npz").exists()
    if case == "name":
        assert "valid: all, gaussian_noise" in lines[0] and "saturate" in lines[0]


def test_fixture_records_its_reference_environment(ref):
    versions = json.loads(str(ref["versions"]))
    assert versions["imagecorruptions"] == "1.1.2"
    assert FIXTURE.stat().st_size < 2 * 2 ** 20
    buf = io.BytesIO()  # every array loads without pickle
    np.savez(buf, **ref)


def test_benchmark_reference_environment_pins_the_fixture_versions(ref):
    """`make bench` builds the reference from these pins: the versions that wrote the fixtures."""
    from edgeprof import tools

    spec = tools.REFERENCES["imagecorruptions"]
    pins = dict(a.lower().split("==") for step in spec.steps for a in step if "==" in a)
    versions = json.loads(str(ref["versions"]))
    for package in ("imagecorruptions", "numpy", "scipy", "scikit-image", "pillow", "opencv-python-headless"):
        assert pins[package] == versions[package], package
    assert "imagecorruptions" not in tools.TOOLS  # not a user-facing `edgeprof tools` entry
    assert tools.tool_env("imagecorruptions", Path("/nonexistent")).dir.name == "imagecorruptions-1.1.2"
