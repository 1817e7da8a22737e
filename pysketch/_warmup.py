"""Compile (or load from Numba's disk cache) every CPU kernel before the first real call.

Numba compiles a kernel on its first call with a new combination of argument
types and, since every CPU kernel of pysketch is declared ``cache=True``,
writes the machine code to its cache (``NUMBA_CACHE_DIR``, or ``__pycache__``
beside the package's sources). :func:`warm_up` makes those first calls on tiny
inputs, for the dtypes the kernels are compiled for (indices are always int64,
values float32 or float64), so that later calls of any size are warm.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["GROUPS", "warm_up"]

_DTYPES = ("float32", "float64")


def _primitives(dtype: np.dtype) -> dict[str, Any]:
    from pysketch import (
        CountMinSketch,
        CountSketch,
        ErrorFeedback,
        gather,
        randomk,
        scatter,
        threshold,
        topk,
    )

    d = 64
    x = np.linspace(-1.0, 1.0, d).astype(dtype)
    idx = np.arange(0, d, 7)

    def count_sketch():
        sketch = CountSketch(d, 3, 16, dtype=dtype)
        sketch.accumulate(x).accumulate_sparse(idx, x[idx])
        sketch.estimate()
        sketch.estimate(idx)
        sketch.desketch()
        sketch.heavy_hitters(k=4)
        sketch.heavy_hitters(threshold=0.5)
        sketch.zero_buckets(idx)

    def count_min():
        cms = CountMinSketch(3, 16, dtype=dtype)
        cms.update(idx, np.abs(x[idx])).update(idx).update_dense(np.abs(x))
        cms.estimate(idx)
        CountMinSketch(3, 16, dtype=dtype, conservative=True).update(idx, np.abs(x[idx]))

    def selections():
        topk(x, 4)
        topk(np.tile(x, 600), 4)  # the parallel radix path (beyond the serial size)
        topk(np.tile(x, 600), 4, sorted=False)  # few candidates: gathered (32-bit indices)
        # sorted=False beyond 262 144 candidates: ranged histograms, index-order compaction
        topk(np.tile(x, 4200), 265_000, sorted=False)
        threshold(x, 0.5)
        gather(x, idx)
        scatter(idx, x[idx], d)
        randomk(d, 4, seed=1)

    def error_feedback():
        memory = ErrorFeedback(d, dtype=dtype)
        memory.add(x)
        memory.subtract_sparse(idx, x[idx])

    return {
        "CountSketch": count_sketch,
        "CountMinSketch": count_min,
        "selection": selections,
        "ErrorFeedback": error_feedback,
    }


GROUPS = ("CountSketch", "CountMinSketch", "selection", "ErrorFeedback")


def warm_up(
    dtypes: Iterable[Any] = _DTYPES,
    *,
    groups: Iterable[str] | None = None,
    verbose: bool = False,
) -> dict[str, float]:
    """Compile or load every CPU kernel for ``dtypes``; return the seconds each group took.

    The first run on a machine compiles (tens of seconds in all) and fills
    Numba's cache; later runs, in any process that sees the same cache
    directory, only load it (well under a second in all). Under MPI use
    :func:`pysketch.distributed.warm_up`, which lets one rank per node compile
    while the others wait.

    Parameters
    ----------
    dtypes : iterable of {"float32", "float64"}, default both
        Table and value dtypes to prepare.
    groups : iterable of str, optional
        Which of ``"CountSketch"``, ``"CountMinSketch"``, ``"selection"``
        (top-k, threshold, gather, scatter, random-k) and ``"ErrorFeedback"``
        to prepare; all when omitted.
    verbose : bool, default False
        Print one line per group as it finishes.

    Returns
    -------
    dict
        Seconds per group (``"CountSketch"``, ``"CountMinSketch"``,
        ``"selection"``, ``"ErrorFeedback"``, per dtype) and ``"total"``.

    Examples
    --------
    >>> from pysketch import warm_up
    >>> seconds = warm_up(["float64"])
    >>> sorted(seconds)[:2], seconds["total"] >= 0
    (['CountMinSketch[float64]', 'CountSketch[float64]'], True)
    """
    from pysketch._arrays import check_float_dtype

    checked = [check_float_dtype("dtypes", dt) for dt in dtypes]
    chosen = GROUPS if groups is None else tuple(groups)
    unknown = sorted(set(chosen) - set(GROUPS))
    if unknown:
        raise ValueError(f"groups must be among {GROUPS}, got {unknown}")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    for dtype in checked:
        for name, run in _primitives(dtype).items():
            if name not in chosen:
                continue
            t0 = time.perf_counter()
            run()
            key = f"{name}[{dtype}]"
            seconds[key] = time.perf_counter() - t0
            if verbose:
                print(f"warm-up {key}: {seconds[key]:.2f} s", flush=True)
    seconds["total"] = time.perf_counter() - start
    return seconds
