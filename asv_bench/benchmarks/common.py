"""Shared helpers: parameter grids, backends, test data, optional imports.

A benchmark raises ``NotImplementedError`` in ``setup`` to be skipped (asv
records it as "n/a"): for the ``"cuda"`` backend without a CUDA device, or for a
baseline whose library (PyTorch, CuPy) is missing.
"""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np

# asv_bench/ on the path, so that ``baselines`` (asv_bench/baselines.py) imports.
_HERE = os.path.dirname(os.path.abspath(__file__))
ASV_BENCH = os.path.dirname(_HERE)
if ASV_BENCH not in sys.path:
    sys.path.insert(0, ASV_BENCH)


# --------------------------------------------------------------- grids
# The default grids keep ``asv run --python=same --quick`` to a few minutes on 2 cores;
# PYSKETCH_ASV_FULL=1 adds the large sizes (baselines and the allreduce at d = 10**7,
# peak memory at d = 10**8, the simulator at d = 2**20 and 2**23, ...).
FULL = os.environ.get("PYSKETCH_ASV_FULL") == "1"


def sizes(default: list, large: list) -> list:
    """A size grid: ``default``, and ``large`` too under ``PYSKETCH_ASV_FULL=1``."""
    return [*default, *large] if FULL else list(default)


D_GRID = [10**4, 10**6, 10**7]
D_LARGE = sizes([10**7], [10**8])
ROWS = [1, 5]
COLS = [2**12, 500_000]
DTYPES = ["float32", "float64"]

# Headline sizes (FetchSGD-scale): d = 10**7, rows 5, cols 5 * 10**5, k = 5 * 10**4.
HEAD_D, HEAD_ROWS, HEAD_COLS, HEAD_K = 10**7, 5, 500_000, 50_000
SEED = 2024


# --------------------------------------------------------------- optional imports
def optional(module: str):
    """Import ``module`` or skip the benchmark (``NotImplementedError``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # includes ModuleNotFoundError
        raise NotImplementedError(f"{module} is not importable: {exc}") from exc


def cuda_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: all mean "skip"
        return False


# The CUDA parameter sets exist where a device does (elsewhere each would only be skipped).
BACKENDS = ["cpu", "cuda"] if cuda_available() else ["cpu"]


def require_backend(backend: str) -> None:
    if backend == "cuda" and not cuda_available():
        raise NotImplementedError("no CUDA device visible to CuPy")


def sync(backend: str) -> None:
    """Wait for queued GPU work, so timings include it."""
    if backend == "cuda":
        import cupy

        cupy.cuda.runtime.deviceSynchronize()


def to_backend(arr: np.ndarray, backend: str):
    if backend == "cuda":
        import cupy

        return cupy.asarray(arr)
    return arr


# --------------------------------------------------------------- data
def gradient_like(d: int, dtype="float32", *, heavy: int = 0, seed: int = SEED) -> np.ndarray:
    """Gaussian noise plus ``heavy`` planted large coordinates (a gradient's shape)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(d, dtype=np.float32 if dtype == "float32" else np.float64)
    if heavy:
        idx = rng.choice(d, size=heavy, replace=False)
        x[idx] = rng.choice([-1.0, 1.0], size=heavy) * (50.0 + 50.0 * rng.random(heavy))
    return x


def sparse_input(d: int, n: int, dtype="float32", seed: int = SEED):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d, size=n, dtype=np.int64)
    val = rng.standard_normal(n).astype(dtype)
    return idx, val


def clamp_k(k: int, d: int) -> int:
    return max(1, min(k, d // 10))
