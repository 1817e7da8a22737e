#!/usr/bin/env python
"""Top-k of n float32 values for k from small to n, against NumPy, in one process.

    python asv_bench/topk_large.py                  # n = 1e7
    python asv_bench/topk_large.py --n 100000000 --repeats 3

For each k it prints the median time of ``pysketch.topk(x, k)`` (sorted by
descending ``|x|``, ties by index) and its ratio to ``np.argpartition`` of
``|x|`` (the k largest, unsorted) and to a full ``np.argsort`` of ``|x|``
(quicksort, unstable), then that of ``pysketch.topk(x, k, sorted=False)``
(the same k indices in ascending order) and its ratio to ``np.argpartition``;
below 1 pysketch is faster. Calls alternate so that a
change in a shared machine's load falls on both sides. Peak memory: one fresh
subprocess per k; the peak RSS (VmHWM, reset after the input is made and the
kernels are loaded) minus the RSS before the call, in bytes per input value.
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

from accumulate_threads import cpu_description  # noqa: E402
from peakrss import peak_rss  # noqa: E402


def paired(fns: dict, repeats: int) -> dict:
    """Median time of each callable, the callables run in turn ``repeats`` times."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_bytes(n: int, k: int, ordered: bool = True) -> int:
    setup = f"""
        import numpy as np
        from pysketch import topk
        x = np.random.default_rng(0).standard_normal({n}, dtype=np.float32)
        topk(x[:300_000], 300_000, sorted={ordered})  # every kernel loaded
    """
    return peak_rss(setup, f"idx, val = topk(x, {k}, sorted={ordered})")["used"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10**7)
    ap.add_argument("--k", type=float, nargs="+", default=[1e-4, 1e-2, 0.1, 0.5, 1.0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args(argv)

    import numba

    import pysketch

    n = args.n
    x = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    print(f"# pysketch {pysketch.__file__}")
    print(
        f"# {cpu_description()}; numba {numba.__version__} ({numba.get_num_threads()} threads), "
        f"numpy {np.__version__}"
    )
    print(f"# n={n:.0e} float32; median of {args.repeats}; ratio = pysketch / NumPy")
    for fraction in args.k:
        k = max(1, min(n, round(fraction * n)))
        t = paired(
            {
                "topk": lambda k=k: pysketch.topk(x, k),
                "unsorted": lambda k=k: pysketch.topk(x, k, sorted=False),
                "argpartition": lambda k=k: np.argpartition(np.abs(x), n - k)[n - k :],
                "argsort": lambda: np.argsort(np.abs(x)),
            },
            args.repeats,
        )
        memory = memory_unsorted = ""
        if not args.no_memory:
            memory = f"  peak {peak_bytes(n, k) / n:5.2f} B/value"
            memory_unsorted = f"  peak {peak_bytes(n, k, False) / n:5.2f} B/value"
        print(
            f"  k={k:>11,}  topk {t['topk']:8.3f} s  argpartition {t['argpartition']:8.3f} s "
            f"(ratio {t['topk'] / t['argpartition']:6.3f})  argsort {t['argsort']:8.3f} s "
            f"(ratio {t['topk'] / t['argsort']:6.3f}){memory}\n"
            f"  {'sorted=False':>13}  topk {t['unsorted']:8.3f} s  "
            f"(ratio to argpartition {t['unsorted'] / t['argpartition']:6.3f}){memory_unsorted}",
            flush=True,
        )


if __name__ == "__main__":
    main()
