"""Count Sketch: a linear sketch of a vector, with heavy-hitter recovery.

The sketch of ``x`` in R^d is a ``rows x cols`` table ``S`` with
``S[j, h_j(i)] += s_j(i) * x[i]`` [CCF02]_. It is linear, so the sketches of
many workers' gradients add up to the sketch of their sum (one allreduce of
``rows * cols`` values); the coordinates of large magnitude are then recovered
from the sum (Sketched-SGD [IRU19]_, FetchSGD [RPU20]_), or the sum is
desketched linearly (sketch-DL [SIL24]_).

References
----------
.. [CCF02] M. Charikar, K. Chen, M. Farach-Colton, "Finding frequent items in
   data streams", ICALP 2002.
.. [IRU19] N. Ivkin, D. Rothchild, E. Ullah, V. Braverman, I. Stoica, R. Arora,
   "Communication-efficient distributed SGD with Sketching", NeurIPS 2019.
.. [RPU20] D. Rothchild, A. Panda, E. Ullah, N. Ivkin, I. Stoica, V. Braverman,
   J. Gonzalez, R. Arora, "FetchSGD: Communication-Efficient Federated
   Learning with Sketching", ICML 2020.
.. [SIL24] M. Shrivastava, B. Isik, Q. Li, S. Koyejo, A. Banerjee, "Sketching
   for Distributed Deep Learning: A Sharper Analysis", NeurIPS 2024.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pysketch import _arrays, _cuda, hashing, selection
from pysketch._arrays import CPU
from pysketch._base import TableSketch
from pysketch._frameworks import follows
from pysketch.kernels import countsketch as kernels
from pysketch.kernels import elementwise, reductions
from pysketch.kernels.parallel import num_threads

__all__ = ["CountSketch"]


class CountSketch(TableSketch):
    """A Count Sketch of a vector of dimension ``d``.

    Parameters
    ----------
    d : int
        Dimension of the sketched vectors; indices lie in ``[0, d)``, ``d < 2**61``.
    rows : int
        Number of independent hash rows ``r`` (at most 64). The failure
        probability falls exponentially in ``r``: ``r = O(log(d / delta))``.
    cols : int
        Buckets per row ``c`` (below ``2**32``). Estimation error scales as
        ``||x_tail||_2 / sqrt(c)``; every ``i`` with ``x_i^2 >= phi ||x||^2``
        is recovered for ``c = O(1/phi)``.
    seed : int or None, default 0
        Seed of the hash functions, in ``[0, 2**64)``. Sketches combine only
        when they share it: every worker must use the same seed. ``None``
        draws a random one, recorded in ``.seed`` (broadcast it to the other
        workers, e.g. with :func:`pysketch.distributed.broadcast_seed`).
    dtype : {numpy.float32, numpy.float64}, default numpy.float32
        Dtype of the table.
    hash : {"mix", "polynomial"}, default "mix"
        Hash family (see :mod:`pysketch.hashing`): ``"polynomial"`` is provably
        2-wise (buckets) and 4-wise (signs) independent, ``"mix"`` is faster.
    device : {"cpu", "cuda"}, default "cpu"
        Where the table lives and the kernels run. Inputs must be on the same
        device: NumPy (or CPU DLPack) arrays for ``"cpu"``; CuPy, or any
        ``__cuda_array_interface__``/DLPack CUDA array, for ``"cuda"``.

    Attributes
    ----------
    table : array of shape (rows, cols)
        The sketch itself, on ``device``.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch import CountSketch
    >>> x = np.zeros(10_000, dtype=np.float32)
    >>> x[[3, 70, 900]] = [50.0, -40.0, 30.0]
    >>> sketch = CountSketch(d=10_000, rows=5, cols=200, seed=7)
    >>> _ = sketch.accumulate(x)
    >>> idx, values = sketch.heavy_hitters(k=3)
    >>> idx.tolist(), values.tolist()
    ([3, 70, 900], [50.0, -40.0, 30.0])

    Sketches with the same parameters add up, like the vectors they sketch:

    >>> other = CountSketch(d=10_000, rows=5, cols=200, seed=7).accumulate(x)
    >>> total = sketch + other
    >>> float(total.estimate([3])[0])
    100.0
    """

    _PARAMS = ("d", "rows", "cols", "seed", "hash", "dtype")

    def __init__(
        self,
        d: int,
        rows: int,
        cols: int,
        *,
        seed: int = 0,
        dtype: Any = np.float32,
        hash: str = hashing.DEFAULT_FAMILY,
        device: str = CPU,
    ) -> None:
        d = _arrays.check_positive_int("d", d, maximum=hashing.MAX_INDEX)
        self._init_hashed_table(rows, cols, seed, hash, dtype, device)
        self.d = d

    # ------------------------------------------------------------ sizing
    @classmethod
    def suggest_cols(cls, eps: float) -> int:
        """Columns for error ``eps * ||x||_2`` per row, w.p. ``>= 7/8``: ``ceil(8 / eps**2)``.

        One row's estimate ``s_j(i) S[j, h_j(i)]`` is unbiased with variance at
        most ``||x||_2**2 / cols``, so by Chebyshev it errs by more than
        ``eps * ||x||_2`` with probability at most ``1 / (cols * eps**2) = 1/8``
        [CCF02]_. (Only the tail beyond the heavy coordinates counts, so the
        bound is loose for skewed vectors.) :meth:`suggest_rows` turns the 1/8
        per row into ``delta`` for the median.

        Parameters
        ----------
        eps : float
            Error as a fraction of ``||x||_2``, in ``(0, 1]``.

        Examples
        --------
        >>> from pysketch import CountSketch
        >>> CountSketch.suggest_cols(0.01)
        80000
        """
        eps = _arrays.check_real("eps", eps, finite=False)
        if not 0.0 < eps <= 1.0:
            raise ValueError(f"eps must lie in (0, 1], got {eps}")
        cols = math.ceil(8.0 / eps**2)
        if cols > hashing.MAX_COLS:
            raise ValueError(f"eps={eps} needs {cols} columns, more than {hashing.MAX_COLS}")
        return cols

    @classmethod
    def suggest_rows(cls, delta: float) -> int:
        """Rows for failure probability ``delta``: ``ceil(32/9 ln(1/delta))``.

        The median fails only if half the rows do; each fails with probability
        at most 1/8, so by Hoeffding the median fails with probability at most
        ``exp(-2 rows (1/2 - 1/8)**2) = exp(-9 rows / 32)``.

        Parameters
        ----------
        delta : float
            Failure probability of one estimate, in ``(0, 1)``.

        Examples
        --------
        >>> from pysketch import CountSketch
        >>> CountSketch.suggest_rows(0.01)
        17
        """
        delta = _arrays.check_real("delta", delta, finite=False)
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must lie in (0, 1), got {delta}")
        rows = max(1, math.ceil(32.0 / 9.0 * math.log(1.0 / delta)))
        if rows > reductions.MAX_ROWS:
            raise ValueError(f"delta={delta} needs {rows} rows, more than {reductions.MAX_ROWS}")
        return rows

    # ------------------------------------------------------------ accumulate
    @follows("x", record=True)
    def accumulate(self, x: Any, *, check_finite: bool = True) -> CountSketch:
        """Add the sketch of a dense vector: ``S[j, h_j(i)] += s_j(i) * x[i]``.

        Parameters
        ----------
        x : array_like of shape (d,)
            Real values on the sketch's device (integers are converted in the kernel).
        check_finite : bool, default True
            Refuse NaN and Inf, and values that would overflow the table's
            dtype (``1e39`` into float32), with one extra read of ``x``; the
            sketch is unchanged then. With ``False`` the caller vouches for both.

        Returns
        -------
        CountSketch
            ``self``, for chaining.

        Examples
        --------
        >>> import numpy as np
        >>> from pysketch import CountSketch
        >>> s = CountSketch(d=4, rows=3, cols=8).accumulate(np.array([1.0, 0, 0, 0]))
        >>> float(np.abs(s.table).sum())
        3.0
        """
        inp = _arrays.kernel_values(_arrays.as_input(x, "x", device=self._device))
        if inp.size != self.d:
            raise ValueError(f"x must have length d={self.d}, got {inp.size}")
        inp = _arrays.detached(inp, self._table)
        if not check_finite:
            self._accumulate(self._no_indices, inp, dense=True)
        elif self._device == CPU:
            _arrays.check_finite(inp, "x", into=self.dtype)
            self._accumulate(self._no_indices, inp, dense=True)
        else:  # the check, then the accumulate that it guards, then one read
            status = _arrays.new_status(inp.stream)
            _arrays.count_unfit(inp, status, into=self.dtype)
            self._accumulate(self._no_indices, inp, dense=True, status=status)
            _arrays.raise_status(_cuda.to_host(status), values="x", into=self.dtype)
        return self

    @follows("values", "indices", record=True)
    def accumulate_sparse(
        self, indices: Any, values: Any, *, check_finite: bool = True
    ) -> CountSketch:
        """Add the sketch of a sparse vector given as ``(indices, values)``.

        Repeated indices add up, as in ``numpy.add.at``.

        Parameters
        ----------
        indices : array_like of int, shape (n,)
            Coordinates in ``[0, d)``.
        values : array_like, shape (n,)
            Their values.
        check_finite : bool, default True
            Refuse NaN and Inf in ``values``, and values that would overflow
            the table's dtype.

        Returns
        -------
        CountSketch
            ``self``.

        Examples
        --------
        >>> import numpy as np
        >>> from pysketch import CountSketch
        >>> a = CountSketch(d=100, rows=3, cols=16).accumulate_sparse([5, 9], [2.0, -1.0])
        >>> dense = np.zeros(100); dense[[5, 9]] = [2.0, -1.0]
        >>> b = CountSketch(d=100, rows=3, cols=16).accumulate(dense)
        >>> bool(np.array_equal(a.table, b.table))
        True
        """
        idx = _arrays.as_input(indices, "indices", device=self._device, kind="index")
        val = _arrays.kernel_values(_arrays.as_input(values, "values", device=self._device))
        _arrays.check_same_length(idx, "indices", val, "values")
        idx, val = (_arrays.detached(arg, self._table) for arg in (idx, val))
        if self._device == CPU:
            _arrays.check_index_range(idx, "indices", self.d)
            if check_finite:
                _arrays.check_finite(val, "values", into=self.dtype)
            self._accumulate(idx.array, val, dense=False)
            return self
        # The checks, then the accumulate that they guard, then one read.
        status = _arrays.new_status(val.stream)
        _arrays.count_out_of_range(idx, status, self.d)
        if check_finite:
            _arrays.count_unfit(val, status, into=self.dtype)
        self._accumulate(idx.array, val, dense=False, status=status)
        counts = _cuda.to_host(status)
        _arrays.raise_status(
            counts, indices="indices", upper=self.d, values="values", into=self.dtype
        )
        return self

    def _accumulate(
        self,
        indices: Any,
        values: _arrays.Input,
        *,
        dense: bool,
        status: Any = None,
        check: bool = False,
    ) -> None:
        """Add ``values`` at the positions (``dense``) or at ``indices``: no validation.

        On CUDA, one launch on ``values.stream`` and nothing read back: the seam of a
        compression step, which reads its ``status`` once per step.

        * ``status`` (an int64 device array of ``reductions.STATUS_SLOTS``, zeroed by
          its owner) without ``check``: the launch adds nothing when a slot already
          holds a count, so a check queued before it (or a failure earlier in the
          step) leaves the table unchanged.
        * ``check`` (needs ``status``): in the same launch, values that are NaN or Inf
          or overflow the table, and sparse indices outside ``[0, d)``, are counted
          into ``status`` and left out; the others are added (whatever ``status``
          held before), so use it on a table whose content is dropped when the
          status reports a failure. Indices the library made itself need no check:
          ``check`` only where they come from a user.

        On the CPU ``status`` and ``check`` are ignored (validate first).
        """
        n = values.size
        if check and status is None:
            raise ValueError("check=True counts into a status array: give status")
        if self._device != CPU:
            idx = _arrays.Input(indices, self._device, values.stream)
            _cuda.launch(kernels.cuda_accumulate, n, values.stream)(
                self._table,
                self._family,
                self._keys,
                indices,
                values.array,
                dense,
                status is not None and not check,
                check,
                _arrays.fit_limit(self.dtype),
                _arrays.index_bound(idx, self.d),
                self._no_indices if status is None else status,
            )
            return
        # Two chunks of the input (the second summed apart and added) balance
        # any number of rows on two threads; the chunking depends on the sizes
        # alone, never on the thread count, so neither do the sums. Only inputs
        # at least as large as the table are split; the kernel writes only the
        # cells of ``buffers`` it uses (scratch rows: one per thread, or at most
        # the table's cells when threads outnumber rows).
        chunks = 2 if n >= self._table.size else 1
        pieces = num_threads()
        buffers = np.empty((min(pieces, self.rows) if chunks > 1 else 0, self.cols), self.dtype)
        spilled = np.empty((pieces, 4), dtype=np.int64)
        kernels.cpu_accumulate(
            self._table,
            buffers,
            spilled,
            self._family,
            self._keys,
            indices,
            values.array,
            dense,
            chunks,
            pieces,
        )
        for j, first, last, scratch_row in spilled[spilled[:, 0] >= 0]:
            self._table[j, first:last] += buffers[scratch_row, first:last]

    # -------------------------------------------------------------- estimate
    @follows("indices")
    def estimate(self, indices: Any = None) -> Any:
        """Estimate ``x[i]``: the median over rows of ``s_j(i) * S[j, h_j(i)]``.

        With an even number of rows the median is the mean of the two middle values.

        Parameters
        ----------
        indices : int or array_like of int, optional
            Coordinates to estimate; all ``d`` of them when omitted (no index
            array is materialised then).

        Returns
        -------
        array of the sketch's dtype, on the sketch's device
            In the framework of ``indices`` (or of what was accumulated, when
            omitted): PyTorch tensors give tensors. One index gives a float.

        Examples
        --------
        >>> import numpy as np
        >>> from pysketch import CountSketch
        >>> x = np.arange(6, dtype=np.float32)
        >>> CountSketch(d=6, rows=5, cols=64, seed=1).accumulate(x).estimate().tolist()
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        """
        return self._unsketch(indices, reductions.MEDIAN)

    @follows("indices")
    def desketch(self, indices: Any = None) -> Any:
        """The mean desketch ``(1/r) sum_j s_j(i) S[j, h_j(i)]``: the transpose ``R^T S``.

        Unlike :meth:`estimate` it is linear in the table and unbiased, which
        is what sketch-DL [SIL24]_ averages across clients.

        Parameters
        ----------
        indices : array_like of int, optional
            Coordinates to desketch; all ``d`` when omitted.

        Returns
        -------
        array of the sketch's dtype, on the sketch's device

        Examples
        --------
        >>> import numpy as np
        >>> from pysketch import CountSketch
        >>> s = CountSketch(d=3, rows=4, cols=32, seed=2).accumulate(np.array([1.0, 2.0, 3.0]))
        >>> s.desketch().tolist()
        [1.0, 2.0, 3.0]
        """
        return self._unsketch(indices, reductions.MEAN)

    def _unsketch(
        self,
        indices: Any,
        mode: int,
        out: Any = None,
        stream: Any = None,
        *,
        check_range: bool = True,
    ) -> Any:
        """Estimates (``MEDIAN``) or the mean desketch (``MEAN``) at ``indices`` (all ``d``
        when ``None``), into ``out`` when given: a buffer of the sketch's dtype on its
        device, of the right length, which is then all this allocates (one launch on
        CUDA, nothing read back). ``stream`` lets a training step queue it on its own
        stream; ``check_range=False`` for indices the library made (the check reads a
        count back from the device)."""
        if indices is not None and not _cuda.is_cuda_array(indices) and np.ndim(indices) == 0:
            one = np.asarray(indices).reshape(1)  # a single index gives a number
            out = self._unsketch(one if self._device == CPU else _cuda.to_device(one), mode)
            return float(out[0] if self._device == CPU else _cuda.to_host(out)[0])
        if indices is None:
            idx, n, dense = self._no_indices, self.d, True
            stream = self._stream() if stream is None else stream
        else:
            inp = _arrays.as_input(indices, "indices", device=self._device, kind="index")
            if check_range:
                _arrays.check_index_range(inp, "indices", self.d)
            idx, n, dense, stream = inp.array, inp.size, False, inp.stream
        if self._device == CPU:
            out = np.empty(n, dtype=self.dtype) if out is None else out
            kernels.cpu_estimate(self._table, self._family, self._keys, idx, dense, mode, out)
        else:
            out = _cuda.empty(n, self.dtype, stream=stream) if out is None else out
            if n:
                _cuda.launch(kernels.estimate_kernel(self.rows), n, stream)(
                    self._table, self._family, self._keys, idx, dense, mode, out
                )
        return out

    def l2_estimate(self) -> float:
        """Estimate ``||x||_2``: ``sqrt(median_j sum_b S[j, b]^2)``.

        Examples
        --------
        >>> import numpy as np
        >>> from pysketch import CountSketch
        >>> s = CountSketch(d=2, rows=3, cols=64, seed=0).accumulate(np.array([3.0, 4.0]))
        >>> s.l2_estimate()
        5.0
        """
        if self._device != CPU:
            return math.sqrt(float(_cuda.to_host(self._l2_device())[kernels.L2_MEDIAN]))
        sumsq = np.empty(self.rows)
        reductions.cpu_row_sumsq(self._table, sumsq)
        median = np.empty(1)
        # The kernels' median, run as Python: ``rows`` values need no compilation.
        reductions.combine_columns.py_func(
            sumsq.reshape(self.rows, 1), self.rows, reductions.MEDIAN, median
        )
        return math.sqrt(median[0])

    def _l2_device(self, phi: float = 0.0, scratch: Any = None) -> Any:
        """The median over rows of the sums of squares and ``phi * sqrt(median)``, in the
        float64 device array returned (``kernels.L2_MEDIAN``, ``L2_THRESHOLD``): one
        launch, nothing read back. ``scratch``: ``(out, tickets)`` to reuse, of
        :meth:`_l2_sizes`'s sizes (``tickets`` is zeroed here)."""
        stream = self._stream()
        if scratch is None:
            out = _cuda.empty(self._l2_sizes()[0], np.float64, stream=stream)
            tickets = _cuda.zeros(1, np.int64, stream=stream)
        else:
            out, tickets = scratch
            _cuda.launch(elementwise.cuda_fill, 1, stream)(tickets, np.int64(0))
        blocks = self._l2_blocks()
        _cuda.launch(kernels.l2_kernel(self.rows), self.cols, stream, max_blocks=blocks)(
            self._table, tickets, float(phi), out
        )
        return out

    def _l2_blocks(self) -> int:
        """The blocks of the l2 kernel's launch: one partial sum per row and block."""
        return min(kernels.L2_BLOCKS, -(-self.cols // _cuda.THREADS_PER_BLOCK))

    def _l2_sizes(self) -> tuple[int, int]:
        """The lengths of :meth:`_l2_device`'s float64 output and int64 tickets."""
        return kernels.L2_SUMS + self.rows * self._l2_blocks(), 1

    @follows()
    def heavy_hitters(
        self, k: int | None = None, *, threshold: float | None = None
    ) -> tuple[Any, Any]:
        """Recover the heavy coordinates: the top-k estimates, or those above a threshold.

        Give exactly one of ``k`` (FetchSGD's ``unSketch(k)``: the ``k``
        estimates of largest magnitude, by descending magnitude) or
        ``threshold`` (``phi``: every ``i`` with ``|x_hat_i| >= phi * l2_estimate()``,
        by ascending index).

        Returns
        -------
        indices : int64 array
        values : array of the sketch's dtype
            The estimates at ``indices``; both on the sketch's device.

        Examples
        --------
        >>> import numpy as np
        >>> from pysketch import CountSketch
        >>> x = np.zeros(1000); x[[10, 20]] = [8.0, -6.0]
        >>> s = CountSketch(d=1000, rows=5, cols=100, seed=3).accumulate(x)
        >>> s.heavy_hitters(threshold=0.5)[0].tolist()
        [10, 20]
        """
        if (k is None) == (threshold is None):
            raise ValueError("give exactly one of k and threshold")
        if k is not None:
            return self._top_estimates(_arrays.check_positive_int("k", k, maximum=self.d))
        threshold = _arrays.check_real("threshold", threshold, finite=False)
        if not 0 <= threshold < math.inf:
            raise ValueError(f"threshold must be finite and non-negative, got {threshold}")
        if self._device == CPU:
            tau = threshold * self.l2_estimate()
            return selection.threshold(self.estimate(), tau, check_finite=False)
        # tau = threshold * sqrt(median) stays on the device: one read, the result's size.
        tau = self._l2_device(threshold)[kernels.L2_THRESHOLD : kernels.L2_THRESHOLD + 1]
        estimates = _arrays.Input(
            self._unsketch(None, reductions.MEDIAN), self._device, self._stream()
        )
        return selection._threshold_device(estimates, tau)

    def _top_estimates(
        self, k: int, *, workspace: Any = None, estimates: Any = None
    ) -> tuple[Any, Any]:
        """``heavy_hitters(k)`` without validating ``k``: the estimates of all ``d``
        coordinates (into ``estimates`` when given), then their top ``k``.

        On CUDA it runs on the table's stream and never reads back; given a
        :class:`~pysketch.selection.TopkWorkspace` of ``(d, k, dtype, sorted=True)``
        and a length-``d`` buffer of the sketch's dtype for the estimates (what a
        compression step keeps), it allocates nothing: 1 + 5 + 4 launches (float32)
        and the result in the workspace's buffers.
        """
        est = self._unsketch(None, reductions.MEDIAN, out=estimates)
        if self._device == CPU:
            return selection.topk(est, k, check_finite=False)
        return selection._topk_device(
            est, est, k, ordered=True, stream=self._stream(), workspace=workspace
        )

    def zero_buckets(self, indices: Any) -> CountSketch:
        """Set to zero every cell ``S[j, h_j(i)]`` that the coordinates ``i`` hash to.

        FetchSGD's released code resets its error and momentum sketches this
        way after applying an update supported on ``indices``, instead of
        subtracting the update's sketch [RPU20]_.

        Parameters
        ----------
        indices : array_like of int, shape (n,)
            Coordinates in ``[0, d)``, on the sketch's device.

        Returns
        -------
        CountSketch
            ``self``.

        Examples
        --------
        >>> import numpy as np
        >>> from pysketch import CountSketch
        >>> s = CountSketch(d=100, rows=3, cols=16, seed=1).accumulate(np.ones(100))
        >>> _ = s.zero_buckets([7])
        >>> s.estimate([7]).tolist()
        [0.0]
        """
        idx = _arrays.as_input(indices, "indices", device=self._device, kind="index")
        _arrays.check_index_range(idx, "indices", self.d)
        self._zero_buckets(idx.array, idx.stream)
        return self

    def _zero_buckets(self, indices: Any, stream: Any = 0) -> None:
        """:meth:`zero_buckets` of indices the library made itself: no checks, no copies."""
        n = int(indices.shape[0])
        if n == 0:
            return
        if self._device == CPU:
            kernels.cpu_zero_buckets(self._table, self._family, self._keys, indices)
        else:
            _cuda.launch(kernels.cuda_zero_buckets, n, stream)(
                self._table, self._family, self._keys, indices
            )

    # ----------------------------------------------------------- arithmetic
    def add(self, other: CountSketch) -> CountSketch:
        """Add ``other``'s table into this one, in place (the sketch of the sum).

        Raises ``ValueError`` unless both share d, rows, cols, seed, hash, dtype and device.
        """
        self.check_compatible(other)
        self._axpy(1.0, other)
        return self

    merge = add

    def subtract(self, other: CountSketch) -> CountSketch:
        """Subtract ``other``'s table, in place (FetchSGD's ``S_e -= S(delta)``)."""
        self.check_compatible(other)
        self._axpy(-1.0, other)
        return self

    def scale(self, factor: float) -> CountSketch:
        """Multiply the table by ``factor``, in place.

        Raises
        ------
        TypeError
            ``factor`` is not a real number (complex included).
        ValueError
            ``factor`` is not finite, or the product would overflow the
            table's dtype (checked against the largest cell first, so the
            table is unchanged).
        """
        factor = _arrays.check_real("factor", factor)
        limit = _arrays.fit_limit(self.dtype)
        peak = self._max_abs()
        with np.errstate(over="ignore"):  # the factor as the table's dtype holds it may round up
            magnitude = max(abs(factor), abs(float(self.dtype.type(factor))))
        # The factor must fit as well: zero cells times an infinite factor are NaN.
        if max(peak, 1.0) * magnitude > limit:
            raise ValueError(
                f"factor {factor:g} would overflow the {self.dtype} table (largest cell "
                f"{peak:g}, largest finite value {np.finfo(self.dtype).max:.7g})"
            )
        self._scale(factor)
        return self

    def _max_abs(self) -> float:
        """The largest ``|cell|`` of the table."""
        if self._device == CPU:
            peaks = np.empty(self.rows)
            reductions.cpu_row_max_abs(self._table, peaks)
            return float(peaks.max())
        stream = self._stream()
        out = _cuda.zeros(1, np.float64, stream=stream)
        flat = self._table.reshape(self._table.size)
        _cuda.launch(reductions.cuda_max_abs, flat.size, stream)(flat, out)
        return float(_cuda.to_host(out, stream)[0])

    def __add__(self, other: CountSketch) -> CountSketch:
        self.check_compatible(other)
        return self.copy().add(other)

    def __sub__(self, other: CountSketch) -> CountSketch:
        self.check_compatible(other)
        return self.copy().subtract(other)

    def __mul__(self, factor: float) -> CountSketch:
        return self.copy().scale(factor)

    __rmul__ = __mul__

    def __iadd__(self, other: CountSketch) -> CountSketch:
        return self.add(other)

    def __isub__(self, other: CountSketch) -> CountSketch:
        return self.subtract(other)

    def __imul__(self, factor: float) -> CountSketch:
        return self.scale(factor)
