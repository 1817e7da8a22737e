"""warm_up under mpiexec: collective, one compiling rank per node, every rank returns."""

from __future__ import annotations

import numpy as np

from pysketch import CountSketch
from pysketch.distributed import allreduce_sketch, warm_up


def test_warm_up_is_collective_and_leaves_kernels_usable(comm):
    seconds = warm_up(comm, dtypes=["float64"], groups=["CountSketch"], poll=0.01)
    assert seconds >= 0
    x = np.zeros(100)
    x[5] = 1.0
    sketch = CountSketch(100, 3, 16, dtype=np.float64).accumulate(x)
    allreduce_sketch(sketch, comm=comm)
    assert float(sketch.estimate([5])[0]) == comm.size
