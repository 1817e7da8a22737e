"""The simulator's models: quadratics, logistic regression and an MLP."""

from __future__ import annotations

from .base import Model, worker_rng
from .logistic import Logistic
from .mlp import MLP
from .quadratic import Quadratic

KINDS = {"quadratic": Quadratic, "logistic": Logistic, "mlp": MLP}


def build(model: dict, workers: int, seed: int, dtype) -> Model:
    """The model of a checked ``[model]`` table.

    Parameters
    ----------
    model : dict
        The table, ``kind`` one of ``"quadratic"``, ``"logistic"``, ``"mlp"``.
    workers : int
        Number of workers ``W``.
    seed : int
        The run's seed.
    dtype : dtype or str
        Floating type.

    Returns
    -------
    Model
    """
    return KINDS[model["kind"]](model, workers, seed, dtype)


__all__ = ["KINDS", "MLP", "Logistic", "Model", "Quadratic", "build", "worker_rng"]
