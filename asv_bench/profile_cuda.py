#!/usr/bin/env python
"""Driver for profiling the Count Sketch CUDA kernels with Nsight Compute.

Builds ``CountSketch(d=1e7, rows=5, cols=5e5, device="cuda")``, then runs
``--warmups`` rounds of accumulate (a CuPy float32 vector) + estimate-all
(JIT compilation, module load, allocator) followed by ``--rounds`` profiled
rounds. Each round launches ``cuda_accumulate`` once and ``cuda_estimate`` (the
kernel generated for 5 rows) once (``check_finite=False``, so no other pysketch
kernel runs), so skipping ``2 * warmups`` matched launches leaves the profiled
ones::

    ncu --clock-control none -k regex:'cuda_accumulate|cuda_estimate' \\
        --launch-skip 4 --launch-count 2 \\
        --section SpeedOfLight --section MemoryWorkloadAnalysis \\
        --section Occupancy --section LaunchStats \\
        python3 asv_bench/profile_cuda.py

Numba mangles kernel names (``_ZN...cuda_accumulate...``), hence the regex.
Run alone (no ncu), it also prints event-timed medians of each call, and of the
device top-k of the estimates (sorted and not), heavy hitters (estimate + top-k)
and a Count-Min update of ``d`` keys. The top-k's kernels, for ncu:
``-k regex:'cuda_radix_pass|cuda_select_count|cuda_select_write|cuda_sort_pass'``
(3 digit passes, 2 compaction kernels and 4 sort passes per sorted float32 call).

``--crosscheck`` instead checks, at ``--d`` (1e6 suits), that the same seed
gives the same results on the CPU and the GPU: every bucket and sign of every
row (decoded exactly from a desketch of a float64 table holding ``b + 1`` in
row ``j`` only), the accumulated table of an integer-valued vector (exact in
float64, whatever order the atomics add in), the estimates, top-k, the
threshold heavy hitters and random-k::

    python3 asv_bench/profile_cuda.py --crosscheck --d 1000000 --cols 50000
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # machine.py


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=10**7)
    ap.add_argument("--rows", type=int, default=5)
    ap.add_argument("--cols", type=int, default=500_000)
    ap.add_argument("--warmups", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--hash", default="mix", choices=["mix", "polynomial"])
    ap.add_argument("--k", type=int, default=50_000, help="top-k of the estimates")
    ap.add_argument("--crosscheck", action="store_true", help="CPU vs GPU, no timing")
    args = ap.parse_args(argv)
    if args.crosscheck:
        for family in ("mix", "polynomial"):
            crosscheck(args.d, args.rows, args.cols, family)
        return

    from machine import gpu_description, require_gpu

    cp = require_gpu("profile_cuda.py")
    from pysketch import CountMinSketch, CountSketch, topk

    x = cp.asarray(np.random.default_rng(0).standard_normal(args.d, dtype=np.float32))
    sketch = CountSketch(args.d, args.rows, args.cols, seed=1, hash=args.hash, device="cuda")

    def one_round():
        sketch.zero()  # a CuPy fill on a CuPy table: no pysketch kernel
        sketch.accumulate(x, check_finite=False)
        return sketch.estimate()

    for _ in range(args.warmups):
        one_round()
    cp.cuda.runtime.deviceSynchronize()

    start, mid, stop = cp.cuda.Event(), cp.cuda.Event(), cp.cuda.Event()
    acc_ms, est_ms = [], []
    for _ in range(args.rounds):
        sketch.zero()
        start.record()
        sketch.accumulate(x, check_finite=False)
        mid.record()
        est = sketch.estimate()
        stop.record()
        stop.synchronize()
        acc_ms.append(cp.cuda.get_elapsed_time(start, mid))
        est_ms.append(cp.cuda.get_elapsed_time(mid, stop))
    err = float(cp.linalg.norm(est - x) / cp.linalg.norm(x))
    print(f"# GPU: {gpu_description()}")
    print(
        f"d={args.d} rows={args.rows} cols={args.cols} hash={args.hash}: "
        f"accumulate {np.median(acc_ms):.3f} ms, estimate-all {np.median(est_ms):.3f} ms "
        f"(median of {args.rounds}); ||est - x|| / ||x|| = {err:.3f} (noise: x is dense)"
    )
    keys = cp.asarray(np.random.default_rng(1).integers(0, 10 * args.d, args.d))
    cms = CountMinSketch(args.rows, args.cols, dtype=np.float32, device="cuda")
    weights = cp.abs(x)
    for label, call in (
        (f"top-k k={args.k}", lambda: topk(est, args.k, check_finite=False)),
        (f"top-k k={args.k} unsorted", lambda: topk(est, args.k, sorted=False, check_finite=False)),
        (f"heavy_hitters k={args.k}", lambda: sketch.heavy_hitters(k=args.k)),
        ("count-min update n=d", lambda: cms.update(keys, weights)),
    ):
        print(f"{label}: {event_timed(cp, call, args.warmups, args.rounds):.3f} ms (median)")


def event_timed(cp, call, warmups: int, rounds: int) -> float:
    """Median milliseconds of ``call`` between two CUDA events, after ``warmups`` calls."""
    for _ in range(warmups):
        call()
    start, stop, times = cp.cuda.Event(), cp.cuda.Event(), []
    for _ in range(rounds):
        start.record()
        call()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop))
    return float(np.median(times))


def crosscheck(d: int, rows: int, cols: int, family: str, k: int = 1000) -> None:
    """Raise unless CPU and GPU agree exactly at dimension ``d`` (see the docstring)."""
    from machine import require_gpu

    cp = require_gpu("profile_cuda.py --crosscheck")

    from pysketch import CountSketch, randomk, topk

    seed = 12345
    sketches = {
        dev: CountSketch(d, rows, cols, seed=seed, hash=family, dtype=np.float64, device=dev)
        for dev in ("cpu", "cuda")
    }
    # Buckets and signs: with row j holding b + 1 and the other rows 0, the mean
    # desketch of i is s_j(i) (h_j(i) + 1) / rows, exact in float64.
    decoded = {}
    for dev, sk in sketches.items():
        for j in range(rows):
            host = np.zeros((rows, cols))
            host[j] = np.arange(1, cols + 1)
            sk.table[...] = host if dev == "cpu" else cp.asarray(host)
            out = sk.desketch()
            out = out if dev == "cpu" else cp.asnumpy(out)
            decoded[dev, j] = np.rint(out * rows).astype(np.int64)
    for j in range(rows):
        cpu, gpu = decoded["cpu", j], decoded["cuda", j]
        assert (np.abs(cpu) >= 1).all() and (np.abs(cpu) <= cols).all(), f"row {j} decode"
        mismatch = int((cpu != gpu).sum())
        assert mismatch == 0, f"{family} row {j}: {mismatch} buckets/signs differ"
    rng = np.random.default_rng(7)
    x = rng.integers(-8, 9, size=d).astype(np.float64)
    heavy = rng.choice(d, size=k, replace=False)
    x[heavy] = rng.permutation(np.arange(1000, 1000 + k)) * rng.choice([-1, 1], size=k)
    for dev, sk in sketches.items():
        sk.zero()
        sk.accumulate(x if dev == "cpu" else cp.asarray(x))
    host = {dev: np.asarray(sk.table_to_host()) for dev, sk in sketches.items()}
    assert np.array_equal(host["cpu"], host["cuda"]), f"{family}: tables differ"
    est = {dev: sk.estimate() for dev, sk in sketches.items()}
    assert np.array_equal(est["cpu"], cp.asnumpy(est["cuda"])), f"{family}: estimates differ"
    top = {dev: topk(est[dev], k) for dev in sketches}
    for part, name in ((0, "top-k indices"), (1, "top-k values")):
        assert np.array_equal(top["cpu"][part], cp.asnumpy(top["cuda"][part])), name
    hh = {dev: sk.heavy_hitters(threshold=0.01) for dev, sk in sketches.items()}
    assert np.array_equal(hh["cpu"][0], cp.asnumpy(hh["cuda"][0])), "threshold indices"
    rk_cpu = randomk(d, k, seed=seed, device="cpu")
    rk_gpu = cp.asnumpy(randomk(d, k, seed=seed, device="cuda"))
    assert np.array_equal(rk_cpu, rk_gpu), "random-k differs"
    recovered = len(set(top["cpu"][0].tolist()) & set(heavy.tolist()))
    print(
        f"crosscheck {family}: d={d} rows={rows} cols={cols}: buckets, signs, table, "
        f"estimates, top-{k} ({recovered}/{k} planted recovered), {len(hh['cpu'][0])} "
        f"threshold hitters and random-{k} identical on CPU and GPU"
    )


if __name__ == "__main__":
    main()
