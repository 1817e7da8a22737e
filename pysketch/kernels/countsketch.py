"""Count Sketch kernels: CPU (Numba ``njit``) and CUDA side by side.

Both backends call the same scalar functions: :func:`pysketch.hashing.bucket_sign`
for buckets and signs, and the compare-exchange ``ordered`` of the median's
sorting network (per index on CUDA, across a chunk's columns on the CPU), so
buckets, signs and the combination of rows are the same on both. The CPU
accumulate adds every input in a fixed order whatever the number of threads
(threads own disjoint cells; see :func:`cpu_accumulate`), so its tables are
reproducible bit for bit; the CUDA accumulate uses atomics, whose order of
float additions varies, so its tables equal the CPU's exactly only when the
sums are exact (integer values, say) and up to rounding otherwise.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit

from pysketch import _cuda
from pysketch._cuda import THREADS_PER_BLOCK, cuda
from pysketch.hashing import HASH_BLOCK, bucket_sign, hash_block
from pysketch.kernels.parallel import blocks_of, length_of, task_kernel
from pysketch.kernels.reductions import (
    MEAN,
    STATUS_NONFINITE,
    STATUS_OUT_OF_RANGE,
    STATUS_OVERFLOW,
    add_block_count,
    block_sum_f64,
    combine_columns,
    combine_source,
    compile_source,
    last_block,
    ordered,
    out_of_range,
    unfit,
)

_CHUNK = 4096  # indices an estimate task handles with one scratch buffer


# --------------------------------------------------------------------- CPU


@njit(inline="never", cache=True)
def scatter_owned(row, buckets, signs, values, start, width, first, last, kept):
    """``row[b] += s * v`` for the entries of a hashed block whose bucket is in ``[first, last)``.

    The owned entries are compacted without branches first (a bucket range
    split between threads makes the branch unpredictable). Kept out of line:
    inlined next to the whole-row loop, it made that loop 3x slower.
    """
    span = np.uint64(last - first)
    m = 0
    for t in range(width):
        kept[m] = t
        m += np.int64(np.uint64(buckets[t] - first) < span)
    for u in range(m):
        t = kept[u]
        row[buckets[t]] += signs[t] * values[np.uintp(start + t)]


@njit(inline="always")
def accumulate_row(row, family, keys, j, indices, values, dense, start, stop, first, last):
    """Add inputs ``start .. stop`` into the cells ``[first, last)`` of sketch row ``j``.

    Each block of indices is hashed first, then scattered, so that the hashing
    vectorises apart from the scatter's memory dependence. The inputs are
    added in index order.
    """
    cols = row.shape[0]
    buckets = np.empty(HASH_BLOCK, dtype=np.int64)
    signs = np.empty(HASH_BLOCK, dtype=np.float32)
    kept = np.empty(HASH_BLOCK, dtype=np.int64)
    whole = first == 0 and last == cols
    for block in range(start, stop, HASH_BLOCK):
        width = min(HASH_BLOCK, stop - block)
        hash_block(family, keys, j, cols, indices, block, width, dense, buckets, signs)
        if whole:
            for t in range(width):
                row[buckets[t]] += signs[t] * values[np.uintp(block + t)]
        else:
            scatter_owned(row, buckets, signs, values, block, width, first, last, kept)


def _pieces(*args):
    return args[-1]


@task_kernel(tasks=_pieces)
def cpu_accumulate(
    table, buffers, spilled, family, keys, indices, values, dense, chunks, pieces, first, last
):
    """Add ``values[i]`` at index ``i`` (dense) or ``indices[i]`` (sparse).

    The input is cut into ``chunks`` (1 or 2) equal ranges. Every cell of row
    ``j`` receives chunk 0's inputs in index order, then the sum of chunk 1's
    (accumulated from zero in index order): the same sums whatever ``pieces``
    is, so the result does not depend on the number of threads.

    The work is the ``(row, chunk, cell)`` space flattened, cut into
    ``pieces`` equal ranges: piece ``p`` hashes the inputs of every
    (row, chunk) its range touches and adds only those that land in its own
    cells, so no two threads write the same cell. Hashing is repeated only
    for a (row, chunk) split between two pieces, which happens unless
    ``pieces`` divides ``rows * chunks`` (never for 1 or 2 pieces with 2
    chunks).

    A piece sums chunk 1 of its cells of row ``j`` in a scratch row and adds
    it to the table when it owns chunk 0 of all those cells, done just before.
    Otherwise an earlier piece, which may still be running, owns some: that
    happens to one (row, chunk) per piece at most, the first of chunk 1 in its
    range, which the piece sums last and leaves in the scratch row;
    ``spilled[p]`` records ``(j, first cell, last cell, scratch row)`` for the
    caller to add afterwards (``j = -1``: nothing spilled).

    The scratch row is ``buffers[p]`` when there are at most as many pieces
    as rows (then each piece reuses one row: 2 rows of resident scratch with
    2 threads, not a second table), ``buffers[j]`` otherwise (then pieces
    hold parts of rows, and their cells, disjoint, fill at most one table
    without gaps, which huge pages would round up).
    ``buffers`` is uninitialised; only the cells used are written. It comes
    from NumPy rather than from ``np.empty`` in the kernel: NumPy asks for
    huge pages for arrays of 4 MiB and more, and the random scatter into a
    scratch row on 4 KiB pages measured 20% slower (TLB misses).
    """
    rows, cols = table.shape
    n = values.shape[0]
    cells = rows * chunks * cols
    for p in range(first, last):
        lo = p * cells // pieces
        hi = (p + 1) * cells // pieces
        spilled[p, 0] = -1
        end = (hi + cols - 1) // cols
        for step in range(lo // cols, end + 1):  # the units, then the spilled one
            if step < end:
                unit = step
                a = max(lo - unit * cols, 0)
                b = min(hi - unit * cols, cols)
                if a >= b:
                    continue
                if unit % chunks == 1 and lo > (unit - 1) * cols + a:
                    spilled[p, 0], spilled[p, 1], spilled[p, 2] = unit // chunks, a, b
                    continue
            elif spilled[p, 0] >= 0:
                unit = spilled[p, 0] * chunks + 1
                a, b = spilled[p, 1], spilled[p, 2]
            else:
                break
            j, c = unit // chunks, unit % chunks
            scratch_row = p if pieces <= rows else j
            target = table[j] if c == 0 else buffers[scratch_row]
            if c == 1:
                for k in range(a, b):
                    target[k] = 0
            start, stop = c * n // chunks, (c + 1) * n // chunks
            accumulate_row(target, family, keys, j, indices, values, dense, start, stop, a, b)
            if c == 1 and step < end:
                for k in range(a, b):
                    table[j, k] += target[k]
            elif step == end:
                spilled[p, 3] = scratch_row


@task_kernel(tasks=blocks_of(-1, _CHUNK))
def cpu_estimate(table, family, keys, indices, dense, mode, out, first, last):
    """``out[i]`` = estimate of index ``i`` (dense) or ``indices[i]``.

    Per chunk of indices: one pass per row hashes the chunk, then gathers
    ``s_j(i) S[j, h_j(i)]`` from that row of the table (which stays in cache)
    into row ``j`` of a scratch array; then the rows are combined column-wise,
    the median's sorting network running across all columns at once
    (:func:`~pysketch.kernels.reductions.combine_columns`). Each step measured 5-7x faster than
    doing it per index (single thread, d = 4e6, r = 5, c = 5e5), with
    identical results.
    """
    n = out.shape[0]
    rows, cols = table.shape
    for c in range(first, last):
        start = c * _CHUNK
        width = min(n, start + _CHUNK) - start
        per_row = np.empty((rows, width), dtype=np.float64)
        buckets = np.empty(width, dtype=np.int64)
        signs = np.empty(width, dtype=np.float32)
        for j in range(rows):
            hash_block(family, keys, j, cols, indices, start, width, dense, buckets, signs)
            for t in range(width):
                per_row[j, t] = signs[t] * table[j, buckets[t]]
        combine_columns(per_row, rows, mode, out[start : start + width])


# --------------------------------------------------------------------- CUDA


@cuda.jit
def cuda_accumulate(
    table, family, keys, indices, values, dense, guard, check, limit, upper, status
):
    """Add ``values[i]`` at index ``i`` (dense) or ``indices[i]``, with atomics.

    ``status``: an int64 device array of ``STATUS_SLOTS``. With ``guard``, nothing is
    added when any slot already holds a count (a check queued before, of this input
    or of an earlier one of the same step, failed). With ``check`` (never with
    ``guard``: the blocks that start last would see the counts of the first), in the
    same pass, a value that is NaN or Inf or whose magnitude exceeds ``limit`` (what
    the table stores finitely), and a sparse index outside ``[0, upper)``, are
    counted into their slots (one atomic per block and slot) and left out.
    """
    scratch = cuda.shared.array(THREADS_PER_BLOCK, np.int64)
    if guard and (status[STATUS_NONFINITE] | status[STATUS_OVERFLOW] | status[STATUS_OUT_OF_RANGE]):
        return
    start, step = cuda.grid(1), cuda.gridsize(1)
    rows, cols = table.shape
    nonfinite = 0
    overflow = 0
    outside = 0
    for i in range(start, values.shape[0], step):
        value = values[i]
        index = np.int64(i) if dense else np.int64(indices[i])
        if check:
            bad, over = unfit(value, 1.0, limit)
            wild = 0 if dense else out_of_range(indices[i], upper)
            nonfinite += bad
            overflow += over
            outside += wild
            if bad or over or wild:
                continue
        for j in range(rows):
            bucket, sign = bucket_sign(family, keys, j, index, cols)
            cuda.atomic.add(table, (j, bucket), sign * value)
    if check:
        add_block_count(scratch, status, STATUS_NONFINITE, nonfinite)
        add_block_count(scratch, status, STATUS_OVERFLOW, overflow)
        add_block_count(scratch, status, STATUS_OUT_OF_RANGE, outside)


# Blocks of the l2 kernel: each row's partial sums are added in block order at the end.
L2_BLOCKS = 256
# The l2 kernel's float64 output: the median of the rows' sums of squares, the
# threshold phi * sqrt(median) of heavy_hitters(threshold=phi), then each row's
# partial sum per block.
L2_MEDIAN, L2_THRESHOLD, L2_SUMS = 0, 1, 2


# Estimate, desketch and l2 keep one value per row in registers: a kernel is
# generated for each number of rows (the loops over rows unrolled, the median a
# fixed network of compare-exchanges) and cached, instead of a per-thread array
# sized to MAX_ROWS, which numba-cuda zero-fills in local memory at every entry.
# They are made with the lazy ``_cuda.cuda.jit`` even after this module's ``cuda``
# was bound to numba.cuda, so that binding the kernel binds its own namespace.
# Called, not inlined into the generated kernels at Numba's level (NVVM inlines them):
# inlined, rows copies of both hash families and hundreds of compare-exchanges made
# Numba's compile time grow past a minute at 16 rows.
@cuda.jit(device=True)
def _signed_cell(table, family, keys, row, index, cols):
    """``s_row(index) * S[row, h_row(index)]`` as a float64."""
    bucket, sign = bucket_sign(family, keys, row, index, cols)
    return sign * np.float64(table[row, bucket])


@cuda.jit(device=True)
def _exchange(a, b):
    return ordered(a, b)


_GENERATED = {
    "cuda": _cuda.cuda,
    "np": np,
    "_signed_cell": _signed_cell,
    "_exchange": _exchange,
    "MEAN": MEAN,
    "block_sum_f64": block_sum_f64,
    "last_block": last_block,
    "L2_SUMS": L2_SUMS,
    "L2_MEDIAN": L2_MEDIAN,
    "L2_THRESHOLD": L2_THRESHOLD,
    "math": math,
    "THREADS_PER_BLOCK": _cuda.THREADS_PER_BLOCK,
}


@functools.cache
def estimate_kernel(rows: int):
    """The CUDA estimate (``mode`` MEDIAN) / mean desketch (MEAN) for ``rows`` rows.

    ``kernel(table, family, keys, indices, dense, mode, out)``: ``out[i]`` for index
    ``i`` (``dense``) or ``indices[i]``; the same values as :func:`cpu_estimate`.
    """
    values = [f"v{j}" for j in range(rows)]
    lines = [
        "def cuda_estimate(table, family, keys, indices, dense, mode, out):",
        "    start, step = cuda.grid(1), cuda.gridsize(1)",
        "    cols = table.shape[1]",
        "    for i in range(start, out.shape[0], step):",
        "        index = np.int64(i) if dense else np.int64(indices[i])",
    ]
    for j, v in enumerate(values):
        # np.int64(j): one compiled _signed_cell for every row (a literal j types apart)
        lines.append(f"        {v} = _signed_cell(table, family, keys, np.int64({j}), index, cols)")
    lines += [
        "        " + line
        for line in combine_source(values, "out[i]", exchange="_exchange", mode="mode")
    ]
    return _cuda.cuda.jit(compile_source("cuda_estimate", lines, _GENERATED))


@functools.cache
def l2_kernel(rows: int):
    """The CUDA l2 estimate for ``rows`` rows: ``kernel(table, tickets, phi, out)``.

    Each thread adds ``S[j, b]**2`` over its columns for every row ``j`` (in
    registers), each block reduces them, and the grid's last block adds the blocks'
    sums in block order and writes the median over rows to ``out[L2_MEDIAN]`` and
    ``phi * sqrt(median)`` to ``out[L2_THRESHOLD]`` (``out``: float64,
    ``L2_SUMS + rows * gridDim`` long; ``tickets``: int64, zeroed). Deterministic:
    no float atomics.
    """
    lines = [
        "def cuda_l2(table, tickets, phi, out):",
        "    scratch = cuda.shared.array(THREADS_PER_BLOCK, np.float64)",
        "    flag = cuda.shared.array(1, np.int64)",
        "    start, step = cuda.grid(1), cuda.gridsize(1)",
        "    cols = table.shape[1]",
        "    blocks = cuda.gridDim.x",
    ]
    sums = [f"a{j}" for j in range(rows)]  # each row's sum of squares, in a register
    lines += [f"    {a} = 0.0" for a in sums]
    lines.append("    for c in range(start, cols, step):")
    for j, a in enumerate(sums):
        lines.append(f"        {a} += np.float64(table[{j}, c]) * np.float64(table[{j}, c])")
    for j, a in enumerate(sums):
        lines.append(f"    {a} = block_sum_f64(scratch, {a})")
        lines.append("    if cuda.threadIdx.x == 0:")
        lines.append(f"        out[L2_SUMS + {j} * blocks + cuda.blockIdx.x] = {a}")
    lines += [
        "    if last_block(flag, tickets, 0) and cuda.threadIdx.x == 0:",
        *[f"        {a} = 0.0" for a in sums],
        "        for b in range(blocks):",
        *[f"            {a} += out[L2_SUMS + {j} * blocks + b]" for j, a in enumerate(sums)],
        *["        " + line for line in combine_source(sums, "median", exchange="_exchange")],
        "        out[L2_MEDIAN] = median",
        "        out[L2_THRESHOLD] = phi * math.sqrt(median)",
    ]
    return _cuda.cuda.jit(compile_source("cuda_l2", lines, _GENERATED))


# ------------------------------------------------ zeroing touched buckets


@task_kernel(tasks=length_of(0))
def cpu_zero_buckets(table, family, keys, indices, first, last):
    """``S[j, h_j(i)] = 0`` for every row ``j`` and every ``i`` in ``indices``."""
    cols = table.shape[1]
    n = indices.shape[0]
    buckets = np.empty(HASH_BLOCK, dtype=np.int64)
    signs = np.empty(HASH_BLOCK, dtype=np.float32)
    for j in range(first, last):
        for start in range(0, n, HASH_BLOCK):
            width = min(HASH_BLOCK, n - start)
            hash_block(family, keys, j, cols, indices, start, width, False, buckets, signs)
            for t in range(width):
                table[j, buckets[t]] = 0


@cuda.jit
def cuda_zero_buckets(table, family, keys, indices):
    """``S[j, h_j(i)] = 0``; threads writing the same cell all write zero, so no atomics."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    rows, cols = table.shape
    for i in range(start, indices.shape[0], step):
        for j in range(rows):
            bucket, _ = bucket_sign(family, keys, j, indices[i], cols)
            table[j, bucket] = 0
