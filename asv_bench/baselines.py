"""Baselines that the benchmarks and ``compare.py`` run side by side with pysketch.

``CSVecBaseline``
    The approach of the public reference implementation (csvec, used by
    FetchSGD): PyTorch; ``r x d`` tables of buckets (int64) and signs (float)
    materialised up front from random polynomial hashes mod a large prime drawn
    with torch's RNG; ``accumulateVec`` is one ``torch.bincount`` per row;
    ``unSketch(k)`` is the median over rows of ``signs * table[buckets]``, then
    ``torch.topk`` of the magnitudes. Its hashes differ from pysketch's (as in
    csvec, 64-bit products overflow and wrap); the work per coordinate is the same.
``NumPyReference``
    Plain NumPy with pysketch's own hashes: buckets and signs of a chunk of
    indices from :func:`pysketch.hashing.bucket_sign_batch`, then ``np.bincount``
    per row; estimates by gathering and ``np.median``; top-k by ``np.argpartition``.
``ScatterAddBincount`` / ``ScatterAddNumba``
    The plain scatter-add floor: the same ``d * rows`` updates into a table of
    the same size, with bucket indices (int64) and signs (float) precomputed
    and not timed. ``np.bincount`` with weights per row, or a Numba loop
    (parallel over rows) -- what the accumulate kernel would cost if hashing were free.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

LARGEPRIME = 2**61 - 1


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise NotImplementedError(f"PyTorch is not importable: {exc}") from exc
    return torch


# ----------------------------------------------------------------- csvec
class CSVecBaseline:
    """csvec-style Count Sketch: precomputed ``(r, d)`` hash tables, one bincount per row."""

    def __init__(self, d: int, c: int, r: int, device: str = "cpu", dtype: str = "float32"):
        torch = _torch()
        if device == "cuda" and not torch.cuda.is_available():
            raise NotImplementedError("this PyTorch build sees no CUDA device")
        self.torch = torch
        self.d, self.c, self.r = int(d), int(c), int(r)
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.table = torch.zeros((r, c), dtype=self.dtype, device=self.device)

        # As csvec: fixed seed, 6 random words per row below the prime, hashes of
        # arange(d) computed on the host, then moved to the device.
        gen = torch.Generator().manual_seed(42)
        hashes = torch.randint(0, LARGEPRIME, (r, 6), dtype=torch.int64, generator=gen)
        tokens = torch.arange(self.d, dtype=torch.int64).reshape((1, self.d))
        h1, h2, h3, h4 = (hashes[:, t : t + 1] for t in range(2, 6))
        signs = ((h1 * tokens + h2) * tokens + h3) * tokens + h4
        self.signs = ((signs % LARGEPRIME % 2) * 2 - 1).to(self.dtype).to(self.device)
        del signs
        h1, h2 = hashes[:, 0:1], hashes[:, 1:2]
        self.buckets = ((h1 * tokens + h2) % LARGEPRIME % self.c).to(self.device)

    def zero(self) -> None:
        self.table.zero_()

    def accumulateVec(self, vec) -> None:  # noqa: N802 - csvec's name
        torch = self.torch
        for j in range(self.r):
            self.table[j, :] += torch.bincount(
                self.buckets[j, :], weights=self.signs[j, :] * vec, minlength=self.c
            ).to(self.dtype)

    def _findAllValues(self):  # noqa: N802 - csvec's name
        vals = self.torch.zeros(self.r, self.d, dtype=self.dtype, device=self.device)
        for j in range(self.r):
            vals[j] = self.table[j, self.buckets[j, :]] * self.signs[j, :]
        return vals.median(dim=0)[0]

    def estimate_all(self):
        return self._findAllValues()

    def unSketch(self, k: int):  # noqa: N802 - csvec's name
        """``(indices, values)`` of the k largest estimates in magnitude."""
        vals = self._findAllValues()
        hh = vals.abs().topk(k, sorted=True)[1]
        return hh, vals[hh]

    def nbytes_state(self) -> int:
        """Bytes of per-coordinate hash state csvec keeps (buckets + signs)."""
        return self.buckets.element_size() * self.buckets.numel() + (
            self.signs.element_size() * self.signs.numel()
        )


# ----------------------------------------------------------------- NumPy
class NumPyReference:
    """pysketch's hashes, NumPy scatter (``np.bincount``) and gather, chunked over d."""

    def __init__(self, d, rows, cols, *, seed=0, dtype="float32", hash="mix", chunk=1 << 20):
        from pysketch import hashing

        self.d, self.rows, self.cols, self.chunk = int(d), int(rows), int(cols), int(chunk)
        self.dtype = np.dtype(dtype)
        self.family = hashing.family_code(hash)
        self.keys = hashing.hash_keys(seed, self.rows, hash)
        self._batch = hashing.bucket_sign_batch
        self.table = np.zeros((self.rows, self.cols), dtype=self.dtype)

    def _hash(self, row, idx):
        return self._batch(self.family, self.keys, row, idx, self.cols)

    def accumulate(self, x):
        for lo in range(0, self.d, self.chunk):
            idx = np.arange(lo, min(lo + self.chunk, self.d), dtype=np.int64)
            self.accumulate_sparse(idx, x[lo : lo + idx.size])
        return self

    def accumulate_sparse(self, idx, vals):
        for j in range(self.rows):
            b, s = self._hash(j, idx)
            self.table[j] += np.bincount(b, weights=s * vals, minlength=self.cols).astype(
                self.dtype
            )
        return self

    def estimate(self):
        out = np.empty(self.d, dtype=self.dtype)
        for lo in range(0, self.d, self.chunk):
            idx = np.arange(lo, min(lo + self.chunk, self.d), dtype=np.int64)
            vals = np.empty((self.rows, idx.size), dtype=np.float64)
            for j in range(self.rows):
                b, s = self._hash(j, idx)
                vals[j] = s * self.table[j, b]
            out[lo : lo + idx.size] = np.median(vals, axis=0)
        return out

    def heavy_hitters(self, k):
        est = self.estimate()
        return numpy_topk(est, k)


def numpy_topk(x, k):
    """Top-k by ``np.argpartition`` of ``|x|``, then sorting the k winners."""
    a = np.abs(x)
    part = np.argpartition(a, a.size - k)[a.size - k :]
    order = part[np.argsort(-a[part], kind="stable")]
    return order, x[order]


def torch_topk(x, k):
    """Top-k by ``torch.topk`` of ``|x|`` (sorted, like csvec's unSketch)."""
    torch = _torch()
    t = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
    idx = t.abs().topk(k, sorted=True)[1]
    return idx, t[idx]


# ----------------------------------------------------------------- plain scatter-add
def precomputed_hashes(d, rows, cols, *, seed=0, hash="mix", dtype="float32"):
    """``(buckets int64 (rows, d), signs float (rows, d))``: pysketch's hashes, materialised."""
    from pysketch import hashing

    keys = hashing.hash_keys(seed, rows, hash)
    family = hashing.family_code(hash)
    idx = np.arange(d, dtype=np.int64)
    buckets = np.empty((rows, d), dtype=np.int64)
    signs = np.empty((rows, d), dtype=dtype)
    for j in range(rows):
        buckets[j], s = hashing.bucket_sign_batch(family, keys, j, idx, cols)
        signs[j] = s
    return buckets, signs


class ScatterAddBincount:
    """``table[j] += np.bincount(buckets[j], signs[j] * x)`` with precomputed tables."""

    def __init__(self, buckets, signs, cols, dtype="float32"):
        self.buckets, self.signs, self.cols = buckets, signs, int(cols)
        self.table = np.zeros((buckets.shape[0], self.cols), dtype=dtype)

    def accumulate(self, x):
        for j in range(self.buckets.shape[0]):
            self.table[j] += np.bincount(
                self.buckets[j], weights=self.signs[j] * x, minlength=self.cols
            ).astype(self.table.dtype)
        return self


@njit(parallel=True, cache=True)
def _scatter_rows(table, buckets, signs, x):
    for j in prange(table.shape[0]):
        b = buckets[j]
        s = signs[j]
        t = table[j]
        for i in range(x.shape[0]):
            t[b[i]] += s[i] * x[i]


class ScatterAddNumba:
    """A Numba loop, parallel over rows: ``table[j, buckets[j, i]] += signs[j, i] * x[i]``."""

    def __init__(self, buckets, signs, cols, dtype="float32"):
        self.buckets, self.signs = buckets, signs
        self.table = np.zeros((buckets.shape[0], int(cols)), dtype=dtype)

    def accumulate(self, x):
        _scatter_rows(self.table, self.buckets, self.signs, x)
        return self
