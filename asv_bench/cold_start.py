#!/usr/bin/env python
"""Cold start: import time, and the first call of each primitive, cold and warm.

    python asv_bench/cold_start.py                  # every primitive, fresh cache dirs
    python asv_bench/cold_start.py --only topk      # one primitive
    python asv_bench/cold_start.py --json out.json

Each measurement runs in a fresh Python process. *cold*: an empty
``NUMBA_CACHE_DIR`` (so Numba compiles everything the call needs); *warm*: a
second process on the same cache directory (Numba loads the compiled code from
disk). The time is that of the first use after the imports (building the
sketch or input, then the call); the second call of the same process is shown
as *run* (the steady-state cost at this small size). *numba init* is what
Numba spends once per process before its first compilation or cache load
(loading its implementation registries, which imports scipy.linalg when SciPy
is installed); it is paid before the first call and shown apart.
``import pysketch`` is timed apart, also in fresh processes (median of
``--repeats``), and so is the first access to its public names, which loads
the modules behind them and Numba (``import pysketch`` itself is lazy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

D = 100_000

# name -> (setup, call): both Python source run in the child.
CASES = {
    "CountSketch.accumulate": (
        "s = pysketch.CountSketch(D, 5, 1000); x = np.ones(D, np.float32)",
        "s.accumulate(x)",
    ),
    "CountSketch.accumulate_sparse": (
        "s = pysketch.CountSketch(D, 5, 1000); i = np.arange(100); v = np.ones(100, np.float32)",
        "s.accumulate_sparse(i, v)",
    ),
    "CountSketch.estimate": ("s = pysketch.CountSketch(D, 5, 1000)", "s.estimate()"),
    "CountSketch.heavy_hitters": (
        "s = pysketch.CountSketch(D, 5, 1000)",
        "s.heavy_hitters(k=10)",
    ),
    "CountMinSketch.update": (
        "c = pysketch.CountMinSketch(5, 1000); i = np.arange(1000)",
        "c.update(i)",
    ),
    "CountMinSketch.estimate": (
        "c = pysketch.CountMinSketch(5, 1000); i = np.arange(1000)",
        "c.estimate(i)",
    ),
    "topk": ("x = np.ones(D, np.float32)", "pysketch.topk(x, 10)"),
    "threshold": ("x = np.ones(D, np.float32)", "pysketch.threshold(x, 0.5)"),
    "randomk": ("", "pysketch.randomk(D, 10, seed=1)"),
    "scatter": (
        "i = np.arange(10); v = np.ones(10, np.float32)",
        "pysketch.scatter(i, v, D)",
    ),
    "ErrorFeedback.add": (
        "e = pysketch.ErrorFeedback(D); g = np.ones(D, np.float32)",
        "e.add(g)",
    ),
}

CHILD = """
import time, json, sys
t0 = time.perf_counter()
import numpy as np
import pysketch
t1 = time.perf_counter()
from pysketch import CountMinSketch, CountSketch, ErrorFeedback, topk
t1a = time.perf_counter()
from numba.core.registry import cpu_target
cpu_target.target_context.refresh()
t1b = time.perf_counter()
D = {d}
t2 = time.perf_counter()
{setup}
{call}
t3 = time.perf_counter()
{call}
t4 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "names": t1a - t1, "init": t1b - t1a,
                   "first": t3 - t2, "run": t4 - t3,
                   "cuda_imported": "numba.cuda" in sys.modules}}))
"""


def child(code: str, cache_dir: str, env_extra: dict | None = None) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env.update(env_extra or {})
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=sorted(CASES), help="primitive(s) to time")
    ap.add_argument("--repeats", type=int, default=5, help="fresh processes for import time")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    print(f"# {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")
    results: dict = {}
    with tempfile.TemporaryDirectory() as warm_dir:
        imports = [
            child(CHILD.format(d=D, setup="", call="pass"), warm_dir) for _ in range(args.repeats)
        ]
        results["import"] = statistics.median(r["import"] for r in imports)
        results["names"] = statistics.median(r["names"] for r in imports)
        results["cuda_imported"] = any(r["cuda_imported"] for r in imports)
    print(
        f"import pysketch: {results['import'] * 1e3:.0f} ms "
        f"(median of {args.repeats}; numba.cuda imported: {results['cuda_imported']}); "
        f"then its public names (loading Numba): {results['names'] * 1e3:.0f} ms"
    )
    print(f"{'primitive':32s} {'cold':>9s} {'warm':>9s} {'run':>9s} {'numba init':>11s}")
    for name in args.only or CASES:
        setup, call = CASES[name]
        code = CHILD.format(d=D, setup=setup, call=call)
        with tempfile.TemporaryDirectory() as cache:
            cold = child(code, cache)
            warm = child(code, cache)
        results[name] = {
            "cold": cold["first"],
            "warm": warm["first"],
            "run": warm["run"],
            "init": warm["init"],
        }
        print(
            f"{name:32s} {cold['first']:8.2f}s {warm['first']:8.3f}s {warm['run']:8.4f}s "
            f"{warm['init']:10.3f}s"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
