"""Speed and quality of the two hash families, measured side by side in one process.

    python asv_bench/hash_families.py [--d 10000000] [--rows 5] [--cols 500000]

Speed: accumulate (dense, no NaN scan) and estimate-all of a Count Sketch, and
the ratio polynomial / mix. Quality: bucket-load chi-square per degree of
freedom (about 1 for an ideal hash) and sign balance, on consecutive and on
strided indices; and the Count Sketch estimation error relative to
||x||_2 / sqrt(cols), averaged over seeds (about the same for both families
when the mixing hash behaves like an independent one).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pysketch import CountSketch, hashing


def best_of(fn, repeats: int = 3) -> float:
    fn()  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def quality(family: str, n: int = 2_000_000, cols: int = 1000, seeds: int = 3) -> dict:
    code = hashing.family_code(family)
    result = {}
    for label, indices in (("consecutive", np.arange(n)), ("stride 4096", np.arange(n) * 4096)):
        chi2, sign_z = [], []
        for seed in range(seeds):
            keys = hashing.hash_keys(seed, 1, family)
            buckets, signs = hashing.bucket_sign_batch(code, keys, 0, indices, cols)
            load = np.bincount(buckets, minlength=cols)
            expected = n / cols
            chi2.append(float(((load - expected) ** 2 / expected).sum()) / (cols - 1))
            sign_z.append(abs(float(signs.sum())) / np.sqrt(n))
        result[label] = (np.mean(chi2), np.mean(sign_z))
    return result


def estimation_error(family: str, d: int = 100_000, cols: int = 2000, seeds: int = 5) -> float:
    rng = np.random.default_rng(0)
    errors = []
    for seed in range(seeds):
        x = rng.standard_normal(d)
        sketch = CountSketch(d, 5, cols, seed=seed, hash=family, dtype=np.float64).accumulate(x)
        errors.append(np.sqrt(np.mean((sketch.estimate() - x) ** 2)))
    return float(np.mean(errors) / (np.sqrt(d) / np.sqrt(cols)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=10_000_000)
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--cols", type=int, default=500_000)
    args = parser.parse_args()
    x = np.random.default_rng(0).standard_normal(args.d).astype(np.float32)
    speed = {}
    for family in hashing.FAMILIES:
        sketch = CountSketch(args.d, args.rows, args.cols, hash=family)
        speed[family] = (
            best_of(lambda s=sketch: s.accumulate(x, check_finite=False)),
            best_of(lambda s=sketch: s.estimate()),
        )
    print(f"d={args.d} rows={args.rows} cols={args.cols} (seconds, best of 3)")
    print(f"{'family':<12}{'accumulate':>12}{'estimate':>12}")
    for family, (acc, est) in speed.items():
        print(f"{family:<12}{acc:>12.3f}{est:>12.3f}")
    ratio_acc = speed["polynomial"][0] / speed["mix"][0]
    ratio_est = speed["polynomial"][1] / speed["mix"][1]
    print(f"polynomial / mix: accumulate {ratio_acc:.2f}x, estimate {ratio_est:.2f}x")
    print()
    print("quality: chi2/dof of bucket load (ideal ~1), |sign sum|/sqrt(n) (ideal ~0.8),")
    print("         RMS estimation error / (||x|| / sqrt(cols)) (same for both when mix is sound)")
    for family in hashing.FAMILIES:
        q = quality(family)
        cells = "  ".join(f"{k}: chi2/dof {c:.3f}, sign {z:.2f}" for k, (c, z) in q.items())
        print(f"{family:<12}{cells}  error ratio {estimation_error(family):.3f}")


if __name__ == "__main__":
    main()
