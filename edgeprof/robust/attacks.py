"""L-infinity adversarial attacks on raw images (float32 NHWC in [0, 1]; eps in that domain).

* ``square_attack_linf``: the black-box Square Attack (Andriushchenko, Croce, Flammarion & Hein,
  ECCV 2020), following the authors' ``square_attack_linf`` (github.com/max-andr/square-attack):
  vertical-stripe initialisation, squares of side round(sqrt(p * H * W)) whose fraction p halves
  at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a 10,000-query schedule
  rescaled to the budget, one sign per channel over the square, the margin loss
  ``z_y - max_{j != y} z_j``, and a step kept only when it lowers that loss. It only needs the
  model's outputs, so it runs through any runtime (int8 ONNX, full-int8 TFLite) via ``predict``.
  Only images classified correctly are attacked; queries are counted for those, the first
  (initialisation) query included, as in the paper. With a finite budget its robust accuracy is
  an upper bound on the true one. Randomness is drawn per row (a counter-based hash of the seed,
  the row's index, the iteration and the draw), so an image's attack does not depend on which
  other images share its batch: rows split across boards give the single-board result.
* ``fgsm`` and ``pgd``: transfer attacks crafted on a PyTorch source model (Goodfellow et al.
  2015; Madry et al. 2018: random start in the eps-ball, step eps/4, cross-entropy loss). The
  variant's InputSpec is reproduced in torch (``torch_transform``) so that gradients are taken
  through the same preprocessing the deployed model gets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import EdgeprofError, InputError

F32 = np.float32
# the paper's schedule: (last iteration of the 10,000-query schedule, divisor of p_init)
P_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
              (6000, 128), (8000, 256), (10000, 512))
SQUARE_P_INIT = 0.05  # the authors' default for L-inf
LINF_TOLERANCE = 1e-6


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """Fraction of pixels changed at iteration ``it`` of ``n_iters`` (schedule rescaled)."""
    i = int(it / n_iters * 10000)
    for last, div in P_SCHEDULE:
        if i <= last:
            return p_init / div
    return p_init


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea & Flood 2014) on uint64 arrays."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def row_uniform(seed: int, rows: np.ndarray, it: int, stream: int,
                tail: tuple[int, ...] = ()) -> np.ndarray:
    """Uniforms in [0, 1), shape ``(len(rows),) + tail``, each a function of (seed, row,
    iteration, stream, element) only: the same for a row whatever rows are drawn beside it."""
    with np.errstate(over="ignore"):
        h = _mix(np.full(len(rows), seed % 2**64, dtype=np.uint64) + _GOLDEN)
        for v in (np.asarray(rows, dtype=np.int64).astype(np.uint64),
                  np.uint64(it % 2**64), np.uint64(stream % 2**64)):
            h = _mix((h ^ v) + _GOLDEN)
        k = int(np.prod(tail)) if tail else 1
        z = _mix(h[:, None] + (np.arange(1, k + 1, dtype=np.uint64) * _GOLDEN)[None, :])
    u = (z >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)
    return u.reshape((len(rows),) + tuple(tail))


def margin_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """z_y - max_{j != y} z_j per row: positive while the image is classified correctly."""
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(labels))
    true = z[rows, labels]
    other = z.copy()
    other[rows, labels] = -np.inf
    return true - other.max(axis=1)


@dataclass
class SquareResult:
    x_adv: np.ndarray            # float32 NHWC in [0, 1]; the clean image where none was needed
    queries: np.ndarray          # per image; 0 for images misclassified when clean
    clean_correct: np.ndarray    # bool per image
    robust: np.ndarray           # bool: still classified correctly after the attack

    @classmethod
    def concat(cls, parts: list["SquareResult"]) -> "SquareResult":
        """The result of consecutive row shards, in row order."""
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("x_adv", "queries", "clean_correct", "robust")))

    def summary(self, eps: float, x: np.ndarray) -> dict[str, Any]:
        n = len(self.robust)
        fooled = self.clean_correct & ~self.robust
        q = self.queries[fooled]
        out = {"robust_accuracy": float(self.robust.mean()) if n else None, "n": int(n),
               "n_attacked": int(self.clean_correct.sum()), "n_fooled": int(fooled.sum()),
               "queries_mean": float(q.mean()) if q.size else None,
               "queries_median": float(np.median(q)) if q.size else None,
               "queries_mean_all": float(self.queries[self.clean_correct].mean())
               if self.clean_correct.any() else None}
        out.update(linf_check(self.x_adv, x, eps))
        return out


def square_attack_linf(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                       labels: np.ndarray, eps: float, n_queries: int,
                       p_init: float = SQUARE_P_INIT, seed: int = 0,
                       progress: Callable[[int, int], None] | None = None,
                       rows: np.ndarray | None = None) -> SquareResult:
    """Untargeted L-inf Square Attack with at most ``n_queries`` queries per image.

    ``predict`` maps a float32 NHWC batch in [0, 1] to outputs (N, classes); each call with the
    images still being attacked is one query for each of them. ``rows``: each image's index in
    the whole evaluation (default 0..N-1), which seeds its random draws.
    """
    x = np.asarray(x, dtype=F32)
    ids = np.arange(len(x)) if rows is None else np.asarray(rows, dtype=np.int64)
    n, h, w, c = x.shape
    correct = np.asarray(predict(x)).argmax(axis=1) == labels
    queries = np.zeros(n, dtype=np.int64)
    x_best = x.copy()
    robust = correct.copy()
    idx = np.flatnonzero(correct)
    if idx.size == 0 or n_queries < 1:
        return SquareResult(x_best, queries, correct, robust)
    e = F32(eps)
    xa, ya = x[idx], labels[idx]
    ida = ids[idx]
    stripes = np.where(row_uniform(seed, ida, 0, 0, (1, w, c)) < 0.5, -e, e).astype(F32)
    xb = np.clip(xa + stripes, 0, 1)
    m_best = margin_loss(predict(xb), ya)
    q = np.ones(len(idx), dtype=np.int64)
    side_max = max(1, min(h, w) - 1)
    for it in range(n_queries - 1):
        todo = np.flatnonzero(m_best > 0)
        if todo.size == 0:
            break
        if progress:
            progress(it + 1, n_queries)
        xc, xbc = xa[todo], xb[todo]
        deltas = xbc - xc
        s = int(round(math.sqrt(p_selection(p_init, it, n_queries) * h * w)))
        s = min(max(s, 1), side_max)
        m = len(todo)
        idt = ida[todo]
        rows = (np.floor(row_uniform(seed, idt, it + 1, 1) * (h - s)).astype(np.int64)[:, None]
                + np.arange(s)) if h > s else np.zeros((m, s), int)
        cols = (np.floor(row_uniform(seed, idt, it + 1, 2) * (w - s)).astype(np.int64)[:, None]
                + np.arange(s)) if w > s else np.zeros((m, s), int)
        ii, rr, cc = np.arange(m)[:, None, None], rows[:, :, None], cols[:, None, :]
        win_x, win_best = xc[ii, rr, cc], xbc[ii, rr, cc]
        # draw signs for the square until they change the current best image (the reference's
        # `while` loop); a bounded number of redraws guards against eps below float resolution
        pending = np.ones(m, dtype=bool)
        for attempt in range(64):
            k = np.flatnonzero(pending)
            if k.size == 0:
                break
            signs = np.where(row_uniform(seed, idt[k], it + 1, 3 + attempt, (1, 1, c)) < 0.5,
                             -e, e).astype(F32)
            deltas[ii[k], rr[k], cc[k]] = signs
            new = np.clip(win_x[k] + deltas[ii[k], rr[k], cc[k]], 0, 1)
            same = np.all(np.abs(new - win_best[k]) < 1e-7, axis=(1, 2, 3))
            pending[k] = same
        x_new = np.clip(xc + deltas, 0, 1)
        m_new = margin_loss(predict(x_new), ya[todo])
        better = m_new < m_best[todo]
        m_best[todo[better]] = m_new[better]
        xb[todo[better]] = x_new[better]
        q[todo] += 1
    x_best[idx] = xb
    queries[idx] = q
    robust[idx] = m_best > 0
    return SquareResult(x_best, queries, correct, robust)


def random_sign_noise(x: np.ndarray, eps: float, seed: int = 0) -> np.ndarray:
    """x + eps * uniform random signs, clipped to [0, 1]: the no-search control for an attack."""
    rng = np.random.default_rng(seed)
    e = F32(eps)
    return np.clip(x + np.where(rng.random(x.shape) < 0.5, -e, e).astype(F32), 0, 1)


def linf_check(x_adv: np.ndarray, x: np.ndarray, eps: float) -> dict[str, Any]:
    """Largest |x_adv - x| and whether every adversarial input respects eps and [0, 1]."""
    d = np.abs(np.asarray(x_adv, np.float64) - np.asarray(x, np.float64))
    max_linf = float(d.max()) if d.size else 0.0
    inside = bool(d.size == 0 or (np.min(x_adv) >= 0 and np.max(x_adv) <= 1))
    return {"eps": float(eps), "max_linf": max_linf,
            "within_eps": bool(max_linf <= eps + LINF_TOLERANCE and inside)}


# -- transfer attacks (PyTorch) -------------------------------------------------------------------


def torch_transform(spec: dict[str, Any] | None, raw_dtype: str) -> Callable:
    """The InputSpec in torch, applied to float32 NHWC images in [0, 1] (the raw domain x 255
    for uint8 data): resize, BGR, scale, mean, std, layout, as the worker's apply_input_spec.
    The layout defaults to NCHW, PyTorch's."""
    import torch
    import torch.nn.functional as F

    s = dict(spec or {})
    scale = s.get("scale")
    if scale is None:
        scale = 1.0 / 255.0 if raw_dtype == "uint8" else 1.0
    to_raw = 255.0 if raw_dtype == "uint8" else 1.0
    mean = torch.tensor(s["mean"], dtype=torch.float32) if s.get("mean") is not None else None
    std = torch.tensor(s["std"], dtype=torch.float32) if s.get("std") is not None else None
    layout = s.get("layout") or "NCHW"
    resize, bgr = s.get("resize"), s.get("channel_order") == "BGR"

    def apply(x01):
        x = x01 * to_raw
        if resize and tuple(resize) != tuple(x.shape[1:3]):
            x = F.interpolate(x.permute(0, 3, 1, 2), size=tuple(resize), mode="bilinear",
                              align_corners=False, antialias=False).permute(0, 2, 3, 1)
        if bgr and x.shape[-1] == 3:
            x = x.flip(-1)
        x = x * float(scale)
        if mean is not None:
            x = x - mean
        if std is not None:
            x = x / std
        return x.permute(0, 3, 1, 2) if layout == "NCHW" else x

    return apply


def _grad_sign(module, transform, x, y):
    import torch

    x = x.detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(module(transform(x)), y)
    (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


def _batched(fn: Callable, x: np.ndarray, labels: np.ndarray, batch: int) -> np.ndarray:
    import torch

    out = np.empty_like(x)
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))
        yb = torch.from_numpy(np.asarray(labels[i:i + batch], dtype=np.int64))
        out[i:i + batch] = fn(xb, yb, i).detach().numpy()
    return out


def fgsm(module, transform: Callable, x: np.ndarray, labels: np.ndarray, eps: float,
         batch: int = 256) -> np.ndarray:
    """One signed-gradient step of size eps, clipped to [0, 1]."""
    import torch

    module.eval()

    def step(xb, yb, _):
        return torch.clamp(xb + eps * _grad_sign(module, transform, xb, yb), 0, 1)

    return _batched(step, np.asarray(x, F32), labels, batch)


def pgd(module, transform: Callable, x: np.ndarray, labels: np.ndarray, eps: float,
        steps: int = 10, step_size: float | None = None, seed: int = 0,
        batch: int = 256) -> np.ndarray:
    """L-inf PGD: uniform random start in the eps-ball, ``steps`` signed-gradient steps of
    ``step_size`` (eps/4), each projected onto the eps-ball and [0, 1]."""
    import torch

    module.eval()
    alpha = eps / 4 if step_size is None else step_size
    gen = torch.Generator().manual_seed(int(seed))

    def attack(xb, yb, _):
        lo, hi = torch.clamp(xb - eps, 0, 1), torch.clamp(xb + eps, 0, 1)
        noise = (torch.rand(xb.shape, generator=gen) * 2 - 1) * eps
        xa = torch.minimum(torch.maximum(xb + noise, lo), hi)
        for _ in range(int(steps)):
            xa = xa + alpha * _grad_sign(module, transform, xa, yb)
            xa = torch.minimum(torch.maximum(xa, lo), hi)
        return xa

    return _batched(attack, np.asarray(x, F32), labels, batch)


def craft_transfer(im, wanted: list, factory: str | None, weights: Path | None,
                   source_spec: dict[str, Any], cache, seed: int,
                   tick: Callable[[str, float], None]) -> dict[str, dict[str, Any]]:
    """FGSM / PGD sets (``wanted``: configs with name, eps, limit, steps) crafted on the PyTorch
    source and cached like corrupted sets (``cache``: a DataCache; ``im``: an ImageSet), each
    checked in the raw domain as it will be fed: {attack: {eps label: {"path", "n", "summary"}}}."""
    if not wanted:
        return {}
    if not factory:
        raise InputError("fgsm and pgd are transfer attacks: give the PyTorch source with "
                         "--torch module:factory --weights W.pt")
    if im.labels is None:
        raise InputError(f"{im.data.path.name}: attacks need labels 'y'")
    from ..data import file_sha256
    from ..passes.torch_load import build_module, load_weights, require_torch

    torch = require_torch()
    module = build_module(factory)
    if weights is not None:
        load_weights(module, weights)
    module.eval()
    wsha = file_sha256(Path(weights)) if weights else None
    transform = torch_transform(source_spec, im.raw_dtype)
    out: dict[str, dict[str, Any]] = {}
    for a in wanted:
        n = min(a.limit or im.n, im.n)
        x, y = im.float01(n), im.labels[:n]
        out[a.name] = {}
        for label, eps in a.eps:
            tick(f"crafting {a.name} {label} on {factory}")
            key = {"kind": "adversarial", "attack": a.name, "eps": eps, "rows": n,
                   "steps": a.steps if a.name == "pgd" else 1, "seed": seed,
                   "data_sha256": im.data.sha256, "factory": factory,
                   "weights_sha256": wsha, "spec": source_spec}

            def make(a=a, eps=eps) -> dict[str, np.ndarray]:
                if a.name == "fgsm":
                    adv = fgsm(module, transform, x, y, eps)
                else:
                    adv = pgd(module, transform, x, y, eps, steps=a.steps, seed=seed)
                return {im.name: im.to_raw(adv, exact=True), "y": y}

            path = cache.get(key, make)
            with np.load(path, allow_pickle=False) as z:
                stored = z[im.name]
            adv01 = stored.astype(np.float32).reshape(x.shape)
            if im.raw_dtype == "uint8":
                adv01 = adv01 / np.float32(255)
            summary = linf_check(adv01, x, eps)  # what is fed, checked in the raw domain
            if not summary["within_eps"]:
                raise EdgeprofError(f"{a.name} {label}: adversarial set leaves the eps-ball "
                                    f"({summary['max_linf']:g} > {eps:g})")
            with torch.no_grad():
                src = np.concatenate([module(transform(torch.from_numpy(
                    np.ascontiguousarray(adv01[i:i + 256])))).argmax(1).numpy()
                    for i in range(0, n, 256)])
            summary.update(source=factory, source_robust_accuracy=float((src == y).mean()))
            if a.name == "pgd":
                summary.update(steps=a.steps, step_size=eps / 4)
            out[a.name][label] = {"path": path, "n": n, "summary": summary}
            tick(f"crafted {a.name} {label}", n)
    return out
