"""Shared training scenarios: every algorithm with small, collision-prone settings.

Gradients depend on (worker, step, w) only, so any layout of workers over
processes computes the same ones, and the trajectory feeds back through ``w``.
"""

from __future__ import annotations

import numpy as np

from pysketch import CountSketch
from pysketch.compress import make_algorithm

D = 300
STEPS = 6

CONFIGS = {
    "sgd": ("sgd", dict(lr=0.1, rho=0.9)),
    "sgd-nesterov": ("sgd", dict(lr=0.1, rho=0.5, nesterov=True)),
    "memsgd-topk": ("memsgd", dict(lr=0.2, k=10)),
    "memsgd-randomk": ("memsgd", dict(lr=0.2, k=10, compressor="randomk", seed=5)),
    "memsgd-topk-nomemory": ("memsgd", dict(lr=0.2, k=10, memory=False)),
    "memsgd-topk-momentum": ("memsgd", dict(lr=0.2, k=10, rho=0.9)),
    "memsgd-code": (  # the local top-k of FetchSGD's released code
        "memsgd",
        dict(lr=0.2, k=10, rho=0.9, lr_placement="update", server_rho=0.5),
    ),
    "true-topk": ("true_topk", dict(lr=0.1, k=10, rho=0.9)),
    "true-topk-code": ("true_topk", dict(lr=0.1, k=10, rho=0.5, lr_placement="update")),
    "sketched": ("sketched_sgd", dict(lr=0.1, k=10, rows=5, cols=64, seed=3)),
    "sketched-p1-p2": ("sketched_sgd", dict(lr=0.1, k=10, rows=5, cols=64, p1=2, p2=3, seed=3)),
    "fetchsgd-zero": ("fetchsgd", dict(lr=0.1, k=10, rows=5, cols=64, seed=4)),
    "fetchsgd-subtract": ("fetchsgd", dict(lr=0.1, k=10, rows=5, cols=64, error="subtract")),
    "fetchsgd-code": (  # the released code's lr placement, clipping and zeroing rule
        "fetchsgd",
        dict(
            lr=0.1,
            k=10,
            rows=5,
            cols=64,
            lr_placement="update",
            clip_norm=20.0,
            zeroing="nonzero",
            seed=7,
        ),
    ),
    "fetchsgd-none": ("fetchsgd", dict(lr=0.1, k=10, rows=5, cols=64, error="none")),
    "sketchdl": ("sketchdl", dict(lr=0.5, rows=3, cols=128, seed=6)),
    "sketchdl-ef": ("sketchdl", dict(lr=0.5, rows=3, cols=128, error_feedback=True)),
    "sketchdl-reseed": ("sketchdl", dict(lr=0.5, rows=3, cols=128, reseed=True, seed=2)),
}


def build(key: str, **overrides):
    name, params = CONFIGS[key]
    return make_algorithm(name, D, **{**params, **overrides})


def gradient(worker: int, step: int, w: np.ndarray) -> np.ndarray:
    """A noisy gradient of 0.5 ||w - target_worker||^2 with a few heavy coordinates."""
    rng = np.random.default_rng([worker, step])
    target = np.zeros(D, dtype=np.float32)
    target[worker % 7 :: 37] = 5.0
    noise = rng.standard_normal(D).astype(np.float32)
    return (w - target + 0.1 * noise).astype(np.float32)


def trajectory(algo, comm, steps: int = STEPS, w=None, weighted: bool = False):
    """The iterates ``w_1 .. w_steps`` of ``w -= algo.step(grads, comm)``, the gradients
    taken at :meth:`~pysketch.compress.Algorithm.worker_weights` (``w`` unless the algorithm
    downloads top-k); ``weighted``: worker ``i`` weighs ``1 + i % 3``."""
    w = np.zeros(D, dtype=np.float32) if w is None else w.copy()
    out = []
    for _ in range(steps):
        ids = algo.participants(comm)
        points = algo.worker_weights(w, comm)
        grads = [gradient(i, algo.steps, p) for i, p in zip(ids, points, strict=True)]
        weights = [1.0 + i % 3 for i in ids] if weighted else None
        w = w - algo.step(grads, comm, weights=weights)
        out.append(w.copy())
    return out


def collision_free_seed(d: int, rows: int, cols: int) -> int:
    """A seed whose ``rows x cols`` Count Sketch of ``d`` coordinates puts each in a cell of
    its own in every row: its estimates are then exact, and updates can be computed by hand."""
    for seed in range(100):
        table = CountSketch(d, rows, cols, seed=seed).accumulate(np.ones(d)).table
        if all(np.count_nonzero(row) == d for row in table):
            return seed
    raise AssertionError("no collision-free seed found")
