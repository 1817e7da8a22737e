#!/usr/bin/env python
"""Cold start of an MPI job: every rank compiling at once, or one rank per node.

    export NUMBA_CACHE_DIR=$(mktemp -d)           # an empty cache: a cold start
    mpiexec -n 4 --oversubscribe python asv_bench/mpi_cold_start.py            # all ranks compile
    export NUMBA_CACHE_DIR=$(mktemp -d)
    mpiexec -n 4 --oversubscribe python asv_bench/mpi_cold_start.py --warm-up  # one rank compiles

Each rank sketches a vector, allreduces the sketch and recovers the heavy
hitters (the quick start's work); rank 0 prints the wall time of the slowest
rank from start to finish, and with ``--warm-up`` the part spent in
:func:`pysketch.distributed.warm_up`. Run it a second time on the same cache
directory for the warm figure.
"""

from __future__ import annotations

import argparse
import time

T0 = time.perf_counter()

import numba  # noqa: E402
import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import pysketch  # noqa: E402
from pysketch import distributed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--warm-up", action="store_true", help="call distributed.warm_up() first")
    ap.add_argument("--d", type=int, default=100_000, help="vector length")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    imported = time.perf_counter() - T0
    warm = 0.0
    if args.warm_up:
        warm = distributed.warm_up(comm, dtypes=["float32"], groups=["CountSketch"])
    x = np.random.default_rng(comm.rank).standard_normal(args.d).astype(np.float32)
    sketch = pysketch.CountSketch(args.d, 5, 1000, seed=distributed.broadcast_seed(1))
    distributed.allreduce_sketch(sketch.accumulate(x))
    sketch.heavy_hitters(k=10)
    total = time.perf_counter() - T0
    worst = np.empty(3)
    comm.Reduce(np.array([imported, warm, total]), worst, op=MPI.MAX, root=0)
    if comm.rank == 0:
        print(
            f"{comm.size} ranks, {numba.get_num_threads()} numba threads each: slowest rank "
            f"import {worst[0]:.2f} s, warm_up {worst[1]:.2f} s, start to finish {worst[2]:.2f} s"
        )


if __name__ == "__main__":
    main()
