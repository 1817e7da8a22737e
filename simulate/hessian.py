"""Hessian spectra from Hessian-vector products: Lanczos, stochastic Lanczos quadrature, kappa.

The sketch-DL analysis [SIL24]_ depends on ``kappa = sum_i |lambda_i| / lambda_max``.
``lambda_max`` (and the top eigenvalues) come from Lanczos (``scipy.sparse.linalg.eigsh``)
on the model's ``hvp``; ``sum_i |lambda_i|`` from stochastic Lanczos quadrature
[UCS17]_: for Rademacher probes ``z``, a ``m``-step Lanczos run from ``z / |z|``
gives Ritz values ``theta_j`` and weights ``tau_j^2`` (squared first components of
the Ritz vectors), and ``sum |lambda| ~ d * mean_z sum_j tau_j^2 |theta_j|``.

References
----------
.. [SIL24] M. Shrivastava, B. Isik, Q. Li, S. Koyejo, A. Banerjee, "Sketching for
   Distributed Deep Learning: A Sharper Analysis", NeurIPS 2024.
.. [UCS17] S. Ubaru, J. Chen, Y. Saad, "Fast Estimation of tr(f(A)) via Stochastic
   Lanczos Quadrature", SIAM J. Matrix Anal. Appl. 38(4), 2017.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Matvec = Callable[[np.ndarray], np.ndarray]


def top_eigenvalues(matvec: Matvec, d: int, k: int = 1, seed: int = 0) -> np.ndarray:
    """The ``k`` algebraically largest eigenvalues of the symmetric operator ``matvec``.

    Parameters
    ----------
    matvec : callable
        ``v -> H v`` for ``v`` of shape ``(d,)`` (float64).
    d : int
        Dimension.
    k : int
        How many (``k < d``; for tiny ``d`` the dense matrix is used).
    seed : int
        Seed of Lanczos's starting vector.

    Returns
    -------
    ndarray, shape (k,)
        In decreasing order.
    """
    if d <= max(2 * k + 1, 64):  # ARPACK needs k < d; tiny problems go dense
        dense = np.column_stack([matvec(e) for e in np.eye(d)])
        return np.linalg.eigvalsh(0.5 * (dense + dense.T))[::-1][:k]
    from scipy.sparse.linalg import LinearOperator, eigsh

    op = LinearOperator((d, d), matvec=lambda v: matvec(np.ravel(v)), dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(d)
    return np.sort(eigsh(op, k=k, which="LA", v0=v0, return_eigenvectors=False))[::-1]


def lanczos(matvec: Matvec, v0: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` Lanczos iterations from ``v0`` with full reorthogonalisation.

    Returns
    -------
    alpha, beta : ndarray
        Diagonal and off-diagonal of the tridiagonal matrix ``T`` (fewer when
        the Krylov space is exhausted).
    """
    d = v0.size
    steps = min(steps, d)
    basis = np.zeros((steps, d))
    alpha, beta = np.zeros(steps), np.zeros(max(steps - 1, 0))
    basis[0] = v0 / np.linalg.norm(v0)
    for j in range(steps):
        w = matvec(basis[j])
        alpha[j] = basis[j] @ w
        w -= basis[: j + 1].T @ (basis[: j + 1] @ w)  # full reorthogonalisation, twice
        w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        if j + 1 == steps:
            break
        beta[j] = np.linalg.norm(w)
        if beta[j] <= 1e-10 * max(1.0, abs(alpha[j])):
            return alpha[: j + 1], beta[:j]
        basis[j + 1] = w / beta[j]
    return alpha, beta


def slq_abs_trace(matvec: Matvec, d: int, probes: int = 8, steps: int = 30, seed: int = 0) -> float:
    """``sum_i |lambda_i|`` by stochastic Lanczos quadrature.

    Parameters
    ----------
    matvec : callable
        ``v -> H v`` (float64).
    d : int
        Dimension.
    probes : int
        Number of Rademacher probe vectors.
    steps : int
        Lanczos steps per probe.
    seed : int
        Seed of the probes.

    Returns
    -------
    float
    """
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(probes):
        z = rng.choice([-1.0, 1.0], d)
        alpha, beta = lanczos(matvec, z, steps)
        tri = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
        nodes, vectors = np.linalg.eigh(tri)
        total += float(np.sum(vectors[0] ** 2 * np.abs(nodes)))
    return d * total / probes


def spectrum_summary(
    model, w: np.ndarray, top: int = 3, probes: int = 8, steps: int = 30, seed: int = 0
) -> dict:
    """Top eigenvalues, ``sum |lambda|`` and ``kappa`` of a model's Hessian at ``w``.

    Parameters
    ----------
    model : simulate.models.Model
        Any model (``model.hvp``).
    w : ndarray
        Where to take the Hessian.
    top, probes, steps, seed
        See :func:`top_eigenvalues` and :func:`slq_abs_trace`.

    Returns
    -------
    dict
        ``top_eigenvalues`` (list), ``lambda_max``, ``sum_abs_eigenvalues``, ``kappa``.
    """

    def matvec(v):
        return model.hvp(w, v)

    eigs = top_eigenvalues(matvec, model.d, k=top, seed=seed)
    abs_sum = slq_abs_trace(matvec, model.d, probes=probes, steps=steps, seed=seed)
    lam_max = float(eigs[0])
    return {
        "top_eigenvalues": [float(e) for e in eigs],
        "lambda_max": lam_max,
        "sum_abs_eigenvalues": abs_sum,
        "kappa": abs_sum / lam_max if lam_max > 0 else float("inf"),
    }
