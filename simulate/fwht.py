"""The fast Walsh–Hadamard transform and the random orthogonal rotation built on it.

``Q x = FWHT(s * x) / sqrt(d)`` with random signs ``s`` is orthogonal, costs
``O(d log d)`` time and ``O(d)`` memory, and spreads every coordinate over all
coordinates: a quadratic ``H = Q diag(lambda) Q^T`` has no axis-aligned
eigenvectors, so its gradients have no heavy hitters.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _fwht_inplace(x):  # pragma: no cover - compiled
    n = x.shape[0]
    h = 1
    while h < n:
        for start in range(0, n, 2 * h):
            for i in range(start, start + h):
                a = x[i]
                b = x[i + h]
                x[i] = a + b
                x[i + h] = a - b
        h *= 2


def fwht(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The unnormalised Walsh–Hadamard transform of ``x`` (length a power of two).

    Parameters
    ----------
    x : ndarray, shape (d,)
        Input, ``d`` a power of two.
    out : ndarray, optional
        Where to write the result (may be ``x`` itself).

    Returns
    -------
    ndarray
        ``H_d x`` where ``H_d H_d = d I``.

    Examples
    --------
    >>> fwht(np.array([1.0, 0.0, 0.0, 0.0])).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    d = x.shape[0]
    if d & (d - 1) or d == 0:
        raise ValueError(f"fwht needs a power-of-two length, got {d}")
    if out is None:
        out = np.array(x, copy=True)
    elif out is not x:
        out[...] = x
    _fwht_inplace(out)
    return out


class Rotation:
    """The orthogonal ``Q x = FWHT(s * x) / sqrt(d)`` with seeded random signs ``s``.

    Parameters
    ----------
    d : int
        Dimension, a power of two.
    seed : int or sequence of int
        Seed of the signs.
    dtype : dtype
        Floating type of the signs.

    Examples
    --------
    >>> q = Rotation(8, seed=0, dtype=np.float64)
    >>> x = np.arange(8.0)
    >>> bool(np.allclose(q.transpose(q.apply(x)), x))
    True
    """

    def __init__(self, d: int, seed, dtype=np.float64):
        self.d = d
        dtype = np.dtype(dtype)
        self.signs = np.random.default_rng(seed).choice(np.array([-1.0, 1.0], dtype=dtype), d)
        self.scale = dtype.type(1.0 / np.sqrt(d))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``Q x`` (a new array)."""
        out = fwht(x * self.signs)
        out *= self.scale
        return out

    def transpose(self, y: np.ndarray) -> np.ndarray:
        """``Q^T y`` (a new array)."""
        out = fwht(y)
        out *= self.signs * self.scale
        return out
