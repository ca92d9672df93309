"""edgeprof: what each format, precision and pruning choice costs and buys on an edge device.

The library first (the command line is a thin layer over it)::

    import edgeprof
    res = edgeprof.profile(["model.onnx", "model_int8.onnx"], data="eval.npz")
    edgeprof.decide(res).plot("frontier.png")
"""
__version__ = "0.1.0"

from .api import (Accuracy, Decision, Latency, Results, accuracy, compare,  # noqa: E402
                  decide, load_results, profile, quantize, robustness, sweep)
from .errors import EdgeprofError  # noqa: E402

__all__ = ["profile", "accuracy", "robustness", "quantize", "sweep", "load_results", "decide", "compare", "Results",
           "Latency", "Accuracy", "Decision", "EdgeprofError", "__version__"]
