"""The detection metric example (examples/detection): mAP@0.5 of a tiny generated detector
through edgeprof.accuracy, checked against pycocotools run here
directly on onnxruntime's outputs (COCO objects built here, not by the example's encoding)."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import onnxruntime as ort
import pytest

import edgeprof
from examples.detection import metric as det
from examples.detection.model import build_detector, make_data


@pytest.fixture(autouse=True)
def _pycocotools():
    import importlib.util

    from tests.conftest import require
    require(importlib.util.find_spec("pycocotools") is not None,
            "pycocotools is not installed: pip install 'edgeprof[examples]'")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("det")
    return build_detector(d / "detector.onnx"), make_data(d / "eval.npz", n=24)


def coco_ap50_directly(model, data) -> float:
    """Outputs by onnxruntime, boxes by the user's decode, AP by COCOeval on objects built here
    (annotation ids from 1: COCOeval reads a matched id of 0 as no match)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    z = np.load(data, allow_pickle=False)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = z["x"].astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255)
    outs = dict(zip(["scores", "boxes"], sess.run(None, {"image": x})))
    dets = det.decode(outs)
    flat, off = z["y_boxes"], z["y_boxes_offsets"]
    gt = COCO()
    gt.dataset = {"images": [{"id": i} for i in range(len(x))], "categories": [{"id": 7}],
                  "annotations": [{"id": k + 1, "image_id": i, "category_id": 7, "iscrowd": 0,
                                   "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                                   "area": float((b[2] - b[0]) * (b[3] - b[1]))}
                                  for k, (i, b) in enumerate(
                                      (i, b) for i in range(len(x)) for b in flat[off[i]:off[i + 1]])]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([{"image_id": i, "category_id": 7, "score": float(b[4]),
                          "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
                         for i, de in enumerate(dets) for b in de])
        e = COCOeval(gt, dt, "bbox")
        e.params.iouThrs = np.array([0.5])
        e.evaluate()
        e.accumulate()
    p = e.eval["precision"][0, :, 0, 0, -1]          # IoU 0.5, all areas, 100 detections
    return float(p[p > -1].mean())


def test_map50_through_the_api_equals_pycocotools(files, tmp_path):
    model, data = files
    expected = coco_ap50_directly(model, data)
    assert 0.3 < expected < 1.0          # off-grid squares are missed: a figure that can move
    res = edgeprof.accuracy(str(model), str(data), metric="examples.detection.metric:map50",
                            cache_dir=tmp_path / "c")
    rec = res.records[0]
    assert rec["metric"] == "examples.detection.metric:map50" and rec["higher_is_better"]
    assert rec["score"] == pytest.approx(expected, abs=1e-9)
    lo, hi = rec["score_ci"]                  # a bootstrap over images, through map50.reduce
    assert lo < rec["score"] < hi and rec["n"] == 24


def test_perfect_detections_score_one_and_the_rows_keep_every_box(files):
    _, data = files
    z = dict(np.load(data, allow_pickle=False))
    gts = det.ground_truth(z, 24)
    n_max = max(len(g) for g in gts)
    # a "model" whose outputs are the ground truth itself, in the detector's layout
    scores = np.zeros((24, 16), np.float32)
    boxes = np.zeros((24, 16, 4), np.float32)
    for i, g in enumerate(gts):
        scores[i, :len(g)] = 0.9
        boxes[i, :len(g)] = g[:, :4]
    rows = det.map50({"scores": scores, "boxes": boxes}, z)
    assert rows.shape == (24, 4 + 6 * n_max + 5 * n_max)
    assert det.map50.reduce(rows) == pytest.approx(1.0)
    scores[0, 0] = 0.0                        # one object missed: below 1
    assert det.map50.reduce(det.map50({"scores": scores, "boxes": boxes}, z)) < 1.0
