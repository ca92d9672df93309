"""Run every benchmark module (bench_*.py) in turn; each prints its own table of ratios.

    python -m benchmarks            # all
    python -m benchmarks overhead   # those whose name contains 'overhead'
"""
import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main() -> int:
    wanted = sys.argv[1:]
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if m.name.startswith("bench_"))
    failed = []
    for name in names:
        if wanted and not any(w in name for w in wanted):
            continue
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.{name}").main()
        except Exception as exc:  # one broken benchmark must not hide the others
            failed.append(name)
            print(f"FAILED: {type(exc).__name__}: {exc}")
        print(f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
