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

The conservative update treats one call as a batch, on both backends: each key's
weights in the call are summed (float64), each key's target ``min_j S[j, h_j(key)]
+ W`` is taken from the table as it was before the call, and every cell is raised
to the largest target of the keys that hit it. Nothing depends on the order of the
updates but those sums (exact for integer weights), so it runs in parallel over
keys and rows: an open-addressing table gathers the keys (sparse updates), one pass
computes the targets, one raises the cells (``atomic.max`` on CUDA).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pysketch._cuda import THREADS_PER_BLOCK, cuda, device_function
from pysketch.hashing import HASH_BLOCK, bucket_sign, fmix64, hash_block
from pysketch.kernels.parallel import blocks_of, length_of, task_kernel
from pysketch.kernels.reductions import (
    block_scan,
    block_sum_f64,
    last_block,
    ordered,
    out_of_range,
    unfit,
)

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
    if np.float64(v) < 0:
        return 0, 0, 1, 0.0
    return 0, 0, 0, stored(v, single)


@device_function
def stored(w, single):
    """The weight ``w`` as the table stores it (float32 when ``single``), as a float64."""
    return np.float64(np.float32(w)) if single else np.float64(w)


@device_function
def conservative_target(m, w, single):
    """The value every cell of a key must reach: ``min + W`` (float64), rounded once to the
    table's dtype (``single``: float32), returned as a float64."""
    target = np.float64(m) + np.float64(w)
    return np.float64(np.float32(target)) if single else target


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
def cpu_update(table, family, keys, indices, dense, values, vstep, n, maximum, first, last):
    """Add each weight to its key's cells or, with ``maximum``, raise each cell to it
    (the conservative update's last step, ``values`` its targets). Each row is one
    task: a row's cells are written by one thread only, in update order."""
    cols = table.shape[1]
    buckets = np.empty(HASH_BLOCK, dtype=np.int64)
    signs = np.empty(HASH_BLOCK, dtype=np.float32)
    for j in range(first, last):
        row = table[j]
        for start in range(0, n, HASH_BLOCK):
            width = min(HASH_BLOCK, n - start)
            hash_block(family, keys, j, cols, indices, start, width, dense, buckets, signs)
            for t in range(width):
                w = table.dtype.type(values[np.uintp((start + t) * vstep)])
                if not maximum:
                    row[buckets[t]] += w
                elif row[buckets[t]] < w:
                    row[buckets[t]] = w


EMPTY = -1  # a free slot of the keys' open-addressing table (keys are >= 0)


@device_function
def slots_for(n):
    """Slots of the open-addressing table for ``n`` updates: a power of two, at least ``2n``."""
    size = 2
    while size < 2 * n:
        size *= 2
    return size


@device_function
def first_slot(key, mask):
    return np.intp(fmix64(np.uint64(key)) & np.uint64(mask))


@njit(cache=True)
def cpu_sum_by_key(indices, values, vstep, n, single):
    """The distinct keys of ``indices[:n]`` in order of first appearance, and each key's
    float64 sum of its weights ``values[t * vstep]`` as the table stores them
    (:func:`stored`), added in update order."""
    size = slots_for(n)
    mask = size - 1
    slot_of = np.full(size, -1, dtype=np.int64)  # slot -> position in the output
    keys = np.empty(n, dtype=np.int64)
    sums = np.empty(n, dtype=np.float64)
    m = 0
    for t in range(n):
        key = np.int64(indices[t])
        w = stored(values[np.uintp(t * vstep)], single)
        s = first_slot(key, mask)
        while slot_of[s] >= 0 and keys[slot_of[s]] != key:
            s = (s + 1) & mask
        if slot_of[s] < 0:
            slot_of[s] = m
            keys[m] = key
            sums[m] = w
            m += 1
        else:
            sums[slot_of[s]] += w
    return keys[:m], sums[:m]


@njit(cache=True)
def cpu_targets(minima, weights, dense, single):
    """``minima[t]`` (float64) becomes :func:`conservative_target` of it and the weight
    ``weights[t]``: one update's (``dense``: converted by :func:`stored`) or a key's sum."""
    for t in range(minima.shape[0]):
        w = stored(weights[t], single) if dense else np.float64(weights[t])
        minima[t] = conservative_target(minima[t], w, single)


@task_kernel(tasks=blocks_of(-1, _CHUNK))
def cpu_query(table, family, keys, indices, dense, shift, clamp, out, first, last):
    """``out[i]`` = :func:`query_one` of index ``i`` (``dense``) or ``indices[i]``, a chunk
    and a row at a time."""
    n = out.shape[0]
    rows, cols = table.shape
    buckets = np.empty(_CHUNK, dtype=np.int64)
    signs = np.empty(_CHUNK, dtype=np.float32)
    low = np.empty(_CHUNK, dtype=table.dtype)
    for c in range(first, last):
        start = c * _CHUNK
        width = min(n, start + _CHUNK) - start
        hash_block(family, keys, 0, cols, indices, start, width, dense, buckets, signs)
        for t in range(width):
            low[t] = table[0, buckets[t]]
        for j in range(1, rows):
            hash_block(family, keys, j, cols, indices, start, width, dense, buckets, signs)
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
def cuda_sum_by_key(indices, values, vstep, n, single, slot_keys, slot_sums):
    """Add update ``t``'s weight (:func:`stored`) into its key's slot of the open-addressing
    table (``slot_keys`` filled with -1, ``slot_sums`` zeroed; a power of two, ``>= 2n``)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    mask = slot_keys.shape[0] - 1
    for t in range(start, n, step):
        key = np.int64(indices[t])
        s = first_slot(key, mask)
        while True:
            found = cuda.atomic.cas(slot_keys, s, EMPTY, key)
            if found == EMPTY or found == key:
                break
            s = (s + 1) & mask
        cuda.atomic.add(slot_sums, s, stored(values[t * vstep], single))


@cuda.jit
def cuda_conservative_targets(table, family, keys, slot_keys, weights, dense, single, targets):
    """``targets[s]`` = :func:`conservative_target` of key ``s`` (dense, weight
    ``weights[s]``) or ``slot_keys[s]`` (its weights' sum ``weights[s]``; free slots
    skipped), from the table as it is before any cell is raised."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for s in range(start, targets.shape[0], step):
        key = np.int64(s) if dense else slot_keys[s]
        if key != EMPTY:
            m = query_one(table, family, keys, key, 0.0, False)
            w = stored(weights[s], single) if dense else np.float64(weights[s])
            targets[s] = conservative_target(m, w, single)


@cuda.jit
def cuda_conservative_raise(table, family, keys, slot_keys, dense, targets):
    """``S[j, h_j(key)] = max(S[j, h_j(key)], target)`` for every key of
    :func:`cuda_conservative_targets`, with ``atomic.max``: the result is the largest
    target whatever the order. Frees the slots (-1) for the table's next use."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    rows, cols = table.shape
    for s in range(start, targets.shape[0], step):
        key = np.int64(s) if dense else slot_keys[s]
        if key != EMPTY:
            target = table.dtype.type(targets[s])
            for j in range(rows):
                cuda.atomic.max(table, (j, bucket_of(family, keys, j, key, cols)), target)
            if not dense:
                slot_keys[s] = EMPTY


@cuda.jit
def cuda_query(table, family, keys, indices, shift, clamp, out):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for t in range(start, out.shape[0], step):
        out[t] = query_one(table, family, keys, np.int64(indices[t]), shift, clamp)


# Columns of the weight statistics: counts, then the float64 sum.
STAT_NONFINITE, STAT_OVERFLOW, STAT_NEGATIVE, STAT_OUT_OF_RANGE, STAT_TOTAL = range(5)
STATS = 5
STATS_BLOCKS = 1024  # blocks of cuda_weight_stats: their partial sums are added in order


@cuda.jit
def cuda_weight_stats(
    n, indices, upper, check_indices, w, limit, single, check_weights, tickets, out
):
    """Row 0 of ``out`` (float64, ``(1 + gridDim, STATS)``) = the counts of non-finite,
    overflowing and negative weights ``w[:n]`` (when ``check_weights``) and of keys
    ``indices[:n]`` outside ``[0, upper)`` (when ``check_indices``), and the float64 sum of
    the weights as the table stores them.

    Block reductions write each block's row; the grid's last block adds the rows
    in block order, so the sum does not depend on scheduling. No float atomics.
    """
    scratch = cuda.shared.array(THREADS_PER_BLOCK, np.int64)
    sums = cuda.shared.array(THREADS_PER_BLOCK, np.float64)
    start, step = cuda.grid(1), cuda.gridsize(1)
    nonfinite = 0
    overflow = 0
    negative = 0
    outside = 0
    total = 0.0
    for i in range(start, n, step):
        if check_weights:
            bad, over, neg, value = weight_class(w[i], limit, single)
            nonfinite += bad
            overflow += over
            negative += neg
            total += value
        if check_indices:
            outside += out_of_range(indices[i], upper)
    _, nonfinite = block_scan(scratch, nonfinite)
    _, overflow = block_scan(scratch, overflow)
    _, negative = block_scan(scratch, negative)
    _, outside = block_scan(scratch, outside)
    total = block_sum_f64(sums, total)
    if cuda.threadIdx.x == 0:
        row = 1 + cuda.blockIdx.x
        out[row, STAT_NONFINITE] = nonfinite
        out[row, STAT_OVERFLOW] = overflow
        out[row, STAT_NEGATIVE] = negative
        out[row, STAT_OUT_OF_RANGE] = outside
        out[row, STAT_TOTAL] = total
    if last_block(scratch, tickets, 0):
        for column in range(cuda.threadIdx.x, STATS, cuda.blockDim.x):
            acc = 0.0
            for b in range(1, 1 + cuda.gridDim.x):
                acc += out[b, column]
            out[0, column] = acc
