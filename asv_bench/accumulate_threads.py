#!/usr/bin/env python
"""Count Sketch accumulate against the thread count: peak memory and time.

    python asv_bench/accumulate_threads.py                       # d=5e7, rows 5, cols 2e6
    python asv_bench/accumulate_threads.py --d 10000000 --cols 500000 --repeats 9

Peak memory: one fresh subprocess per thread count, started with
``NUMBA_NUM_THREADS=16`` (so 16 threads run even on 2 cores) and
``numba.set_num_threads(t)``; the peak RSS (VmHWM, reset after imports and JIT
warm-up) minus the RSS before the input is made, against the input + table and
against the bound input + 2 x table.

Time: in this process, ``--repeats`` dense accumulates (no NaN check),
alternating with the plain scatter-add floor (``baselines.ScatterAddNumba``: the
same updates with precomputed buckets, parallel over rows) at each thread
count this machine runs; the median of the per-pair ratios. Run it with
two versions of pysketch on ``PYTHONPATH`` to compare them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from machine import cpu_description  # noqa: E402
from peakrss import peak_rss  # noqa: E402


def peak_memory(threads: int, d: int, rows: int, cols: int) -> dict:
    setup = f"""
        import numba, numpy as np
        import pysketch
        from pysketch import CountSketch
        numba.set_num_threads({threads})
        CountSketch(4096, {rows}, 64).accumulate(np.ones(4096, np.float32))  # JIT / cache load
    """
    measured = f"""
        x = np.random.default_rng(0).standard_normal({d}, dtype=np.float32)
        sketch = CountSketch({d}, {rows}, {cols}, seed=1).accumulate(x)
    """
    report = (
        "dict(input=x.nbytes, table=sketch.table.nbytes, threads=numba.get_num_threads(), "
        "package=pysketch.__file__)"
    )
    return peak_rss(setup, measured, report, env=dict(os.environ, NUMBA_NUM_THREADS="16"))


def paired_times(fn, baseline, repeats: int) -> tuple[float, float, float]:
    """Median times of ``fn`` and ``baseline``, run alternately, and the median of their ratios.

    Alternating keeps a change in the machine's load (it is shared) from
    landing on one side only.
    """
    fn(), baseline()
    ours, theirs = [], []
    for _ in range(repeats):
        for call, times in ((fn, ours), (baseline, theirs)):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    ratio = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
    return statistics.median(ours), statistics.median(theirs), ratio


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=5 * 10**7)
    ap.add_argument("--rows", type=int, default=5)
    ap.add_argument("--cols", type=int, default=2 * 10**6)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 16])
    ap.add_argument("--time-d", type=int, default=10**7)
    ap.add_argument("--time-cols", type=int, default=500_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-time", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args(argv)

    import numba

    import pysketch

    print(f"# pysketch {pysketch.__file__}")
    print(f"# {cpu_description()}; numba {numba.__version__}, numpy {np.__version__}")
    if not args.no_memory:
        print(f"# peak memory: d={args.d:.0e} float32, rows {args.rows}, cols {args.cols}")
    for threads in [] if args.no_memory else args.threads:
        r = peak_memory(threads, args.d, args.rows, args.cols)
        mib = 2**20
        bound = r["input"] + 2 * r["table"]
        if not r["package"].startswith(os.path.dirname(pysketch.__file__)):
            sys.exit(f"the subprocess imported {r['package']}")
        print(
            f"  threads {r['threads']:>2}  used {r['used'] / mib:8.1f} MiB  input+table "
            f"{(r['input'] + r['table']) / mib:7.1f} MiB  scratch "
            f"{(r['used'] - r['input'] - r['table']) / mib:7.1f} MiB  "
            f"used / (input + 2 x table) {r['used'] / bound:5.2f}",
            flush=True,
        )
    if args.no_time:
        return

    import baselines

    from pysketch import CountSketch

    d, rows, cols = args.time_d, args.rows, args.time_cols
    x = np.random.default_rng(1).standard_normal(d, dtype=np.float32)
    buckets, signs = baselines.precomputed_hashes(d, rows, cols, seed=1)
    floor = baselines.ScatterAddNumba(buckets, signs, cols)
    sketch = CountSketch(d, rows, cols, seed=1)
    print(f"# time: d={d:.0e} float32, rows {rows}, cols {cols}; median of {args.repeats}")
    for threads in range(1, numba.config.NUMBA_NUM_THREADS + 1):
        numba.set_num_threads(threads)
        t_sketch, t_floor, ratio = paired_times(
            lambda: sketch.accumulate(x, check_finite=False),
            lambda: floor.accumulate(x),
            args.repeats,
        )
        print(
            f"  threads {threads:>2}  accumulate {t_sketch * 1e3:8.2f} ms  scatter-add floor "
            f"{t_floor * 1e3:8.2f} ms  ratio {ratio:6.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
