"""Data sets of the logistic-regression and MLP models, their splits and shards.

Every array is generated or loaded from the run's seed, identically on every
MPI rank, so that a worker's shard does not depend on the layout of the ranks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import DATASET_SIZES, train_size

# Tags that make the seeds of independent random streams differ.
TAG_DATA, TAG_SPLIT, TAG_TEACHER, TAG_EPOCH = 11, 12, 13, 14


@dataclass
class Dataset:
    """Features and integer class labels, split into train and test.

    Attributes
    ----------
    x_train, x_test : ndarray or scipy.sparse.csr_matrix
        Features, one sample per row.
    y_train, y_test : ndarray of int
        Class labels ``0 .. classes - 1``.
    classes : int
        Number of classes.
    """

    x_train: Any
    y_train: np.ndarray
    x_test: Any
    y_test: np.ndarray
    classes: int


def _synthetic(model: dict, seed: int, rng: np.random.Generator):
    n, d = model["n"], model["d"]
    if model["dataset"] == "synthetic_sparse":
        import scipy.sparse

        x = scipy.sparse.random(
            n, d, density=model["density"], format="csr", random_state=rng, dtype=np.float64
        )
        x.data = rng.standard_normal(x.data.size)
    else:
        x = rng.standard_normal((n, d))
    w_true = np.random.default_rng([seed, TAG_TEACHER]).standard_normal(d)
    margin = x @ w_true
    margin = margin + 0.1 * np.std(margin) * rng.standard_normal(n)  # some label noise
    return x, (margin > 0).astype(np.int64), 2


def _teacher_student(model: dict, seed: int, rng: np.random.Generator):
    n, p, c, h = model["n"], model["inputs"], model["classes"], model["teacher_hidden"]
    x = rng.standard_normal((n, p))
    teacher = np.random.default_rng([seed, TAG_TEACHER])
    w1 = teacher.standard_normal((p, h)) / np.sqrt(p)
    w2 = teacher.standard_normal((h, c)) / np.sqrt(h)
    return x, np.argmax(np.tanh(x @ w1) @ w2, axis=1), c


def _sklearn(name: str):
    from sklearn import datasets

    loader = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer}[name]
    x, y = loader(return_X_y=True)
    assert x.shape[0] == DATASET_SIZES[name]
    return x.astype(np.float64), y.astype(np.int64), int(y.max()) + 1


def _standardize(x_train, x_test):
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0
    return (x_train - mean) / std, (x_test - mean) / std


def _normalize_rows(x):
    """Rows scaled to unit norm (mem-SGD's epsilon-normalised data); zero rows stay zero."""
    if hasattr(x, "multiply"):
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
        norms[norms == 0] = 1.0
        import scipy.sparse

        return scipy.sparse.diags(1.0 / norms) @ x
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def load(model: dict, seed: int, dtype) -> Dataset:
    """The data set of a checked logistic or MLP ``[model]`` table.

    Parameters
    ----------
    model : dict
        The ``[model]`` table (``dataset``, ``n``, ``d``, ``test_fraction``, ...).
    seed : int
        The run's seed.
    dtype : dtype
        Floating type of the features.

    Returns
    -------
    Dataset
        Standardised (dense real data) and, for logistic regression with
        ``normalize``, rows of unit norm.
    """
    rng = np.random.default_rng([seed, TAG_DATA])
    name = model["dataset"]
    if name in DATASET_SIZES:
        x, y, classes = _sklearn(name)
    elif name == "teacher_student":
        x, y, classes = _teacher_student(model, seed, rng)
    else:
        x, y, classes = _synthetic(model, seed, rng)
    n = x.shape[0]
    order = np.random.default_rng([seed, TAG_SPLIT]).permutation(n)
    n_test = n - train_size(model)
    test, train = order[:n_test], order[n_test:]
    x_train, x_test = x[train], x[test]
    if not hasattr(x, "multiply"):
        x_train, x_test = _standardize(x_train, x_test)
    if model.get("normalize"):
        x_train, x_test = _normalize_rows(x_train), _normalize_rows(x_test)
    if hasattr(x_train, "multiply"):
        x_train, x_test = x_train.tocsr().astype(dtype), x_test.tocsr().astype(dtype)
    else:
        x_train, x_test = (np.ascontiguousarray(a, dtype=dtype) for a in (x_train, x_test))
    return Dataset(x_train, y[train], x_test, y[test], classes)


def shard(
    labels: np.ndarray, workers: int, sharding: str, seed: int, alpha: float = 0.5
) -> list[np.ndarray]:
    """Split the training samples among ``workers``: at random, by label, or by Dirichlet(alpha).

    Parameters
    ----------
    labels : ndarray of int
        Class label of each training sample.
    workers : int
        Number of shards.
    sharding : {"iid", "label", "dirichlet"}
        ``"iid"``: a random permutation cut into equal parts; ``"label"``: the
        samples sorted by label, then cut, so that each worker sees one or a few
        classes (non-iid); ``"dirichlet"``: each worker's classes in proportions
        ``q ~ Dirichlet(alpha p)``, ``p`` the classes' overall frequencies
        (Hsu et al., 2019): small ``alpha`` gives a worker few classes, large
        ``alpha`` the overall mix.
    seed : int
        The run's seed.
    alpha : float, default 0.5
        The Dirichlet concentration (``"dirichlet"`` only), positive.

    Returns
    -------
    list of ndarray
        The sample indices of each worker, sizes differing by at most one.

    Examples
    --------
    >>> parts = shard(np.array([0, 1, 0, 1]), 2, "label", seed=0)
    >>> [sorted(p.tolist()) for p in parts]
    [[0, 2], [1, 3]]
    """
    order = np.random.default_rng([seed, TAG_SPLIT, 1]).permutation(labels.size)
    if sharding == "dirichlet":
        return _dirichlet(
            labels, order, workers, alpha, np.random.default_rng([seed, TAG_SPLIT, 2])
        )
    if sharding == "label":
        order = order[np.argsort(labels[order], kind="stable")]
    return np.array_split(order, workers)


def _dirichlet(labels, order, workers: int, alpha: float, rng) -> list[np.ndarray]:
    """Shards of ``array_split`` sizes whose classes follow ``Dirichlet(alpha p)`` draws.

    Worker by worker, its class counts are a multinomial draw from its
    proportions, taken from what is left of each class (in ``order``); what a
    class lacks is drawn again among the classes left, so every sample goes to
    exactly one worker. The last workers get what remains, closer to ``p``.
    """
    classes = np.unique(labels)
    pools = [list(order[labels[order] == c]) for c in classes]
    left = np.array([len(pool) for pool in pools])
    prior = left / left.sum()
    sizes = [len(part) for part in np.array_split(order, workers)]
    shards = []
    for size in sizes:
        q = rng.dirichlet(alpha * prior)
        counts = np.zeros(len(classes), dtype=np.int64)
        while counts.sum() < size:
            remaining = left > counts
            weights = q * remaining
            if weights.sum() == 0:  # q has (underflowed) no mass on the classes left
                weights = remaining * 1.0
            draw = rng.multinomial(size - counts.sum(), weights / weights.sum())
            counts = np.minimum(counts + draw, left)
        taken = [pools[c][left[c] - n :] for c, n in enumerate(counts) if n]
        left = left - counts
        for c, pool in enumerate(pools):
            del pool[left[c] :]
        shards.append(np.sort(np.concatenate(taken)).astype(np.int64))
    return shards


@functools.lru_cache(maxsize=1024)
def _epoch_order(size: int, seed: int, worker: int, epoch: int) -> np.ndarray:
    """The order in which ``worker`` visits its ``size`` samples in ``epoch`` (read-only)."""
    order = np.random.default_rng([seed, TAG_EPOCH, worker, epoch]).permutation(size)
    order.flags.writeable = False
    return order


def epoch_batch(size: int, batch_size: int, step: int, seed: int, worker: int) -> np.ndarray:
    """Positions in a shard of minibatch ``step`` when sampling without replacement.

    The worker's stream of samples is a fresh random permutation of its shard in
    every epoch, one after the other (``torch.utils.data.DataLoader(shuffle=True)``,
    and mem-SGD's reference code); minibatch ``step`` takes the next ``batch_size``
    of them, continuing into the next epoch when one runs out. The positions are a
    function of the ids only, so any MPI layout and a resumed run draw the same.

    Parameters
    ----------
    size : int
        Samples in the worker's shard.
    batch_size : int
        Samples per minibatch.
    step : int
        The minibatch's number (0-based).
    seed : int
        The run's seed.
    worker : int
        Global worker id.

    Returns
    -------
    ndarray of int64, shape (batch_size,)
        Positions in ``0 .. size - 1``.

    Examples
    --------
    >>> epoch = np.concatenate([epoch_batch(5, 1, t, seed=0, worker=0) for t in range(5)])
    >>> sorted(epoch.tolist())
    [0, 1, 2, 3, 4]
    """
    out = np.empty(batch_size, dtype=np.int64)
    filled, start = 0, step * batch_size
    while filled < batch_size:
        epoch, offset = divmod(start + filled, size)
        take = min(batch_size - filled, size - offset)
        order = _epoch_order(size, seed, worker, epoch)
        out[filled : filled + take] = order[offset : offset + take]
        filled += take
    return out
