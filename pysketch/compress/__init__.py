"""Distributed training steps built from pysketch's primitives.

Three layers, each usable alone:

- :mod:`~pysketch.compress.messages` and :mod:`~pysketch.compress.compressors`:
  what a worker sends (dense, top-k, random-k, threshold, Count Sketch) and how
  it is decoded;
- :mod:`~pysketch.compress.communicators`: where the workers run
  (:class:`LocalCommunicator` in one process, :class:`MPICommunicator` over
  ranks), with per-worker byte accounting;
- :mod:`~pysketch.compress.algorithms`: SGD, mem-SGD, Sketched-SGD, FetchSGD
  and sketch-DL as step objects that turn the workers' gradients into the update.

Examples
--------
>>> import numpy as np
>>> from pysketch.compress import LocalCommunicator, make_algorithm
>>> comm = LocalCommunicator(workers=4)
>>> algo = make_algorithm("fetchsgd", 1000, lr=0.1, k=10, rows=5, cols=100)
>>> rng = np.random.default_rng(0)
>>> w = np.zeros(1000, dtype=np.float32)
>>> w -= algo.step([rng.standard_normal(1000, dtype=np.float32) for _ in range(4)], comm)
>>> int(np.count_nonzero(w)), comm.total.upload
(10, 2000.0)
"""

from pysketch.compress.algorithms import (
    ALGORITHMS,
    SGD,
    Algorithm,
    FetchSGD,
    MemSGD,
    SketchDL,
    SketchedSGD,
    TrueTopK,
    make_algorithm,
)
from pysketch.compress.communicators import (
    Communicator,
    LocalCommunicator,
    MPICommunicator,
    Traffic,
)
from pysketch.compress.compressors import (
    Compressor,
    CountSketchCompressor,
    Identity,
    RandomK,
    Threshold,
    TopK,
)
from pysketch.compress.participation import sample_participants

__all__ = [
    "ALGORITHMS",
    "SGD",
    "Algorithm",
    "Communicator",
    "Compressor",
    "CountSketchCompressor",
    "FetchSGD",
    "Identity",
    "LocalCommunicator",
    "MPICommunicator",
    "MemSGD",
    "RandomK",
    "SketchDL",
    "SketchedSGD",
    "Threshold",
    "TopK",
    "Traffic",
    "TrueTopK",
    "make_algorithm",
    "sample_participants",
]
