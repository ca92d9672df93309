"""mAP@0.5 of a detector as an edgeprof task metric: ``--metric examples.detection.metric:map50``
(or ``path/to/metric.py:map50``).

edgeprof calls ``map50(outputs, labels)`` with the model's outputs by name and the data file's
labels (here the flat ``y_boxes`` (M, 5: x1, y1, x2, y2, class) and ``y_boxes_offsets``
(N + 1,)). Boxes are decoded by ``decode`` (yours to replace for your model's head), and the
mean average precision is computed by pycocotools (COCOeval, IoU 0.5, up to 100 detections per
image), not by hand. mAP is not a mean over images, so ``map50`` returns per-image statistics
(that image's detections and ground truth, padded to a fixed width) and ``map50.reduce``
computes mAP from any set of rows: edgeprof's bootstrap CI resamples images and calls it again.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

SCORE_MIN = 0.05   # cells scoring below this are not detections


def decode(outputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Per image, its detections as (k, 6): x1, y1, x2, y2, score, class. The example
    detector's ``scores`` are 0-255 intensities over 255 after the default InputSpec, so a
    cell is a detection when its score passes SCORE_MIN; one class (0)."""
    scores, boxes = np.asarray(outputs["scores"]), np.asarray(outputs["boxes"])
    out = []
    for s, b in zip(scores, boxes):
        keep = s > SCORE_MIN
        out.append(np.concatenate([b[keep], s[keep, None], np.zeros((keep.sum(), 1))], axis=1))
    return out


def ground_truth(labels: dict[str, np.ndarray], n: int) -> list[np.ndarray]:
    """Per image, its boxes (g, 5) from the flat labels and their offsets."""
    flat, off = np.asarray(labels["y_boxes"]), np.asarray(labels["y_boxes_offsets"])
    return [flat[off[i]:off[i + 1]] for i in range(n)]


def map50(outputs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> np.ndarray:
    """Per image: [dets, gts, its detections (D x 6), its ground truth (G x 5)], zero padded to
    the widest image of this call."""
    dets = decode(outputs)
    gts = ground_truth(labels, len(dets))
    d, g = max([len(x) for x in dets] + [1]), max([len(x) for x in gts] + [1])
    rows = np.zeros((len(dets), 4 + 6 * d + 5 * g))
    for i, (de, gt) in enumerate(zip(dets, gts)):
        rows[i, :4] = d, g, len(de), len(gt)
        rows[i, 4:4 + 6 * len(de)] = de.ravel()
        rows[i, 4 + 6 * d:4 + 6 * d + 5 * len(gt)] = gt.ravel()
    return rows


def coco_map50(dets: list[np.ndarray], gts: list[np.ndarray]) -> float:
    """AP at IoU 0.5 averaged over classes (COCOeval's stats[1], computed by COCOeval with
    only the parameters it reads); images are 1..len(gts), annotation ids from 1 (COCOeval
    reads a matched id of 0 as no match)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    classes = sorted({int(c) for gt in gts for c in gt[:, 4]} | {int(c) for de in dets
                                                                 for c in de[:, 5]})
    anns = [{"id": k + 1, "image_id": i + 1, "category_id": int(b[4]) + 1, "iscrowd": 0,
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
             "area": float((b[2] - b[0]) * (b[3] - b[1]))}
            for k, (i, b) in enumerate((i, b) for i, gt in enumerate(gts) for b in gt)]
    if not anns:
        return 0.0
    res = [[i + 1, b[0], b[1], b[2] - b[0], b[3] - b[1], b[4], int(b[5]) + 1]
           for i, de in enumerate(dets) for b in de]
    if not res:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):   # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {"info": {}, "licenses": [], "images": [{"id": i + 1} for i in range(len(gts))],
                      "annotations": anns,
                      "categories": [{"id": c + 1, "name": str(c)} for c in classes]}
        gt.createIndex()
        dt = gt.loadRes(np.asarray(res, dtype=np.float64))
        ev = COCOeval(gt, dt, "bbox")
        # only what AP@0.5 needs (COCOeval's stats[1]: IoU 0.5, all areas, 100 detections)
        ev.params.iouThrs = np.array([0.5])
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.params.maxDets = [100]
        ev.evaluate()
        ev.accumulate()
    p = ev.eval["precision"][0, :, :, 0, 0]   # recall thresholds x classes
    return float(p[p > -1].mean()) if (p > -1).any() else 0.0


def _reduce(rows: np.ndarray) -> float:
    """mAP@0.5 of any rows of ``map50`` (a bootstrap resample repeats rows: each row is then
    an image of its own)."""
    d = int(rows[0, 0])                       # detection slots per row (column 1: box slots)
    dets = [r[4:4 + 6 * int(r[2])].reshape(-1, 6) for r in rows]
    gts = [r[4 + 6 * d:4 + 6 * d + 5 * int(r[3])].reshape(-1, 5) for r in rows]
    return coco_map50(dets, gts)


map50.reduce = _reduce
map50.resamples = 200
