"""Pruning: unstructured magnitude pruning of ONNX weights (checked against an independent numpy
reference), structured channel pruning of PyTorch models with torch-pruning (MACs, export,
fine-tuning that recovers accuracy), cache reuse, and bad inputs."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from edgeprof.cli import cli
from edgeprof.demo import demo_paths
from edgeprof.passes.base import PASS_CALLS
from edgeprof.variants.cache import Cache
from tests import tiny_models
from tests.conftest import require

D = demo_paths()
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_TP = HAVE_TORCH and importlib.util.find_spec("torch_pruning") is not None
TORCH_ARGS = ["--torch", "edgeprof.demo.model:fashion_cnn", "--weights", str(D["pt"]),
              "--example-shape", "1x1x28x28", "--preprocess", str(D["preprocess"])]


def run(cache: Path, *args: str):
    return CliRunner().invoke(cli, ["prune", *args, "--cache-dir", str(cache), "-q"])


def record(cache: Path, *args: str) -> dict:
    out = cache.parent / f"v{abs(hash(args))}.json"
    r = run(cache, *args, "--json", str(out))
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())


def need_torch() -> None:
    require(HAVE_TP, "structured pruning needs torch and torch-pruning (pip install 'edgeprof[torch]')")


def ort_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def demo_accuracy(path: Path) -> float:
    """Top-1 on eval.npz computed here, apart from edgeprof's worker (x / 255, NHWC -> NCHW)."""
    with np.load(D["eval"]) as z:
        x, y = z["x"], z["y"]
    logits = ort_outputs(path, (x.astype(np.float32) / 255.0).transpose(0, 3, 1, 2).copy())
    return float((logits.argmax(1) == y).mean())


# ---- an independent numpy reference of magnitude pruning ----------------------------------------

def reference_weights(path: Path) -> dict[str, np.ndarray]:
    """Weight initializers of Conv / Gemm / MatMul (second input), found here, not by edgeprof."""
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    names = []
    for n in m.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[1] in inits and n.input[1] not in names:
            names.append(n.input[1])
    return {k: inits[k] for k in names}


def reference_prune(weights: dict[str, np.ndarray], sparsity: float, scope: str) -> dict[str, np.ndarray]:
    """Sort |w| and zero everything at or below the k-th smallest (random float weights have no
    ties, which the assertion checks)."""
    groups = [[k] for k in weights] if scope == "layer" else [list(weights)]
    out = {}
    for g in groups:
        allw = np.sort(np.concatenate([np.abs(weights[k]).ravel() for k in g]))
        k = int(round(sparsity * allw.size))
        thr = allw[k - 1]
        for name in g:
            out[name] = np.where(np.abs(weights[name]) <= thr, 0.0, weights[name]).astype(np.float32)
        assert sum(int((out[n] == 0).sum()) for n in g) == k  # no ties at the threshold
    return out


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("nets")
    tiny_models.mobilenet_like(d / "mn.onnx", size=16)
    tiny_models.mlp(d / "mlp.onnx", dim=32, layers=3)
    return d


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_unstructured_sparsity_and_weights_match_a_numpy_reference(nets, tmp_path, scope, sparsity):
    for model in (D["onnx"], nets / "mn.onnx"):
        v = record(tmp_path / "c", str(model), "--sparsity", str(sparsity), "--scope", scope)
        x = v["extra"]
        assert abs(x["sparsity_achieved"] - sparsity) <= 0.01
        if scope == "layer":
            assert all(abs(layer["sparsity"] - sparsity) <= 0.01 for layer in x["layers"])
        out = Path(tmp_path / "c" / "variants" / v["id"] / "model.onnx")
        expected = reference_prune(reference_weights(model), sparsity, scope)
        got = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
        orig = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(model)).graph.initializer}
        assert set(expected) == {layer["tensor"] for layer in x["layers"]}
        for name, a in got.items():  # pruned weights as the reference; biases and the rest untouched
            np.testing.assert_array_equal(a, expected.get(name, orig[name]), err_msg=name)
        # the same outputs as the original graph carrying the reference weights
        ref_model = onnx.load(str(model))
        for init in ref_model.graph.initializer:
            if init.name in expected:
                init.CopyFrom(numpy_helper.from_array(expected[init.name], init.name))
        onnx.save(ref_model, str(tmp_path / "ref.onnx"))
        shape = [4] + [d.dim_value for d in ref_model.graph.input[0].type.tensor_type.shape.dim][1:]
        xin = np.random.default_rng(0).random(shape, dtype=np.float32)
        np.testing.assert_array_equal(ort_outputs(out, xin), ort_outputs(tmp_path / "ref.onnx", xin))


def test_pruned_mlp_matches_a_numpy_forward_pass(nets, tmp_path):
    v = record(tmp_path / "c", str(nets / "mlp.onnx"), "--sparsity", "0.6")
    w = reference_prune(reference_weights(nets / "mlp.onnx"), 0.6, "global")
    x = np.random.default_rng(1).standard_normal((5, 32)).astype(np.float32)
    h = x
    for k in ("w0", "w1", "w2"):  # tiny_models.mlp: (MatMul + Relu) per layer
        h = np.maximum(h @ w[k], 0)
    got = ort_outputs(tmp_path / "c" / "variants" / v["id"] / "model.onnx", x)
    np.testing.assert_allclose(got, h, rtol=1e-5, atol=1e-6)


def test_unstructured_variant_is_honest_about_speed_and_size(tmp_path):
    cache = tmp_path / "c"
    out = tmp_path / "v.json"
    r = run(cache, str(D["onnx"]), "--sparsity", "0.8", "--data", str(D["eval"]),
            "--preprocess", str(D["preprocess"]), "--fidelity-rows", "200", "--json", str(out))
    assert r.exit_code == 0, r.output
    v = json.loads(out.read_text())
    assert "does not make onnxruntime faster" in r.output and "only the compressed" in r.output
    assert any("does not make onnxruntime faster" in n for n in v["notes"])
    x = v["extra"]
    assert abs(x["model_bytes"] - x["parent_model_bytes"]) < 0.01 * x["parent_model_bytes"]
    assert x["zlib_bytes"] < 0.75 * x["parent_zlib_bytes"]
    fid = v["fidelity"]
    assert fid["rows"] == 200 and fid["data_role"] == "evaluation"
    assert 0.5 < fid["vs_root"]["logits"]["top1_agreement"] < 1.0  # 80 % sparse: close, not exact
    assert v["config"] == {"sparsity": 0.8, "scope": "global"} and v["parent"] == v["root"]


def test_unstructured_cache_reuse(tmp_path):
    cache = tmp_path / "c"
    before = PASS_CALLS["prune"]
    a = record(cache, str(D["onnx"]), "--sparsity", "0.5")
    assert PASS_CALLS["prune"] == before + 1
    r = run(cache, str(D["onnx"]), "--sparsity", "50%")
    assert r.exit_code == 0 and "reused from the cache" in r.output
    assert PASS_CALLS["prune"] == before + 1
    b = record(cache, str(D["onnx"]), "--sparsity", "0.5", "--scope", "layer")
    assert PASS_CALLS["prune"] == before + 2 and a["id"] != b["id"]


# ---- structured ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def structured(tmp_path_factory) -> dict:
    """Three structured variants of the demo model in one cache: 30 %, 50 %, 50 % + fine-tuning."""
    if not HAVE_TP:
        return {}
    cache = tmp_path_factory.mktemp("scache") / "c"
    out = {"cache": cache, "calls": PASS_CALLS["prune-channels"]}
    out["c30"] = record(cache, *TORCH_ARGS, "--channels", "0.3")
    out["c50"] = record(cache, *TORCH_ARGS, "--channels", "0.5")
    out["ft"] = record(cache, *TORCH_ARGS, "--channels", "0.5", "--finetune",
                       str(D["train_subset"]), "--epochs", "1", "--data", str(D["eval"]),
                       "--fidelity-rows", "200")
    out["calls_after"] = PASS_CALLS["prune-channels"]
    return out


def _path(s: dict, key: str) -> Path:
    return s["cache"] / "variants" / s[key]["id"] / "model.onnx"


def test_structured_macs_fall_with_the_channel_fraction(structured):
    need_torch()
    r30, r50 = structured["c30"]["extra"], structured["c50"]["extra"]
    assert r30["macs_before"] == r50["macs_before"] > 1_000_000
    # both the in- and the out-channels of inner convs shrink: MACs fall about quadratically
    assert 0.40 < r30["macs_ratio"] < 0.60
    assert 0.20 < r50["macs_ratio"] < 0.35
    assert r50["params_after"] < r30["params_after"] < r30["params_before"]
    widths = {layer["layer"]: layer for layer in r50["layers"]}
    assert widths["features.0"]["out_after"] == 8 and widths["features.8"]["out_after"] == 32
    assert widths["classifier"]["out_after"] == 10  # the output layer keeps its width
    assert r50["protected_layers"] == ["classifier"]
    # 16/32/64 -> 11/22/45 channels: widths x86 kernels run slowly, and the variant says so
    assert any("not multiples of 8" in n for n in structured["c30"]["notes"])
    assert not any("not multiples of 8" in n for n in structured["c50"]["notes"])


def test_round_to_keeps_widths_multiples_of_it(tmp_path):
    need_torch()
    v = record(tmp_path / "c", *TORCH_ARGS, "--channels", "0.3", "--round-to", "8")
    pruned = [r for r in v["extra"]["layers"] if r["out_after"] != r["out_before"]]
    assert pruned and all(r["out_after"] % 8 == 0 for r in pruned)
    assert v["config"]["round_to"] == 8 and "round-to 8" in v["label"]
    assert not any("not multiples of 8" in n for n in v["notes"])


def test_structured_export_runs_in_onnxruntime_with_a_dynamic_batch(structured):
    need_torch()
    import torch

    from edgeprof.demo.model import fashion_cnn
    x = np.random.default_rng(0).random((7, 1, 28, 28), dtype=np.float32)
    assert ort_outputs(_path(structured, "c50"), x).shape == (7, 10)
    # the parent is the exported UNPRUNED model, registered as a root: it computes the dense model
    cache = Cache(structured["cache"])
    v = cache.get(structured["c50"]["id"])
    root = cache.get(v.parent)
    assert root.pass_name == "root" and root.parent is None and v.root == root.id
    assert root.input_spec["layout"] == "NCHW" and v.input_spec == root.input_spec
    dense = fashion_cnn()
    dense.load_state_dict(torch.load(D["pt"], weights_only=True))
    dense.eval()
    with torch.no_grad():
        ref = dense(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ort_outputs(root.path, x), ref, atol=1e-4)


def test_finetuning_recovers_accuracy(structured):
    need_torch()
    pruned, tuned = demo_accuracy(_path(structured, "c50")), demo_accuracy(_path(structured, "ft"))
    dense = demo_accuracy(D["onnx"])
    assert tuned > pruned + 0.05 and tuned > 0.8 and dense > tuned - 0.1
    ft = structured["ft"]
    acc = ft["extra"]["accuracy"]
    # the worker's numbers (recorded in the lineage) agree with this independent measurement
    assert acc["pruned"]["accuracy"] == pytest.approx(pruned, abs=1e-9)
    assert acc["finetuned"]["accuracy"] == pytest.approx(tuned, abs=1e-9)
    assert acc["dense"]["n"] == 2000 and acc["dense"]["accuracy_ci"][0] < acc["dense"]["accuracy"]
    cfg = ft["config"]["finetune"]
    from edgeprof.data import file_sha256
    assert cfg["data_sha256"] == file_sha256(D["train_subset"])
    assert (cfg["epochs"], cfg["lr"], cfg["seed"]) == (1, 1e-3, 0)
    assert ft["fidelity"]["vs_root"]["logits"]["top1_agreement"] > 0.8


def test_finetuning_is_deterministic_under_a_seed(structured, tmp_path):
    need_torch()
    args = [*TORCH_ARGS, "--channels", "0.5", "--finetune", str(D["train_subset"]), "--epochs", "1"]
    again = record(tmp_path / "c", *args)  # a fresh cache; --data is not part of the identity
    assert again["id"] == structured["ft"]["id"]
    path = tmp_path / "c" / "variants" / again["id"] / "model.onnx"
    assert path.read_bytes() == _path(structured, "ft").read_bytes()


def test_structured_cache_reuse(structured):
    need_torch()
    assert structured["calls_after"] == structured["calls"] + 3  # three variants, three runs
    before = PASS_CALLS["prune-channels"]
    r = run(structured["cache"], *TORCH_ARGS, "--channels", "0.5")
    assert r.exit_code == 0 and "reused from the cache" in r.output
    assert PASS_CALLS["prune-channels"] == before


def tiny_mobilenet():
    """A torch MobileNet-like net (depthwise-separable blocks) for --torch."""
    from torch import nn

    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                             nn.BatchNorm2d(cin), nn.ReLU6(),
                             nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
                         block(16, 32, 1), block(32, 64, 2), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(64, 5))


def test_depthwise_separable_net_prunes_and_exports(tmp_path):
    need_torch()
    v = record(tmp_path / "c", "--torch", "tests.passes.test_prune:tiny_mobilenet",
               "--example-shape", "1x3x32x32", "--channels", "0.5")
    x = v["extra"]
    assert 0.15 < x["macs_ratio"] < 0.40 and x["protected_layers"] == ["7"]
    assert any("no --weights" in n for n in v["notes"])
    out = ort_outputs(tmp_path / "c" / "variants" / v["id"] / "model.onnx",
                      np.zeros((3, 3, 32, 32), np.float32))
    assert out.shape == (3, 5)


# ---- bad input -----------------------------------------------------------------------------------

def _staging_dirs(cache: Path) -> list[str]:
    d = cache / "variants"
    return [p.name for p in d.iterdir() if p.name.startswith(".")] if d.exists() else []


def _check_one_line(r, fragment: str, cache: Path, allow_roots: bool) -> None:
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], r.output
    assert _staging_dirs(cache) == []
    variants = Cache(cache).all()
    assert all(v.parent is None for v in variants) if allow_roots else variants == []


@pytest.mark.parametrize("value,fragment", [
    ("0", "strictly between 0 and 1"), ("1", "strictly between 0 and 1"),
    ("1.5", "strictly between 0 and 1"), ("-0.2", "strictly between 0 and 1"),
    ("150%", "strictly between 0 and 1"), ("abc", "expected a fraction"),
])
def test_bad_sparsity(tmp_path, value, fragment):
    r = run(tmp_path / "c", str(D["onnx"]), "--sparsity", value)
    _check_one_line(r, "--sparsity", tmp_path / "c", allow_roots=True)
    assert fragment in r.output


def test_unprunable_model_and_missing_mode(tmp_path, models_dir):
    r = run(tmp_path / "c", str(models_dir / "dyn.onnx"), "--sparsity", "0.5")
    _check_one_line(r, "no Conv/Gemm/MatMul weights", tmp_path / "c", allow_roots=True)
    r = run(tmp_path / "c", str(D["onnx"]))
    _check_one_line(r, "give --sparsity", tmp_path / "c", allow_roots=True)
    r = run(tmp_path / "c", str(D["onnx"]), "--sparsity", "0.5", "--channels", "0.5")
    _check_one_line(r, "--channels belongs to structured pruning", tmp_path / "c", allow_roots=True)


def _bad_torch_cases(tmp_path: Path) -> dict:
    import torch

    from edgeprof.demo.model import FashionCNN
    torch.save(FashionCNN(num_classes=5).state_dict(), tmp_path / "five.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")
    base = ["--example-shape", "1x1x28x28", "--channels", "0.5"]
    demo = ["--torch", "edgeprof.demo.model:fashion_cnn"]
    return {
        "channels 0": (demo + ["--example-shape", "1x1x28x28", "--channels", "0"],
                       "strictly between 0 and 1"),
        "channels 1": (demo + ["--example-shape", "1x1x28x28", "--channels", "1"],
                       "strictly between 0 and 1"),
        "no module": (["--torch", "no_such_module_xyz:build"] + base, "cannot import no_such_module_xyz"),
        "no attribute": (["--torch", "edgeprof.demo.model:nope"] + base, "has no attribute 'nope'"),
        "not a module": (["--torch", "edgeprof.demo:demo_paths"] + base, "not a torch.nn.Module"),
        "no colon": (["--torch", "edgeprof.demo.model"] + base, "expected module:factory"),
        "weights misfit": (demo + ["--weights", str(tmp_path / "five.pt")] + base,
                           "do not fit the model"),
        "weights pickled": (demo + ["--weights", str(tmp_path / "pickled.pt")] + base,
                            "weights_only=True"),
        "weights missing": (demo + ["--weights", str(tmp_path / "none.pt")] + base, "no such file"),
        "shape rejected": (demo + ["--example-shape", "1x3x28x28", "--channels", "0.5"],
                           "rejects an input of shape 1x3x28x28"),
        "shape text": (demo + ["--example-shape", "1xAx28", "--channels", "0.5"],
                       "expected dimensions like"),
        "no shape": (demo + ["--channels", "0.5"], "needs --example-shape"),
        "leakage": (demo + base + ["--finetune", str(D["eval"]), "--data", str(D["eval"])],
                    "leakage"),
        "data unlabelled": (demo + base + ["--data", str(tmp_path / "nolabels.npz")],
                            "has no labels 'y'; accuracy needs them"),
        "finetune shape": (demo + base + ["--finetune", str(tmp_path / "small.npz")],
                           "after preprocessing"),
        "epochs": (demo + base + ["--finetune", str(D["train_subset"]), "--epochs", "0"],
                   "--epochs 0"),
        "keep unknown": (demo + base + ["--keep-layers", "nope"], "no module named nope"),
        "round-to": (demo + base + ["--round-to", "0"], "--round-to 0"),
    }


BAD_TORCH = ["channels 0", "channels 1", "no module", "no attribute", "not a module", "no colon",
             "weights misfit", "weights pickled", "weights missing", "shape rejected", "shape text",
             "no shape", "leakage", "data unlabelled", "finetune shape", "epochs", "keep unknown",
             "round-to"]


@pytest.mark.parametrize("case", BAD_TORCH)
def test_bad_torch_input_one_line_and_nothing_written(case, tmp_path):
    need_torch()
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((4, 28, 28, 1), np.uint8))
    np.savez(tmp_path / "small.npz", x=np.zeros((4, 20, 20, 1), np.uint8), y=np.zeros(4, np.int64))
    args, fragment = _bad_torch_cases(tmp_path)[case]
    r = run(tmp_path / "c", *args)
    _check_one_line(r, fragment, tmp_path / "c", allow_roots=False)


def test_without_torch_a_one_line_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    r = run(tmp_path / "c", "--torch", "edgeprof.demo.model:fashion_cnn", "--example-shape",
            "1x1x28x28", "--channels", "0.5")
    _check_one_line(r, "pip install 'edgeprof[torch]'", tmp_path / "c", allow_roots=False)
    assert "torch==2.13.0" in r.output


# ---- several outputs: every head keeps its width; fine-tuning distils --------------------------

THREE_HEAD_NET = '''
import torch
from torch import nn


class ONet(nn.Module):
    """A small O-Net-like face net (MTCNN's last stage): a conv trunk, then three heads."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.PReLU(16), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.PReLU(32), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.PReLU(32), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 3 * 3, 64), nn.PReLU(64))
        self.box = nn.Linear(64, 4)
        self.landmarks = nn.Linear(64, 10)
        self.cls = nn.Linear(64, 2)

    def forward(self, x):
        h = self.trunk(x)
        # the class head sits behind a softmax: its Linear's output is not itself a model output
        return self.box(h), self.landmarks(h), torch.softmax(self.cls(h), dim=1)


def onet():
    return ONet()
'''
THREE_HEAD_SHAPES = [[4], [10], [2]]


def _nchw(x: np.ndarray) -> np.ndarray:
    """uint8 NHWC rows as the default InputSpec feeds them (x / 255, NCHW), computed here."""
    return (x.astype(np.float32) / 255.0).transpose(0, 3, 1, 2).copy()


def _all_outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


@pytest.fixture(scope="module")
def three_head(tmp_path_factory) -> dict:
    """A three-head net pruned at 50 % without --keep-layers, and again with distillation on
    unlabelled rows (plus held-out --data: fidelity, no accuracy)."""
    if not HAVE_TP:
        return {}
    d = tmp_path_factory.mktemp("threehead")
    (d / "onet.py").write_text(THREE_HEAD_NET)
    rng = np.random.default_rng(7)
    np.savez(d / "train.npz", x=rng.integers(0, 256, (256, 24, 24, 3), dtype=np.uint8))
    np.savez(d / "eval.npz", x=rng.integers(0, 256, (48, 24, 24, 3), dtype=np.uint8))
    cache = d / "c"
    args = ["--torch", f"{d / 'onet.py'}:onet", "--example-shape", "1x3x24x24", "--channels", "0.5"]
    out = {"dir": d, "cache": cache}
    out["c50"] = record(cache, *args)
    out["ft"] = record(cache, *args, "--finetune", str(d / "train.npz"), "--epochs", "1",
                       "--data", str(d / "eval.npz"), "--fidelity-rows", "48")
    return out


def test_every_output_head_keeps_its_width_without_keep_layers(three_head):
    need_torch()
    v = three_head["c50"]
    x = v["extra"]
    # the heads, found by tracing every output (cls behind a softmax too), and nothing else
    assert v["config"]["protected_layers"] == ["box", "cls", "landmarks"]
    assert x["output_layers"] == ["box", "cls", "landmarks"]
    widths = {r["layer"]: r for r in x["layers"]}
    for head, width in (("box", 4), ("landmarks", 10), ("cls", 2)):
        assert widths[head]["out_before"] == widths[head]["out_after"] == width
        assert widths[head]["in_after"] == 32  # the trunk's last layer was pruned 64 -> 32
    assert widths["trunk.0"]["out_after"] == 8 and widths["trunk.10"]["out_after"] == 32
    # the exported ONNX: three outputs of the unpruned net's shapes, at another batch size too
    path = three_head["cache"] / "variants" / v["id"] / "model.onnx"
    root = Cache(three_head["cache"]).get(v["parent"])
    xin = _nchw(np.random.default_rng(3).integers(0, 256, (5, 24, 24, 3), dtype=np.uint8))
    got, dense = _all_outputs(path, xin), _all_outputs(root.path, xin)
    assert [list(o.shape) for o in got] == [list(o.shape) for o in dense] \
        == [[5, *s] for s in THREE_HEAD_SHAPES]
    np.testing.assert_allclose(got[2].sum(1), 1.0, rtol=1e-5)  # still a softmax over 2 classes
    # smaller: MACs from the record, parameters counted here from the ONNX initializers
    assert x["macs_after"] < 0.4 * x["macs_before"] and x["params_after"] < 0.4 * x["params_before"]

    def n_params(p: Path) -> int:
        return sum(int(numpy_helper.to_array(i).size) for i in onnx.load(str(p)).graph.initializer)
    assert n_params(path) < 0.4 * n_params(root.path)


def test_three_head_net_fine_tunes_by_distillation(three_head):
    need_torch()
    v, plain = three_head["ft"], three_head["c50"]
    assert v["config"]["finetune"]["loss"] == "distill-mse" and "distilled" in v["label"]
    assert any("fine-tuned by distillation (it returns 3 outputs)" in n for n in v["notes"])
    assert any(n.startswith("accuracy skipped") for n in v["notes"])
    x = v["extra"]
    assert "accuracy" not in x and x["output_layers"] == ["box", "cls", "landmarks"]
    ft = x["finetune"]
    assert ft["loss"] == "distill-mse" and ft["rows"] == 256 and ft["steps"] == 4
    assert len(ft["epochs"]) == 1 and ft["epochs"][0]["loss"] > 0
    assert ft["distill_mse_after"] < 0.5 * ft["distill_mse_before"]
    # fidelity against the root covers all three outputs
    assert len(v["fidelity"]["vs_root"]) == 3 and v["fidelity"]["rows"] == 48
    # measured here on held-out rows with onnxruntime: distilled outputs sit closer to the
    # unpruned net's than the plainly pruned ones (summed MSE over the three heads)
    root = Cache(three_head["cache"]).get(v["parent"])
    assert plain["parent"] == v["parent"]
    with np.load(three_head["dir"] / "eval.npz") as z:
        xin = _nchw(z["x"])
    dense = _all_outputs(root.path, xin)

    def mse(p: Path) -> float:
        return float(sum(np.mean((a - b) ** 2) for a, b in zip(_all_outputs(p, xin), dense)))
    variants = three_head["cache"] / "variants"
    before, after = mse(variants / plain["id"] / "model.onnx"), mse(variants / v["id"] / "model.onnx")
    assert after < 0.5 * before, (before, after)


def test_classifier_fine_tuning_config_is_unchanged_and_unlabelled_rows_distil(structured, tmp_path):
    need_torch()
    # a labelled single-output classifier: cross-entropy, the config keys of before (cache ids hold)
    cfg = structured["ft"]["config"]["finetune"]
    assert cfg["loss"] == "cross-entropy" and set(cfg) == {
        "data_sha256", "rows", "epochs", "lr", "seed", "batch_size", "optimizer", "loss"}
    assert "distilled" not in structured["ft"]["label"]
    assert "train_accuracy" in structured["ft"]["extra"]["finetune"]["epochs"][0]
    # unlabelled rows for the same classifier: distillation, and the variant says why
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "nolabels.npz", x=rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8))
    v = record(tmp_path / "c", *TORCH_ARGS, "--channels", "0.5", "--finetune",
               str(tmp_path / "nolabels.npz"))
    assert v["config"]["finetune"]["loss"] == "distill-mse"
    assert any("has no labels 'y'" in n and "distillation" in n for n in v["notes"])
    assert v["id"] != structured["ft"]["id"]
