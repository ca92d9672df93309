"""The one worker client: ``load`` and ``predict_rows`` split rows into requests whose replies
stay under a size limit, and the pieces equal one request's outputs (real worker, real
onnxruntime)."""
import numpy as np

from edgeprof.targets.client import start_local_worker
from tests.tiny_models import mlp


def test_predict_rows_chunks_by_reply_size_and_equals_one_request(tmp_path):
    model = mlp(tmp_path / "m.onnx", dim=64)
    x = np.random.default_rng(0).normal(size=(203, 64)).astype(np.float32)
    npz = tmp_path / "d.npz"
    np.savez(npz, x=x)
    sent = []
    with start_local_worker("chunks") as w:
        w.load(model, npz=str(npz))
        real = w.request

        def counting(cmd, **kw):
            sent.append((cmd, kw.get("start"), kw.get("stop")))
            return real(cmd, **kw)
        whole = w.predict_rows(str(npz), 203, batch=8)
        w.request = counting
        assert w.predict_rows(str(npz), 203, batch=8) and sent == [("predict", 0, 203)]
        sent.clear()
        # 64 float32 outputs per row = 256 bytes; 6 KiB of base64 reply is ~18 rows -> 16 rows
        parts = w.predict_rows(str(npz), 203, batch=8, reply_max_bytes=6 * 1024)
    assert list(parts) == list(whole)
    for k in whole:
        assert parts[k].shape == whole[k].shape == (203, 64)
        np.testing.assert_array_equal(parts[k], whole[k])
    spans = [(a, b) for cmd, a, b in sent if cmd == "predict"]
    assert spans[0] == (0, 16) and spans[-1] == (192, 203)  # sized from the output shape
    assert len(spans) == 13
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))


def test_predict_rows_probes_a_dynamic_output_width(tmp_path):
    """An output whose row size is unknown before running: the first batch tells it."""
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "dyn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "D"])])
    model = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), model)
    x = np.arange(50 * 32, dtype=np.float32).reshape(50, 32)
    np.savez(tmp_path / "d.npz", x=x)
    with start_local_worker("dyn") as w:
        w.load(model, npz=str(tmp_path / "d.npz"))
        out = w.predict_rows(str(tmp_path / "d.npz"), 50, batch=4, reply_max_bytes=2048)
    np.testing.assert_array_equal(out["y"], x)
