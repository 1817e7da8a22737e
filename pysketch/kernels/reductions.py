"""Small reductions that validation and the sketches share, on CPU and CUDA.

Scalar logic (the median of a row's estimates, the finiteness test) is
written once as ``@numba.njit`` functions that both the CPU and the CUDA
kernels call.
"""

from __future__ import annotations

import math

import numpy as np

from pysketch._cuda import cuda, device_function
from pysketch.kernels.parallel import blocks_of, length_of, task_kernel

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
def combine_columns(per_row, n, mode, out):
    """``out[i]`` = median (Count Sketch estimate) or mean (linear desketch) of ``per_row[:n, i]``.

    The one implementation for both backends: the CPU estimate passes a chunk
    of columns, a CUDA thread a single column. The median is an odd-even
    transposition sort of the rows, the same compare-exchange network run
    across every column at once (no data-dependent branches, so it
    vectorises); with an even ``n`` it is the mean of the two middle values.
    The mean adds the rows in order into row 0. ``per_row`` is overwritten.
    """
    width = per_row.shape[1]
    if mode == MEAN:
        for j in range(1, n):
            for i in range(width):
                per_row[0, i] += per_row[j, i]
        for i in range(width):
            out[i] = per_row[0, i] / n
        return
    for sweep in range(n):
        for j in range(sweep & 1, n - 1, 2):
            for i in range(width):
                per_row[j, i], per_row[j + 1, i] = ordered(per_row[j, i], per_row[j + 1, i])
    half = n // 2
    for i in range(width):
        if n % 2 == 1:
            out[i] = per_row[half, i]
        else:
            out[i] = 0.5 * (per_row[half - 1, i] + per_row[half, i])


@device_function
def unfit(v, scale, limit):
    """``(1, 0)`` for NaN or Inf, ``(0, 1)`` for a finite ``v`` with ``|scale * v| > limit``,
    ``(0, 0)`` otherwise: whether ``scale * v`` would store a non-finite value."""
    f = np.float64(v)
    if not math.isfinite(f):
        return 1, 0
    if abs(f * scale) > limit:
        return 0, 1
    return 0, 0


# --------------------------------------------------------------------- CPU


_SPAN = 1 << 16  # elements per task of the element-wise counts


_spans = blocks_of(0, _SPAN)


@task_kernel(tasks=_spans)
def _count_unfit_tasks(x, scale, limit, counts, first, last):
    for task in range(first, last):
        nonfinite = 0
        overflow = 0
        for i in range(task * _SPAN, min(x.shape[0], (task + 1) * _SPAN)):
            bad, over = unfit(x[np.uintp(i)], scale, limit)
            nonfinite += bad
            overflow += over
        counts[task, 0] = nonfinite
        counts[task, 1] = overflow


def cpu_count_unfit(x, scale, limit) -> tuple[int, int]:
    """``(NaN/Inf count, overflow count)`` of ``x`` by :func:`unfit`."""
    counts = np.zeros((_spans(x), 2), dtype=np.int64)
    _count_unfit_tasks(x, scale, limit, counts)
    nonfinite, overflow = counts.sum(axis=0)
    return int(nonfinite), int(overflow)


@task_kernel(tasks=_spans)
def _count_out_of_range_tasks(idx, upper, counts, first, last):
    for task in range(first, last):
        count = 0
        for i in range(task * _SPAN, min(idx.shape[0], (task + 1) * _SPAN)):
            if not 0 <= idx[np.uintp(i)] < upper:
                count += 1
        counts[task] = count


def cpu_count_out_of_range(idx, upper) -> int:
    """How many of ``idx`` lie outside ``[0, upper)``."""
    counts = np.zeros(_spans(idx), dtype=np.int64)
    _count_out_of_range_tasks(idx, upper, counts)
    return int(counts.sum())


@task_kernel(tasks=length_of(0))
def cpu_row_max_abs(table, out, first, last):
    for j in range(first, last):
        peak = 0.0
        for b in range(table.shape[1]):
            peak = max(peak, abs(np.float64(table[j, b])))
        out[j] = peak


@task_kernel(tasks=length_of(0))
def cpu_row_sumsq(table, out, first, last):
    for j in range(first, last):
        acc = 0.0
        for b in range(table.shape[1]):
            acc += np.float64(table[j, b]) * np.float64(table[j, b])
        out[j] = acc


# --------------------------------------------------------------------- CUDA


@cuda.jit(device=True)
def add_if_nonzero(counts, slot, value):
    """``counts[slot] += value`` atomically; skipped for 0, which most threads hold."""
    if value:
        cuda.atomic.add(counts, slot, value)


@cuda.jit
def cuda_count_unfit(x, scale, limit, counts):
    """``counts`` (int64[2], zeroed) += (NaN/Inf count, overflow count) by :func:`unfit`."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    nonfinite = 0
    overflow = 0
    for i in range(start, x.shape[0], step):
        bad, over = unfit(x[i], scale, limit)
        nonfinite += bad
        overflow += over
    add_if_nonzero(counts, 0, nonfinite)
    add_if_nonzero(counts, 1, overflow)


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
def cuda_max_abs(x, out):
    """``out[0]`` (float64, zeroed) = max of ``out[0]`` and ``|x|`` (1-D)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    peak = 0.0
    for i in range(start, x.shape[0], step):
        v = abs(np.float64(x[i]))
        if v > peak:
            peak = v
    if peak > 0.0:
        cuda.atomic.max(out, 0, peak)


@cuda.jit
def cuda_row_sumsq(table, out):
    start, step = cuda.grid(1), cuda.gridsize(1)
    cols = table.shape[1]
    for flat in range(start, table.shape[0] * cols, step):
        j = flat // cols
        v = np.float64(table[j, flat - j * cols])
        cuda.atomic.add(out, j, v * v)
