"""Task metrics against hand-computed values, a user metric from a module in tmp_path, and the
labels of a data file (y_<name>, offsets)."""
from __future__ import annotations

import numpy as np
import pytest

from edgeprof.data import load_npz
from edgeprof.errors import InputError
from edgeprof.metrics import get_metric, labels_of


def test_top1_and_topk_by_hand():
    logits = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    y = np.array([1, 1, 0, 0])
    r = get_metric("top1").score({"logits": logits}, {"y": y})
    assert r["score"] == 0.5 and r["n"] == 4 and r["higher_is_better"]   # rows 0 and 3
    assert r["score_ci"][0] < 0.5 < r["score_ci"][1]
    # top-2: row 1 (label 1 is 2nd), row 2 (label 0 is 3rd: miss) -> 3 of 4
    assert get_metric("topk:2").score({"logits": logits}, {"y": y})["score"] == 0.75


def test_mae_rmse_by_hand_and_named_labels():
    out = {"box": np.array([[0.0, 0.0], [1.0, 3.0]]), "cls": np.zeros((2, 2))}
    lab = {"y_box": np.array([[1.0, 1.0], [1.0, 1.0]])}
    # mae rows: (1+1)/2 = 1, (0+2)/2 = 1 -> 1.0 ; rmse: sqrt(mean((1+1)/2, (0+4)/2)) = sqrt(1.5)
    assert get_metric("mae").score(out, lab)["score"] == 1.0
    r = get_metric("rmse").score(out, lab)
    assert r["score"] == pytest.approx(np.sqrt(1.5)) and not r["higher_is_better"]


def test_miou_by_hand_channels_first_and_last():
    y = np.array([[[0, 0], [1, 1]]])                      # 1 image, 2x2
    pred = np.array([[[0, 1], [1, 1]]])                   # one pixel wrong
    # 3 classes (class 2 appears nowhere: no union, left out of the mean), N,C,H,W
    scores = np.stack([(pred == 0), (pred == 1), np.zeros_like(pred, bool)], axis=1).astype(np.float32)
    # class 0: I=1, U=2 -> 0.5 ; class 1: I=2, U=3 -> 2/3 ; mean 7/12
    assert get_metric("miou").score({"seg": scores}, {"y": y})["score"] == pytest.approx(7 / 12)
    nhwc = scores.transpose(0, 2, 3, 1)
    assert get_metric("miou").score({"seg": nhwc}, {"y": y})["score"] == pytest.approx(7 / 12)


def test_agreement_against_the_root():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    out = np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2]])
    r = get_metric("agreement").score({"p": out}, {"ref:p": ref})
    assert r["score"] == pytest.approx(2 / 3)
    # regression outputs: within 1 % of the root's range
    ref = np.array([[0.0], [10.0]])
    assert get_metric("agreement").score({"p": ref + [[0.05], [0.5]]}, {"ref:p": ref})["score"] == 0.5
    # agreement:<output> compares the named head, not the first
    outs = {"box": np.zeros((2, 4)), "prob": np.array([[0.9, 0.1], [0.2, 0.8]])}
    refs = {"ref:box": np.eye(4)[[1, 2]], "ref:prob": np.array([[0.6, 0.4], [0.7, 0.3]])}
    assert get_metric("agreement").score(outs, refs)["score"] == 0.0
    assert get_metric("agreement:prob").score(outs, refs)["score"] == 0.5
    with pytest.raises(InputError, match="no output 'nope'"):
        get_metric("agreement:nope").score(outs, refs)


def test_error_rule_of_each_direction():
    from edgeprof.metrics import error_of
    assert error_of(get_metric("top1"), 0.75) == 0.25
    assert error_of(get_metric("mae"), 0.75) == 0.75


def test_user_metric_from_a_module_in_tmp_path(tmp_path):
    f = tmp_path / "my_metric.py"
    f.write_text("import numpy as np\n"
                 "def boxes_within_one(outputs, labels):\n"
                 "    d = np.abs(outputs['box'] - labels['y_box']).max(axis=1)\n"
                 "    return (d <= 1).astype(float)\n"
                 "def loss(outputs, labels):\n"
                 "    return np.ones(len(labels['y']))\n"
                 "loss.lower_is_better = True\n")
    out = {"box": np.array([[0.0, 0.0], [5.0, 0.0]])}
    lab = {"y_box": np.zeros((2, 2))}
    r = get_metric(f"{f}:boxes_within_one").score(out, lab)
    assert r["score"] == 0.5 and r["higher_is_better"]
    assert not get_metric(f"{f}:loss").higher_is_better
    with pytest.raises(InputError, match="no function"):
        get_metric(f"{f}:nope")
    with pytest.raises(InputError, match="one of top1"):
        get_metric("f1")


def test_labels_of_a_data_file_with_offsets(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 4), np.float32), y=np.array([0, 1, 2]),
             y_boxes=np.arange(12, dtype=np.float32).reshape(6, 2),
             y_boxes_offsets=np.array([0, 1, 3, 6]), y_kp=np.zeros((3, 10), np.float32))
    ds = load_npz(tmp_path / "d.npz")
    assert set(ds.x) == {"x"} and set(ds.labels) == {"y_boxes", "y_boxes_offsets", "y_kp"}
    lab = labels_of(ds, 2)
    assert lab["y_kp"].shape == (2, 10) and lab["y_boxes"].shape == (6, 2) and len(lab["y"]) == 2
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 4), np.float32), y_kp=np.zeros((2, 10)))
    with pytest.raises(InputError, match="labels 'y_kp' have 2 rows, the inputs 3"):
        load_npz(tmp_path / "bad.npz")
