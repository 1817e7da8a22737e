"""Quick start: ``python -m pysketch`` sketches W workers' gradients, recovers the heavy ones.

Each worker holds a gradient with a few large coordinates (shared by all
workers) over Gaussian noise. Each compresses it into a Count Sketch; the
sketches are summed (what an allreduce does), and the top-k coordinates are
recovered from the sum and compared with the true top-k of the summed
gradient. Prints recall, estimation error, the bytes sent, and the time spent
compiling (or loading the compiled kernels from Numba's cache) apart from the
time spent sketching. Exits 1 with a message when the recall is below
``--min-recall``, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from pysketch import CountSketch, _memory, hashing, topk, warm_up
from pysketch.kernels.reductions import MAX_ROWS

DESCRIPTION = """\
Quick start: W workers each sketch a gradient (a few large coordinates shared
by all workers, over Gaussian noise) into a Count Sketch; the sketches are
summed, as an allreduce would, and the top-k coordinates are recovered from the
sum and compared with the true top-k of the summed gradient. Prints the
recall, the estimation error, the bytes sent, and the compile time apart from
the run time."""

EPILOG = """\
exit status: 0 when the recall reaches --min-recall, 1 when it does not,
2 for bad arguments. The first run on a machine compiles the kernels (seconds;
cached on disk under NUMBA_CACHE_DIR, or __pycache__ beside the sources);
later runs load them."""


def _int_in(low: int, high: int | None = None):
    """An argparse type: an integer in ``[low, high]`` (argparse names the option)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = _integral_float(text)  # 1e6 for a million
            if value is None:
                raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def _integral_float(text: str) -> int | None:
    """``text`` as an integer when it spells one in float notation (``1e6``), else ``None``."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not value.is_integer() or abs(value) > 2**53:  # beyond 2**53 floats skip integers
        return None
    return int(value)


def _memory_needed(args: argparse.Namespace) -> dict[str, int]:
    """Bytes the quick start holds at the least, keyed by the options that set them."""
    # The planted signal and a worker's gradient (float32), the true sum and the noise
    # drawn in float64; two sketches (the sum and a worker's) of float32 cells.
    return {
        f"--d {args.d}": args.d * (4 + 4 + 8 + 8),
        f"--rows {args.rows}, --cols {args.cols}": 2 * args.rows * args.cols * 4,
    }


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The quick start's argument parser (every option has help and shows its default)."""
    parser = argparse.ArgumentParser(
        prog="python -m pysketch",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=lambda prog: argparse.ArgumentDefaultsHelpFormatter(prog, width=88),
    )
    parser.add_argument(
        "--d",
        type=_int_in(1, hashing.MAX_INDEX),
        default=1_000_000,
        help="gradient dimension",
    )
    parser.add_argument("--workers", type=_int_in(1), default=4, help="number of workers W")
    parser.add_argument("--rows", type=_int_in(1, MAX_ROWS), default=5, help="sketch rows")
    parser.add_argument(
        "--cols",
        type=_int_in(1, hashing.MAX_COLS),
        default=20_000,
        help="sketch columns (buckets per row)",
    )
    parser.add_argument(
        "--k",
        type=_int_in(1),
        default=50,
        help="heavy coordinates planted and recovered (at most --d)",
    )
    parser.add_argument(
        "--seed",
        type=_int_in(0, 2**64 - 1),
        default=0,
        help="hash seed shared by all workers (also seeds the data)",
    )
    parser.add_argument(
        "--hash",
        choices=hashing.FAMILIES,
        default=hashing.DEFAULT_FAMILY,
        help="hash family: 'mix' (murmur finaliser, faster) or 'polynomial' "
        "(Carter-Wegman, provably 2- and 4-wise independent)",
    )
    parser.add_argument(
        "--min-recall",
        type=_fraction,
        default=0.9,
        help="fail (exit status 1) when the recall of the true top-k is below this",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.k > args.d:
        parser.error(f"--k must be at most --d ({args.d}), got {args.k}")
    try:
        _memory.check_fits(_memory_needed(args), "the quick start")
    except ValueError as exc:
        parser.error(str(exc))

    t0 = time.perf_counter()
    warm_up(["float32"], groups=["CountSketch"])
    compile_time = time.perf_counter() - t0

    rng = np.random.default_rng(args.seed)
    heavy = rng.choice(args.d, args.k, replace=False)
    signal = np.zeros(args.d, dtype=np.float32)
    signal[heavy] = rng.choice([-1.0, 1.0], args.k) * rng.uniform(20, 40, args.k)

    total = CountSketch(args.d, args.rows, args.cols, seed=args.seed, hash=args.hash)
    true_sum = np.zeros(args.d, dtype=np.float64)
    progress = sys.stderr.isatty()
    start = time.perf_counter()
    for worker in range(args.workers):
        gradient = signal + rng.standard_normal(args.d).astype(np.float32)
        true_sum += gradient
        sketch = CountSketch(args.d, args.rows, args.cols, seed=args.seed, hash=args.hash)
        total += sketch.accumulate(gradient)
        if progress:
            print(f"\rsketched worker {worker + 1}/{args.workers}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    indices, values = total.heavy_hitters(k=args.k)
    elapsed = time.perf_counter() - start

    expected, _ = topk(true_sum, args.k)
    recall = len(set(indices.tolist()) & set(expected.tolist())) / args.k
    error = float(np.abs(values - true_sum[indices]).max())
    scale = float(np.abs(true_sum[indices]).max())
    dense_bytes = args.d * 4
    print(f"d={args.d} W={args.workers} sketch={args.rows}x{args.cols} k={args.k} hash={args.hash}")
    print(f"recall of the true top-{args.k}: {recall:.3f}")
    print(
        f"max |estimate - true| on recovered coordinates: {error:.3f} "
        f"({error / scale:.1%} of the largest recovered |true| value, {scale:.1f})"
    )
    print(
        f"bytes per worker: sketch {total.nbytes:,} vs dense {dense_bytes:,} "
        f"({dense_bytes / total.nbytes:.1f}x less)"
    )
    print(f"compile or load kernels (once per process): {compile_time:.3f} s")
    print(f"time (sketch {args.workers} workers + recover): {elapsed:.3f} s")
    if recall < args.min_recall:
        print(
            f"error: recall {recall:.3f} is below --min-recall {args.min_recall}; give the "
            f"sketch more columns (--cols, now {args.cols}) or rows (--rows, now {args.rows})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
