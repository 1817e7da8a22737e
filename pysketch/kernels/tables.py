"""In-place arithmetic on sketch tables held in CUDA memory.

NumPy and CuPy tables use their own operators; Numba device arrays (what a
table is when CuPy is absent, and under the simulator) have none, so these
kernels give every device table the same add / scale / fill.
"""

from __future__ import annotations

from pysketch._cuda import cuda


@cuda.jit
def cuda_axpy(y, alpha, x):
    """``y += alpha * x`` over 2-D arrays of one shape."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    cols = y.shape[1]
    for flat in range(start, y.shape[0] * cols, step):
        j = flat // cols
        b = flat - j * cols
        y[j, b] += alpha * x[j, b]


@cuda.jit
def cuda_fill(y, value):
    start, step = cuda.grid(1), cuda.gridsize(1)
    cols = y.shape[1]
    for flat in range(start, y.shape[0] * cols, step):
        j = flat // cols
        y[j, flat - j * cols] = value


@cuda.jit
def cuda_scale(y, alpha):
    start, step = cuda.grid(1), cuda.gridsize(1)
    cols = y.shape[1]
    for flat in range(start, y.shape[0] * cols, step):
        j = flat // cols
        b = flat - j * cols
        y[j, b] *= alpha
