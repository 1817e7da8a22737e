"""What every model provides: losses, per-worker stochastic gradients, Hessian-vector products."""

from __future__ import annotations

import numpy as np

TAG_GRADIENT, TAG_INIT = 21, 22


def worker_rng(seed: int, worker: int, step: int, local_step: int = 0) -> np.random.Generator:
    """The random stream of one worker at one step: a function of the ids only.

    Any MPI layout therefore draws the same minibatches and noise.

    Parameters
    ----------
    seed : int
        The run's seed.
    worker : int
        Global worker id.
    step : int
        Round (0-based).
    local_step : int
        Local step within the round (0 without local steps).

    Returns
    -------
    numpy.random.Generator
    """
    return np.random.default_rng([seed, TAG_GRADIENT, worker, step, local_step])


class Model:
    """A training objective ``f(w) = mean_i f_i(w)`` over ``workers`` workers.

    Subclasses set ``d``, ``dtype``, ``has_test`` and implement :meth:`init`,
    :meth:`loss`, :meth:`gradient`, :meth:`worker_gradient` and :meth:`hvp`;
    :meth:`metrics` and :meth:`suboptimality` are optional.
    """

    d: int
    dtype: np.dtype
    has_test = False

    def init(self) -> np.ndarray:
        """The initial parameters ``w0``, shape ``(d,)``, in ``dtype``."""
        raise NotImplementedError

    def loss(self, w: np.ndarray) -> float:
        """The full training objective ``f(w)``."""
        raise NotImplementedError

    def gradient(self, w: np.ndarray) -> np.ndarray:
        """The full-batch gradient of ``f`` at ``w``."""
        raise NotImplementedError

    def worker_gradient(self, w, worker, step, local_step=0, out=None) -> np.ndarray:
        """Worker ``worker``'s stochastic gradient at ``w`` (its shard, its step's noise).

        Parameters
        ----------
        w : ndarray, shape (d,)
            Parameters.
        worker : int
            Global worker id.
        step, local_step : int
            Round and local step; with the run's seed they fix the randomness.
        out : ndarray, optional
            Where to write the gradient.

        Returns
        -------
        ndarray, shape (d,)
        """
        raise NotImplementedError

    def worker_gradients(self, w, workers, step, out) -> np.ndarray:
        """The stochastic gradients of ``workers`` at the same ``w``, one row of ``out`` each."""
        for row, worker in enumerate(workers):
            self.worker_gradient(w, worker, step, 0, out=out[row])
        return out

    def sum_worker_gradients(self, w, workers, step, out, scratch) -> np.ndarray:
        """The sum of ``workers``' gradients at ``w`` into ``out``, added in worker order.

        The same sum as adding the rows of :meth:`worker_gradients` one by one,
        bit for bit, in ``O(d)`` memory (``scratch`` holds one gradient).
        """
        for i, worker in enumerate(workers):
            self.worker_gradient(w, worker, step, 0, out=scratch if i else out)
            if i:
                out += scratch
        return out

    def hvp(self, w: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The Hessian-vector product ``H(w) v`` of the full objective (float64)."""
        raise NotImplementedError

    def suboptimality(self, w: np.ndarray) -> float | None:
        """``f(w) - f*`` where ``f*`` is known, else ``None``."""
        return None

    def test_metrics(self, w: np.ndarray) -> dict[str, float]:
        """``test_loss`` and ``test_accuracy`` where the data have a test split."""
        return {}

    def chance_accuracy(self) -> float | None:
        """The test accuracy of always predicting the most frequent class (``None``: no test)."""
        return None

    def metrics(self, w: np.ndarray) -> dict[str, float | None]:
        """Everything the per-step CSV records about ``w``.

        Returns
        -------
        dict
            ``loss``, ``test_loss``, ``test_accuracy``, ``suboptimality`` and
            ``grad_norm`` (the full gradient's norm); ``None`` where not defined.
        """
        loss, grad = self.loss_and_gradient(w)
        row = {"loss": loss, "test_loss": None, "test_accuracy": None}
        row.update(self.test_metrics(w))
        row["suboptimality"] = self.suboptimality(w)
        row["grad_norm"] = float(np.linalg.norm(np.asarray(grad, dtype=np.float64)))
        return row

    def loss_and_gradient(self, w) -> tuple[float, np.ndarray]:
        """``f(w)`` and its full-batch gradient (subclasses may share the work)."""
        return self.loss(w), self.gradient(w)


class DataModel(Model):
    """A model trained on a :class:`~simulate.data.Dataset` sharded among workers.

    Subclasses implement ``_loss_grad(w, x, y, grad)`` (mean loss over the rows,
    without the L2 term; the gradient when ``grad``) and ``_predict(w, x)``.
    """

    has_test = True

    def __init__(self, model: dict, workers: int, seed: int, dtype):
        from .. import data

        self.seed, self.dtype = seed, np.dtype(dtype)
        self.batch_size, self.l2 = model["batch_size"], model["l2"]
        self.sampling = model["sampling"]
        self.data = data.load(model, seed, self.dtype)
        self.shards = data.shard(
            self.data.y_train, workers, model["sharding"], seed, model["dirichlet_alpha"]
        )
        self.has_test = self.data.y_test.size > 0

    def _loss_grad(self, w, x, y, grad: bool):
        raise NotImplementedError

    def loss_and_gradient(self, w) -> tuple[float, np.ndarray]:
        """``f(w)`` and its full-batch gradient in one pass over the training data."""
        value, g = self._loss_grad(w, self.data.x_train, self.data.y_train, grad=True)
        if self.l2:
            g += self.l2 * w
        return float(value) + 0.5 * self.l2 * float(np.dot(w, w)), g

    def loss(self, w):
        value, _ = self._loss_grad(w, self.data.x_train, self.data.y_train, grad=False)
        return float(value) + 0.5 * self.l2 * float(np.dot(w, w))

    def gradient(self, w):
        return self.loss_and_gradient(w)[1]

    def batch(self, worker: int, step: int, local_step: int = 0) -> np.ndarray:
        """The training-sample indices of a worker's minibatch.

        Drawn with replacement (``sampling = "replacement"``), or the next samples
        of a fresh permutation of the shard each epoch (``"shuffle"``, one
        minibatch a step; :func:`simulate.data.epoch_batch`).
        """
        from .. import data

        shard = self.shards[worker]
        if self.sampling == "shuffle":
            if local_step:
                raise ValueError("sampling = 'shuffle' draws one minibatch a step (no local steps)")
            return shard[data.epoch_batch(shard.size, self.batch_size, step, self.seed, worker)]
        rng = worker_rng(self.seed, worker, step, local_step)
        return shard[rng.integers(0, shard.size, self.batch_size)]

    def worker_gradient(self, w, worker, step, local_step=0, out=None):
        idx = self.batch(worker, step, local_step)
        _, g = self._loss_grad(w, self.data.x_train[idx], self.data.y_train[idx], grad=True)
        if self.l2:
            g += self.l2 * w
        if out is None:
            return g.astype(self.dtype, copy=False)
        out[...] = g
        return out

    def worker_loss(self, w, worker) -> float:
        """Worker ``worker``'s full-shard objective (for tests)."""
        idx = self.shards[worker]
        value, _ = self._loss_grad(w, self.data.x_train[idx], self.data.y_train[idx], grad=False)
        return float(value) + 0.5 * self.l2 * float(np.dot(w, w))

    def test_metrics(self, w):
        if not self.has_test:
            return {}
        value, _ = self._loss_grad(w, self.data.x_test, self.data.y_test, grad=False)
        accuracy = float(np.mean(self._predict(w, self.data.x_test) == self.data.y_test))
        return {"test_loss": float(value), "test_accuracy": accuracy}

    def _test_classes(self) -> np.ndarray:
        """The test labels as the model predicts them (class ids)."""
        return self.data.y_test

    def chance_accuracy(self):
        if not self.has_test:
            return None
        _, counts = np.unique(self._test_classes(), return_counts=True)
        return float(counts.max() / counts.sum())
