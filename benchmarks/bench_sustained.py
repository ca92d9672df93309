"""What sampling costs in a sustained run: p50 with sampling on against off, in one run.

A sustained run on the demo model (local target, one thread) alternates sampled rounds (the
worker reads thermal zones, cpufreq, hwmon and powercap before and after the round; with an
energy_command, a meter command also runs on the host every 0.5 s) with unsampled rounds (no
reads, the meter paused), so both halves see the same heat and the same machine. The meter here
is a stub Python script standing in for a USB meter (each reading starts an interpreter, more
than a real meter's CLI costs). Target: p50 sampled / p50 unsampled within 1 %.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from edgeprof.demo import DATA_DIR
from edgeprof.measure.sustained import run_sustained
from edgeprof.targets.client import start_local_worker

DURATION_S = 15.0


def _run(meter: list[str] | None) -> dict:
    with start_local_worker("bench sustained") as w:
        w.request("load", path=str(DATA_DIR / "fashion_cnn.onnx"), threads=1, batch=1)
        w.request("round", n=500)  # warmed
        res = run_sustained(w, DURATION_S, round_s=0.25, window_s=5.0, idle_s=0.5,
                            energy_command=meter)
    return res["sampling_overhead"]


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        stub = Path(d) / "meter.py"
        stub.write_text("print('3.2 W')\n")  # stands in for a USB meter's reading command
        rows = [("sensor reads", _run(None)),
                ("sensor reads + energy_command", _run([sys.executable, str(stub)]))]
    print(f"{'sampling':<31} {'pairs':>5} {'p50 on':>9} {'p50 off':>9} {'ratio':>7} "
          f"{'pair ratio (95 % CI)':>26}")
    for name, o in rows:
        lo, hi = o["pair_ratio_ci"]
        print(f"{name:<31} {o['n_pairs']:>5} {o['p50_sampled_s'] * 1e6:>7.1f}us "
              f"{o['p50_unsampled_s'] * 1e6:>7.1f}us {o['ratio']:>7.4f} "
              f"{o['pair_ratio']:>8.4f} ({lo:.4f} to {hi:.4f})")
    print("target: ratio within 1 % (0.99 to 1.01)")


if __name__ == "__main__":
    main()
