"""Square Attack (through the worker, on the deployed file) and transfer attacks (FGSM, PGD)."""
from __future__ import annotations

import numpy as np
import pytest

from edgeprof.data import load_npz
from edgeprof.demo import demo_paths
from edgeprof.inputspec import load_spec, worker_spec
from edgeprof.models import open_model
from edgeprof.robust import attacks as atk
from edgeprof.robust.datasets import image_set
from edgeprof.robust.evaluate import AttackConfig, RobustnessConfig, evaluate_robustness
from edgeprof.targets import get_target
from edgeprof.targets.worker import decode_array, encode_array
from tests.conftest import require

EPS = 8 / 255


def test_p_schedule_is_the_papers():
    # Andriushchenko et al. 2020: p halves after iterations 10, 50, 200, 500, 1000, 2000, 4000,
    # 6000 and 8000 of 10,000
    expected = {0: 1, 10: 1, 11: 2, 50: 2, 51: 4, 200: 4, 201: 8, 500: 8, 501: 16, 1000: 16,
                1001: 32, 2000: 32, 2001: 64, 4000: 64, 4001: 128, 6000: 128, 6001: 256,
                8000: 256, 8001: 512, 9999: 512}
    for it, div in expected.items():
        assert atk.p_selection(0.8, it, 10_000) == pytest.approx(0.8 / div), it
    # rescaled to a budget of 100 queries: iteration 1 is iteration 100 of the 10,000 schedule
    assert atk.p_selection(0.8, 0, 100) == 0.8
    assert atk.p_selection(0.8, 1, 100) == pytest.approx(0.2)
    assert atk.p_selection(0.8, 99, 100) == pytest.approx(0.8 / 512)


def test_margin_loss():
    z = np.array([[3.0, 1.0, 2.0], [3.0, 1.0, 2.0]])
    assert atk.margin_loss(z, np.array([0, 1])).tolist() == [1.0, -2.0]


def test_square_attack_on_a_linear_model_stays_in_budget():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8 * 8 * 3, 4)).astype(np.float32)
    x = rng.random((30, 8, 8, 3), dtype=np.float32)
    calls = []

    def predict(b):
        calls.append(len(b))
        return b.reshape(len(b), -1) @ w

    y = predict(x).argmax(1)
    calls.clear()
    res = atk.square_attack_linf(predict, x, y, 0.05, n_queries=40, seed=1)
    check = atk.linf_check(res.x_adv, x, 0.05)
    assert check["within_eps"] and check["max_linf"] <= 0.05 + 1e-6
    assert res.queries.max() <= 40 and res.queries.min() >= 1
    # one call to classify the clean images (not a query: the paper counts queries on the images
    # it attacks), then one batched call per iteration, the stripes' included
    assert len(calls) <= 1 + 40
    # the flags agree with the model's predictions on the returned images
    assert ((predict(res.x_adv).argmax(1) == y) == res.robust).all()
    assert (~res.robust).sum() > 0


@pytest.fixture(scope="module")
def demo():
    p = demo_paths()
    data = load_npz(p["eval"])
    spec = worker_spec(load_spec(p["preprocess"]), "uint8")
    return p, data, spec


def test_square_attack_beats_random_sign_noise_on_the_deployed_model(demo):
    p, data, spec = demo
    x = data.x["x"][:100].astype(np.float32) / 255
    y = data.y[:100]
    target = get_target("local")
    with target.start_worker("square test") as w:
        w.request("load", path=str(p["onnx"]), threads=1, batch=1,
                  inputs={"npz": str(p["eval"])}, spec=spec)

        def predict(x01):
            out = w.request("predict", arrays={"input": encode_array(x01 * np.float32(255))},
                            batch=250, spec=spec)["outputs"]
            return decode_array(out["logits"])

        noisy = atk.random_sign_noise(x, EPS, seed=0)
        noise_acc = float((predict(noisy).argmax(1) == y).mean())
        res = atk.square_attack_linf(predict, x, y, EPS, n_queries=60, seed=0)
        summary = res.summary(EPS, x)
        adv_acc = float((predict(res.x_adv).argmax(1) == y).mean())
    assert summary["within_eps"] and summary["max_linf"] <= EPS + 1e-6
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert adv_acc == summary["robust_accuracy"]
    assert summary["robust_accuracy"] < noise_acc - 0.03
    assert summary["queries_median"] <= 60


def test_pgd_transfer_lowers_accuracy_more_than_fgsm(demo, tmp_path):
    try:
        import torch  # noqa: F401
    except ImportError:
        torch = None
    require(torch is not None, "torch is not installed (pip install 'edgeprof[torch]')")
    p, data, _ = demo
    ref = open_model(p["onnx"], input_spec=load_spec(p["preprocess"]).to_dict())
    cfg = RobustnessConfig(corruptions="none", limit=200, torch_factory="edgeprof.demo.model:fashion_cnn",
                           torch_weights=p["pt"],
                           attacks=[AttackConfig("fgsm", [("8/255", EPS)]),
                                    AttackConfig("pgd", [("8/255", EPS)], steps=10)])
    out = evaluate_robustness([ref], data, cfg, cache_dir=tmp_path, baseline=ref)
    rec = out.records[0]
    fgsm, pgd = rec["attacks"]["fgsm"]["8/255"], rec["attacks"]["pgd"]["8/255"]
    assert fgsm["n"] == pgd["n"] == 200
    assert fgsm["within_eps"] and pgd["within_eps"]
    assert pgd["max_linf"] <= EPS + 1e-6 and fgsm["max_linf"] <= EPS + 1e-6
    assert pgd["robust_accuracy"] < fgsm["robust_accuracy"] < rec["clean_accuracy"]
    # crafted once, cached: a second run makes no adversarial set
    again = evaluate_robustness([ref], data, cfg, cache_dir=tmp_path, baseline=ref)
    assert again.generated == 0
    assert again.records[0]["attacks"]["pgd"]["8/255"]["robust_accuracy"] == pgd["robust_accuracy"]


def test_torch_transform_equals_the_workers_input_spec():
    try:
        import torch
    except ImportError:
        torch = None
    require(torch is not None, "torch is not installed")
    from edgeprof.targets.worker import apply_input_spec

    rng = np.random.default_rng(0)
    x01 = rng.random((4, 10, 12, 3), dtype=np.float32)
    spec = {"layout": "NCHW", "channel_order": "BGR", "scale": 1 / 255, "mean": [0.4, 0.5, 0.6],
            "std": [0.2, 0.25, 0.3], "dtype": "float32", "resize": [16, 16]}
    want = apply_input_spec(x01 * np.float32(255), spec)
    got = atk.torch_transform(spec, "uint8")(torch.from_numpy(x01)).numpy()
    assert got.shape == want.shape == (4, 3, 16, 16)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_image_set_rejects_what_attacks_cannot_use(tmp_path):
    from edgeprof.errors import InputError

    np.savez(tmp_path / "f.npz", x=np.full((4, 8, 8, 1), 2.0, np.float32))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        image_set(load_npz(tmp_path / "f.npz"))
    np.savez(tmp_path / "c.npz", x=np.zeros((4, 8, 8, 2), np.uint8))
    with pytest.raises(InputError, match="1 or 3 channels"):
        image_set(load_npz(tmp_path / "c.npz"))


def test_full_int8_and_fixed_batch_tflite_are_attacked_through_their_runtime(tmp_path):
    """Float32 data in [0, 1] (fed as it is, no x 255), a full-int8 TFLite file (int8 input
    quantized by the worker) and a fixed-batch one, against the fp32 TFLite baseline."""
    from tests.conftest import TFLITE

    try:
        import ai_edge_litert  # noqa: F401
        have = True
    except ImportError:
        have = False
    require(have, "ai-edge-litert is not installed")
    rng = np.random.default_rng(5)
    x = rng.random((40, 8, 8, 1), dtype=np.float32)
    base = open_model(TFLITE / "tiny_cnn_fp32.tflite")
    target = get_target("local")
    with target.start_worker("labels") as w:
        np.savez(tmp_path / "x.npz", x=x)
        w.request("load", path=str(base.path), threads=1, batch=1,
                  inputs={"npz": str(tmp_path / "x.npz")})
        y = decode_array(next(iter(w.request("predict", npz=str(tmp_path / "x.npz"), start=0,
                                             stop=40)["outputs"].values()))).argmax(1)
    np.savez(tmp_path / "d.npz", x=x, y=y.astype(np.int64))
    data = load_npz(tmp_path / "d.npz")
    int8 = open_model(TFLITE / "tiny_cnn_int8.tflite", root_id=base.id)
    fixed = open_model(TFLITE / "tiny_cnn_fixed1.tflite", root_id=base.id)
    cfg = RobustnessConfig(corruptions="contrast,gaussian_noise", severities=[2, 4],
                           attacks=[AttackConfig("square", [("8/255", EPS), ("0.1", 0.1)],
                                                 queries=20)])
    out = evaluate_robustness([int8, fixed], data, cfg, cache_dir=tmp_path / "c", baseline=base)
    recs = {r["variant_id"]: r for r in out.records}
    assert recs[base.id]["clean_accuracy"] == 1.0
    # labelled with the baseline's own predictions, which these corruptions do not change: its
    # error sums are 0, so every CE is undefined (None), not a division by zero
    base_err = {c: sum(1 - v["accuracy"] for v in per.values())
                for c, per in recs[base.id]["per_corruption"].items()}
    for rec in recs.values():
        assert set(rec["ce"]) == {"contrast", "gaussian_noise"}
        assert all((rec["ce"][c] is None) == (base_err[c] == 0) for c in base_err)
    for ref in (int8, fixed):
        rec = recs[ref.id]
        assert rec["runtime"] == "litert" and rec["baseline_id"] == base.id
        for label in ("8/255", "0.1"):
            sq = rec["attacks"]["square"][label]
            assert sq["within_eps"] and sq["n"] == 40 and sq["max_linf"] <= sq["eps"] + 1e-6
    # the fixed-batch file holds the fp32 weights: the same figures as the baseline
    assert recs[fixed.id]["clean_accuracy"] == 1.0
    assert recs[fixed.id]["per_corruption"] == recs[base.id]["per_corruption"]
