"""Count Sketch: accumulate (dense, sparse), estimate-all, heavy hitters, peak memory,
bytes per step and estimation quality."""

from __future__ import annotations

import numpy as np

from .common import (
    BACKENDS,
    COLS,
    D_GRID,
    D_LARGE,
    DTYPES,
    HEAD_COLS,
    HEAD_ROWS,
    ROWS,
    SEED,
    clamp_k,
    gradient_like,
    optional,
    require_backend,
    sizes,
    sparse_input,
    sync,
    to_backend,
)


def _sketch(d, rows, cols, dtype, backend, **kw):
    from pysketch import CountSketch

    return CountSketch(d, rows, cols, seed=SEED, dtype=dtype, device=backend, **kw)


class Accumulate:
    """``CountSketch.accumulate`` (dense x of length d) and ``accumulate_sparse``
    (d/100 entries)."""

    params = [D_GRID, ROWS, COLS, DTYPES, BACKENDS]
    param_names = ["d", "rows", "cols", "dtype", "backend"]
    rounds = 1
    repeat = (1, 5, 10.0)

    def setup(self, d, rows, cols, dtype, backend):
        require_backend(backend)
        self.backend = backend
        self.sketch = _sketch(d, rows, cols, dtype, backend)
        self.x = to_backend(gradient_like(d, dtype), backend)
        idx, val = sparse_input(d, max(1, d // 100), dtype)
        self.idx, self.val = to_backend(idx, backend), to_backend(val, backend)
        # compile outside the timing (numba caches to disk; the first call still loads)
        self.sketch.accumulate(self.x)
        self.sketch.accumulate_sparse(self.idx, self.val)
        sync(backend)

    def time_accumulate_dense(self, d, rows, cols, dtype, backend):
        self.sketch.accumulate(self.x)
        sync(self.backend)

    def time_accumulate_sparse(self, d, rows, cols, dtype, backend):
        self.sketch.accumulate_sparse(self.idx, self.val)
        sync(self.backend)


class Estimate:
    """``estimate()`` of all d coordinates and ``heavy_hitters(k=d/200)`` (estimate-all + top-k)."""

    params = [D_GRID, [5], COLS, DTYPES, BACKENDS]
    param_names = ["d", "rows", "cols", "dtype", "backend"]
    rounds = 1
    repeat = (1, 5, 10.0)

    def setup(self, d, rows, cols, dtype, backend):
        require_backend(backend)
        self.backend = backend
        self.k = clamp_k(d // 200, d)
        self.sketch = _sketch(d, rows, cols, dtype, backend)
        self.sketch.accumulate(to_backend(gradient_like(d, dtype, heavy=100), backend))
        self.sketch.heavy_hitters(k=self.k)
        sync(backend)

    def time_estimate_all(self, d, rows, cols, dtype, backend):
        self.sketch.estimate()
        sync(self.backend)

    def time_heavy_hitters(self, d, rows, cols, dtype, backend):
        self.sketch.heavy_hitters(k=self.k)
        sync(self.backend)


class HashFamily:
    """Dense accumulate (with and without the NaN/Inf check) and estimate-all at the
    headline table size (rows 5, cols 5e5), per hash family."""

    params = [sizes([10**6], [10**7]), ["mix", "polynomial"]]
    param_names = ["d", "hash"]
    rounds = 1
    repeat = (1, 5, 10.0)

    def setup(self, d, hash):
        self.sketch = _sketch(d, HEAD_ROWS, HEAD_COLS, "float32", "cpu", hash=hash)
        self.x = gradient_like(d)
        self.sketch.accumulate(self.x)
        self.sketch.estimate()

    def time_accumulate_dense(self, d, hash):
        self.sketch.accumulate(self.x)

    def time_accumulate_dense_nocheck(self, d, hash):
        self.sketch.accumulate(self.x, check_finite=False)

    def time_estimate_all(self, d, hash):
        self.sketch.estimate()


class PeakMemSketch:
    """Peak RSS of sketching a dense float32 vector of length d (input + table, rows 5,
    cols 5e5). asv's peakmem is the whole process's high-water mark, so it includes the
    interpreter and imports; ``compare.py`` subtracts a per-process baseline instead."""

    params = [D_LARGE, ["pysketch", "csvec"]]
    param_names = ["d", "impl"]
    timeout = 600
    number = 1
    repeat = 1

    def setup(self, d, impl):
        if impl == "csvec":
            optional("torch")
            if d > 10**7:
                raise NotImplementedError("csvec-style tables at d=1e8 need ~8 GB; see compare.py")
        self.x = gradient_like(d)

    def peakmem_accumulate_dense(self, d, impl):
        if impl == "pysketch":
            _sketch(d, HEAD_ROWS, HEAD_COLS, "float32", "cpu").accumulate(self.x)
        else:
            import torch
            from baselines import CSVecBaseline

            CSVecBaseline(d, HEAD_COLS, HEAD_ROWS).accumulateVec(torch.from_numpy(self.x))


class BytesPerStep:
    """Bytes one worker sends per step (float32 values, int64 indices)."""

    params = [[10**6, 10**7, 10**8], ["dense", "countsketch", "topk", "randomk"]]
    param_names = ["d", "method"]

    def track_bytes_per_step(self, d, method):
        k = clamp_k(50_000, d)
        if method == "dense":
            return 4 * d
        if method == "countsketch":
            return 4 * HEAD_ROWS * HEAD_COLS
        if method == "topk":
            return k * (4 + 8)
        return 4 * k  # random-k: shared seed, values only

    track_bytes_per_step.unit = "bytes"


class Accuracy:
    """Quality of heavy-hitter recovery at fixed sizes: d = 1e6, 1000 planted heavy
    coordinates on Gaussian noise, rows 5, heavy_hitters(k=1000)."""

    params = [[2**12, 2**14, 2**16], ["mix", "polynomial"]]
    param_names = ["cols", "hash"]
    D, HEAVY = 10**6, 1000

    def setup(self, cols, hash):
        rng = np.random.default_rng(SEED)
        x = rng.standard_normal(self.D).astype(np.float32)
        self.heavy = rng.choice(self.D, size=self.HEAVY, replace=False)
        x[self.heavy] = rng.choice([-1.0, 1.0], size=self.HEAVY) * (
            20 + 20 * rng.random(self.HEAVY)
        )
        self.x = x
        s = _sketch(self.D, HEAD_ROWS, cols, "float32", "cpu", hash=hash).accumulate(x)
        self.est = s.estimate()
        self.hh, _ = s.heavy_hitters(k=self.HEAVY)

    def track_recall_heavy_hitters(self, cols, hash):
        return float(np.isin(self.heavy, self.hh).mean())

    track_recall_heavy_hitters.unit = "fraction"

    def track_rel_error_heavy(self, cols, hash):
        """||x_hat - x||_2 / ||x||_2 over the planted coordinates."""
        h = self.heavy
        return float(np.linalg.norm(self.est[h] - self.x[h]) / np.linalg.norm(self.x[h]))

    track_rel_error_heavy.unit = "fraction"

    def track_max_abs_error_over_tail_norm(self, cols, hash):
        """max_i |x_hat_i - x_i| / ||x_tail||_2 (the Count Sketch guarantee's eps)."""
        tail = np.delete(self.x, self.heavy)
        return float(np.abs(self.est - self.x).max() / np.linalg.norm(tail))

    track_max_abs_error_over_tail_norm.unit = "fraction"
