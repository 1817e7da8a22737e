"""pysketch: sketches for communication-efficient distributed training.

Count Sketch, Count-Min sketch, top-k and random-k as Numba kernels that run
on NumPy arrays (CPU) and on CUDA arrays (CuPy, PyTorch, JAX, anything with
``__cuda_array_interface__`` or DLPack), with the same results from the same
seed on both, plus mpi4py collectives (:mod:`pysketch.distributed`).
"""

from pysketch._frameworks import flatten, unflatten
from pysketch._warmup import warm_up
from pysketch.countmin import CountMinSketch
from pysketch.countsketch import CountSketch
from pysketch.feedback import ErrorFeedback, Momentum
from pysketch.selection import gather, randomk, scatter, threshold, topk

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
