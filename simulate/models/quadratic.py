"""Quadratics with a chosen Hessian spectrum, in the coordinate basis or an FWHT rotation.

Worker ``i`` minimises ``f_i(w) = 1/2 (w - w*)^T H (w - w*) + (h / sqrt(d)) xi_i^T w``
with ``H = Q diag(lambda) Q^T`` and ``xi_i`` standard normal: the workers' optima
``w* - (h / sqrt(d)) H^{-1} xi_i`` differ (heterogeneity ``h`` is the norm of the
gradient offset of a worker at the common optimum). A stochastic gradient adds
``(sigma / sqrt(d)) zeta``, noise of norm about ``sigma``. Nothing is ``d x d`` or
``n x d``: memory is ``O(d)``, a gradient costs ``O(d log d)`` in the rotated basis.
"""

from __future__ import annotations

import numpy as np

from ..fwht import Rotation
from .base import Model, worker_rng

TAG_OPT, TAG_XI, TAG_ROT = 31, 32, 33
CACHE_LIMIT = 2**26  # cache the workers' offsets below this many values


def spectrum(model: dict) -> np.ndarray:
    """The Hessian eigenvalues of a ``[model]`` table, in decreasing order (float64).

    Examples
    --------
    >>> spectrum({"d": 4, "spectrum": "powerlaw", "alpha": 1.0, "lambda_max": 1.0}).tolist()
    [1.0, 0.5, 0.3333333333333333, 0.25]
    """
    d, top = model["d"], model["lambda_max"]
    kind = model["spectrum"]
    if kind == "powerlaw":
        return top * np.arange(1, d + 1, dtype=np.float64) ** -model["alpha"]
    if kind == "flat":
        return np.full(d, top)
    lam = np.full(d, top * model["ratio"])
    lam[: model["top"]] = top
    return lam


class Quadratic(Model):
    """The quadratic of a checked ``[model]`` table with ``kind = "quadratic"``.

    Parameters
    ----------
    model : dict
        ``d``, ``spectrum``, ``alpha``, ``lambda_max``, ``top``, ``ratio``,
        ``basis``, ``heterogeneity``, ``noise``.
    workers : int
        Number of workers ``W``.
    seed : int
        The run's seed.
    dtype : dtype
        Floating type of the parameters and gradients.
    """

    def __init__(self, model: dict, workers: int, seed: int, dtype):
        self.d, self.seed, self.dtype, self.workers = model["d"], seed, np.dtype(dtype), workers
        self.lam = spectrum(model)
        self.lam_dtype = self.lam.astype(self.dtype)
        self.rotation = Rotation(self.d, [seed, TAG_ROT]) if model["basis"] == "rotated" else None
        scale = 1.0 / np.sqrt(self.d)
        self.w_star = np.random.default_rng([seed, TAG_OPT]).standard_normal(self.d) * scale
        self.w_star_dtype = self.w_star.astype(self.dtype)
        self.offset_scale = model["heterogeneity"] * scale
        self.noise_scale = model["noise"] * scale
        self._offsets: dict[int, np.ndarray] = {}
        mean_xi = np.zeros(self.d)
        if self.offset_scale:
            for i in range(workers):
                mean_xi += self._xi(i)
            mean_xi /= workers
        self.linear = self.offset_scale * mean_xi  # f(w) = 1/2 |w - w*|_H^2 + linear . w
        self.w_opt = self.w_star - self._apply(1.0 / self.lam, self.linear)
        self.f_star = self.loss(self.w_opt)

    def _xi(self, worker: int) -> np.ndarray:
        return np.random.default_rng([self.seed, TAG_XI, worker]).standard_normal(self.d)

    def _offset(self, worker: int) -> np.ndarray:
        """``(h / sqrt(d)) xi_i`` in ``dtype``, cached while the cache stays small."""
        cached = self._offsets.get(worker)
        if cached is not None:
            return cached
        offset = (self.offset_scale * self._xi(worker)).astype(self.dtype)
        if (len(self._offsets) + 1) * self.d <= CACHE_LIMIT:
            self._offsets[worker] = offset
        return offset

    def _apply(self, diag: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``Q diag(diag) Q^T v``."""
        if self.rotation is None:
            return diag * v
        return self.rotation.apply(diag * self.rotation.transpose(v))

    def hessian_matvec(self, v: np.ndarray) -> np.ndarray:
        """``H v`` in the dtype of ``v``."""
        return self._apply(self.lam_dtype if v.dtype == self.dtype else self.lam, v)

    def init(self):
        return np.zeros(self.d, dtype=self.dtype)

    def loss(self, w):
        e = np.asarray(w, dtype=np.float64) - self.w_star
        return 0.5 * float(e @ self._apply(self.lam, e)) + float(self.linear @ w)

    def suboptimality(self, w):
        e = np.asarray(w, dtype=np.float64) - self.w_opt
        return 0.5 * float(e @ self._apply(self.lam, e))

    def gradient(self, w):
        return self._apply(self.lam, np.asarray(w, dtype=np.float64) - self.w_star) + self.linear

    def _add_worker_terms(self, g, worker, step, local_step):
        if self.offset_scale:
            g += self._offset(worker)
        if self.noise_scale:
            noise = worker_rng(self.seed, worker, step, local_step).standard_normal(
                self.d, dtype=self.dtype
            )
            noise *= self.dtype.type(self.noise_scale)
            g += noise
        return g

    def worker_gradient(self, w, worker, step, local_step=0, out=None):
        g = self.hessian_matvec(np.subtract(w, self.w_star_dtype, dtype=self.dtype))
        if out is not None:
            out[...] = g
            g = out
        return self._add_worker_terms(g, worker, step, local_step)

    def worker_gradients(self, w, workers, step, out):
        base = self.hessian_matvec(np.subtract(w, self.w_star_dtype, dtype=self.dtype))
        for row, worker in enumerate(workers):
            out[row] = base
            self._add_worker_terms(out[row], worker, step, 0)
        return out

    def sum_worker_gradients(self, w, workers, step, out, scratch):
        base = self.hessian_matvec(np.subtract(w, self.w_star_dtype, dtype=self.dtype))
        for i, worker in enumerate(workers):
            dest = scratch if i else out
            dest[...] = base
            self._add_worker_terms(dest, worker, step, 0)
            if i:
                out += scratch
        return out

    def hvp(self, w, v):
        return self._apply(self.lam, np.asarray(v, dtype=np.float64))
