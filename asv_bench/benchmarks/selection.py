"""Top-k and random-k: pysketch vs numpy.argpartition / torch.topk (cupy / torch on the GPU)."""

from __future__ import annotations

import inspect

import numpy as np

import pysketch

from .common import (
    BACKENDS,
    D_GRID,
    DTYPES,
    gradient_like,
    optional,
    require_backend,
    sizes,
    sync,
    to_backend,
)

K_GRID = [100, 50_000]


class TopK:
    """``pysketch.selection.topk(x, k)`` (sorted by |x|) vs ``argpartition`` of |x| plus a sort
    of the k winners (numpy on the CPU, cupy on the GPU)."""

    params = [D_GRID, K_GRID, DTYPES, BACKENDS]
    param_names = ["d", "k", "dtype", "backend"]
    rounds = 1
    repeat = (1, 5, 10.0)

    def setup(self, d, k, dtype, backend):
        self.topk = pysketch.topk
        require_backend(backend)
        if k > d // 10:
            raise NotImplementedError("k > d/10 is not a top-k workload")
        self.backend, self.k = backend, k
        self.x = to_backend(gradient_like(d, dtype), backend)
        self.xp = np
        if backend == "cuda":
            import cupy

            self.xp = cupy
        self.topk(self.x, k)
        sync(backend)

    def time_pysketch_topk(self, d, k, dtype, backend):
        self.topk(self.x, k)
        sync(self.backend)

    def time_pysketch_topk_nocheck(self, d, k, dtype, backend):
        self.topk(self.x, k, check_finite=False)
        sync(self.backend)

    def time_argpartition(self, d, k, dtype, backend):
        """Unsorted k largest |x| (argpartition only): the target's bar."""
        xp, a = self.xp, self.xp.abs(self.x)
        xp.argpartition(a, a.size - k)[a.size - k :]
        sync(self.backend)

    def time_argpartition_sorted(self, d, k, dtype, backend):
        """argpartition, then the k winners sorted by |x| (what pysketch returns)."""
        xp, a = self.xp, self.xp.abs(self.x)
        part = xp.argpartition(a, a.size - k)[a.size - k :]
        part[xp.argsort(-a[part])]
        sync(self.backend)


class TopKLargeK:
    """Top-k of a large fraction of d (issue 10, item 10), float32 on the CPU:
    ``pysketch.topk(x, k)`` (sorted) vs ``argpartition`` of |x| (unsorted)."""

    params = [sizes([10**6], [10**7]), [0.01, 0.5, 1.0]]
    param_names = ["d", "k_fraction"]
    rounds = 1
    repeat = (1, 5, 20.0)

    def setup(self, d, fraction):
        self.topk = pysketch.topk
        self.k = max(1, round(fraction * d))
        self.x = gradient_like(d, "float32")
        self.topk(self.x, self.k)

    def time_pysketch_topk(self, d, fraction):
        self.topk(self.x, self.k)

    def time_argpartition(self, d, fraction):
        a = np.abs(self.x)
        np.argpartition(a, a.size - self.k)[a.size - self.k :]


class TopKLargeKUnsorted:
    """``pysketch.topk(x, k, sorted=False)``: the same k indices in ascending order
    (compare with ``TopKLargeK.time_argpartition``)."""

    params = TopKLargeK.params
    param_names = TopKLargeK.param_names
    rounds = 1
    repeat = (1, 5, 20.0)

    def setup(self, d, fraction):
        self.topk = pysketch.topk
        if "sorted" not in inspect.signature(self.topk).parameters:
            raise NotImplementedError("this pysketch has no topk(sorted=...)")
        self.k = max(1, round(fraction * d))
        self.x = gradient_like(d, "float32")
        self.topk(self.x, self.k, sorted=False)

    def time_pysketch_topk_unsorted(self, d, fraction):
        self.topk(self.x, self.k, sorted=False)


class TorchTopK:
    """``torch.topk`` of |x| (sorted), CPU tensors or CUDA tensors."""

    params = [D_GRID, K_GRID, DTYPES, BACKENDS]
    param_names = ["d", "k", "dtype", "backend"]
    rounds = 1
    repeat = (1, 5, 10.0)

    def setup(self, d, k, dtype, backend):
        torch = optional("torch")
        require_backend(backend)
        if backend == "cuda" and not torch.cuda.is_available():
            raise NotImplementedError("this PyTorch build sees no CUDA device")
        if k > d // 10:
            raise NotImplementedError("k > d/10 is not a top-k workload")
        self.torch, self.backend, self.k = torch, backend, k
        self.x = torch.from_numpy(gradient_like(d, dtype)).to(backend)

    def time_torch_topk(self, d, k, dtype, backend):
        self.x.abs().topk(self.k, sorted=True)
        if self.backend == "cuda":
            self.torch.cuda.synchronize()


class RandomK:
    """``pysketch.selection.randomk(d, k, seed)`` vs ``numpy.random.Generator.choice``
    without replacement."""

    params = [D_GRID, K_GRID, BACKENDS]
    param_names = ["d", "k", "backend"]

    def setup(self, d, k, backend):
        self.randomk = pysketch.randomk
        require_backend(backend)
        if k > d // 10:
            raise NotImplementedError("k > d/10 is not a random-k workload")
        self.backend = backend
        self.randomk(d, k, seed=1, device=backend)

    def time_pysketch_randomk(self, d, k, backend):
        self.randomk(d, k, seed=7, device=backend)
        sync(self.backend)

    def time_numpy_choice(self, d, k, backend):
        np.sort(np.random.default_rng(7).choice(d, size=k, replace=False))
