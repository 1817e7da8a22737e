"""Count-Min kernels: CPU (Numba ``njit``) and CUDA side by side.

Both backends call the same scalar functions (:func:`pysketch.hashing.bucket_sign`
and the helpers below), so buckets and the arithmetic of every cell update are
the same on both; only the order of additions differs between backends in the
plain update, which is exact whenever the sums are (integer weights, say).

Conventions shared by the update kernels:

* ``n`` updates; update ``t`` hits index ``t`` when ``dense`` is true
  (``indices`` is then an unused dummy), ``indices[t]`` otherwise.
* its weight is ``values[t * vstep]``: ``vstep`` is 1 for a weight array and 0
  for a scalar weight passed as a one-element array, so one kernel serves both.
* weights are cast to the table's dtype before any arithmetic, so a float32
  table is updated in float32 on both backends (same rounding).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pysketch._cuda import cuda, device_function
from pysketch.hashing import HASH_BLOCK, bucket_sign, hash_block
from pysketch.kernels.parallel import blocks_of, length_of, task_kernel
from pysketch.kernels.reductions import MAX_ROWS, add_if_nonzero, ordered, unfit

_CHUNK = 4096  # queries per CPU estimate task, and weights per partial sum


@device_function
def update_index(indices, dense, t):
    # int64 on both branches: mixing int64 and uint64 would unify to float64.
    return np.int64(t) if dense else np.int64(indices[t])


@device_function
def bucket_of(family, keys, row, index, cols):
    bucket, _ = bucket_sign(family, keys, row, index, cols)
    return bucket


@device_function
def smaller(a, b):
    return ordered(a, b)[0]


@device_function
def weight_class(v, limit, single):
    """``(non-finite, overflowing, negative, value as stored)`` of one weight.

    A weight overflows when its magnitude exceeds ``limit`` (what the table's
    dtype holds finitely); ``single`` says the table is float32, so the value
    the table stores, and the total weight adds up, is the float32 one.
    """
    bad, over = unfit(v, 1.0, limit)
    if bad or over:
        return bad, over, 0, 0.0
    f = np.float64(v)
    if f < 0:
        return 0, 0, 1, 0.0
    if single:
        return 0, 0, 0, np.float64(np.float32(f))
    return 0, 0, 0, f


@device_function
def conservative_target(table, m, w):
    """The value every hit cell must reach: ``min + w``, in the table's dtype."""
    return table.dtype.type(m) + table.dtype.type(w)


@device_function
def query_one(table, family, keys, index, shift, clamp):
    """``min_j S[j, h_j(index)] + shift``, floored at 0 when ``clamp``."""
    cols = table.shape[1]
    m = table[0, bucket_of(family, keys, 0, index, cols)]
    for j in range(1, table.shape[0]):
        m = smaller(m, table[j, bucket_of(family, keys, j, index, cols)])
    v = np.float64(m) + shift
    if clamp and v < 0.0:
        v = 0.0
    return v


# --------------------------------------------------------------------- CPU


# The CPU kernels hash a block of updates per row with hashing.hash_block, the
# Count Sketch's: one family compiled (``family`` from hashing.cpu_family), one
# compilation shared by both sketches, and loops that vectorise.


@task_kernel(tasks=length_of(0))
def cpu_update(table, family, keys, indices, dense, values, vstep, n, first, last):
    """Plain update. Each row is one task: a row's cells are written by one thread only,
    in update order."""
    cols = table.shape[1]
    buckets = np.empty(HASH_BLOCK, dtype=np.int64)
    signs = np.empty(HASH_BLOCK, dtype=np.float32)
    for j in range(first, last):
        row = table[j]
        for start in range(0, n, HASH_BLOCK):
            width = min(HASH_BLOCK, n - start)
            hash_block(family, keys, j, cols, indices, start, width, dense, buckets, signs)
            for t in range(width):
                row[buckets[t]] += table.dtype.type(values[np.uintp((start + t) * vstep)])


@njit(cache=True)
def cpu_update_conservative(table, family, keys, indices, dense, values, vstep, n):
    """Conservative update, sequential: each update reads the minimum the previous ones left."""
    rows, cols = table.shape
    buckets = np.empty((rows, HASH_BLOCK), dtype=np.int64)
    signs = np.empty(HASH_BLOCK, dtype=np.float32)
    for start in range(0, n, HASH_BLOCK):
        width = min(HASH_BLOCK, n - start)
        for j in range(rows):
            hash_block(family, keys, j, cols, indices, start, width, dense, buckets[j], signs)
        for t in range(width):
            m = table[0, buckets[0, t]]
            for j in range(1, rows):
                m = smaller(m, table[j, buckets[j, t]])
            target = conservative_target(table, m, values[np.uintp((start + t) * vstep)])
            for j in range(rows):
                if table[j, buckets[j, t]] < target:
                    table[j, buckets[j, t]] = target


@task_kernel(tasks=blocks_of(-1, _CHUNK))
def cpu_query(table, family, keys, indices, shift, clamp, out, first, last):
    """``out[i]`` = :func:`query_one` of ``indices[i]``, a chunk and a row at a time."""
    n = out.shape[0]
    rows, cols = table.shape
    buckets = np.empty(_CHUNK, dtype=np.int64)
    signs = np.empty(_CHUNK, dtype=np.float32)
    low = np.empty(_CHUNK, dtype=table.dtype)
    for c in range(first, last):
        start = c * _CHUNK
        width = min(n, start + _CHUNK) - start
        hash_block(family, keys, 0, cols, indices, start, width, False, buckets, signs)
        for t in range(width):
            low[t] = table[0, buckets[t]]
        for j in range(1, rows):
            hash_block(family, keys, j, cols, indices, start, width, False, buckets, signs)
            for t in range(width):
                low[t] = smaller(low[t], table[j, buckets[t]])
        for t in range(width):
            v = np.float64(low[t]) + shift
            out[start + t] = 0.0 if clamp and v < 0.0 else v


_weight_chunks = blocks_of(0, _CHUNK)


@task_kernel(tasks=_weight_chunks)
def _weight_stats_tasks(w, limit, single, counts, partial, first, last):
    n = w.shape[0]
    for c in range(first, last):
        bad_c, over_c, neg_c, total_c = 0, 0, 0, 0.0
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            bad, over, neg, value = weight_class(w[np.uintp(i)], limit, single)
            bad_c += bad
            over_c += over
            neg_c += neg
            total_c += value
        counts[c, 0] = bad_c
        counts[c, 1] = over_c
        counts[c, 2] = neg_c
        partial[c] = total_c


def cpu_weight_stats(w, limit, single) -> tuple[int, int, int, float]:
    """(non-finite, overflowing and negative counts, float64 sum) of ``w`` in one pass.

    The sum adds fixed chunks' partial sums in chunk order, so it does not
    depend on the number of threads.
    """
    chunks = _weight_chunks(w)
    counts = np.zeros((chunks, 3), dtype=np.int64)
    partial = np.zeros(chunks, dtype=np.float64)
    _weight_stats_tasks(w, limit, single, counts, partial)
    nonfinite, overflow, negative = (int(v) for v in counts.sum(axis=0))
    total = 0.0
    for value in partial.tolist():  # in chunk order, as the docstring promises
        total += value
    return nonfinite, overflow, negative, total


# --------------------------------------------------------------------- CUDA


@cuda.jit
def cuda_update(table, family, keys, indices, dense, values, vstep, n):
    """Plain update: one thread per update, atomics because updates share cells."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    rows, cols = table.shape
    for t in range(start, n, step):
        index = update_index(indices, dense, t)
        w = table.dtype.type(values[t * vstep])
        for j in range(rows):
            cuda.atomic.add(table, (j, bucket_of(family, keys, j, index, cols)), w)


@cuda.jit
def cuda_update_conservative(table, family, keys, indices, dense, values, vstep, n):
    """Conservative update in update order: launch as ONE block of ``rows`` threads.

    Thread ``j`` owns row ``j``; per update the threads publish their cell,
    all take the same minimum, and each raises its own cell. Updates are
    serialised exactly as on the CPU, so the tables match bit for bit; the
    parallelism is only across rows (an atomicMax variant over updates would
    be faster but its result would depend on scheduling).
    """
    current = cuda.shared.array(MAX_ROWS, np.float64)
    j = cuda.threadIdx.x
    rows, cols = table.shape
    bucket = 0
    for t in range(n):
        index = update_index(indices, dense, t)
        if j < rows:
            bucket = bucket_of(family, keys, j, index, cols)
            current[j] = table[j, bucket]
        cuda.syncthreads()
        m = current[0]
        for k in range(1, rows):
            m = smaller(m, current[k])
        # Nobody may overwrite ``current`` for update t + 1 before all have read it.
        cuda.syncthreads()
        if j < rows:
            target = conservative_target(table, m, values[t * vstep])
            if table[j, bucket] < target:
                table[j, bucket] = target


@cuda.jit
def cuda_query(table, family, keys, indices, shift, clamp, out):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for t in range(start, out.shape[0], step):
        out[t] = query_one(table, family, keys, np.int64(indices[t]), shift, clamp)


@cuda.jit
def cuda_weight_stats(w, limit, single, stats):
    """``stats`` (float64[4], zeroed) += (non-finite, overflowing, negative counts, sum)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    nonfinite = 0.0
    overflow = 0.0
    negative = 0.0
    total = 0.0
    for i in range(start, w.shape[0], step):
        bad, over, neg, value = weight_class(w[i], limit, single)
        nonfinite += bad
        overflow += over
        negative += neg
        total += value
    add_if_nonzero(stats, 0, nonfinite)
    add_if_nonzero(stats, 1, overflow)
    add_if_nonzero(stats, 2, negative)
    add_if_nonzero(stats, 3, total)
