"""A tiny real detector and its data, made here (nothing is downloaded).

The detector is an ONNX graph over a 4 x 4 grid of 8 x 8 cells on a 32 x 32 grayscale image:

- ``scores`` (N, 16): each cell's mean intensity (a bright object in the cell scores high);
- ``boxes`` (N, 16, 4): each cell's box ``x1, y1, x2, y2`` in pixels, moved to the cell's
  intensity-weighted centre (an object that straddles cells gives shifted, partial boxes).

The data are 32 x 32 uint8 images with one to three bright 8 x 8 squares, half of them on the
grid, half anywhere; their ground truth is a flat ``y_boxes`` (M, 5: x1, y1, x2, y2, class)
with ``y_boxes_offsets`` (N + 1,), as edgeprof's conventions lay out labels whose rows hold
different counts. Run ``python -m examples.detection.model OUTDIR`` to write ``detector.onnx``
and ``eval.npz`` there.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SIZE, CELL = 32, 8
GRID = SIZE // CELL


def anchors() -> np.ndarray:
    """(16, 4) cell boxes, row-major over the grid."""
    out = [[c * CELL, r * CELL, (c + 1) * CELL, (r + 1) * CELL]
           for r in range(GRID) for c in range(GRID)]
    return np.asarray(out, dtype=np.float32)


def build_detector(path: str | Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    mean_k = np.full((1, 1, CELL, CELL), 1.0 / CELL ** 2, np.float32)
    offs = np.arange(CELL, dtype=np.float32) - (CELL - 1) / 2
    moment_k = np.stack([np.tile(offs, (CELL, 1)), np.tile(offs[:, None], (1, CELL))])
    moment_k = (moment_k / CELL ** 2)[:, None].astype(np.float32)        # (2, 1, 8, 8): x, y
    inits = [numpy_helper.from_array(mean_k, "mean_k"), numpy_helper.from_array(moment_k, "moment_k"),
             numpy_helper.from_array(np.array([1e-3], np.float32), "eps"),
             numpy_helper.from_array(anchors()[None], "anchors"),
             numpy_helper.from_array(np.array([0, GRID * GRID], np.int64), "flat"),
             numpy_helper.from_array(np.array([0, GRID * GRID, 2], np.int64), "cells2")]
    nodes = [
        helper.make_node("Conv", ["image", "mean_k"], ["obj"], strides=[CELL, CELL]),
        helper.make_node("Reshape", ["obj", "flat"], ["scores"]),
        helper.make_node("Conv", ["image", "moment_k"], ["moment"], strides=[CELL, CELL]),
        helper.make_node("Add", ["obj", "eps"], ["obj_eps"]),
        helper.make_node("Div", ["moment", "obj_eps"], ["shift"]),          # pixels, (N,2,4,4)
        helper.make_node("Transpose", ["shift"], ["shift_t"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["shift_t", "cells2"], ["shift_c"]),     # (N, 16, 2)
        helper.make_node("Concat", ["shift_c", "shift_c"], ["delta"], axis=2),
        helper.make_node("Add", ["anchors", "delta"], ["boxes"]),
    ]
    graph = helper.make_graph(
        nodes, "grid_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", GRID * GRID]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", GRID * GRID, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def make_data(path: str | Path, n: int = 24, seed: int = 0) -> Path:
    """Images with 1-3 bright squares and their boxes (flat, with row offsets)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 20, (n, SIZE, SIZE, 1)).astype(np.uint8)
    boxes, offsets = [], [0]
    for i in range(n):
        for k in range(int(rng.integers(1, 4))):
            if k % 2 == 0:   # on the grid
                x0, y0 = (int(v) * CELL for v in rng.integers(0, GRID, 2))
            else:            # anywhere
                x0, y0 = (int(v) for v in rng.integers(0, SIZE - CELL + 1, 2))
            x[i, y0:y0 + CELL, x0:x0 + CELL] = 230
            boxes.append([x0, y0, x0 + CELL, y0 + CELL, 0])
        offsets.append(len(boxes))
    np.savez(path, x=x, y_boxes=np.asarray(boxes, np.float32),
             y_boxes_offsets=np.asarray(offsets, np.int64))
    return Path(path)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    print(build_detector(out / "detector.onnx"), make_data(out / "eval.npz"))
