"""Peak memory of a dense Count Sketch accumulate at 1, 2 and 16 threads.

The scratch must stay within one table at any thread count (peak at most
input + 2 x table). ``NUMBA_NUM_THREADS`` is raised to 16 before Numba is
imported, so 16 threads run even on a 2-core machine; that is why these
benchmarks live in a module of their own (asv runs each in a fresh process).
``asv_bench/accumulate_threads.py`` prints the same figures net of the
interpreter and the imports.
"""

from __future__ import annotations

import os
import sys

from .common import HEAD_ROWS, SEED, gradient_like

if "numba" not in sys.modules:
    os.environ.setdefault("NUMBA_NUM_THREADS", "16")

# A 38 MiB table (5 x 2e6 float32) and a 191 MiB input: the case of issue 10.
D, COLS = 5 * 10**7, 2 * 10**6


class PeakMemThreads:
    """Peak RSS of ``CountSketch(5e7, 5, 2e6).accumulate(x)`` (float32) per Numba thread count."""

    params = [[1, 2, 16]]
    param_names = ["threads"]
    timeout = 600

    def setup(self, threads):
        import numba

        from pysketch import CountSketch

        if threads > numba.config.NUMBA_NUM_THREADS:
            raise NotImplementedError(f"Numba was imported with fewer than {threads} threads")
        numba.set_num_threads(threads)
        CountSketch(4096, HEAD_ROWS, 64).accumulate(gradient_like(4096))  # JIT / cache load
        self.x = gradient_like(D)

    def peakmem_accumulate_dense(self, threads):
        from pysketch import CountSketch

        CountSketch(D, HEAD_ROWS, COLS, seed=SEED).accumulate(self.x)
