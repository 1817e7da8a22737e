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
* CUDA: the same digits, resolved on the device without a trip to the host
  (see the notes above :func:`cuda_radix_pass`): per-block shared-memory
  histograms merged with global atomics, the bucket picked by the grid's last
  block, the later digits counted on a candidate buffer; then one stable
  compaction (per-tile counts, offsets by a scan) writes the ``k`` winners in
  index order, the ties at the k-th key taken by index exactly as on the CPU;
  sorted top-k orders only those by a stable radix sort of their keys.

All keys are handled as ``uint64`` (numba keeps unsigned arithmetic exact only
when both operands are unsigned).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pysketch._cuda import SIMULATOR, THREADS_PER_BLOCK, cuda
from pysketch.hashing import fmix64, splitmix64
from pysketch.kernels.parallel import intervals_of, length_of, task_kernel
from pysketch.kernels.reductions import (
    STATUS_NONFINITE,
    add_block_count,
    block_scan,
    last_block,
)

DIGIT_BITS = 11
BINS = 1 << DIGIT_BITS

_U0 = np.uint64(0)
_U1 = np.uint64(1)


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
#
# A device radix select that never returns to the host. All its state lives in
# one int64 array (slots S_*) that each kernel reads at entry and the last block
# of the previous kernel wrote (pysketch.kernels.reductions.last_block), so the
# host launches a fixed sequence and never waits:
#
# 1. cuda_radix_pass, once per 11-bit digit from the top: a histogram of the keys
#    in the current bucket, then the grid's last block picks the bucket holding
#    the k-th largest key, records it and how many keys are still needed from it,
#    and zeroes the histogram. Once the bucket is taken whole (or is one key wide)
#    the later passes return at once. The second pass also gathers the keys of the
#    first pass's bucket into a candidate buffer when they fit, and the later
#    passes read only those.
# 2. cuda_select_count: per tile of the input, the keys above the final bucket and
#    the ties at it; the last block turns those counts into each tile's output
#    offset and its share of the ties (the first ones by index).
# 3. cuda_select_write: every tile writes its winners at its offset, in index
#    order (a block scan ranks them), with their values, or with their inverted
#    keys for the sort.
# 4. sorted: cuda_sort_pass, a stable least-significant-digit radix sort of the k
#    winners by key, 8 bits a pass; each pass counts the next pass's digits as it
#    scatters, and its last block turns them into offsets; the last pass gathers
#    the values.

# Slots of the selection state (int64[STATE_SLOTS]).
S_LO = 0  # the current bucket's smallest key
S_NEED = 1  # how many keys are still to be taken from that bucket
S_EXACT = 2  # the bucket is taken whole
S_DONE = 3  # nothing left to resolve: the later digit passes return at once
S_TICKET = 4  # blocks done so far in the running kernel (reductions.last_block)
S_NCAND = 5  # candidates gathered by the second pass
S_CAND_OK = 6  # the first pass's bucket fits the candidate buffer
S_TOTAL = 7  # how many entries a compaction selects
STATE_SLOTS = 8

# Tile-based kernels (compaction, sort): a block handles TILE_ITEMS * blockDim
# consecutive entries at a time.
TILE_ITEMS = 4 if SIMULATOR else 16
SORT_BITS = 8
SORT_BINS = 1 << SORT_BITS
_SORT_DIGIT = np.uint64(SORT_BINS - 1)


@cuda.jit(device=True)
def _pick_bucket(scratch, hist, nbins, need):
    """``(b, above)``: the bucket where the count from the top reaches ``need``, and the
    count above it. All threads of the block call it and get the result."""
    tid = cuda.threadIdx.x
    per = (nbins + cuda.blockDim.x - 1) // cuda.blockDim.x
    top = nbins - tid * per  # this thread's bins: [top - per, top), from the top down
    bottom = top - per if top > per else 0
    own = 0
    for b in range(bottom, top):
        own += hist[b]
    inclusive, _ = block_scan(scratch, own)
    before = inclusive - own
    if before < need <= inclusive:
        b = top - 1
        while before + hist[b] < need:
            before += hist[b]
            b -= 1
        scratch[0] = b
        scratch[1] = before
    cuda.syncthreads()
    b, above = scratch[0], scratch[1]
    cuda.syncthreads()
    return b, above


@cuda.jit
def cuda_radix_pass(
    bits, mask, inf_key, k, range_shift, shift, first, collect, check, state, hist, cand, status
):
    """One digit of the select: keys ``bits & mask`` in ``[lo, lo + 2**range_shift)``
    counted by ``(key - lo) >> shift``.

    ``first``: the top digit (``lo = 0``, ``k`` keys needed, every key in range);
    with ``check`` it also counts keys ``>= inf_key`` (NaN, Inf) into
    ``status[STATUS_NONFINITE]``. ``collect``: the second digit, which also
    gathers the keys of the first digit's bucket into ``cand`` (``(2, cap)``
    uint64: index, key) when they fit; later digits then read ``cand`` only.
    """
    sh = cuda.shared.array(BINS, np.int32)
    scratch = cuda.shared.array(THREADS_PER_BLOCK, np.int64)
    if not first and state[S_DONE] != 0:
        return
    tid = cuda.threadIdx.x
    for b in range(tid, BINS, cuda.blockDim.x):
        sh[b] = 0
    cuda.syncthreads()
    lo = _U0 if first else np.uint64(state[S_LO])
    span = _U1 << np.uint64(range_shift)
    ns = np.uint64(shift)
    start, step = cuda.grid(1), cuda.gridsize(1)
    nonfinite = 0
    if collect and state[S_CAND_OK] != 0:
        _count_and_gather(bits, mask, lo, span, ns, sh, scratch, state, cand)
    elif not first and state[S_CAND_OK] != 0:
        for t in range(start, state[S_NCAND], step):
            key = cand[1, t]
            if key >= lo and key - lo < span:
                cuda.atomic.add(sh, np.intp((key - lo) >> ns), 1)
    else:
        for i in range(start, bits.shape[0], step):
            key = np.uint64(bits[i] & mask)
            nonfinite += 1 if key >= inf_key else 0
            if key >= lo and key - lo < span:
                cuda.atomic.add(sh, np.intp((key - lo) >> ns), 1)
    cuda.syncthreads()
    for b in range(tid, BINS, cuda.blockDim.x):
        if sh[b] != 0:
            cuda.atomic.add(hist, b, np.int64(sh[b]))
    if check:
        add_block_count(scratch, status, STATUS_NONFINITE, nonfinite)
    if not last_block(scratch, state, S_TICKET):
        return
    nbins = 1 << (range_shift - shift)
    need = k if first else state[S_NEED]
    b, above = _pick_bucket(scratch, hist, nbins, need)
    if tid == 0:
        need -= above
        in_bucket = hist[b]
        state[S_LO] = np.int64(lo + (np.uint64(b) << ns))
        state[S_NEED] = need
        state[S_EXACT] = in_bucket == need
        state[S_DONE] = in_bucket == need or shift == 0
        if first:
            state[S_CAND_OK] = in_bucket <= cand.shape[1]
            state[S_NCAND] = 0
    cuda.syncthreads()
    for b in range(tid, nbins, cuda.blockDim.x):
        hist[b] = 0


@cuda.jit(device=True)
def _count_and_gather(bits, mask, lo, span, ns, sh, count, state, cand):
    """The second digit's histogram, gathering every key of ``[lo, lo + span)`` into ``cand``.

    Block-aggregated: a block reserves room for its round's keys with one global
    atomic; the candidates' order does not matter (only counts are taken from them).
    ``count``: two slots of shared scratch.
    """
    tid = cuda.threadIdx.x
    n = bits.shape[0]
    for base in range(cuda.blockIdx.x * cuda.blockDim.x, n, cuda.gridsize(1)):
        i = base + tid
        key = _U0
        hit = False
        if i < n:
            key = np.uint64(bits[i] & mask)
            hit = key >= lo and key - lo < span
            if hit:
                cuda.atomic.add(sh, np.intp((key - lo) >> ns), 1)
        if tid == 0:
            count[0] = 0
        cuda.syncthreads()
        slot = cuda.atomic.add(count, 0, 1) if hit else 0
        cuda.syncthreads()
        if tid == 0 and count[0] != 0:
            count[1] = cuda.atomic.add(state, S_NCAND, count[0])
        cuda.syncthreads()
        if hit:
            cand[0, count[1] + slot] = np.uint64(i)
            cand[1, count[1] + slot] = key
        cuda.syncthreads()


@cuda.jit(device=True)
def _selection(state, by_value):
    """``(above, tie, need)`` of the select: keys ``>= above`` are taken, and the first
    ``need`` keys equal to ``tie`` (by index) when ``tie < above``. No ties by value."""
    if by_value:
        return _U0, _U0, np.int64(0)
    lo = np.uint64(state[S_LO])
    if state[S_EXACT] != 0:
        return lo, lo, np.int64(0)
    return lo + _U1, lo, state[S_NEED]


@cuda.jit(device=True)
def _taken(key, values, i, above, key_max, tau, by_value):
    """Whether entry ``i`` is taken outright: ``|values[i]| >= tau`` (by value, in float64;
    never NaN) or its key in ``[above, key_max]`` (``values`` then not read)."""
    if by_value:
        return abs(np.float64(values[i])) >= tau
    return above <= key <= key_max


@cuda.jit(device=True)
def _tiling(n):
    """``(tile, tiles)``: the entries a block handles at a time, and the tiles over ``n``."""
    tile = TILE_ITEMS * cuda.blockDim.x
    return tile, (n + tile - 1) // tile


@cuda.jit(device=True)
def _is_tie(key, above, tie):
    return key == tie and key < above


@cuda.jit
def cuda_select_count(
    bits, values, mask, key_max, tau, by_value, check, inf_key, state, tiles, status
):
    """Per tile: ``tiles[t] = (taken outright, ties)``; then the last block makes them
    ``(output offset, ties to take)`` and writes the total to ``state[S_TOTAL]``.

    Taken (see :func:`_taken`): the select's keys in ``[above, key_max]`` and its ties
    (:func:`_selection`), or, ``by_value``, every ``|values[i]| >= tau[0]`` (a
    threshold, maybe computed by an earlier kernel). With ``check``, keys
    ``>= inf_key`` (NaN, Inf) are counted into ``status[STATUS_NONFINITE]``.
    """
    scratch = cuda.shared.array(THREADS_PER_BLOCK, np.int64)
    tid, threads = cuda.threadIdx.x, cuda.blockDim.x
    n = bits.shape[0]
    tile, n_tiles = _tiling(n)
    above, tie, need = _selection(state, by_value)
    limit = tau[0] if by_value else 0.0
    nonfinite = 0
    for t in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
        selected = 0
        ties = 0
        for j in range(TILE_ITEMS):
            i = t * tile + j * threads + tid
            if i < n:
                key = np.uint64(bits[i] & mask)
                selected += 1 if _taken(key, values, i, above, key_max, limit, by_value) else 0
                ties += 1 if _is_tie(key, above, tie) else 0
                nonfinite += 1 if key >= inf_key else 0
        _, selected = block_scan(scratch, selected)
        _, ties = block_scan(scratch, ties)
        if tid == 0:
            tiles[t, 0] = selected
            tiles[t, 1] = ties
    if check:
        add_block_count(scratch, status, STATUS_NONFINITE, nonfinite)
    if last_block(scratch, state, S_TICKET):
        _tile_offsets(scratch, tiles, n_tiles, need, state)


@cuda.jit(device=True)
def _tile_offsets(scratch, tiles, n_tiles, need, state):
    """``tiles[t] = (selected, ties)`` -> ``(offset, ties taken)``, in tile order: the
    first ``need`` ties overall are taken. One block; each thread walks a run of tiles."""
    tid = cuda.threadIdx.x
    per = (n_tiles + cuda.blockDim.x - 1) // cuda.blockDim.x
    first = tid * per
    last = first + per if first + per < n_tiles else n_tiles
    own_ties = 0
    for t in range(first, last):
        own_ties += tiles[t, 1]
    inclusive, _ = block_scan(scratch, own_ties)
    ties_before = inclusive - own_ties
    own = 0
    for t in range(first, last):
        ties = tiles[t, 1]
        take = need - ties_before
        take = 0 if take < 0 else (ties if take > ties else take)
        ties_before += ties
        tiles[t, 1] = take
        own += tiles[t, 0] + take
    inclusive, total = block_scan(scratch, own)
    offset = inclusive - own
    for t in range(first, last):
        count = tiles[t, 0] + tiles[t, 1]
        tiles[t, 0] = offset
        offset += count
    if tid == 0:
        state[S_TOTAL] = total


@cuda.jit
def cuda_select_write(
    bits, values, mask, key_max, tau, by_value, state, tiles, out_idx, out_val,
    sort_keys, sort_counts, sort,
):  # fmt: skip
    """Write the indices :func:`cuda_select_count` counted (and ``values`` at them) at
    its offsets, in index order.

    Thread ``t`` of a block owns ``TILE_ITEMS`` consecutive entries of the tile;
    two block scans give each thread its ties' rank and its output position. With
    ``sort``, the inverted keys go to ``sort_keys`` instead of the values, and the
    first sort pass's digits are counted per tile of the output into
    ``sort_counts``, which the last block turns into that pass's offsets.
    """
    scratch = cuda.shared.array(THREADS_PER_BLOCK, np.int64)
    totals = cuda.shared.array(SORT_BINS, np.int64)
    tid = cuda.threadIdx.x
    n = bits.shape[0]
    tile, n_tiles = _tiling(n)
    above, tie, _ = _selection(state, by_value)
    limit = tau[0] if by_value else 0.0
    for t in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
        base = t * tile + tid * TILE_ITEMS
        ties = 0
        for i in range(base, base + TILE_ITEMS):
            if i < n:
                ties += 1 if _is_tie(np.uint64(bits[i] & mask), above, tie) else 0
        inclusive, _ = block_scan(scratch, ties)
        tie_rank = inclusive - ties
        takes = tiles[t, 1]
        own = 0
        rank = tie_rank
        for i in range(base, base + TILE_ITEMS):
            if i < n:
                key = np.uint64(bits[i] & mask)
                if _is_tie(key, above, tie):
                    own += 1 if rank < takes else 0
                    rank += 1
                else:
                    own += 1 if _taken(key, values, i, above, key_max, limit, by_value) else 0
        inclusive, _ = block_scan(scratch, own)
        pos = tiles[t, 0] + inclusive - own
        rank = tie_rank
        for i in range(base, base + TILE_ITEMS):
            if i < n:
                key = np.uint64(bits[i] & mask)
                if _is_tie(key, above, tie):
                    win = rank < takes
                    rank += 1
                else:
                    win = _taken(key, values, i, above, key_max, limit, by_value)
                if win:
                    out_idx[pos] = i
                    if sort:
                        inverted = mask - key
                        sort_keys[pos] = inverted
                        cuda.atomic.add(
                            sort_counts, (pos // tile, np.intp(inverted & _SORT_DIGIT)), 1
                        )
                    else:
                        out_val[pos] = values[i]
                    pos += 1
    if sort and last_block(scratch, state, S_TICKET):
        _digit_offsets(scratch, totals, sort_counts)


@cuda.jit(device=True)
def _digit_offsets(scratch, totals, counts):
    """``counts[t, g]`` (tile ``t``, digit ``g``) -> where tile ``t``'s first entry of digit
    ``g`` goes: the digits in order, each digit's tiles in order. One block; ``totals``:
    SORT_BINS of shared scratch."""
    tid = cuda.threadIdx.x
    n_tiles = counts.shape[0]
    for g in range(tid, SORT_BINS, cuda.blockDim.x):
        running = np.int64(0)
        for t in range(n_tiles):
            c = counts[t, g]
            counts[t, g] = running
            running += c
        totals[g] = running
    cuda.syncthreads()
    per = SORT_BINS // cuda.blockDim.x
    own = 0
    for g in range(tid * per, (tid + 1) * per):
        own += totals[g]
    inclusive, _ = block_scan(scratch, own)
    start = inclusive - own
    for g in range(tid * per, (tid + 1) * per):
        c = totals[g]
        totals[g] = start
        start += c
    cuda.syncthreads()
    for g in range(tid, SORT_BINS, cuda.blockDim.x):
        for t in range(n_tiles):
            counts[t, g] += totals[g]


@cuda.jit
def cuda_sort_pass(
    src_keys, src_idx, dst_keys, dst_idx, counts, next_counts, shift, last, values, out_val, state
):
    """One stable pass of the winners' radix sort on the digit ``(key >> shift) & 255``.

    ``counts[t, g]`` holds where tile ``t``'s entries of digit ``g`` go (it is zeroed
    once read, for the pass after next). The tile's entries are taken in index
    order, a block's round at a time, each ranked among the round's entries of the
    same digit. The next pass's digits are counted into ``next_counts``, which the
    last block turns into offsets; the ``last`` pass gathers ``values`` instead.
    """
    digits = cuda.shared.array(THREADS_PER_BLOCK, np.int32)
    offsets = cuda.shared.array(SORT_BINS, np.int64)
    scratch = cuda.shared.array(THREADS_PER_BLOCK, np.int64)
    tid, threads = cuda.threadIdx.x, cuda.blockDim.x
    n = src_keys.shape[0]
    tile, n_tiles = _tiling(n)
    ns = np.uint64(shift)
    nn = np.uint64(shift + SORT_BITS)
    for t in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
        for g in range(tid, SORT_BINS, threads):
            offsets[g] = counts[t, g]
            counts[t, g] = 0
        cuda.syncthreads()
        for r in range(TILE_ITEMS):
            e = t * tile + r * threads + tid
            key = _U0
            digit = np.int32(SORT_BINS)  # past the end: matches no digit
            if e < n:
                key = src_keys[e]
                digit = np.int32((key >> ns) & _SORT_DIGIT)
            digits[tid] = digit
            cuda.syncthreads()
            if e < n:
                rank = 0
                for u in range(tid):
                    rank += 1 if digits[u] == digit else 0
                pos = offsets[digit] + rank
                dst_keys[pos] = key
                index = src_idx[e]
                dst_idx[pos] = index
                if last:
                    out_val[pos] = values[index]
                else:
                    cuda.atomic.add(
                        next_counts, (pos // tile, np.intp((key >> nn) & _SORT_DIGIT)), 1
                    )
            cuda.syncthreads()
            if e < n:
                cuda.atomic.add(offsets, digit, 1)
            cuda.syncthreads()
    if not last and last_block(scratch, state, S_TICKET):
        _digit_offsets(scratch, offsets, next_counts)


# --------------------------------------------------------------------- CUDA: others


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
