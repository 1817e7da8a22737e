"""Selection kernels (top-k, threshold, random-k) and dense 1-D helpers, CPU and CUDA.

Top-k is a radix select on the bits of ``|x|``: clearing the sign bit of an
IEEE float leaves an unsigned integer (``uint32`` for float32, ``uint64`` for
float64) whose order is the order of ``|x|``. Histogram passes over 11-bit
digits, from the top, narrow the bucket that holds the k-th largest key; a
compaction pass then gathers the candidates and only those are ordered, by
(key descending, index ascending), so the answer is unique and both backends
return it bit for bit.

* CPU: the first histogram runs in parallel with one private histogram per
  chunk (task kernels, :mod:`pysketch.kernels.parallel`); the per-chunk counts
  give each chunk its output offset, so the compaction is parallel and stable
  (index order). For small k the remaining digits are resolved on the
  candidates only, serially, and the survivors sorted stably by NumPy; for
  large k (about k candidates anyway) the candidates are radix-sorted by
  parallel stable passes (:func:`cpu_radix_pass`).
  Unsorted top-k (ascending indices) resolves every digit on the whole array
  instead, with per-chunk histograms restricted to the current bucket
  (:func:`cpu_histogram_range`), until the k-th largest key ``T`` is exact; the
  per-chunk counts above ``T`` and at ``T`` then give each chunk its output
  offset and its share of the ties (the first ones by index), and
  :func:`cpu_compact_selected` writes exactly the ``k`` winners in one
  parallel pass, with no candidate keys stored (unless the top digit leaves
  few candidates: then those are gathered by :func:`cpu_compact_ge`).
* CUDA: per-block shared-memory histograms merged with global atomics; digits
  are resolved on the whole array until the k-th key ``T`` is exact, then, if
  more elements equal ``T`` than are needed, on the (inverted) index bits of
  the ties, so the selected set is exactly ``k`` elements. Those are compacted
  with an atomic counter and put in order by a bitonic sort (shared-memory
  tiles for the short strides), never a sort of all ``d`` entries; unsorted
  top-k sorts them with one key for all, i.e. by index, as the CPU returns them.

All keys are handled as ``uint64`` (numba keeps unsigned arithmetic exact only
when both operands are unsigned).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pysketch._cuda import THREADS_PER_BLOCK, cuda
from pysketch.hashing import fmix64, splitmix64
from pysketch.kernels.parallel import intervals_of, length_of, task_kernel

DIGIT_BITS = 11
BINS = 1 << DIGIT_BITS
# Bitonic tiles: two elements per thread of a block.
SORT_TILE = 2 * THREADS_PER_BLOCK

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_IDX_PAD = np.iinfo(np.int64).max


@njit(inline="always")
def before(key_a, idx_a, key_b, idx_b):
    """Whether entry a precedes entry b: larger key first, then smaller index."""
    return key_a > key_b or (key_a == key_b and idx_a < idx_b)


@njit(inline="always")
def pick_bucket(hist, nbins, need):
    """Top-down scan: bucket ``b`` where the count reaches ``need``, and the count above it."""
    above = np.int64(0)
    b = nbins - 1
    while b > 0 and above + hist[b] < need:
        above += hist[b]
        b -= 1
    return b, above


# --------------------------------------------------------------------- CPU: top-k


# Chunk histograms count in int32 (half the cache of int64) and are added into the
# int64 result at least every this many entries, so they cannot overflow.
_FLUSH = 1 << 30


def cpu_histogram(bits, mask, shift, n_chunks):
    """``hist[c, digit]``: counts of ``(bits & mask) >> shift`` in chunk ``c``.

    Four interleaved sub-histograms, so that runs of equal digits (ties,
    clustered magnitudes) do not serialise on one counter's store and reload.
    """
    hist = np.zeros((n_chunks, BINS), dtype=np.int64)
    _histogram_tasks(bits, mask, shift, hist)
    return hist


@task_kernel(tasks=length_of(-1))
def _histogram_tasks(bits, mask, shift, hist, first, last):
    n = bits.shape[0]
    n_chunks = hist.shape[0]
    # np.empty and loops rather than np.zeros and slice assignment: fewer library
    # functions to compile on first use (each costs 0.1-0.3 s).
    h = np.empty((4, BINS), dtype=np.int32)
    for c in range(first, last):
        stop = (c + 1) * n // n_chunks
        i = c * n // n_chunks
        while i < stop:
            for b in range(BINS):
                h[0, b] = h[1, b] = h[2, b] = h[3, b] = 0
            block = min(stop, i + _FLUSH)
            while i + 4 <= block:
                h[0, np.intp(np.uint64(bits[np.uintp(i)] & mask) >> shift)] += 1
                h[1, np.intp(np.uint64(bits[np.uintp(i + 1)] & mask) >> shift)] += 1
                h[2, np.intp(np.uint64(bits[np.uintp(i + 2)] & mask) >> shift)] += 1
                h[3, np.intp(np.uint64(bits[np.uintp(i + 3)] & mask) >> shift)] += 1
                i += 4
            while i < block:
                h[0, np.intp(np.uint64(bits[np.uintp(i)] & mask) >> shift)] += 1
                i += 1
            for b in range(BINS):
                hist[c, b] += np.int64(h[0, b]) + h[1, b] + h[2, b] + h[3, b]


def cpu_histogram_range(bits, mask, lo, span, shift, n_chunks):
    """``hist[c, digit]``: counts of ``(key - lo) >> shift`` for the keys of chunk ``c`` in
    ``[lo, lo + span)`` (``key = bits & mask``; ``span <= 2**63``).

    One kernel for every digit below the top one: a key under ``lo`` wraps
    around to at least ``2**63`` in the unsigned subtraction, so one comparison
    bounds the range on both sides.
    """
    hist = np.zeros((n_chunks, BINS), dtype=np.int64)
    _histogram_range_tasks(bits, mask, lo, span, shift, hist)
    return hist


@task_kernel(tasks=length_of(-1))
def _histogram_range_tasks(bits, mask, lo, span, shift, hist, first, last):
    n = bits.shape[0]
    n_chunks = hist.shape[0]
    h = np.empty(BINS, dtype=np.int32)
    for c in range(first, last):
        stop = (c + 1) * n // n_chunks
        i = c * n // n_chunks
        while i < stop:
            for b in range(BINS):
                h[b] = 0
            block = min(stop, i + _FLUSH)
            for j in range(i, block):
                r = np.uint64(bits[np.uintp(j)] & mask) - lo
                if r < span:
                    h[np.intp(r >> shift)] += 1
            for b in range(BINS):
                hist[c, b] += h[b]
            i = block


@task_kernel(tasks=intervals_of(5))  # the offsets
def cpu_compact_selected(bits, mask, above, tie_key, takes, offsets, out_idx, first, last):
    """Parallel gather of the selected indices, in ascending index order.

    Chunk ``c`` (of ``len(offsets) - 1`` equal chunks) fills
    ``out_idx[offsets[c]:offsets[c + 1]]``, in index order, with every ``i``
    whose key ``bits[i] & mask`` is ``>= above`` and its first ``takes[c]``
    indices whose key equals ``tie_key`` (``tie_key >= above`` takes no ties);
    the offsets must count exactly those. Branch-free: every index is written
    and the position advances only for a winner (a branch on a near-random
    selection mispredicts about half the time); a chunk stops at its last
    winner, so nothing is written past its share.
    """
    n = bits.shape[0]
    n_chunks = offsets.shape[0] - 1
    for c in range(first, last):
        pos = offsets[c]
        end = offsets[c + 1]
        left = takes[c]
        if pos == end:
            continue
        for i in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            key = np.uint64(bits[np.uintp(i)] & mask)
            tie = key == tie_key
            take = (key >= above) | (tie & (left > 0))
            out_idx[pos] = i
            pos += np.intp(take)
            left -= np.intp(tie & take)
            if pos == end:
                break


@task_kernel(tasks=intervals_of(3))  # the offsets
def cpu_compact_ge(bits, mask, lo, offsets, out_idx, out_key, few, first, last):
    """Stable gather of every ``i`` with ``bits[i] & mask >= lo``.

    Chunk ``c`` (of ``len(offsets) - 1``) fills ``[offsets[c], offsets[c + 1])``
    with its entries, in index order; branch-free like :func:`cpu_compact_selected`,
    unless ``few`` are selected (a few percent): then a branch that is almost never
    taken costs less than the branch-free stores (13 against 20 ms for 0.6 % of
    10**7 entries, one thread).
    """
    n = bits.shape[0]
    n_chunks = offsets.shape[0] - 1
    for c in range(first, last):
        pos = offsets[c]
        end = offsets[c + 1]
        if pos == end:
            continue
        if few:
            for i in range(c * n // n_chunks, (c + 1) * n // n_chunks):
                key = np.uint64(bits[np.uintp(i)] & mask)
                if key >= lo:
                    out_idx[pos] = i
                    out_key[pos] = key
                    pos += 1
            continue
        for i in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            key = np.uint64(bits[np.uintp(i)] & mask)
            out_idx[pos] = i
            out_key[pos] = key
            pos += np.intp(key >= lo)
            if pos == end:
                break


@njit(cache=True)
def cpu_narrow(cand_idx, cand_key, k, lo, shift, cap):
    """Narrow the candidates to the top ``k`` and a few more; return how many are left.

    The candidates are every entry with key ``>= lo``, in ascending index
    order; the k-th largest key lies in ``[lo, lo + 2**shift)``. Digits are
    resolved until at most ``cap`` candidates are left (or the bucket is one
    key wide: then the ties taken are the first ones, by index). The survivors
    stay at the front, in index order, for the caller to sort (with NumPy: a
    sort compiled here would cost seconds of compilation).
    """
    n = cand_idx.shape[0]
    hist = np.empty(BINS, dtype=np.int64)
    while n > cap and shift > 0:
        new_shift = max(shift - DIGIT_BITS, 0)
        nbins = 1 << (shift - new_shift)
        hi = lo + (_U1 << np.uint64(shift))
        ns = np.uint64(new_shift)
        for b in range(BINS):
            hist[b] = 0
        above = 0
        for t in range(n):
            key = cand_key[t]
            if key >= hi:
                above += 1
            else:
                hist[np.intp((key - lo) >> ns)] += 1
        b, cum = pick_bucket(hist, nbins, k - above)
        lo = lo + (np.uint64(b) << ns)
        m = 0
        for t in range(n):
            if cand_key[t] >= lo:
                cand_idx[m] = cand_idx[t]
                cand_key[m] = cand_key[t]
                m += 1
        n = m
        shift = new_shift
    if n > cap:
        # Single-key bucket: everything above ``lo`` plus the first ties by index.
        above = 0
        for t in range(n):
            if cand_key[t] > lo:
                above += 1
        ties = k - above
        m = 0
        for t in range(n):
            key = cand_key[t]
            if key > lo or (key == lo and ties > 0):
                if key == lo:
                    ties -= 1
                cand_idx[m] = cand_idx[t]
                cand_key[m] = key
                m += 1
        n = m
    return n


def cpu_radix_pass(src_key, src_idx, dst_key, dst_idx, lo, shift, top_bin, offsets):
    """One stable pass of a least-significant-digit radix sort by descending key.

    The digit of a key is ``((key - lo) >> shift) & top_bin``; entries go to
    ``dst`` by descending digit, in their order within a digit. Each of the
    ``len(offsets)`` chunks of ``src`` counts its digits in parallel, then
    scatters from its own offsets in parallel, so the result does not depend on
    the number of chunks. ``offsets`` is ``(chunks, top_bin + 1)`` scratch.
    """
    _radix_count_tasks(src_key, lo, shift, top_bin, offsets)
    # Exclusive prefix sum, descending digit first, then chunk order: stable.
    by_digit = offsets.T.ravel()
    starts = np.cumsum(by_digit) - by_digit
    offsets[:] = starts.reshape(offsets.shape[1], offsets.shape[0]).T
    _radix_scatter_tasks(src_key, src_idx, dst_key, dst_idx, lo, shift, top_bin, offsets)


@task_kernel(tasks=length_of(-1))
def _radix_count_tasks(src_key, lo, shift, top_bin, offsets, first, last):
    n_chunks = offsets.shape[0]
    n = src_key.shape[0]
    for c in range(first, last):
        count = offsets[c]
        for b in range(count.shape[0]):
            count[b] = 0
        for t in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            count[
                np.intp(top_bin - (((np.uint64(src_key[np.uintp(t)]) - lo) >> shift) & top_bin))
            ] += 1


@task_kernel(tasks=length_of(-1))
def _radix_scatter_tasks(
    src_key, src_idx, dst_key, dst_idx, lo, shift, top_bin, offsets, first, last
):
    n_chunks = offsets.shape[0]
    n = src_key.shape[0]
    for c in range(first, last):
        position = offsets[c]
        for t in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            b = np.intp(top_bin - (((np.uint64(src_key[np.uintp(t)]) - lo) >> shift) & top_bin))
            dst_key[position[b]] = src_key[np.uintp(t)]
            dst_idx[position[b]] = src_idx[np.uintp(t)]
            position[b] += 1


# --------------------------------------------------------------------- CPU: others


def cpu_threshold(x, tau, n_chunks):
    """Ascending indices ``i`` with ``|x[i]| >= tau`` (count, then parallel stable write)."""
    counts = np.zeros(n_chunks + 1, dtype=np.int64)
    _threshold_count_tasks(x, tau, counts)
    np.cumsum(counts, out=counts)
    out = np.empty(counts[n_chunks], dtype=np.int64)
    _threshold_write_tasks(x, tau, counts, out)
    return out


@task_kernel(tasks=intervals_of(2))
def _threshold_count_tasks(x, tau, counts, first, last):
    """``counts[c + 1]`` = how many of chunk ``c`` reach ``tau``."""
    n = x.shape[0]
    n_chunks = counts.shape[0] - 1
    for c in range(first, last):
        cnt = 0
        for i in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            if abs(np.float64(x[np.uintp(i)])) >= tau:
                cnt += 1
        counts[c + 1] = cnt


@task_kernel(tasks=intervals_of(2))
def _threshold_write_tasks(x, tau, starts, out, first, last):
    n = x.shape[0]
    n_chunks = starts.shape[0] - 1
    for c in range(first, last):
        pos = starts[c]
        for i in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            if abs(np.float64(x[np.uintp(i)])) >= tau:
                out[pos] = i
                pos += 1


@njit(cache=True)
def cpu_randomk(state, d, k):
    """k distinct integers of ``[0, d)``, unsorted, by Floyd's algorithm on SplitMix64.

    Bounded draws reject the low ``2**64 mod n`` outputs (no modulo bias);
    membership uses an open-addressing table of ``fmix64``-hashed values.
    """
    cap = 1
    while cap < 2 * k:
        cap *= 2
    table = np.full(cap, -1, dtype=np.int64)
    umask = np.uint64(cap - 1)
    out = np.empty(k, dtype=np.int64)
    s = np.uint64(state)
    for t in range(k):
        j = d - k + t
        bound = np.uint64(j + 1)
        floor = (_U0 - bound) % bound
        s, r = splitmix64(s)
        while r < floor:
            s, r = splitmix64(s)
        cand = np.int64(r % bound)
        # insert cand, or j when cand is already chosen (j never is)
        slot = np.intp(fmix64(np.uint64(cand)) & umask)
        while table[slot] != -1 and table[slot] != cand:
            slot = np.intp((np.uint64(slot) + _U1) & umask)
        if table[slot] == cand:
            cand = j
            slot = np.intp(fmix64(np.uint64(cand)) & umask)
            while table[slot] != -1:
                slot = np.intp((np.uint64(slot) + _U1) & umask)
        table[slot] = cand
        out[t] = cand
    return out  # the caller sorts with NumPy (no sort compiled here)


@njit(cache=True)
def cpu_scatter_add(out, indices, values, sign):
    """``out[indices[t]] += sign * values[t]``, duplicates summed in order."""
    for t in range(indices.shape[0]):
        out[indices[t]] += sign * values[t]


@njit(cache=True)
def cpu_set_at(out, indices, value):
    for t in range(indices.shape[0]):
        out[indices[t]] = value


# --------------------------------------------------------------------- CUDA: top-k


@cuda.jit(device=True)
def _zero_block_histogram(sh):
    """Zero a block's shared-memory histogram (all threads of the block call it)."""
    for b in range(cuda.threadIdx.x, BINS, cuda.blockDim.x):
        sh[b] = 0
    cuda.syncthreads()


@cuda.jit(device=True)
def _flush_block_histogram(sh, hist):
    """Add a block's shared-memory histogram into the global one."""
    cuda.syncthreads()
    for b in range(cuda.threadIdx.x, BINS, cuda.blockDim.x):
        c = sh[b]
        if c != 0:
            cuda.atomic.add(hist, b, np.int64(c))


@cuda.jit
def cuda_histogram(bits, mask, lo, span, shift, hist):
    """``hist[(key - lo) >> shift] += 1`` for keys ``bits & mask`` in ``[lo, lo + span)``."""
    sh = cuda.shared.array(BINS, np.int32)
    _zero_block_histogram(sh)
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, bits.shape[0], step):
        key = np.uint64(bits[i] & mask)
        if key >= lo and key - lo < span:
            cuda.atomic.add(sh, np.intp((key - lo) >> shift), 1)
    _flush_block_histogram(sh, hist)


@cuda.jit
def cuda_histogram_ties(bits, mask, key, last, lo, span, shift, hist):
    """Like :func:`cuda_histogram` over ``r = last - i`` for the ``i`` whose key equals ``key``."""
    sh = cuda.shared.array(BINS, np.int32)
    _zero_block_histogram(sh)
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, bits.shape[0], step):
        if np.uint64(bits[i] & mask) == key:
            r = last - np.uint64(i)
            if r >= lo and r - lo < span:
                cuda.atomic.add(sh, np.intp((r - lo) >> shift), 1)
    _flush_block_histogram(sh, hist)


@cuda.jit
def cuda_compact_selected(bits, mask, above, key, last_index, counter, out_idx, out_key):
    """Gather ``i`` with key ``>= above``, or key ``== key`` and ``i <= last_index``."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, bits.shape[0], step):
        k = np.uint64(bits[i] & mask)
        if k >= above or (k == key and i <= last_index):
            pos = cuda.atomic.add(counter, 0, 1)
            out_idx[pos] = i
            out_key[pos] = k


@cuda.jit
def cuda_pad(keys, idx, start):
    """Fill ``[start, len)`` with entries that sort after every real one."""
    first, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start + first, keys.shape[0], step):
        keys[i] = _U0
        idx[i] = _IDX_PAD


@njit(inline="always")
def out_of_order(key_i, idx_i, key_l, idx_l, up):
    """Whether a bitonic comparator must swap entries ``i < l`` (``up``: i goes first)."""
    if up:
        return before(key_l, idx_l, key_i, idx_i)
    return before(key_i, idx_i, key_l, idx_l)


@cuda.jit
def cuda_bitonic_global(keys, idx, stage, stride):
    """One bitonic step with a stride of at least a tile (power-of-two length)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, keys.shape[0], step):
        partner = i ^ stride
        if partner > i:
            ki, kp, ii, ip = keys[i], keys[partner], idx[i], idx[partner]
            if out_of_order(ki, ii, kp, ip, (i & stage) == 0):
                keys[i], keys[partner] = kp, ki
                idx[i], idx[partner] = ip, ii


@cuda.jit
def cuda_bitonic_tile(keys, idx, first_stage, last_stage, first_stride):
    """Bitonic steps with strides below a tile, in shared memory; blockDim = SORT_TILE // 2."""
    sk = cuda.shared.array(SORT_TILE, np.uint64)
    si = cuda.shared.array(SORT_TILE, np.int64)
    tid = cuda.threadIdx.x
    half = SORT_TILE // 2
    n_tiles = keys.shape[0] // SORT_TILE
    for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
        base = tile * SORT_TILE
        sk[tid] = keys[base + tid]
        si[tid] = idx[base + tid]
        sk[tid + half] = keys[base + tid + half]
        si[tid + half] = idx[base + tid + half]
        cuda.syncthreads()
        stage = first_stage
        stride = first_stride
        while stage <= last_stage:
            while stride > 0:
                i = 2 * stride * (tid // stride) + tid % stride
                p = i + stride
                ki, kp, ii, ip = sk[i], sk[p], si[i], si[p]
                if out_of_order(ki, ii, kp, ip, ((base + i) & stage) == 0):
                    sk[i], sk[p] = kp, ki
                    si[i], si[p] = ip, ii
                cuda.syncthreads()
                stride //= 2
            stage *= 2
            stride = stage // 2
        keys[base + tid] = sk[tid]
        idx[base + tid] = si[tid]
        keys[base + tid + half] = sk[tid + half]
        idx[base + tid + half] = si[tid + half]
        cuda.syncthreads()


# --------------------------------------------------------------------- CUDA: others


@cuda.jit
def cuda_count_threshold(x, tau, counter):
    start, step = cuda.grid(1), cuda.gridsize(1)
    local = 0
    for i in range(start, x.shape[0], step):
        if abs(np.float64(x[i])) >= tau:
            local += 1
    if local:
        cuda.atomic.add(counter, 0, local)


@cuda.jit
def cuda_compact_threshold(x, tau, counter, out_idx):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.shape[0], step):
        if abs(np.float64(x[i])) >= tau:
            out_idx[cuda.atomic.add(counter, 0, 1)] = i


@cuda.jit
def cuda_gather(x, indices, out):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for t in range(start, indices.shape[0], step):
        out[t] = x[indices[t]]


@cuda.jit
def cuda_scatter_add(out, indices, values, sign):
    """``out[indices[t]] += sign * values[t]`` with atomics."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for t in range(start, indices.shape[0], step):
        cuda.atomic.add(out, indices[t], sign * values[t])


@cuda.jit
def cuda_set_at(out, indices, value):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for t in range(start, indices.shape[0], step):
        out[indices[t]] = value
