"""Quick start: ``python -m pysketch`` sketches W workers' gradients, recovers the heavy ones.

Each worker holds a gradient with a few large coordinates (shared by all
workers) over Gaussian noise. Each compresses it into a Count Sketch; the
sketches are summed (what an allreduce does), and the top-k coordinates are
recovered from the sum and compared with the true top-k of the summed
gradient. Prints recall, estimation error and the bytes sent.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pysketch import CountSketch, topk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pysketch", description=__doc__)
    parser.add_argument("--d", type=int, default=1_000_000, help="gradient dimension")
    parser.add_argument("--workers", type=int, default=4, help="number of workers W")
    parser.add_argument("--rows", type=int, default=5, help="sketch rows")
    parser.add_argument("--cols", type=int, default=20_000, help="sketch columns")
    parser.add_argument("--k", type=int, default=50, help="coordinates to recover")
    parser.add_argument("--seed", type=int, default=0, help="hash seed shared by all workers")
    parser.add_argument("--hash", choices=("mix", "polynomial"), default="mix")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    heavy = rng.choice(args.d, args.k, replace=False)
    signal = np.zeros(args.d, dtype=np.float32)
    signal[heavy] = rng.choice([-1.0, 1.0], args.k) * rng.uniform(20, 40, args.k)

    total = CountSketch(args.d, args.rows, args.cols, seed=args.seed, hash=args.hash)
    true_sum = np.zeros(args.d, dtype=np.float64)
    start = time.perf_counter()
    for _ in range(args.workers):
        gradient = signal + rng.standard_normal(args.d).astype(np.float32)
        true_sum += gradient
        worker = CountSketch(args.d, args.rows, args.cols, seed=args.seed, hash=args.hash)
        total += worker.accumulate(gradient)
    indices, values = total.heavy_hitters(k=args.k)
    elapsed = time.perf_counter() - start

    expected, _ = topk(true_sum, args.k)
    recall = len(set(indices.tolist()) & set(expected.tolist())) / args.k
    error = float(np.abs(values - true_sum[indices]).max())
    dense_bytes = args.d * 4
    print(f"d={args.d} W={args.workers} sketch={args.rows}x{args.cols} k={args.k} hash={args.hash}")
    print(f"recall of the true top-{args.k}: {recall:.3f}")
    print(f"max |estimate - true| on recovered coordinates: {error:.3f}")
    print(
        f"bytes per worker: sketch {total.nbytes:,} vs dense {dense_bytes:,} "
        f"({dense_bytes / total.nbytes:.1f}x less)"
    )
    print(f"time (sketch {args.workers} workers + recover): {elapsed:.3f} s")
    return 0 if recall >= 0.9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
