"""`edgeprof demo`: profile the bundled Fashion-MNIST model and write a report under reports/demo.

Every number in the report is measured in this run: latency (threads 1 and 2, batch 1, 4 and 16),
cold start, memory, size, per-operator time and accuracy on the bundled evaluation set.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..data import load_npz
from ..inputspec import load_spec, worker_spec
from ..measure.accuracy import accuracy_record, predict
from ..measure.profiler import Profiler, Settings
from ..models import open_model
from ..results import ResultStore, write_json
from ..targets import get_target
from . import demo_paths


def run_demo(out_dir: Path, min_time_s: float = 1.0,
             progress: Callable[[str, float], None] | None = None) -> list[dict[str, Any]]:
    progress = progress or (lambda d, f: None)
    paths = demo_paths()
    model = open_model(paths["onnx"])
    data = load_npz(paths["eval"])
    spec = load_spec(paths["preprocess"])
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "results.jsonl"
    results.unlink(missing_ok=True)  # the demo report shows this run only
    store = ResultStore(results)
    target = get_target("local")

    def sub(lo: float, hi: float) -> Callable[[str, float], None]:
        return lambda d, f: progress(d, lo + (hi - lo) * f)

    settings = Settings(threads=(1, 2), batches=(1, 4, 16), min_time_s=min_time_s, op_profile=True)
    records, _ = Profiler(target, settings, store=store, data=data, spec=spec,
                          progress=sub(0.0, 0.85)).run([model])
    progress("accuracy on the evaluation set", 0.9)
    with target.start_worker("demo accuracy") as w:
        w.request("load", path=target.stage(model.path), threads=1, batch=1,
                  inputs={"npz": target.stage(data.path)}, spec=worker_spec(spec, "uint8"))
        logits = predict(w, target.stage(data.path), data.n, spec, "uint8", batch=250)
    acc = accuracy_record(model, target.name, 1, data, logits)
    store.append(acc)
    records.append(acc)
    write_json(out_dir / "results.json", records)
    from ..report.plots import throughput_curves
    from ..report.summary import write_summary
    plot = throughput_curves(records, out_dir / "throughput.png")
    write_summary(out_dir / "summary.md", records, title="edgeprof demo: Fashion-MNIST CNN",
                  images=[plot.name] if plot else [])
    progress("done", 1.0)
    return records
