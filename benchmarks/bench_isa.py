"""ISA detection (the worker's `cpu_features`) on the recorded /proc/cpuinfo fixtures of an
AVX2-only EPYC, a VNNI Xeon, a Pi 4 (Cortex-A72), a Pi 5 (Cortex-A76) and 32-bit Pi OS, and on
this machine. A table of facts, no timing."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from edgeprof.targets import describe_cpu_features
from edgeprof.targets import worker as W

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "cpuinfo"
MACHINES = (("epyc_avx2", "AMD EPYC 7302P (Zen 2)"), ("xeon_vnni", "Xeon Silver 4214R (CLX)"),
            ("pi4_a72", "Pi 4 (Cortex-A72)"), ("pi5_a76", "Pi 5 (Cortex-A76)"),
            ("pi_32bit", "32-bit Pi OS (A53)"))


def _row(name: str, cf: dict | None) -> str:
    if cf is None:
        return f"{name:<26} unavailable"
    yn = {True: "yes", False: "no", None: "?"}
    return (f"{name:<26} {cf['arch'] or '?':<8} {yn[cf['int8_dot']]:<9} {yn[cf['fp16_arith']]:<5} "
            f"{describe_cpu_features(cf)}")


def main() -> None:
    print(f"{'machine':<26} {'arch':<8} {'int8 dot':<9} {'fp16':<5} features")
    with tempfile.TemporaryDirectory() as d:
        for stem, label in MACHINES:
            root = Path(d) / stem
            (root / "proc").mkdir(parents=True)
            shutil.copy(FIXTURES / f"{stem}.txt", root / "proc" / "cpuinfo")
            print(_row(label, W.cpu_features(str(root))))
    print(_row(f"this machine ({W.cpu_model() or '?'})"[:26], W.cpu_features()))


if __name__ == "__main__":
    main()
