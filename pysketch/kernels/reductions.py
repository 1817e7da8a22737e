"""Small reductions that validation and the sketches share, on CPU and CUDA.

Scalar logic (the median of a row's estimates) is written once as
``@numba.njit`` functions that both the CPU and the CUDA kernels call.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from pysketch._cuda import cuda, device_function

# Upper bound on sketch rows: the CUDA kernels keep one estimate per row in a
# fixed-size per-thread array.
MAX_ROWS = 64
MEDIAN, MEAN = 0, 1


@device_function
def ordered(a, b):
    """``(min, max)`` of two values as selects: branch-free, and Numba's CUDA
    target rejects the ``min``/``max`` builtins inside device functions."""
    return (a if a <= b else b), (b if a <= b else a)


@device_function
def median_inplace(buf, n):
    """Median of ``buf[:n]``, sorting it in place; mean of the two middle for even n.

    Odd-even transposition sort: the same compare-exchange network as the CPU
    estimate kernel runs across whole columns, so both backends pick the same
    values; no data-dependent branches.
    """
    for sweep in range(n):
        for i in range(sweep & 1, n - 1, 2):
            buf[i], buf[i + 1] = ordered(buf[i], buf[i + 1])
    half = n // 2
    if n % 2 == 1:
        return buf[half]
    return 0.5 * (buf[half - 1] + buf[half])


@device_function
def combine_rows(buf, n, mode):
    """Median (Count Sketch estimate) or mean (linear desketch) of ``buf[:n]``."""
    if mode == MEAN:
        total = 0.0
        for j in range(n):
            total += buf[j]
        return total / n
    return median_inplace(buf, n)


# --------------------------------------------------------------------- CPU


@njit(parallel=True, cache=True)
def cpu_count_nonfinite(x):
    count = 0
    for i in prange(x.shape[0]):
        if not math.isfinite(x[i]):
            count += 1
    return count


@njit(parallel=True, cache=True)
def cpu_count_out_of_range(idx, upper):
    count = 0
    for i in prange(idx.shape[0]):
        if not 0 <= idx[i] < upper:
            count += 1
    return count


@njit(parallel=True, cache=True)
def cpu_row_sumsq(table, out):
    for j in prange(table.shape[0]):
        acc = 0.0
        for b in range(table.shape[1]):
            acc += np.float64(table[j, b]) * np.float64(table[j, b])
        out[j] = acc


# --------------------------------------------------------------------- CUDA


@cuda.jit
def cuda_count_nonfinite(x, count):
    start, step = cuda.grid(1), cuda.gridsize(1)
    local = 0
    for i in range(start, x.shape[0], step):
        if not math.isfinite(x[i]):
            local += 1
    if local:
        cuda.atomic.add(count, 0, local)


@cuda.jit
def cuda_count_out_of_range(idx, upper, count):
    start, step = cuda.grid(1), cuda.gridsize(1)
    local = 0
    for i in range(start, idx.shape[0], step):
        if not 0 <= idx[i] < upper:
            local += 1
    if local:
        cuda.atomic.add(count, 0, local)


@cuda.jit
def cuda_row_sumsq(table, out):
    start, step = cuda.grid(1), cuda.gridsize(1)
    cols = table.shape[1]
    for flat in range(start, table.shape[0] * cols, step):
        j = flat // cols
        v = np.float64(table[j, flat - j * cols])
        cuda.atomic.add(out, j, v * v)
