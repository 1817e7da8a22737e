"""Small reductions that validation and the sketches share, on CPU and CUDA.

Scalar logic (the median of a row's estimates, the finiteness test) is
written once as ``@numba.njit`` functions that both the CPU and the CUDA
kernels call. The CUDA side also holds the block-wide building blocks of the
device kernels (a block's prefix sum, the last block of a grid, the status
slots that kernels count bad input into).
"""

from __future__ import annotations

import math

import numpy as np

from pysketch._cuda import THREADS_PER_BLOCK, cuda, device_function
from pysketch.kernels.parallel import blocks_of, length_of, task_kernel

# Upper bound on sketch rows: the CUDA kernels keep one estimate per row in a
# fixed-size per-thread array.
MAX_ROWS = 64
MEDIAN, MEAN = 0, 1

# Slots of a device status array (int64[STATUS_SLOTS]) into which kernels count bad
# input instead of stopping: the host reads it once, when the caller asked for checks.
STATUS_NONFINITE, STATUS_OVERFLOW, STATUS_OUT_OF_RANGE = 0, 1, 2
STATUS_SLOTS = 3


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


def median_network(n: int) -> list[tuple[int, int]]:
    """Compare-exchanges ``(i, j)``, ``i < j``, that leave the median of ``n`` values in place.

    Batcher's odd-even merge sort for the next power of two, less the comparators
    that touch the padding (``+inf`` at positions ``>= n``, which never moves) and
    those the middle position(s) do not depend on. Applied with :func:`ordered`,
    positions ``n // 2`` (odd ``n``) or ``n // 2 - 1`` and ``n // 2`` (even) hold
    what a full sort puts there, so the median equals :func:`combine_columns`'s.
    """
    size = 1 << max(0, (n - 1).bit_length())
    network: list[tuple[int, int]] = []

    def merge(lo: int, hi: int, r: int) -> None:  # Batcher's merge of [lo, hi], stride r
        step = 2 * r
        if step < hi - lo:
            merge(lo, hi, step)
            merge(lo + r, hi, step)
            network.extend((i, i + r) for i in range(lo + r, hi - r, step))
        else:
            network.append((lo, lo + r))

    def sort(lo: int, hi: int) -> None:
        if hi > lo:
            mid = (lo + hi) // 2
            sort(lo, mid)
            sort(mid + 1, hi)
            merge(lo, hi, 1)

    sort(0, size - 1)
    live = {n // 2} if n % 2 else {n // 2 - 1, n // 2}
    kept = []
    for i, j in reversed(network):
        if j < n and (i in live or j in live):
            kept.append((i, j))
            live |= {i, j}
    return kept[::-1]


def combine_source(
    names: list[str], out: str, *, exchange: str, mode: str | None = None
) -> list[str]:
    """Python lines that store into ``out`` the median of the variables ``names``, or,
    with ``mode`` (the name of a variable), their mean when ``mode == MEAN``: for
    generated kernels that hold one value per row in registers.

    The same arithmetic as :func:`combine_columns`: the mean adds the values in
    order, the median's middle values come from :func:`median_network`'s
    compare-exchanges, each a call of ``exchange``, a function that returns
    :func:`ordered` of its two arguments.
    """
    n = len(names)
    median = [
        f"{names[i]}, {names[j]} = {exchange}({names[i]}, {names[j]})" for i, j in median_network(n)
    ]
    if n % 2:
        median.append(f"{out} = {names[n // 2]}")
    else:
        median.append(f"{out} = 0.5 * ({names[n // 2 - 1]} + {names[n // 2]})")
    if mode is None:
        return median
    mean = f"{out} = ({' + '.join(names)}) / {n}"
    return [f"if {mode} == MEAN:", f"    {mean}", "else:", *["    " + line for line in median]]


def compile_source(name: str, lines: list[str], namespace: dict):
    """The function ``name`` defined by ``lines`` in a copy of ``namespace``.

    For kernels generated per number of rows: the source is registered with
    :mod:`linecache` so that tracebacks and Numba's error messages can show it.
    """
    import linecache

    source = "\n".join(lines) + "\n"
    filename = f"<pysketch generated {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    scope = dict(namespace)
    exec(compile(source, filename, "exec"), scope)
    return scope[name]


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


# --------------------------------------------------------------------- CUDA: block-wide
#
# Every thread of a block must call these (they synchronise the block), and the
# block must be launched with THREADS_PER_BLOCK threads (a power of two), as
# pysketch._cuda.launch does. They take their shared memory from the kernel
# (``scratch = cuda.shared.array(THREADS_PER_BLOCK, np.int64)``): a device function
# that declares a shared array breaks the link of a kernel that calls it twice
# (Numba names the array ``_cudapy_smem_N`` with external linkage).


@cuda.jit(device=True)
def block_scan(scratch, value):
    """``(inclusive prefix sum, block total)`` of the int64 ``value`` over the block's threads.

    Hillis-Steele in the shared ``scratch``: log2(threads) steps.
    """
    tid = cuda.threadIdx.x
    scratch[tid] = value
    cuda.syncthreads()
    offset = 1
    while offset < cuda.blockDim.x:
        add = scratch[tid - offset] if tid >= offset else 0
        cuda.syncthreads()
        scratch[tid] += add
        cuda.syncthreads()
        offset *= 2
    inclusive = scratch[tid]
    total = scratch[cuda.blockDim.x - 1]
    cuda.syncthreads()
    return inclusive, total


@cuda.jit(device=True)
def block_sum_f64(scratch, value):
    """The block's float64 sum of ``value``, added in a fixed tree order (deterministic);
    ``scratch``: a shared float64 array of THREADS_PER_BLOCK."""
    tid = cuda.threadIdx.x
    scratch[tid] = value
    cuda.syncthreads()
    stride = cuda.blockDim.x // 2
    while stride > 0:
        if tid < stride:
            scratch[tid] += scratch[tid + stride]
        cuda.syncthreads()
        stride //= 2
    total = scratch[0]
    cuda.syncthreads()
    return total


@cuda.jit(device=True)
def last_block(scratch, tickets, slot):
    """Whether this block is the last of its grid to get here; every block's global writes
    made before the call are visible to that block.

    Each block takes a ticket (one atomic per block) from ``tickets[slot]``, which
    the last block resets to 0 for the next launch: the classic "last block done"
    pattern, which lets a kernel finish with a grid-wide step (a scan of per-block
    counts, a pick) without a second launch or a trip to the host.
    """
    cuda.threadfence()
    cuda.syncthreads()
    if cuda.threadIdx.x == 0:
        ticket = cuda.atomic.add(tickets, slot, 1)
        last = ticket == cuda.gridDim.x - 1
        if last:
            tickets[slot] = 0
        scratch[0] = 1 if last else 0
    cuda.syncthreads()
    last = scratch[0] != 0
    cuda.syncthreads()
    return last


@cuda.jit(device=True)
def add_block_count(scratch, counts, slot, value):
    """``counts[slot] +=`` the block's sum of the int64 ``value``: one atomic per block."""
    _, total = block_scan(scratch, value)
    if cuda.threadIdx.x == 0 and total != 0:
        cuda.atomic.add(counts, slot, total)


# --------------------------------------------------------------------- CUDA


@device_function
def out_of_range(index, upper):
    """1 when ``index`` lies outside ``[0, upper)``, else 0 (``upper`` typed like the index)."""
    return 0 if 0 <= index < upper else 1


@cuda.jit
def cuda_count_unfit(x, scale, limit, status):
    """``status[STATUS_NONFINITE]``, ``status[STATUS_OVERFLOW]`` += the counts of
    :func:`unfit` over ``x``: one atomic per block and slot."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    nonfinite = 0
    overflow = 0
    for i in range(start, x.shape[0], step):
        bad, over = unfit(x[i], scale, limit)
        nonfinite += bad
        overflow += over
    scratch = cuda.shared.array(THREADS_PER_BLOCK, np.int64)
    add_block_count(scratch, status, STATUS_NONFINITE, nonfinite)
    add_block_count(scratch, status, STATUS_OVERFLOW, overflow)


@cuda.jit
def cuda_count_out_of_range(idx, upper, status):
    """``status[STATUS_OUT_OF_RANGE]`` += how many of ``idx`` lie outside ``[0, upper)``."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    bad = 0
    for i in range(start, idx.shape[0], step):
        bad += out_of_range(idx[i], upper)
    scratch = cuda.shared.array(THREADS_PER_BLOCK, np.int64)
    add_block_count(scratch, status, STATUS_OUT_OF_RANGE, bad)


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
