# %% [markdown]
# # edgeprof from Python: two models, their frontier, in ten lines
# Run it as a script (`python examples/notebook.py`) or open it as a notebook (percent format).
# It quantizes the bundled demo model, profiles fp32 and int8 side by side, measures their
# accuracy on the demo's evaluation rows and plots latency against accuracy with the frontier.
# `EDGEPROF_EXAMPLE_OUT` names the output folder (the tests set it); default: reports/notebook.

# %%
import os
from pathlib import Path

import edgeprof
from edgeprof.demo import demo_paths

d, out = demo_paths(), Path(os.environ.get("EDGEPROF_EXAMPLE_OUT", "reports/notebook"))
out.mkdir(parents=True, exist_ok=True)

# %% the ten lines
int8 = edgeprof.quantize(d["onnx"], "int8-static", calib=d["calib"], preprocess=d["preprocess"])
models = [str(d["onnx"]), int8.id]
lat = edgeprof.profile(models, data=d["eval"], min_time="0.3s")
acc = edgeprof.accuracy(models, d["eval"], limit=1000)
decision = edgeprof.decide(edgeprof.Results(lat.records + acc.records), require="accuracy_drop<=1%")
decision.plot(out / "frontier.png")
print(lat.to_pandas()[["name", "p50_s", "n", "peak_rss_bytes"]])
print("recommended:", decision.recommendation()["chosen_label"])
for d_ in decision.diagnoses:
    print(f"{d_['code']}: {d_['message']} -> {d_['try_next']}")
