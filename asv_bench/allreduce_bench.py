"""Sketch allreduce vs dense allreduce: time and bytes per rank.

Run under MPI, e.g.::

    mpiexec -n 4 python -m mpi4py asv_bench/allreduce_bench.py --d 10000000 --rows 5 --cols 500000

(Open MPI as root also needs ``OMPI_ALLOW_RUN_AS_ROOT=1
OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1``, and ``--oversubscribe`` for more ranks
than cores.) Every rank sketches its own float32 gradient of dimension ``d``;
the script times ``allreduce_sketch`` of the ``rows x cols`` table and
``allreduce`` of the dense vector, each repetition started after a barrier and
timed as the slowest rank's, and prints on rank 0 the median times, the bytes
per rank of each (payload as the papers count it, and on the wire for a ring
allreduce) and the dense/sketch ratios.

This is a standalone script, not an asv suite: asv runs benchmarks in a single
process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

_REPO = Path(__file__).resolve().parents[1]
if (_REPO / "pysketch" / "__init__.py").exists():  # run from a checkout: bench it, not a copy
    sys.path.insert(0, str(_REPO))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, default=10_000_000, help="gradient dimension")
    parser.add_argument("--rows", type=int, default=5, help="sketch rows")
    parser.add_argument("--cols", type=int, default=500_000, help="sketch columns")
    parser.add_argument("--repeat", type=int, default=10, help="timed repetitions")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (for asv) instead of a table"
    )
    parser.add_argument(
        "--path", choices=("auto", "direct", "staged"), default="auto", help="device transfer"
    )
    parser.add_argument(
        "--no-check", action="store_true", help="skip the per-call consistency allgather"
    )
    return parser.parse_args()


def _timed(comm, fn, repeat: int, warmup: int) -> list[float]:
    """Wall times of ``fn()``: the slowest rank's, one per repetition."""
    from mpi4py import MPI

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        comm.Barrier()
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        times.append(comm.allreduce(elapsed, op=MPI.MAX))
    return times


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:10.2f} MiB"


def main() -> None:
    args = _parse()
    from mpi4py import MPI

    from pysketch import CountSketch, _cuda
    from pysketch import distributed as dist

    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    path = None if args.path == "auto" else args.path
    check = not args.no_check

    seed = dist.broadcast_seed(2024, comm)
    grad = np.random.default_rng(rank).standard_normal(args.d).astype(np.float32)
    sketch = CountSketch(args.d, args.rows, args.cols, seed=seed, device=args.device)
    dense = grad if args.device == "cpu" else _cuda.to_device(grad)
    dense_out = np.empty_like(grad) if args.device == "cpu" else _cuda.empty(args.d, np.float32)

    comm.Barrier()
    start = time.perf_counter()
    sketch.accumulate(dense)  # includes the first call's JIT compilation
    first_accumulate = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    accumulate = _timed(comm, lambda: sketch.zero().accumulate(dense), 3, 0)
    dist.check_compatible(sketch, comm)

    sketch_counter, dense_counter = dist.ByteCounter(comm), dist.ByteCounter(comm)

    def sketch_allreduce():
        dist.allreduce_sketch(sketch, comm, counter=sketch_counter, path=path, check=check)

    def dense_allreduce():
        dist.allreduce(dense, comm, out=dense_out, counter=dense_counter, path=path, check=check)

    t_sketch = statistics.median(_timed(comm, sketch_allreduce, args.repeat, args.warmup))
    t_dense = statistics.median(_timed(comm, dense_allreduce, args.repeat, args.warmup))
    s_rec, d_rec = sketch_counter.records[-1], dense_counter.records[-1]

    if rank == 0 and args.json:
        print(
            json.dumps(
                {
                    "ranks": world,
                    "path": s_rec.path,
                    "sketch_seconds": t_sketch,
                    "dense_seconds": t_dense,
                    "sketch_wire_bytes": s_rec.wire_sent,
                    "dense_wire_bytes": d_rec.wire_sent,
                    "sketch_payload_bytes": s_rec.payload_sent,
                    "dense_payload_bytes": d_rec.payload_sent,
                }
            )
        )
    elif rank == 0:
        print(
            f"W={world} ranks, d={args.d:,}, sketch {args.rows} x {args.cols:,} "
            f"(float32), device={args.device}, path={s_rec.path}, check={check}, "
            f"median of {args.repeat} (slowest rank each)"
        )
        print(
            f"  sketch accumulate:  {statistics.median(accumulate) * 1e3:9.2f} ms "
            f"(first call with JIT: {first_accumulate:.2f} s)"
        )
        rows = [("sketch allreduce", t_sketch, s_rec), ("dense allreduce", t_dense, d_rec)]
        print(
            f"  {'':18}{'time':>12}{'payload up':>16}{'payload down':>16}"
            f"{'wire sent':>16}{'wire recv':>16}"
        )
        for name, t, rec in rows:
            print(
                f"  {name:18}{t * 1e3:9.2f} ms{_mib(rec.payload_sent):>16}"
                f"{_mib(rec.payload_received):>16}{_mib(rec.wire_sent):>16}"
                f"{_mib(rec.wire_received):>16}"
            )
        wire_ratio = d_rec.wire_sent / s_rec.wire_sent if s_rec.wire_sent else float("nan")
        print(
            f"  dense / sketch: time x{t_dense / t_sketch:.2f}, "
            f"payload bytes x{d_rec.payload_sent / s_rec.payload_sent:.2f}, "
            f"wire bytes x{wire_ratio:.2f}"
        )


if __name__ == "__main__":
    main()
