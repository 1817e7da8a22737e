"""pysketch: sketches for communication-efficient distributed training.

Count Sketch, Count-Min sketch, top-k and random-k as Numba kernels that run
on NumPy arrays (CPU) and on CUDA arrays (CuPy, PyTorch, JAX, anything with
``__cuda_array_interface__`` or DLPack), with the same results from the same
seed on both, plus mpi4py collectives (:mod:`pysketch.distributed`).

The public names and subpackages load on first access (the scientific Python
lazy-loading convention, SPEC 1): ``import pysketch`` costs a few milliseconds, and
Numba (about 0.3 s to import) is loaded with the first sketch or selection
used. ``from pysketch import CountSketch`` loads what that name needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module that defines it
_ATTRIBUTES = {
    "flatten": "pysketch._frameworks",
    "unflatten": "pysketch._frameworks",
    "warm_up": "pysketch._warmup",
    "CountMinSketch": "pysketch.countmin",
    "CountSketch": "pysketch.countsketch",
    "ErrorFeedback": "pysketch.feedback",
    "Momentum": "pysketch.feedback",
    "gather": "pysketch.selection",
    "randomk": "pysketch.selection",
    "scatter": "pysketch.selection",
    "threshold": "pysketch.selection",
    "topk": "pysketch.selection",
}
_SUBMODULES = (
    "compress",
    "countmin",
    "countsketch",
    "distributed",
    "errors",
    "feedback",
    "hashing",
    "kernels",
    "selection",
)

__all__ = [
    "CountMinSketch",
    "CountSketch",
    "ErrorFeedback",
    "Momentum",
    "flatten",
    "gather",
    "randomk",
    "scatter",
    "threshold",
    "topk",
    "unflatten",
    "warm_up",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ATTRIBUTES) | set(_SUBMODULES))


if TYPE_CHECKING:  # static analysers and IDEs see the names eagerly
    from pysketch._frameworks import flatten, unflatten
    from pysketch._warmup import warm_up
    from pysketch.countmin import CountMinSketch
    from pysketch.countsketch import CountSketch
    from pysketch.feedback import ErrorFeedback, Momentum
    from pysketch.selection import gather, randomk, scatter, threshold, topk
