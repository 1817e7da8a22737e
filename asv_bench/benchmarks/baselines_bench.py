"""The same operations on the baselines of ``asv_bench/baselines.py``, at rows 5,
cols 5e5 (the headline table), so asv tracks pysketch and its references side by side."""

from __future__ import annotations

from .common import (
    BACKENDS,
    HEAD_COLS,
    HEAD_ROWS,
    SEED,
    clamp_k,
    gradient_like,
    optional,
    require_backend,
    sizes,
)

D_BASE = sizes([10**6], [10**7])


class CSVec:
    """csvec-style PyTorch sketch: accumulateVec and unSketch(k) (estimate-all + torch.topk)."""

    params = [D_BASE, BACKENDS]
    param_names = ["d", "backend"]
    rounds = 1
    repeat = (1, 3, 10.0)
    timeout = 600

    def setup(self, d, backend):
        torch = optional("torch")
        require_backend(backend)
        from baselines import CSVecBaseline

        self.torch = torch
        self.backend = backend
        self.k = clamp_k(d // 200, d)
        self.cs = CSVecBaseline(d, HEAD_COLS, HEAD_ROWS, device=backend)
        self.vec = torch.from_numpy(gradient_like(d, heavy=100)).to(backend)
        self.cs.accumulateVec(self.vec)

    def _sync(self):
        if self.backend == "cuda":
            self.torch.cuda.synchronize()

    def time_accumulate_dense(self, d, backend):
        self.cs.accumulateVec(self.vec)
        self._sync()

    def time_estimate_all(self, d, backend):
        self.cs.estimate_all()
        self._sync()

    def time_heavy_hitters(self, d, backend):
        self.cs.unSketch(self.k)
        self._sync()


class NumPyRef:
    """Plain NumPy with pysketch's hashes (chunked bucket_sign_batch + np.bincount / np.median)."""

    params = [D_BASE]
    param_names = ["d"]
    rounds = 1
    repeat = (1, 3, 10.0)
    timeout = 600

    def setup(self, d):
        from baselines import NumPyReference

        self.k = clamp_k(d // 200, d)
        self.ref = NumPyReference(d, HEAD_ROWS, HEAD_COLS, seed=SEED)
        self.x = gradient_like(d, heavy=100)
        self.ref.accumulate(self.x)

    def time_accumulate_dense(self, d):
        self.ref.accumulate(self.x)

    def time_estimate_all(self, d):
        self.ref.estimate()

    def time_heavy_hitters(self, d):
        self.ref.heavy_hitters(self.k)


class ScatterAdd:
    """Plain scatter-add floor: the d * rows updates with bucket indices and signs
    precomputed (not timed): np.bincount per row, or a Numba loop parallel over rows."""

    params = [D_BASE]
    param_names = ["d"]
    rounds = 1
    repeat = (1, 5, 10.0)
    timeout = 600

    def setup(self, d):
        from baselines import ScatterAddBincount, ScatterAddNumba, precomputed_hashes

        buckets, signs = precomputed_hashes(d, HEAD_ROWS, HEAD_COLS, seed=SEED)
        self.x = gradient_like(d)
        self.bincount = ScatterAddBincount(buckets, signs, HEAD_COLS)
        self.numba = ScatterAddNumba(buckets, signs, HEAD_COLS)
        self.numba.accumulate(self.x)

    def time_bincount(self, d):
        self.bincount.accumulate(self.x)

    def time_numba_loop(self, d):
        self.numba.accumulate(self.x)
