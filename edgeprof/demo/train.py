"""Train the bundled Fashion-MNIST demo model and write the demo data files.

Run as::

    python -m edgeprof.demo.train [--epochs 3] [--out DIR] [--seed 0] [--fashion-dir DIR]

Reads the idx ``.gz`` files of the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``), trains :func:`edgeprof.demo.model.fashion_cnn`
deterministically on CPU and writes into ``--out`` (default: the package's
``edgeprof/demo/data`` folder):

- ``fashion_cnn.pt``: state_dict only (loads with ``torch.load(p, weights_only=True)``);
- ``fashion_cnn.onnx``: opset 17, input ``input`` (N,1,28,28) float32, output ``logits`` (N,10),
  dynamic batch axis;
- ``eval.npz``: stratified seeded subset of the TEST split (``x`` uint8 NHWC, ``y`` int64);
- ``calib.npz``: stratified seeded subset of the TRAIN split;
- ``train_subset.npz``: further TRAIN images, disjoint from ``calib`` (fine-tuning after pruning);
- ``preprocess.toml``: the InputSpec (x / 255, NCHW, float32);
- ``demo.json``: provenance (versions, accuracy, timings, sha256 of every file, class names).

Rows of ``calib`` and ``train_subset`` whose bytes equal any ``eval`` row are excluded, so the
sets never overlap by content (Fashion-MNIST has a few exact duplicates across its splits).

Never fetches anything from the network.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import struct
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

from edgeprof.demo import CLASS_NAMES, DATA_DIR, FILE_NAMES

DEFAULT_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
PREPROCESS_TOML = """\
# InputSpec of the bundled demo model (see docs: conventions, "Preprocessing").
# Raw uint8 NHWC images -> x * scale -> (x - mean) / std -> NCHW float32.
layout = "NCHW"
channel_order = "RGB"  # irrelevant for one channel; kept for a complete spec
scale = 0.00392156862745098
mean = [0.0]
std = [1.0]
dtype = "float32"
"""

# --------------------------------------------------------------------------- data


def read_idx(path: Path) -> np.ndarray:
    """Read one idx file (optionally gzip-compressed) into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an idx file")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file (magic {raw[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(raw) - offset != count:
        raise ValueError(f"{path}: expected {count} bytes of data, found {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims).copy()


def load_fashion(fashion_dir: Path) -> dict[str, np.ndarray]:
    """Return train/test images as uint8 NHWC ``(N,28,28,1)`` and labels as int64."""
    fashion_dir = Path(fashion_dir)
    missing = [n for n in IDX_FILES.values() if not (fashion_dir / n).is_file()]
    if missing:
        raise SystemExit(
            f"Fashion-MNIST idx files not found in {fashion_dir}: {', '.join(missing)}.\n"
            "Install the Debian package `dataset-fashion-mnist` or pass --fashion-dir."
        )
    out = {k: read_idx(fashion_dir / n) for k, n in IDX_FILES.items()}
    for split in ("train", "test"):
        x, y = out[f"{split}_x"], out[f"{split}_y"]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (x.shape[0],):
            raise ValueError(f"unexpected Fashion-MNIST {split} shapes {x.shape} / {y.shape}")
        out[f"{split}_x"] = x[..., None]
        out[f"{split}_y"] = y.astype(np.int64)
    return out


def row_hashes(x: np.ndarray) -> list[str]:
    """sha256 of each row's bytes (the convention used for overlap checks)."""
    return [hashlib.sha256(np.ascontiguousarray(r).tobytes()).hexdigest() for r in x]


def stratified_pick(
    y: np.ndarray, per_class: int, rng: np.random.Generator, candidates: np.ndarray | None = None
) -> np.ndarray:
    """Pick ``per_class`` indices of each label at random from ``candidates`` (sorted result)."""
    idx = np.arange(len(y)) if candidates is None else np.asarray(candidates)
    chosen = []
    for c in range(len(CLASS_NAMES)):
        pool = idx[y[idx] == c]
        if len(pool) < per_class:
            raise ValueError(f"class {c}: only {len(pool)} candidates for {per_class}")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def make_splits(data: dict[str, np.ndarray], seed: int, n_eval: int, n_calib: int, n_train: int):
    """Choose eval (test split), calib and train_subset (train split, disjoint) indices."""
    k = len(CLASS_NAMES)
    for name, n in (("eval", n_eval), ("calib", n_calib), ("train-subset", n_train)):
        if n % k:
            raise SystemExit(f"--{name} must be a multiple of {k} (stratified), got {n}")
    rng = np.random.default_rng(seed)
    eval_idx = stratified_pick(data["test_y"], n_eval // k, rng)
    eval_hashes = set(row_hashes(data["test_x"][eval_idx]))
    train_h = row_hashes(data["train_x"])
    clean = np.array([i for i, h in enumerate(train_h) if h not in eval_hashes], dtype=np.int64)
    calib_idx = stratified_pick(data["train_y"], n_calib // k, rng, clean)
    # also keep duplicates of calib rows out of train_subset (disjoint by content, not only index)
    calib_hashes = {train_h[i] for i in calib_idx}
    rest = np.array([i for i in clean if train_h[i] not in calib_hashes], dtype=np.int64)
    train_idx = stratified_pick(data["train_y"], n_train // k, rng, rest)
    excluded = len(data["train_x"]) - len(clean)
    return eval_idx, calib_idx, train_idx, excluded


# --------------------------------------------------------------------------- model


def to_tensor(x_uint8: np.ndarray):
    """uint8 NHWC -> float32 NCHW in [0, 1] (the InputSpec of preprocess.toml)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x_uint8.transpose(0, 3, 1, 2))).float().div_(255.0)


def predict_torch(model, x_uint8: np.ndarray, batch: int = 1000) -> np.ndarray:
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x_uint8), batch):
            outs.append(model(to_tensor(x_uint8[i : i + batch])).numpy())
    return np.concatenate(outs)


def train(data, epochs: int, seed: int, batch_size: int, lr: float, threads: int, log=print):
    import torch
    from torch import nn

    from edgeprof.demo.model import fashion_cnn

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    model = fashion_cnn()
    x_all = to_tensor(data["train_x"])
    y_all = torch.from_numpy(data["train_y"])
    n = len(x_all)
    steps_per_epoch = (n + batch_size - 1) // batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.25
    )
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size : (s + 1) * batch_size]
            xb, yb = x_all[idx], y_all[idx]
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yb).sum())
            total += len(idx)
        log(
            f"epoch {epoch + 1}/{epochs}: loss {loss_sum / total:.4f} "
            f"train-acc {correct / total:.4f} ({time.perf_counter() - t0:.1f} s)"
        )
    model.eval()
    return model, time.perf_counter() - t0


def export_onnx(model, f) -> None:
    """Export to ``f`` (a path or a binary file object)."""
    import torch

    model.eval()
    dummy = torch.zeros(1, 1, 28, 28, dtype=torch.float32)
    with warnings.catch_warnings():
        # "legacy TorchScript-based exporter" notice: dynamo=False is deliberate (no onnxscript)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(f) if isinstance(f, (str, Path)) else f,
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=True,
        )


def onnx_parity(onnx_path: Path, model, x_uint8: np.ndarray) -> dict:
    """Compare onnxruntime and PyTorch outputs on the same raw images."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    inp = to_tensor(x_uint8).numpy()
    ort_out = np.concatenate(
        [sess.run(["logits"], {"input": inp[i : i + 500]})[0] for i in range(0, len(inp), 500)]
    )
    pt_out = predict_torch(model, x_uint8)
    return {
        "onnxruntime_version": ort.__version__,
        "rows": int(len(x_uint8)),
        "top1_agreement": float(np.mean(ort_out.argmax(1) == pt_out.argmax(1))),
        "max_abs_diff": float(np.max(np.abs(ort_out - pt_out))),
        "ort_logits": ort_out,
    }


# --------------------------------------------------------------------------- files


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, then rename (no half-written files)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; shipped files must be world-readable
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """An ``np.savez_compressed``-compatible archive with fixed member timestamps, so the same
    arrays always give the same bytes (and the same sha256)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
    return buf.getvalue()


def torch_bytes(obj) -> bytes:
    """``torch.save`` into memory (a file path would leak its temporary name into the archive)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def onnx_bytes(model) -> bytes:
    buf = io.BytesIO()
    export_onnx(model, buf)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeprof.demo.train", description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DATA_DIR, help=f"output folder (default {DATA_DIR})")
    p.add_argument("--fashion-dir", type=Path, default=DEFAULT_FASHION_DIR)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--eval", type=int, default=2000, help="eval rows from the test split")
    p.add_argument("--calib", type=int, default=500, help="calibration rows from the train split")
    p.add_argument(
        "--train-subset", type=int, default=3500,
        help="fine-tuning rows from the train split, disjoint from calib (default 3500: "
        "keeps all shipped files under 3 MB)",
    )
    args = p.parse_args(argv)

    import torch

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = load_fashion(args.fashion_dir)
    eval_idx, calib_idx, train_idx, excluded = make_splits(
        data, args.seed, args.eval, args.calib, args.train_subset
    )
    print(
        f"splits: eval {len(eval_idx)} (test), calib {len(calib_idx)} + train_subset "
        f"{len(train_idx)} (train); {excluded} train rows equal to an eval row excluded"
    )

    model, train_s = train(data, args.epochs, args.seed, args.batch_size, args.lr, args.threads)
    test_logits = predict_torch(model, data["test_x"])
    test_acc = float(np.mean(test_logits.argmax(1) == data["test_y"]))
    eval_x, eval_y = data["test_x"][eval_idx], data["test_y"][eval_idx]
    eval_acc = float(np.mean(test_logits[eval_idx].argmax(1) == eval_y))
    print(f"test accuracy (10k): {test_acc:.4f}   eval.npz accuracy: {eval_acc:.4f}   train {train_s:.1f} s")

    paths = {k: out / name for k, name in FILE_NAMES.items()}
    _write_bytes(paths["pt"], torch_bytes(model.state_dict()))
    _write_bytes(paths["onnx"], onnx_bytes(model))
    _write_bytes(paths["eval"], npz_bytes(x=eval_x, y=eval_y))
    _write_bytes(paths["calib"], npz_bytes(x=data["train_x"][calib_idx], y=data["train_y"][calib_idx]))
    _write_bytes(
        paths["train_subset"], npz_bytes(x=data["train_x"][train_idx], y=data["train_y"][train_idx])
    )
    _write_bytes(paths["preprocess"], PREPROCESS_TOML.encode("utf-8"))

    parity = onnx_parity(paths["onnx"], model, eval_x)
    onnx_eval_acc = float(np.mean(parity.pop("ort_logits").argmax(1) == eval_y))
    print(
        f"onnx parity on eval.npz: top-1 agreement {parity['top1_agreement']:.4f}, "
        f"max |diff| {parity['max_abs_diff']:.3g}, onnx accuracy {onnx_eval_acc:.4f}"
    )

    files = {
        name: {"sha256": sha256_file(paths[k]), "bytes": paths[k].stat().st_size}
        for k, name in FILE_NAMES.items()
        if k != "json"
    }
    n_params = sum(int(t.numel()) for t in model.state_dict().values() if t.is_floating_point())
    info = {
        "schema": "edgeprof.demo/1",
        "model": {
            "factory": "edgeprof.demo.model:fashion_cnn",
            "float_params_in_state_dict": n_params,
            "input": {"name": "input", "shape": ["N", 1, 28, 28], "dtype": "float32"},
            "output": {"name": "logits", "shape": ["N", 10]},
            "onnx_opset": 17,
        },
        "dataset": {
            "name": "Fashion-MNIST",
            "source": "Debian package dataset-fashion-mnist (idx .gz files)",
            "eval": f"{len(eval_idx)} rows, stratified seeded subset of the 10k test split",
            "calib": f"{len(calib_idx)} rows, stratified seeded subset of the 60k train split",
            "train_subset": (
                f"{len(train_idx)} rows of the train split, disjoint from calib; "
                "no calib/train_subset row equals an eval row"
            ),
            "train_rows_equal_to_eval_excluded": int(excluded),
            "eval_indices_sha256": hashlib.sha256(eval_idx.astype("<i8").tobytes()).hexdigest(),
        },
        "training": {
            "epochs": args.epochs,
            "seed": args.seed,
            "batch_size": args.batch_size,
            "optimizer": "AdamW(weight_decay=1e-4) + OneCycleLR",
            "max_lr": args.lr,
            "threads": args.threads,
            "train_rows": int(len(data["train_x"])),
            "training_seconds": round(train_s, 2),
        },
        "accuracy": {
            "test_10k": test_acc,
            "eval_npz": eval_acc,
            "eval_npz_onnxruntime": onnx_eval_acc,
        },
        "onnx_parity_eval_npz": parity,
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "class_names": list(CLASS_NAMES),
        "files": files,
    }
    _write_bytes(paths["json"], (json.dumps(info, indent=2) + "\n").encode("utf-8"))
    total = sum(f["bytes"] for f in files.values()) + paths["json"].stat().st_size
    print(f"wrote {len(files) + 1} files to {out} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
