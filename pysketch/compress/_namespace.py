"""Array namespace of the inputs (NumPy or CuPy) and per-step seeds."""

from __future__ import annotations

from typing import Any

import numpy as np


def namespace(x: Any):
    """``numpy`` for host arrays, ``cupy`` for CuPy arrays; refuses anything else."""
    if isinstance(x, np.ndarray):
        return np
    module = type(x).__module__.split(".")[0]
    if module == "cupy":
        import cupy

        return cupy
    raise TypeError(
        f"expected a NumPy or CuPy array, got {type(x).__module__}.{type(x).__name__} "
        "(convert framework tensors with numpy.from_dlpack / cupy.from_dlpack)"
    )


def device_of(x: Any) -> str:
    """``"cpu"`` for NumPy arrays, ``"cuda"`` for CuPy arrays."""
    return "cpu" if namespace(x) is np else "cuda"


def step_seed(seed: int, step: int) -> int:
    """A seed for training step ``step`` of a run seeded ``seed``, the same on every worker."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0])
