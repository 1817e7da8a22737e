"""Selection primitives: top-k, random-k, threshold, gather and scatter.

Every function works on the device of its input: NumPy (or any host array) in,
NumPy out; a CUDA array in (CuPy, or anything with ``__cuda_array_interface__``),
a device array out. Results are deterministic and identical on both backends:
top-k orders by descending ``|x|`` with ties broken by the smaller index, and
random-k depends only on ``(seed, d, k)``.

Top-k is a radix select on the float bits of ``|x|`` (see
:mod:`pysketch.kernels.select`): a few histogram passes and one compaction
pass over ``x``, then only the ``k`` winners are sorted, never all of ``x``.
With ``sorted=False`` the same ``k`` indices come back in ascending order and
nothing is sorted on the CPU: histograms over the whole array, kept per
chunk, resolve the exact k-th largest magnitude and how many of its ties
each chunk takes, and one parallel pass writes every chunk's winners at its
offset (memory: the output and ``(chunks, 2048)`` int64 histograms). For
small k, when the top digit leaves few candidates, those are gathered in
index order and the winners picked among them.
NaN or Inf in the input is an error (``check_finite=True``, the default).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pysketch import _arrays, _cuda
from pysketch._arrays import CPU, CUDA, Input
from pysketch._frameworks import follows
from pysketch.hashing import splitmix64_host
from pysketch.kernels import elementwise, reductions
from pysketch.kernels import select as sel
from pysketch.kernels.parallel import num_threads

__all__ = ["topk", "randomk", "threshold", "gather", "scatter"]

# Below this many entries the CPU top-k resolves every digit serially.
_SERIAL_MAX = 1 << 15
# From this k on, the sorted CPU top-k radix-sorts all its candidates (parallel) rather
# than selecting the k winners among them and sorting those.
_SORT_CANDIDATES_MIN = 1 << 17
# The unsorted CPU top-k splits x into chunks of about this many entries (at most
# _MAX_CHUNKS), fixed by the length alone: enough chunks to keep many threads busy,
# few enough that a (chunks, 2048) int64 histogram stays small (4 MiB at most).
_CHUNK = 1 << 16
_MAX_CHUNKS = 256
# When the top digit leaves at most this many candidates (the k-th largest's bucket
# and every bucket above), top-k selects the winners among them with NumPy (about 30
# bytes each with the scratch: 8 MiB at most): the unsorted one instead of two more
# histogram passes over x and a compaction (faster up to about 10**6 candidates at
# n = 10**7), the sorted one (k < _SORT_CANDIDATES_MIN) instead of narrowing them
# digit by digit in a compiled kernel, which only many ties in the top bucket need.
_UNSORTED_CANDIDATES_MAX = 1 << 18
_MASK32 = np.uint32(0x7FFFFFFF)
_MASK64 = np.uint64(0x7FFFFFFFFFFFFFFF)
_INDEX_MAX = int(np.iinfo(np.int64).max)  # indices are int64: a length beyond cannot be indexed


# ----------------------------------------------------------------- helpers


def _vector(x: Any, name: str, *, kind: str = "float") -> Input:
    return _arrays.as_input(x, name, device=_arrays.device_of(x), kind=kind)


def _check_k(k: Any, d: int) -> int:
    return _arrays.check_int(
        "k", k, minimum=0, maximum=d, expected=f"an integer in [0, d] = [0, {d}]"
    )


def _float_result(dtype) -> np.dtype:
    """The dtype of a new dense result: float32 and float64 stay, integers become float64."""
    dtype = np.dtype(dtype)
    return dtype if dtype in _arrays.FLOAT_DTYPES else np.dtype(np.float64)


def _out_vector(out: Any, d: int, device: str):
    """``out`` validated as a writable float vector of length ``d`` on ``device``."""
    if device == CPU:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
        if not out.flags.writeable:
            raise ValueError("out must be writable")
        if not out.dtype.isnative:  # a converted copy would receive the result instead
            raise ValueError(f"out must be in native byte order, got dtype {out.dtype.str}")
    dense = _arrays.as_input(out, "out", device=device)
    if np.dtype(dense.array.dtype) not in _arrays.FLOAT_DTYPES:
        raise TypeError(
            f"out must be float32 or float64, got {np.dtype(dense.array.dtype)}: an integer "
            "out would truncate the values and wrap their sums"
        )
    if dense.size != d:
        raise ValueError(f"out must have shape ({d},), got {tuple(dense.array.shape)}")
    return dense.array


def _empty(n: int, dtype, device: str, stream=0):
    return np.empty(n, dtype=dtype) if device == CPU else _cuda.empty(n, dtype, stream=stream)


def _contiguous_float(inp: Input):
    """``inp.array`` as a C-contiguous float32/float64 array on its device."""
    arr = inp.array
    floating = np.dtype(arr.dtype) in _arrays.FLOAT_DTYPES
    if inp.device == CPU:
        return np.ascontiguousarray(arr if floating else arr.astype(np.float64))
    if floating and arr.is_c_contiguous():
        return arr
    out = _cuda.empty(inp.size, arr.dtype if floating else np.float64, stream=inp.stream)
    _cuda.launch(elementwise.cuda_copy, inp.size, inp.stream)(out, arr)
    return out


def _key_bits(arr):
    """The bits of ``arr`` as unsigned integers, the mask that clears the sign, the key width."""
    if np.dtype(arr.dtype) == np.float32:
        return arr.view(np.uint32), _MASK32, 31
    return arr.view(np.uint64), _MASK64, 63


def _gather_device(arr, idx, stream):
    out = _cuda.empty(idx.shape[0], arr.dtype, stream=stream)
    if idx.shape[0]:
        _cuda.launch(sel.cuda_gather, idx.shape[0], stream)(arr, idx, out)
    return out


# ----------------------------------------------------------------- top-k


def _few(selected: int, d: int) -> bool:
    """Whether a compaction selects so few entries that branching beats branch-free code."""
    return selected * 32 < d


def _by_magnitude(idx: np.ndarray, keys: np.ndarray, d: int) -> np.ndarray:
    """``idx`` (given in index order, each below ``d``) by descending key; equal keys keep
    index order."""
    if keys.dtype == np.uint32 and d <= 2**32:
        # One 64-bit sort key, (~key, index): 8x faster than a stable argsort (k = 5e4).
        packed = (~keys).astype(np.uint64) << np.uint64(32) | idx.astype(np.uint64)
        packed.sort()
        return (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return idx[np.argsort(~keys, kind="stable")].astype(np.int64, copy=False)


def _top_bucket(hist: np.ndarray, k: int) -> tuple[int, int]:
    """The top digit's bucket that holds the k-th largest key, and how many keys lie in it
    or above it (``hist``: the top digit's counts per chunk)."""
    from_top = np.cumsum(hist.sum(axis=0)[::-1])
    p = int(np.searchsorted(from_top, k))
    return sel.BINS - 1 - p, int(from_top[p])


def _gather(bits, mask, hist: np.ndarray, b: int, shift: int, n: int):
    """The ``n`` entries whose top digit (counted per chunk in ``hist``, from bit ``shift``)
    is ``b`` or more, in index order: ``(indices, keys)``.

    Keys keep their width (uint32 for float32) and indices fit 32 bits below 2**32
    entries: every route of both top-k orders gathers with the same compiled kernel.
    """
    d = bits.shape[0]
    offsets = np.zeros(hist.shape[0] + 1, dtype=np.int64)
    np.cumsum(hist[:, b:].sum(axis=1), out=offsets[1:])
    cand_idx = np.empty(n, dtype=np.uint32 if d <= 2**32 else np.int64)
    cand_key = np.empty(n, dtype=bits.dtype)
    sel.cpu_compact_ge(bits, mask, np.uint64(b << shift), offsets, cand_idx, cand_key, _few(n, d))
    return cand_idx, cand_key


def _topk_cpu(arr: np.ndarray, k: int) -> np.ndarray:
    d = arr.shape[0]
    bits, mask, width = _key_bits(arr)
    if d <= _SERIAL_MAX:  # every entry is a candidate
        return _by_magnitude(*_winners(np.arange(d, dtype=np.int64), bits & mask, k), d)
    shift = width - sel.DIGIT_BITS
    threads = num_threads()
    hist = sel.cpu_histogram(bits, mask, np.uint64(shift), threads)
    b, n = _top_bucket(hist, k)
    lo = np.uint64(b << shift)
    cand_idx, cand_key = _gather(bits, mask, hist, b, shift, n)
    if k < _SORT_CANDIDATES_MIN:
        if n <= _UNSORTED_CANDIDATES_MAX:  # select among them, then sort only the k winners
            return _by_magnitude(*_winners(cand_idx, cand_key, k), d)
        cap = k + k // 4 + 64  # many ties in the top bucket: narrow them first
        idx, keys = cand_idx.astype(np.int64), cand_key.astype(np.uint64)
        n = sel.cpu_narrow(idx, keys, k, lo, shift, cap)
        return _by_magnitude(idx[:n], keys[:n], d)[:k]
    # Many winners: sort every candidate (they are about k) with a parallel radix sort.
    # The largest key lies in the highest non-empty bucket: no pass needed to find it.
    top = int(np.flatnonzero(hist.sum(axis=0))[-1])
    cand_key, cand_idx = _radix_sort_desc(cand_key, cand_idx, lo, ((top + 1) << shift) - 1, threads)
    return cand_idx[:k].astype(np.int64)


def _n_chunks(d: int) -> int:
    return max(1, min(_MAX_CHUNKS, d // _CHUNK))


def _winners(cand_idx: np.ndarray, cand_key: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of candidates given in index order: ``(indices, keys)`` in that order.

    The k-th largest key ``T`` by a partition, then every key above ``T`` and
    the first ties by index.
    """
    m = cand_key.shape[0]
    t = np.partition(cand_key, m - k)[m - k]
    chosen = cand_key > t
    ties = np.flatnonzero(cand_key == t)
    chosen[ties[: k - np.count_nonzero(chosen)]] = True
    return cand_idx[chosen], cand_key[chosen]


def _topk_cpu_unsorted(arr: np.ndarray, k: int, n_chunks: int | None = None) -> np.ndarray:
    """The top-``k`` indices of ``arr`` (C-contiguous float, ``k >= 1``) in ascending order.

    Radix histograms over the whole array (one per digit of 11 bits, each
    kept per chunk) resolve the k-th largest key ``T`` and how many of its ties
    each chunk may take (the first ones by index); one parallel pass then
    writes every chunk's winners, in index order, at its offset. Besides the
    ``k`` int64 indices it holds one ``(n_chunks, 2048)`` int64 histogram at
    a time. When the top digit already leaves at most
    ``_UNSORTED_CANDIDATES_MAX`` candidates (so ``k`` is at most that), they
    are gathered in index order instead and the winners picked among them.
    The result does not depend on ``n_chunks``.
    """
    d = arr.shape[0]
    bits, mask, width = _key_bits(arr)
    if d <= _SERIAL_MAX:  # every entry is a candidate
        return _winners(np.arange(d, dtype=np.int64), bits & mask, k)[0]
    n_chunks = _n_chunks(d) if n_chunks is None else n_chunks
    top_shift = width - sel.DIGIT_BITS
    top = sel.cpu_histogram(bits, mask, np.uint64(top_shift), n_chunks)
    b, m = _top_bucket(top, k)
    if m <= _UNSORTED_CANDIDATES_MAX:
        # Few candidates (small k): gather them, in index order, and select among them.
        cand_idx, cand_key = _gather(bits, mask, top, b, top_shift, m)
        return _winners(cand_idx, cand_key, k)[0].astype(np.int64, copy=False)
    # Per chunk, the entries above the final bucket: those above the chosen bucket of
    # every digit, folded in as soon as the next digit's range names that bucket, so
    # that one (n_chunks, 2048) histogram at a time is alive.
    above = np.zeros(n_chunks, dtype=np.int64)
    last = []  # the latest digit's (lo, shift, per-chunk histogram)

    def fold_last(lo):
        """Add the last digit's counts above the bucket holding ``lo``; return that bucket's."""
        level_lo, level_shift, hist = last.pop()
        b = (lo - level_lo) >> level_shift
        above[:] += hist[:, b + 1 :].sum(axis=1)
        return hist[:, b].copy()

    def key_histogram(lo, span, shift):
        if last:
            fold_last(lo)
        if lo == 0 and span == 1 << width:  # the top digit, counted above
            hist = top
        else:
            hist = sel.cpu_histogram_range(
                bits, mask, np.uint64(lo), np.uint64(span), np.uint64(shift), n_chunks
            )
        last.append((lo, shift, hist))
        return hist.sum(axis=0)

    lo, _, need, exact = _radix_levels(key_histogram, width, k)
    bucket = fold_last(lo)
    if exact:  # the whole bucket is selected: every key >= lo
        threshold_key, tie_key = lo, lo
        takes = np.zeros(n_chunks, dtype=np.int64)
        counts = above + bucket
    else:  # the bucket is the single key T = lo: the first `need` ties by index
        threshold_key, tie_key = lo + 1, lo
        before = np.cumsum(bucket) - bucket
        takes = np.clip(need - before, 0, bucket)
        counts = above + takes
    offsets = np.zeros(n_chunks + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    out = np.empty(k, dtype=np.int64)
    sel.cpu_compact_selected(
        bits, mask, np.uint64(threshold_key), np.uint64(tie_key), takes, offsets, out
    )
    return out


def _radix_sort_desc(keys, idx, lo, high, threads):
    """``(keys, idx)`` sorted by descending key, stably; keys lie in ``[lo, high]``.

    A least-significant-digit radix sort of ``key - lo`` in as few passes as
    its width needs, with digits of equal width (at most ``DIGIT_BITS``). The
    result is in the given arrays or in as many again of scratch (returned).
    """
    width = (high - int(lo)).bit_length()
    passes = -(-width // sel.DIGIT_BITS)
    if passes == 0:  # a single key: index order is the answer
        return keys, idx
    digit = -(-width // passes)
    offsets = np.empty((4 * threads, 1 << digit), dtype=np.int64)
    src, dst = (keys, idx), (np.empty_like(keys), np.empty_like(idx))
    for p in range(passes):
        sel.cpu_radix_pass(
            *src, *dst, lo, np.uint64(p * digit), np.uint64((1 << digit) - 1), offsets
        )
        src, dst = dst, src
    return src


def _radix_levels(run_histogram, width: int, need: int) -> tuple[int, int, int, bool]:
    """Resolve digits from the top: ``(lo, shift, need, exact)``.

    ``run_histogram(lo, span, shift)`` returns the counts of the digit
    ``(v - lo) >> shift`` over values ``v`` in ``[lo, lo + span)``. Stops as soon
    as the chosen bucket holds exactly the ``need`` entries still wanted
    (``exact``), or when the bucket is one value wide.
    """
    lo, shift = 0, width
    while shift > 0:
        new = max(shift - sel.DIGIT_BITS, 0)
        hist = run_histogram(lo, 1 << shift, new)[: 1 << (shift - new)]
        from_top = np.cumsum(hist[::-1])
        p = int(np.searchsorted(from_top, need))
        b = hist.shape[0] - 1 - p
        need -= int(from_top[p] - hist[b])
        lo += b << new
        shift = new
        if int(hist[b]) == need:
            return lo, shift, need, True
    return lo, shift, need, False


# ----------------------------------------------------------------- top-k on CUDA

# The digit passes cap their grid (each block zeroes and flushes a 2048-bin
# shared histogram): about one wave of blocks on a large GPU, each looping over
# many entries.
_HISTOGRAM_BLOCKS = 1024


def _digits(width: int) -> list[tuple[int, int]]:
    """``(range_shift, shift)`` of each 11-bit digit of a ``width``-bit key, from the top."""
    digits = []
    while width > 0:
        shift = max(width - sel.DIGIT_BITS, 0)
        digits.append((width, shift))
        width = shift
    return digits


def _tiles(n: int) -> int:
    """Tiles of the tile-based kernels (compaction, sort) over ``n`` entries."""
    return -(-n // (sel.TILE_ITEMS * _cuda.THREADS_PER_BLOCK))


def _candidate_capacity(d: int) -> int:
    """Room for the keys of the top digit's bucket: beyond it the later digits read ``x``.

    A sixteenth of ``d`` (at least 64 Ki entries): at d = 10**7 and k = 5 * 10**4 of
    normal values that bucket holds about 55 000 keys.
    """
    return min(d, max(1 << 16, d >> 4))


class TopkWorkspace:
    """Device scratch and results of top-k for one ``(d, k, dtype, sorted)``.

    :func:`topk` on a CUDA array allocates one per call; a caller that selects
    every step (a compression step) makes one and passes it to
    :func:`_topk_device`, which then allocates nothing and never waits for the
    device. The returned ``indices`` and ``values`` are this workspace's buffers,
    overwritten by its next use. Its counters are left zeroed by every call, so a
    workspace can be reused on one stream at a time.

    Parameters
    ----------
    d : int
        Length of the input.
    k : int
        How many entries to select, ``1 <= k <= d``.
    dtype : numpy dtype
        The input's dtype: float32 keys are 32-bit, any other 64-bit; the values
        returned keep it.
    sorted : bool, default True
        Whether the result is ordered by magnitude (needs the sort's buffers).
    stream : CUDA stream, default 0
        Where the buffers are allocated and zeroed.

    Attributes
    ----------
    indices : int64 device array, shape (k,)
    values : device array of ``dtype``, shape (k,)
    status : int64 device array, shape (``STATUS_SLOTS``,)
        The non-finite count of a checked call (``reductions.STATUS_NONFINITE``),
        when no other status array is given.
    """

    def __init__(self, d: int, k: int, dtype: Any, *, sorted: bool = True, stream: Any = 0):
        self.d, self.k, self.dtype, self.sorted = int(d), int(k), np.dtype(dtype), bool(sorted)
        zeros = lambda shape, dt: _cuda.zeros(shape, dt, stream=stream)  # noqa: E731
        empty = lambda shape, dt: _cuda.empty(shape, dt, stream=stream)  # noqa: E731
        self.state = zeros(sel.STATE_SLOTS, np.int64)
        self.status = zeros(reductions.STATUS_SLOTS, np.int64)
        self.histogram = zeros(sel.BINS, np.int64)
        self.no_tau = zeros(1, np.float64)  # the kernels' threshold argument, unused by top-k
        self.candidates = empty((2, _candidate_capacity(self.d)), np.uint64)
        self.tiles = empty((_tiles(self.d), 2), np.int64)
        self.indices = empty(self.k, np.int64)
        self.values = empty(self.k, self.dtype)
        m = self.k if self.sorted else 0  # the sort's buffers, empty when unsorted
        self.sort_keys = (empty(m, np.uint64), empty(m, np.uint64))
        self.sort_indices = empty(m, np.int64)
        self.sort_counts = tuple(zeros((_tiles(m), sel.SORT_BINS), np.int64) for _ in range(2))

    def fits(self, d: int, k: int, dtype: Any, sorted: bool) -> bool:
        """Whether this workspace serves a top-k of these parameters."""
        return (self.d, self.k, self.dtype, self.sorted) == (d, k, np.dtype(dtype), sorted)


def _topk_device(
    arr, values, k: int, *, ordered: bool, stream, workspace=None, status=None
) -> tuple[Any, Any]:
    """The top ``k`` of the float device vector ``arr``: ``(indices, values[indices])``.

    ``values`` is the caller's array (``arr`` itself, or the integer array ``arr``
    was converted from). Launches ``len(digits) + 2`` kernels (3 + 2 for float32,
    6 + 2 for float64), plus one sort pass per byte of the key when ``ordered``
    (4 or 8), all on ``stream``; no allocation when ``workspace`` (a
    :class:`TopkWorkspace` that fits) is given, and never a copy to the host or a
    wait. With ``status`` (an int64 device array of ``reductions.STATUS_SLOTS``),
    NaN and Inf in ``arr`` are counted into ``status[STATUS_NONFINITE]`` during
    the first pass, for the caller to read when it wants; they rank above every
    finite value.
    """
    d = arr.shape[0]
    ws = workspace
    if ws is None:
        ws = TopkWorkspace(d, k, values.dtype, sorted=ordered, stream=stream)
    elif not ws.fits(d, k, values.dtype, ordered):
        raise ValueError(
            f"workspace serves d={ws.d}, k={ws.k}, dtype={ws.dtype}, sorted={ws.sorted}; "
            f"this call needs d={d}, k={k}, dtype={np.dtype(values.dtype)}, sorted={ordered}"
        )
    bits, mask, width = _key_bits(arr)
    inf_key = _inf_key(mask)
    check = status is not None
    for p, (range_shift, shift) in enumerate(_digits(width)):
        _cuda.launch(sel.cuda_radix_pass, d, stream, max_blocks=_HISTOGRAM_BLOCKS)(
            bits, mask, inf_key, k, range_shift, shift, p == 0, p == 1, check and p == 0,
            ws.state, ws.histogram, ws.candidates, ws.status if status is None else status,
        )  # fmt: skip
    tile_threads = _tiles(d) * _cuda.THREADS_PER_BLOCK
    # By key (the select's state), not by value: the threshold argument ws.no_tau is unread.
    _cuda.launch(sel.cuda_select_count, tile_threads, stream)(
        bits, values, mask, mask, ws.no_tau, False, False, inf_key, ws.state, ws.tiles, ws.status
    )
    keys, indices = ws.sort_keys, (ws.indices, ws.sort_indices)
    _cuda.launch(sel.cuda_select_write, tile_threads, stream)(
        bits, values, mask, mask, ws.no_tau, False, ws.state, ws.tiles, ws.indices, ws.values,
        keys[0], ws.sort_counts[0], ordered,
    )  # fmt: skip
    if ordered:
        passes = -(-(width + 1) // sel.SORT_BITS)  # even: the result ends in ws.indices
        for p in range(passes):
            src, dst = p % 2, 1 - p % 2
            _cuda.launch(sel.cuda_sort_pass, _tiles(k) * _cuda.THREADS_PER_BLOCK, stream)(
                keys[src], indices[src], keys[dst], indices[dst], ws.sort_counts[src],
                ws.sort_counts[dst], p * sel.SORT_BITS, p == passes - 1, values, ws.values,
                ws.state,
            )  # fmt: skip
    return ws.indices, ws.values


def _inf_key(mask):
    """The key of infinity: every key at or above it is Inf or NaN."""
    return np.uint64(0x7F800000 if mask == _MASK32 else 0x7FF0000000000000)


@follows("x")
def topk(x: Any, k: int, *, sorted: bool = True, check_finite: bool = True) -> tuple[Any, Any]:
    """The ``k`` entries of largest magnitude: ``(indices, values)``.

    The set is unique: among equal magnitudes at the cut the smaller indices
    win. ``sorted`` only chooses the order in which it is returned.

    Parameters
    ----------
    x : array_like or CUDA array, shape (d,)
        Real numbers (float32, float64, or integers, which are ranked as
        float64). A CUDA array gives CUDA results.
    k : int
        How many entries, ``0 <= k <= d`` (``k = 0`` gives empty arrays).
    sorted : bool, default True
        Order the result by descending ``|x[i]|`` (equal magnitudes by
        ascending index); with ``False``, by ascending index, which is faster
        for large ``k``. Memory on the CPU beyond the ``k`` int64 indices and
        the values: unsorted, one ``(chunks, 2048)`` int64 histogram at a
        time, at most 256 chunks (4 MiB), or for small ``k`` at most 262 144
        candidates (8 MiB); sorted, for ``k >= 131072``, up to 16 bytes per
        candidate (about ``k``) while they are sorted (see :doc:`/guarantees`).
    check_finite : bool, default True
        Raise on NaN or Inf. With ``False`` the caller vouches for finite
        input (NaN would rank above everything).

    Returns
    -------
    indices : int64 array, shape (k,)
        Ordered by descending ``|x[i]|``, equal magnitudes by ascending
        index; with ``sorted=False``, ascending. Identical on CPU and CUDA.
    values : array, shape (k,)
        ``x[indices]``, with their signs and ``x``'s dtype.

    Raises
    ------
    ValueError
        ``x`` not 1-D or holding NaN/Inf; ``k`` outside ``[0, d]``.
    TypeError
        ``x`` not real numbers; ``k`` not an integer; ``sorted`` not a bool.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch import topk
    >>> idx, val = topk(np.array([0.5, -3.0, 2.0, 3.0, 0.0]), 3)
    >>> idx
    array([1, 3, 2])
    >>> val
    array([-3.,  3.,  2.])
    >>> topk(np.array([0.5, -3.0, 2.0, 3.0, 0.0]), 3, sorted=False)[0]
    array([1, 2, 3])
    """
    inp = _vector(x, "x")
    k = _check_k(k, inp.size)
    ordered = _arrays.check_bool("sorted", sorted)
    if inp.device == CPU:
        if check_finite:
            _arrays.check_finite(inp, "x")
        original = np.asarray(inp.array)
        if k == 0:
            return np.empty(0, dtype=np.int64), original[:0].copy()
        if not ordered and k == inp.size:  # everything, in index order: no gather
            return np.arange(k, dtype=np.int64), original.copy()
        arr = _contiguous_float(inp)
        idx = _topk_cpu(arr, k) if ordered else _topk_cpu_unsorted(arr, k)
        return idx, original[idx]
    if k == 0:
        if check_finite:
            _arrays.check_finite(inp, "x")
        return _empty(0, np.int64, CUDA, inp.stream), _empty(0, inp.array.dtype, CUDA, inp.stream)
    # The first digit pass counts NaN and Inf as it goes: one read of the count, no extra pass.
    ws = TopkWorkspace(inp.size, k, inp.array.dtype, sorted=ordered, stream=inp.stream)
    result = _topk_device(
        _contiguous_float(inp),
        inp.array,
        k,
        ordered=ordered,
        stream=inp.stream,
        workspace=ws,
        status=ws.status if check_finite else None,
    )
    if check_finite:
        _raise_nonfinite(_cuda.to_host(ws.status), "x")
    return result


def _raise_nonfinite(status: np.ndarray, name: str) -> None:
    """The check's error, from a status array read back from the device."""
    _arrays.raise_unfit(name, int(status[reductions.STATUS_NONFINITE]), 0, np.float64)


# ----------------------------------------------------------------- random-k


def randomk(d: int, k: int, *, seed: int, device: str = "cpu") -> Any:
    """``k`` distinct indices of ``[0, d)``, sorted, fixed by ``(seed, d, k)`` alone.

    Every worker that passes the same step seed gets the same indices, on
    either backend, so their values at those indices can be summed with a
    plain allreduce. Drawn on the host by Floyd's algorithm on a SplitMix64
    stream (uniform over all k-subsets), then copied to ``device``.

    Parameters
    ----------
    d : int
        Length of the vector, positive.
    k : int
        How many indices, ``0 <= k <= d``.
    seed : int
        In ``[0, 2**64)``; use a fresh one per step (e.g. ``base_seed + step``).
    device : {"cpu", "cuda"}, default "cpu"
        Where the result lives.

    Returns
    -------
    indices : int64 array, shape (k,)
        Strictly increasing.

    Examples
    --------
    >>> from pysketch import randomk
    >>> idx = randomk(10, 4, seed=7)
    >>> len(set(idx.tolist())), bool((idx == randomk(10, 4, seed=7)).all())
    (4, True)
    >>> bool((idx[1:] > idx[:-1]).all())
    True
    """
    d = _arrays.check_positive_int("d", d, maximum=_INDEX_MAX)
    k = _check_k(k, d)
    seed = _arrays.check_seed(seed)
    _arrays.check_device(device)
    state = np.uint64(seed ^ 0x52414E444F4D4B00)  # "RANDOMK\0"
    for word in (d, k):
        state, out = splitmix64_host(np.uint64(state) ^ np.uint64(word))
        state = np.uint64(state) ^ np.uint64(out)
    idx = sel.cpu_randomk(state, d, k)
    idx.sort()
    return idx if device == CPU else _cuda.to_device(idx)


# ----------------------------------------------------------------- threshold


@follows("x")
def threshold(x: Any, tau: float, *, check_finite: bool = True) -> tuple[Any, Any]:
    """Every entry with ``|x[i]| >= tau``: ``(indices, values)`` in ascending index order.

    Parameters
    ----------
    x : array_like or CUDA array, shape (d,)
        Real numbers; a CUDA array gives CUDA results.
    tau : float
        Finite and ``>= 0`` (``tau = 0`` selects everything). Compared in float64.
    check_finite : bool, default True
        Raise on NaN or Inf in ``x``.

    Returns
    -------
    indices : int64 array
        Ascending.
    values : array
        ``x[indices]`` in ``x``'s dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch import threshold
    >>> idx, val = threshold(np.array([0.5, -3.0, 2.0, 0.1]), 1.0)
    >>> idx, val
    (array([1, 2]), array([-3.,  2.]))
    """
    inp = _vector(x, "x")
    tau = _arrays.check_real("tau", tau, finite=False)
    if not np.isfinite(tau) or tau < 0:
        raise ValueError(f"tau must be finite and >= 0, got {tau}")
    if inp.device == CPU:
        if check_finite:
            _arrays.check_finite(inp, "x")
        arr = np.asarray(inp.array)
        idx = sel.cpu_threshold(_arrays.kernel_values(inp).array, tau, num_threads())
        return idx, arr[idx]
    tau_device = _cuda.to_device(np.array([tau], dtype=np.float64), stream=inp.stream)
    return _threshold_device(inp, tau_device, check_finite=check_finite)


def _threshold_device(inp: Input, tau: Any, *, check_finite: bool = False) -> tuple[Any, Any]:
    """:func:`threshold` of a CUDA input, ``tau`` a float64 device array whose element 0
    holds the threshold (maybe written by an earlier kernel: it is never read back).

    One stable compaction (2 launches) and one read, of the count that sizes the result
    and the non-finite count together (status and selection state share one array).
    """
    stream = inp.stream
    bits, mask, _ = _key_bits(_contiguous_float(inp))
    inf_key = _inf_key(mask)
    control = _cuda.zeros(reductions.STATUS_SLOTS + sel.STATE_SLOTS, np.int64, stream=stream)
    status, state = control[: reductions.STATUS_SLOTS], control[reductions.STATUS_SLOTS :]
    tiles = _cuda.empty((_tiles(inp.size), 2), np.int64, stream=stream)
    blocks = tiles.shape[0] * _cuda.THREADS_PER_BLOCK
    if inp.size:
        _cuda.launch(sel.cuda_select_count, blocks, stream)(
            bits, inp.array, mask, inf_key, tau, True, check_finite, inf_key, state, tiles, status
        )
    counts = _cuda.to_host(control)
    if check_finite:
        _raise_nonfinite(counts[: reductions.STATUS_SLOTS], "x")
    n = int(counts[reductions.STATUS_SLOTS + sel.S_TOTAL])
    idx = _cuda.empty(n, np.int64, stream=stream)
    values = _cuda.empty(n, inp.array.dtype, stream=stream)
    if n:
        no_keys = _cuda.empty(0, np.uint64, stream=stream)  # no sort: unused
        no_counts = _cuda.empty((0, sel.SORT_BINS), np.int64, stream=stream)
        _cuda.launch(sel.cuda_select_write, blocks, stream)(
            bits, inp.array, mask, inf_key, tau, True, state, tiles, idx, values, no_keys,
            no_counts, False,
        )  # fmt: skip
    return idx, values


# ----------------------------------------------------------------- gather / scatter


@follows("x", "indices")
def gather(x: Any, indices: Any) -> Any:
    """``x[indices]`` on ``x``'s device (Numba device arrays have no fancy indexing).

    Parameters
    ----------
    x : array_like or CUDA array, shape (d,)
    indices : integer array on the same device
        Each in ``[0, d)``.

    Returns
    -------
    values : array, shape (len(indices),), ``x``'s dtype

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch import gather
    >>> gather(np.array([10.0, 20.0, 30.0]), np.array([2, 0]))
    array([30., 10.])
    """
    inp = _vector(x, "x")
    ind = _arrays.as_input(indices, "indices", device=inp.device, kind="index")
    _arrays.check_index_range(ind, "indices", inp.size)
    if inp.device == CPU:
        return np.asarray(inp.array)[ind.array]
    return _gather_device(inp.array, ind.array, inp.stream)


@follows("values", "indices", "out")
def scatter(
    indices: Any,
    values: Any,
    d: int,
    *,
    out: Any = None,
    accumulate: bool = False,
    check_finite: bool = True,
) -> Any:
    """A dense length-``d`` vector holding ``values`` at ``indices``, zero elsewhere.

    Values at repeated indices are summed (like ``np.add.at``; on CUDA the
    order of the float additions is not fixed).

    Parameters
    ----------
    indices : integer array, shape (n,)
        Each in ``[0, d)``.
    values : real array, shape (n,), on the same device as ``indices``
    d : int
        Length of the result, positive.
    out : float32 or float64 array, shape (d,), optional
        Written in place and returned (a writable NumPy array in native byte
        order on the CPU). Zeroed first unless ``accumulate``. Integer arrays
        are refused: floats would be truncated and sums could wrap around.
        ``values`` or ``indices`` that share memory with it are copied first.
    accumulate : bool, default False
        Add into ``out`` instead of overwriting it (needs ``out``).
    check_finite : bool, default True
        Raise on NaN or Inf in ``values``, and on values that would overflow
        the result's dtype (float64 values of ``1e39`` into a float32 ``out``).

    Returns
    -------
    dense : array, shape (d,)
        ``out``, or a new array of ``values``' dtype (float64 for integer
        ``values``), on the inputs' device.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch import scatter
    >>> scatter(np.array([3, 0]), np.array([1.5, -2.0]), 5)
    array([-2. ,  0. ,  0. ,  1.5,  0. ])
    """
    val = _vector(values, "values")
    ind = _arrays.as_input(indices, "indices", device=val.device, kind="index")
    _arrays.check_same_length(ind, "indices", val, "values")
    d = _arrays.check_positive_int("d", d, maximum=_INDEX_MAX)
    accumulate = _arrays.check_bool("accumulate", accumulate)
    if accumulate and out is None:
        raise ValueError("accumulate=True needs out")
    target = None if out is None else _out_vector(out, d, val.device)
    dtype = _float_result(val.array.dtype) if target is None else np.dtype(target.dtype)
    if val.device == CPU:
        _arrays.check_index_range(ind, "indices", d)
        if check_finite:
            _arrays.check_finite(val, "values", into=dtype)
    else:  # both checks counted on the device, then one read
        status = _arrays.new_status(val.stream)
        _arrays.count_out_of_range(ind, status, d)
        if check_finite:
            _arrays.count_unfit(val, status, into=dtype)
        counts = _cuda.to_host(status)
        _arrays.raise_status(counts, indices="indices", upper=d, values="values", into=dtype)
    if target is not None:
        val = _arrays.detached(val, target)
        ind = _arrays.detached(ind, target)
    result = _scatter(ind, val, d, target, accumulate, dtype)
    return result if out is None else out


def _scatter(ind: Input, val: Input, d: int, target: Any, accumulate: bool, dtype) -> Any:
    """:func:`scatter` of validated inputs, or of indices the library made (no range
    check: on CUDA no read back): into ``target`` (zeroed first unless ``accumulate``),
    or into a new zeroed vector of ``dtype`` when ``target`` is None; returns it."""
    if val.device == CPU:
        if target is None:
            target = np.zeros(d, dtype=dtype)
        elif not accumulate:
            target[...] = 0
        if ind.size:
            sel.cpu_scatter_add(target, ind.array, val.array, 1)
        return target
    stream = val.stream
    if target is None:
        target = _cuda.zeros(d, dtype, stream=stream)
    elif not accumulate:
        _cuda.launch(elementwise.cuda_fill, d, stream)(target, 0)
    if ind.size:
        _cuda.launch(sel.cuda_scatter_add, ind.size, stream)(target, ind.array, val.array, 1)
    return target
