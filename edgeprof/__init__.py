"""edgeprof: what each format, precision and pruning choice costs and buys on an edge device.

The library first (the command line is a thin layer over it)::

    import edgeprof
    res = edgeprof.profile(["model.onnx", "model_int8.onnx"], data="eval.npz")
    edgeprof.decide(res).plot("frontier.png")
"""
__version__ = "0.1.0"

from .api import (Accuracy, Decision, Latency, Results, Variant, accuracy,  # noqa: E402
                  compare, convert, decide, drift, export_torch, load_results, profile, prune,
                  quantize, robustness, sweep)
from .errors import EdgeprofError  # noqa: E402

__all__ = ["profile", "accuracy", "robustness", "quantize", "prune", "convert", "export_torch",
           "drift", "sweep", "load_results",
           "decide", "compare", "Results", "Latency", "Accuracy", "Variant", "Decision",
           "EdgeprofError", "__version__"]
