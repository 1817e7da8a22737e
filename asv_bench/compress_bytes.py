"""Bytes per worker and step of every pysketch.compress algorithm, against uncompressed SGD.

Runs one real step of each algorithm with W workers in one process
(``LocalCommunicator``) at the headline size (d = 10**7, a 5 x 500,000 sketch,
k = 50,000) and prints the measured traffic next to the formula of each paper's
accounting, plus the step's wall time::

    python asv_bench/compress_bytes.py                  # d = 1e7, W = 8
    python asv_bench/compress_bytes.py --d 1000000 --workers 16
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from pysketch.compress import LocalCommunicator, make_algorithm


def configs(d: int, k: int, rows: int, cols: int) -> dict[str, tuple[str, dict, int]]:
    """name -> (algorithm, parameters, upload bytes per worker by the formula)."""
    f32, i32 = 4, 4 if d <= 2**31 else 8
    table = rows * cols * f32
    return {
        "SGD": ("sgd", dict(rho=0.9), d * f32),
        "mem-SGD top-k": ("memsgd", dict(k=k), k * (f32 + i32)),
        "mem-SGD random-k": ("memsgd", dict(k=k, compressor="randomk"), k * f32),
        "Sketched-SGD": ("sketched_sgd", dict(k=k, rows=rows, cols=cols), table),
        "Sketched-SGD p2=4": (
            "sketched_sgd",
            dict(k=k, rows=rows, cols=cols, p2=4),
            table + 4 * k * f32,
        ),
        "FetchSGD": ("fetchsgd", dict(k=k, rows=rows, cols=cols), table),
        "sketch-DL": ("sketchdl", dict(rows=rows, cols=cols), table),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d", type=int, default=10**7, help="dimension (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=8, help="W (default: %(default)s)")
    ap.add_argument("--k", type=int, default=50_000, help="k (default: %(default)s)")
    ap.add_argument("--rows", type=int, default=5, help="sketch rows (default: %(default)s)")
    ap.add_argument("--cols", type=int, default=500_000, help="sketch cols (default: %(default)s)")
    args = ap.parse_args()
    d, w = args.d, args.workers
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(d, dtype=np.float32) for _ in range(w)]
    print(
        f"# {platform.processor() or platform.machine()}, d={d:.0e}, W={w}, k={args.k}, "
        f"sketch {args.rows}x{args.cols}, float32; bytes per worker and step"
    )
    print(
        f"{'algorithm':<20} {'upload':>12} {'download':>12} {'formula up':>12} "
        f"{'wire sent':>12} {'vs SGD (up+down)':>17} {'step s':>8}"
    )
    sgd_total = None
    for name, (algo_name, params, formula) in configs(d, args.k, args.rows, args.cols).items():
        algo = make_algorithm(algo_name, d, lr=0.1, **params)
        comm = LocalCommunicator(w)
        algo.step(grads, comm)  # compile and allocate outside the timing
        start = time.perf_counter()
        algo.step(grads, comm)
        elapsed = time.perf_counter() - start
        t = comm.last_step
        total = t.upload + t.download
        sgd_total = sgd_total or total
        print(
            f"{name:<20} {t.upload:>12,.0f} {t.download:>12,.0f} {formula:>12,} "
            f"{t.wire_sent:>12,.0f} {sgd_total / total:>16.1f}x {elapsed:>8.3f}"
        )


if __name__ == "__main__":
    main()
