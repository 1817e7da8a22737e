"""L2-regularised logistic regression, the convex setting of mem-SGD.

``f(w) = mean_j log(1 + exp(-y_j x_j^T w)) + (l2 / 2) |w|^2`` with ``y_j in {-1, +1}``
(digits: ``+1`` for the digits 0-4). The data may be dense or sparse (CSR).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from .base import DataModel


class Logistic(DataModel):
    """Logistic regression on the data set of a checked ``[model]`` table.

    Parameters
    ----------
    model : dict
        ``dataset``, ``l2``, ``batch_size``, ``sharding``, ``solve_optimum``, ...
    workers : int
        Number of workers ``W`` (shards).
    seed : int
        The run's seed.
    dtype : dtype
        Floating type of the data and parameters.
    """

    def __init__(self, model: dict, workers: int, seed: int, dtype):
        super().__init__(model, workers, seed, dtype)
        self.d = self.data.x_train.shape[1]
        self.f_star = self._solve() if model["solve_optimum"] else None

    def init(self):
        return np.zeros(self.d, dtype=self.dtype)

    def _signs(self, y: np.ndarray) -> np.ndarray:
        """Class labels as ``+-1``: the lower half of the classes (class 0 of two) is +1."""
        return np.where(y < max(1, self.data.classes // 2), 1.0, -1.0)

    def _loss_grad(self, w, x, y, grad):
        s = self._signs(y)
        margin = s * (x @ w)
        value = float(np.mean(np.logaddexp(0.0, -margin))) if y.size else 0.0
        if not grad:
            return value, None
        coef = (-s * expit(-margin) / max(y.size, 1)).astype(w.dtype)
        return value, np.asarray(x.T @ coef, dtype=w.dtype).ravel()

    def test_metrics(self, w):
        if not self.has_test:
            return {}
        value, _ = self._loss_grad(w, self.data.x_test, self.data.y_test, grad=False)
        correct = (self.data.x_test @ w > 0) == self._test_classes()
        return {"test_loss": value, "test_accuracy": float(np.mean(correct))}

    def _test_classes(self):
        return self._signs(self.data.y_test) > 0

    def hvp(self, w, v):
        x = self.data.x_train
        w, v = np.asarray(w, dtype=np.float64), np.asarray(v, dtype=np.float64)
        p = expit(x @ w)
        hv = np.asarray(x.T @ (p * (1 - p) * (x @ v)), dtype=np.float64).ravel()
        return hv / x.shape[0] + self.l2 * v

    def _solve(self) -> float:
        """``f*`` by L-BFGS in float64 (strongly convex when ``l2 > 0``)."""
        from scipy.optimize import minimize

        res = minimize(
            self.loss_and_gradient,
            np.zeros(self.d),
            jac=True,
            method="L-BFGS-B",
            options={"gtol": 1e-10, "maxiter": 2000},
        )
        return float(res.fun)

    def suboptimality(self, w):
        return None if self.f_star is None else self.loss(w) - self.f_star
