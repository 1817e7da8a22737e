"""Count-Min sketch: frequency estimates of non-negative weights, never too low.

A ``rows x cols`` table ``S`` with ``S[j, h_j(i)] += w`` for every update
``(i, w)``, ``w >= 0``; the estimate of the total weight of ``i`` is
``min_j S[j, h_j(i)]`` [CM05]_. Every cell an index hits holds its whole
weight plus that of its colliders, so the estimate never under-estimates;
with ``cols = ceil(e / eps)`` and ``rows = ceil(ln(1 / delta))`` it
over-estimates by more than ``eps * ||w||_1`` with probability at most
``delta``. In gradient compression it runs on squared or absolute gradient
entries to find the l2 or l1 heavy coordinates.

The API follows Apache DataSketches' ``count_min_sketch`` (update, estimate,
upper and lower bound, total weight, merge, suggested sizes), on index keys
and on both the CPU and CUDA.

References
----------
.. [CM05] G. Cormode, S. Muthukrishnan, "An improved data stream summary: the
   count-min sketch and its applications", Journal of Algorithms 55(1), 2005.
.. [EV02] C. Estan, G. Varghese, "New directions in traffic measurement and
   accounting", SIGCOMM 2002 (the conservative update).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pysketch import _arrays, _cuda, hashing
from pysketch._arrays import CPU, Input
from pysketch._base import TableSketch
from pysketch._frameworks import follows
from pysketch.kernels import countmin as kernels
from pysketch.kernels import elementwise
from pysketch.kernels.reductions import MAX_ROWS

__all__ = ["CountMinSketch"]

_INDEX_BOUND = hashing.MAX_INDEX + 1  # indices lie in [0, 2^61 - 1)
# Rows may drift this far from the total weight by rounding before a file counts as inconsistent.
_ROW_SUM_RTOL = 1e-3


class CountMinSketch(TableSketch):
    """A Count-Min sketch of non-negative weights on integer keys or str/bytes items.

    Parameters
    ----------
    rows : int
        Number of hash rows ``r`` (at most 64): the over-estimate exceeds
        ``eps * total_weight`` with probability at most ``exp(-r)``. See
        :meth:`suggest_rows`.
    cols : int
        Buckets per row ``c`` (below ``2**32``): ``eps = e / c``. See
        :meth:`suggest_cols`.
    seed : int or None, default 0
        Seed of the hash functions, in ``[0, 2**64)``. Sketches merge only
        when they share it. ``None`` draws a random one, recorded in ``.seed``.
    hash : {"mix", "polynomial"}, default "mix"
        Hash family (see :mod:`pysketch.hashing`). Only the bucket hash is used.
    dtype : {numpy.float64, numpy.float32}, default numpy.float64
        Dtype of the table. Weights are converted to it before they are added.
    conservative : bool, default False
        Conservative update [EV02]_: an update raises only the cells below
        ``min + w`` to ``min + w`` instead of adding ``w`` to all of them. Never
        worse than the plain update and still never an under-estimate, but the
        table is no longer linear in the input. One call is one batch: the
        weights of each key in the call are summed first, every key's
        ``min + W`` is taken from the table as it was before the call, and each
        cell is raised to the largest of those of the keys hitting it. So the
        result does not depend on the order of the updates within a call (only
        the float64 sums of a key's repeated weights do, in their last bits,
        and only on CUDA) and it runs in parallel; updating one key per call
        gives Estan and Varghese's sequential update.
    device : {"cpu", "cuda"}, default "cpu"
        Where the table lives and the kernels run; inputs must be on the same
        device.

    Attributes
    ----------
    table : array of shape (rows, cols)
        The counters, on ``device``.

    Notes
    -----
    ``total_weight`` is kept on the host and is not part of ``table``: code
    that reduces tables directly (an allreduce) must reduce it as well, or
    use :meth:`merge`.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.countmin import CountMinSketch
    >>> cms = CountMinSketch(rows=4, cols=64, seed=1)
    >>> _ = cms.update([3, 3, 7, 12], [2.0, 1.0, 5.0, 0.5])
    >>> cms.estimate([3, 7, 12]).tolist()
    [3.0, 5.0, 0.5]
    >>> cms.total_weight
    8.5

    The estimate may exceed the truth (never undershoot it); the upper bound
    adds ``eps * total_weight``:

    >>> bool(cms.upper_bound([3])[0] >= cms.estimate([3])[0] >= 3.0)
    True
    """

    _PARAMS = ("rows", "cols", "seed", "hash", "dtype", "conservative")
    _EXTRA_STATE = ("total_weight",)

    def __init__(
        self,
        rows: int,
        cols: int,
        *,
        seed: int = 0,
        hash: str = hashing.DEFAULT_FAMILY,
        dtype: Any = np.float64,
        conservative: bool = False,
        device: str = CPU,
    ) -> None:
        conservative = _arrays.check_bool("conservative", conservative)
        self._init_hashed_table(rows, cols, seed, hash, dtype, device)
        self.conservative = conservative
        self._total_weight = 0.0

    # ------------------------------------------------------------ properties
    @property
    def total_weight(self) -> float:
        """Sum of every weight added (``||w||_1``), merges included.

        A float64 sum of the weights as the table stores them (converted to its dtype).
        """
        return self._total_weight

    @property
    def relative_error(self) -> float:
        """``eps = e / cols``: the over-estimate bound per unit of total weight."""
        return math.e / self.cols

    # ------------------------------------------------------------ sizing
    @classmethod
    def suggest_cols(cls, eps: float) -> int:
        """Buckets per row for relative error ``eps``: ``ceil(e / eps)``.

        Parameters
        ----------
        eps : float
            Target over-estimate as a fraction of the total weight, ``> 0``.

        Examples
        --------
        >>> from pysketch.countmin import CountMinSketch
        >>> CountMinSketch.suggest_cols(0.01)
        272
        """
        eps = _arrays.check_real("eps", eps, finite=False)
        if not 0.0 < eps < math.inf:
            raise ValueError(f"eps must be positive and finite, got {eps}")
        cols = math.ceil(math.e / eps)
        if cols > hashing.MAX_COLS:
            raise ValueError(f"eps={eps} needs {cols} columns, more than {hashing.MAX_COLS}")
        return cols

    @classmethod
    def suggest_rows(cls, delta: float) -> int:
        """Rows for failure probability ``delta``: ``ceil(ln(1 / delta))`` (at least 1).

        Parameters
        ----------
        delta : float
            Probability that one estimate exceeds its bound, in ``(0, 1)``.

        Examples
        --------
        >>> from pysketch.countmin import CountMinSketch
        >>> CountMinSketch.suggest_rows(0.01)
        5
        """
        delta = _arrays.check_real("delta", delta, finite=False)
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must lie in (0, 1), got {delta}")
        rows = max(1, math.ceil(-math.log(delta)))
        if rows > MAX_ROWS:
            raise ValueError(f"delta={delta} needs {rows} rows, more than {MAX_ROWS}")
        return rows

    # ------------------------------------------------------------ updates
    @follows("indices", "weights", record=True)
    def update(self, indices: Any, weights: Any = 1.0) -> CountMinSketch:
        """Add ``weights[t]`` to key ``indices[t]`` for every ``t``, in order.

        Parameters
        ----------
        indices : array_like of int, shape (n,)
            Keys in ``[0, 2**61 - 1)``, on the sketch's device; or one key, or a
        list of str/bytes items (hashed by :func:`pysketch.hashing.item_key`,
        the same in every process). Repeats add up.
        weights : float or array_like, shape (n,), default 1.0
            Non-negative finite weights: one scalar for all keys (a host
            number on either device), or one per key on the sketch's device.
            Each must fit the table's dtype, and the update is refused when
            it would take :attr:`total_weight` beyond half the dtype's
            largest value (so that no counter can overflow).

        Returns
        -------
        CountMinSketch
            ``self``. On any invalid input it raises (naming the argument)
            before changing anything. One call of a conservative sketch is
            one batch (see ``conservative``).

        Examples
        --------
        >>> import numpy as np
        >>> from pysketch.countmin import CountMinSketch
        >>> cms = CountMinSketch(rows=3, cols=32).update(np.array([1, 2, 1]))
        >>> cms.estimate([1, 2]).tolist(), cms.total_weight
        ([2.0, 1.0], 3.0)
        """
        indices, _ = self._item_keys(indices)
        idx = _arrays.as_input(indices, "indices", device=self._device, kind="index")
        if _is_scalar(weights):
            values, vstep, added = self._scalar_weight(weights, idx.size)
            self._check_inputs(idx, None, "weights")
        else:
            val = _arrays.kernel_values(_arrays.as_input(weights, "weights", device=self._device))
            _arrays.check_same_length(idx, "indices", val, "weights")
            added = self._check_inputs(idx, val, "weights")
            values, vstep = _arrays.detached(val, self._table).array, 1
        idx = _arrays.detached(idx, self._table)
        self._check_total(added, "weights")
        self._apply(idx.array, False, values, vstep, idx.size, idx.stream, added)
        return self

    @follows("x", record=True)
    def update_dense(self, x: Any) -> CountMinSketch:
        """Add ``x[i]`` to key ``i`` for every position ``i`` of a dense vector.

        Parameters
        ----------
        x : array_like, shape (d,)
            Non-negative finite values on the sketch's device (``|g|`` or
            ``g**2`` of a gradient, say); zeros cost a pass but change nothing.

        Returns
        -------
        CountMinSketch
            ``self``.

        Examples
        --------
        >>> import numpy as np
        >>> from pysketch.countmin import CountMinSketch
        >>> g = np.array([0.5, -3.0, 0.0, 1.0])
        >>> cms = CountMinSketch(rows=3, cols=64, seed=4).update_dense(np.abs(g))
        >>> cms.estimate([0, 1, 3]).tolist()
        [0.5, 3.0, 1.0]
        """
        inp = _arrays.kernel_values(_arrays.as_input(x, "x", device=self._device))
        if inp.size > _INDEX_BOUND:
            raise ValueError(f"x must have at most {_INDEX_BOUND} entries, got {inp.size}")
        added = self._check_inputs(None, inp, "x")
        self._check_total(added, "x")
        values = _arrays.detached(inp, self._table).array
        self._apply(self._no_indices, True, values, 1, inp.size, inp.stream, added)
        return self

    def _scalar_weight(self, weight: Any, n: int) -> tuple[Any, int, float]:
        # A scalar is a one-element array read with stride 0 by the kernels.
        val = _arrays.kernel_values(_arrays.as_input(weight, "weights", device=CPU, ndim=0))
        w = float(val.array)
        if not math.isfinite(w):
            raise ValueError(f"weights must be finite, got {w}")
        _arrays.raise_unfit("weights", 0, int(abs(w) > _arrays.fit_limit(self.dtype)), self.dtype)
        if w < 0:
            raise ValueError(f"weights must be non-negative, got {w}")
        # In the table's dtype, as the kernels convert it anyway (the same value):
        # the kernel is then compiled once for arrays and scalars.
        host = np.asarray(val.array, dtype=self.dtype).reshape(1)
        values = host if self._device == CPU else _cuda.to_device(host)
        return values, 0, float(self.dtype.type(w)) * n

    def _check_inputs(self, idx: Input | None, weights: Input | None, name: str) -> float:
        """Refuse keys outside ``[0, 2**61 - 1)`` and non-finite, overflowing or negative
        weights (named ``name``); the float64 sum of the weights otherwise.

        The sum is of the weights as the table stores them (converted to its dtype).
        On CUDA one kernel checks both and one read brings its counts back.
        """
        if self._device == CPU:
            if idx is not None:
                _arrays.check_index_range(idx, "indices", _INDEX_BOUND)
            if weights is None:
                return 0.0
            args = (weights.array, _arrays.fit_limit(self.dtype), self.dtype == np.float32)
            nonfinite, overflow, negative, total = kernels.cpu_weight_stats(*args)
            outside = 0
        else:
            stats = self._device_stats(idx, weights)
            nonfinite, overflow, negative, outside, total = (
                stats[c]
                for c in (
                    kernels.STAT_NONFINITE,
                    kernels.STAT_OVERFLOW,
                    kernels.STAT_NEGATIVE,
                    kernels.STAT_OUT_OF_RANGE,
                    kernels.STAT_TOTAL,
                )
            )
        _arrays.raise_out_of_range("indices", int(outside), _INDEX_BOUND)
        _arrays.raise_unfit(name, int(nonfinite), int(overflow), self.dtype)
        if negative:
            raise ValueError(
                f"{name} must be non-negative (Count-Min counts weights), "
                f"found {int(negative)} negative value(s)"
            )
        return float(total)

    def _device_stats(self, idx: Input | None, weights: Input | None) -> np.ndarray:
        """Row 0 of :func:`~pysketch.kernels.countmin.cuda_weight_stats`, read back once."""
        inp = weights if weights is not None else idx
        n, stream = inp.size, inp.stream
        blocks = max(1, min(kernels.STATS_BLOCKS, -(-n // _cuda.THREADS_PER_BLOCK)))
        out = _cuda.empty((1 + blocks, kernels.STATS), np.float64, stream=stream)
        tickets = _cuda.zeros(1, np.int64, stream=stream)
        indices = self._no_indices if idx is None else idx.array
        upper = np.uint64(_INDEX_BOUND) if np.dtype(indices.dtype).kind == "u" else _INDEX_BOUND
        values = self._no_indices if weights is None else weights.array
        _cuda.launch(kernels.cuda_weight_stats, n, stream, max_blocks=blocks)(
            n,
            indices,
            upper,
            idx is not None,
            values,
            _arrays.fit_limit(self.dtype),
            self.dtype == np.float32,
            weights is not None,
            tickets,
            out,
        )
        return _cuda.to_host(out[0])

    def _check_total(self, added: float, name: str) -> None:
        """Refuse what would take ``total_weight`` past half the dtype's largest value.

        No counter exceeds the total weight (every update adds at most its
        weight to a cell), so with this bound no counter can overflow to inf.
        """
        limit = float(np.finfo(self.dtype).max) / 2
        total = self._total_weight + added
        if total > limit:
            raise ValueError(
                f"{name} would take total_weight to {total:.7g}, beyond what {self.dtype} "
                f"counters hold safely ({limit:.7g}); pysketch refuses updates that could "
                "overflow a counter (use dtype=numpy.float64)"
            )

    def _apply(
        self, indices: Any, dense: bool, values: Any, vstep: int, n: int, stream: Any, added: float
    ) -> None:
        if n:
            if self.conservative:
                self._raise_conservatively(indices, dense, values, vstep, n, stream)
            elif self._device == CPU:
                kernels.cpu_update(
                    self._table, self._family, self._keys, indices, dense, values, vstep, n, False
                )
            else:
                _cuda.launch(kernels.cuda_update, n, stream)(
                    self._table, self._family, self._keys, indices, dense, values, vstep, n
                )
        self._total_weight += added

    def _raise_conservatively(
        self, indices: Any, dense: bool, values: Any, vstep: int, n: int, stream: Any
    ) -> None:
        """The conservative update of one batch (see ``conservative``): the keys' weight
        sums, their targets from the table as it is, then the cells raised to them."""
        single = self.dtype == np.float32
        sketch = (self._table, self._family, self._keys)
        if self._device == CPU:
            if dense:
                keys, weights = self._no_indices, values
            else:
                keys, weights = kernels.cpu_sum_by_key(indices, values, vstep, n, single)
            targets = np.empty(weights.shape[0])
            kernels.cpu_query(*sketch, keys, dense, 0.0, False, targets)
            kernels.cpu_targets(targets, weights, dense, single)
            kernels.cpu_update(*sketch, keys, dense, targets, 1, targets.shape[0], True)
            return
        if dense:  # the keys are the positions: no table needed to gather them
            slot_keys, targets, weights = (
                self._no_indices,
                _cuda.empty(n, np.float64, stream),
                values,
            )
        else:
            size = kernels.slots_for(n)
            slot_keys = _cuda.empty(size, np.int64, stream=stream)
            _cuda.launch(elementwise.cuda_fill, size, stream)(slot_keys, kernels.EMPTY)
            targets = weights = _cuda.zeros(size, np.float64, stream=stream)
            _cuda.launch(kernels.cuda_sum_by_key, n, stream)(
                indices, values, vstep, n, single, slot_keys, weights
            )
        size = targets.shape[0]
        _cuda.launch(kernels.cuda_conservative_targets, size, stream)(
            *sketch, slot_keys, weights, dense, single, targets
        )
        _cuda.launch(kernels.cuda_conservative_raise, size, stream)(
            *sketch, slot_keys, dense, targets
        )

    # ------------------------------------------------------------ queries
    @follows("indices")
    def estimate(self, indices: Any) -> Any:
        """Estimated total weight of each key: ``min_j S[j, h_j(i)]``.

        Never below the true total; above it by more than
        ``relative_error * total_weight`` with probability at most ``exp(-rows)``.

        Parameters
        ----------
        indices : array_like of int, shape (n,)
            Keys in ``[0, 2**61 - 1)``, on the sketch's device.

        Returns
        -------
        array of the sketch's dtype, shape (n,), on the sketch's device
            Or a float, for one key or item.

        Examples
        --------
        >>> from pysketch.countmin import CountMinSketch
        >>> CountMinSketch(rows=2, cols=16).update([5], 4.0).estimate([5]).tolist()
        [4.0]

        Items may be strings or bytes, and a single one gives a number:

        >>> words = CountMinSketch(rows=4, cols=64).update(["to", "be", "or", "not", "to", "be"])
        >>> words.estimate("to"), words.estimate(["be", "or"]).tolist()
        (2.0, [2.0, 1.0])
        """
        return self._query(indices, 0.0, False)

    @follows("indices")
    def upper_bound(self, indices: Any) -> Any:
        """``estimate + relative_error * total_weight``, as DataSketches' ``get_upper_bound``.

        The estimate alone already bounds the true weight from above, surely;
        this is the larger value DataSketches reports as the upper end of the
        estimate's error interval.

        Parameters
        ----------
        indices : array_like of int, shape (n,)

        Returns
        -------
        array of the sketch's dtype, shape (n,), on the sketch's device

        Examples
        --------
        >>> from pysketch.countmin import CountMinSketch
        >>> cms = CountMinSketch(rows=2, cols=272).update([5], 100.0)
        >>> round(float(cms.upper_bound([5])[0]), 3)
        100.999
        """
        return self._query(indices, self.relative_error * self._total_weight, False)

    @follows("indices")
    def lower_bound(self, indices: Any) -> Any:
        """``max(estimate - relative_error * total_weight, 0)``: a probabilistic lower bound.

        With probability at least ``1 - exp(-rows)`` the true weight of a key
        is at least this. (DataSketches' ``get_lower_bound`` returns the
        estimate itself, which for non-negative weights bounds the truth from
        above; this returns the bound on the true weight instead.)

        Parameters
        ----------
        indices : array_like of int, shape (n,)

        Returns
        -------
        array of the sketch's dtype, shape (n,), on the sketch's device

        Examples
        --------
        >>> import numpy as np
        >>> from pysketch.countmin import CountMinSketch
        >>> cms = CountMinSketch(rows=2, cols=272).update([5, 6], [100.0, 1.0])
        >>> np.round(cms.lower_bound([5, 6]), 2).tolist()
        [98.99, 0.0]
        """
        return self._query(indices, -self.relative_error * self._total_weight, True)

    def _item_keys(self, indices: Any) -> tuple[Any, bool]:
        """Items (str, bytes, integers; one or a sequence) as keys; whether it was one item."""
        if isinstance(indices, (str, bytes, bytearray)) or _is_scalar(indices):
            keys = hashing.item_keys([_item(indices)])
            return (keys if self._device == CPU else _cuda.to_device(keys)), True
        if isinstance(indices, (list, tuple)) and any(
            isinstance(item, (str, bytes, bytearray)) for item in indices
        ):
            keys = hashing.item_keys(indices)
            return (keys if self._device == CPU else _cuda.to_device(keys)), False
        return indices, False

    def _query(self, indices: Any, shift: float, clamp: bool) -> Any:
        indices, scalar = self._item_keys(indices)
        inp = _arrays.as_input(indices, "indices", device=self._device, kind="index")
        _arrays.check_index_range(inp, "indices", _INDEX_BOUND)
        sketch = (self._table, self._family, self._keys, inp.array)
        if self._device == CPU:
            out = np.empty(inp.size, dtype=self.dtype)
            kernels.cpu_query(*sketch, False, float(shift), clamp, out)
        else:
            out = _cuda.empty(inp.size, self.dtype, stream=inp.stream)
            if inp.size:
                _cuda.launch(kernels.cuda_query, inp.size, inp.stream)(
                    *sketch, float(shift), clamp, out
                )
        if scalar:
            return float(out[0] if self._device == CPU else _cuda.to_host(out)[0])
        return out

    # ------------------------------------------------------------ combining
    def merge(self, other: CountMinSketch) -> CountMinSketch:
        """Add ``other``'s counters and total weight into this sketch, in place.

        The result is the sketch of both inputs (for conservative sketches a
        valid, if looser, one: it still never under-estimates).

        Raises
        ------
        TypeError
            ``other`` is not a :class:`CountMinSketch`.
        ValueError
            Any parameter or the device differs; this sketch is unchanged.

        Examples
        --------
        >>> from pysketch.countmin import CountMinSketch
        >>> a = CountMinSketch(rows=3, cols=32).update([1], 2.0)
        >>> b = CountMinSketch(rows=3, cols=32).update([1, 9], [1.0, 4.0])
        >>> a.merge(b).estimate([1, 9]).tolist(), a.total_weight
        ([3.0, 4.0], 7.0)
        """
        self.check_compatible(other)
        added = other._total_weight  # read first: other may be self
        self._check_total(added, "other")
        self._axpy(1.0, other)
        self._total_weight += added
        return self

    def __add__(self, other: CountMinSketch) -> CountMinSketch:
        """A new sketch: the merge of both (``sum(sketches)`` works too)."""
        self.check_compatible(other)
        return self.copy().merge(other)

    def __iadd__(self, other: CountMinSketch) -> CountMinSketch:
        return self.merge(other)

    def zero(self) -> CountMinSketch:
        """Reset every counter and the total weight to 0, in place. Returns ``self``."""
        super().zero()
        self._total_weight = 0.0
        return self

    # ---------------------------------------------------- summed over ranks
    def _summed_state(self) -> float:
        """The total weight: additive, so collectives sum it with the table."""
        return self._total_weight

    def _set_summed_state(self, value: float) -> None:
        """Adopt the total weight summed over ranks (the table is not read)."""
        self._total_weight = float(value)

    # --------------------------------------------------------- serialisation
    def _extra_state(self) -> dict[str, np.ndarray]:
        return {"total_weight": np.asarray(self._total_weight, dtype=np.float64)}

    def _restore_extra_state(self, fields: dict[str, np.ndarray], source: str) -> None:
        raw = fields["total_weight"]
        if raw.shape != () or raw.dtype.kind != "f":
            raise ValueError(
                f"{source}: total_weight must be a float scalar, "
                f"got {raw.dtype} of shape {raw.shape}"
            )
        total = float(raw)
        if not 0.0 <= total < math.inf:
            raise ValueError(f"{source}: total_weight must be finite and non-negative, got {total}")
        self._total_weight = total

    def _check_state(self, source: str) -> None:
        """Finite, non-negative counters whose rows add up to ``total_weight``.

        Every update adds its weight to one cell per row (the conservative
        update at most that), so each row sums to the total weight (at most
        the total weight), up to a relative ``_ROW_SUM_RTOL`` for rounding.
        """
        super()._check_state(source)
        host = self._table if self._device == CPU else self.table_to_host()
        negative = int(np.count_nonzero(host < 0))
        if negative:
            raise ValueError(f"{source}: table holds {negative} negative counter(s)")
        sums = host.sum(axis=1, dtype=np.float64)
        total = self._total_weight
        slack = _ROW_SUM_RTOL * total
        low = -math.inf if self.conservative else total - slack
        bad = (sums > total + slack) | (sums < low)
        if bad.any():
            rule = "at most" if self.conservative else "equal to"
            raise ValueError(
                f"{source}: total_weight {total} is inconsistent with the table: every row "
                f"must sum to {rule} it (row {int(np.argmax(bad))} sums to {sums[bad][0]})"
            )


def _item(value: Any) -> Any:
    """A 0-d array or NumPy scalar as the Python item it holds."""
    return value.item() if hasattr(value, "item") else value


def _is_scalar(obj: Any) -> bool:
    return not _cuda.is_cuda_array(obj) and np.ndim(obj) == 0
