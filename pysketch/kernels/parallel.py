"""CPU kernels on Numba's thread pool that several Python threads may call at once.

Numba's ``workqueue`` threading layer (its fallback when neither TBB nor
OpenMP is installed) is not thread-safe: two Python threads that launch
parallel kernels at the same time abort the process. :func:`parallel_kernel`
compiles a function with ``njit(parallel=True, cache=True)`` and serialises
its calls under one process-wide lock unless the layer in use is thread-safe
(``tbb`` and ``omp`` are). Numba picks the layer at the first parallel launch,
so calls are serialised until then; afterwards the check is one attribute read.
"""

from __future__ import annotations

import threading
from typing import Any

import numba

_LOCK = threading.RLock()
_THREAD_SAFE_LAYERS = ("tbb", "omp")
_layer_is_thread_safe: bool | None = None


def serialised() -> bool:
    """Whether pysketch's parallel kernels run one at a time (``workqueue``, or no layer yet)."""
    global _layer_is_thread_safe
    if _layer_is_thread_safe is None:
        try:
            layer = numba.threading_layer()
        except ValueError:  # no parallel kernel has run yet: the layer is not chosen
            return True
        _layer_is_thread_safe = layer in _THREAD_SAFE_LAYERS
    return not _layer_is_thread_safe


class ParallelKernel:
    """A ``parallel=True`` dispatcher whose calls hold the lock when :func:`serialised`."""

    def __init__(self, dispatcher: Any) -> None:
        self._dispatcher = dispatcher
        self.__doc__ = dispatcher.__doc__
        self.__name__ = dispatcher.__name__
        self.__wrapped__ = dispatcher.py_func

    def __call__(self, *args: Any) -> Any:
        if not serialised():
            return self._dispatcher(*args)
        with _LOCK:
            return self._dispatcher(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dispatcher, name)


def parallel_kernel(fn: Any) -> ParallelKernel:
    """``njit(parallel=True, cache=True)(fn)``, safe to call from several Python threads."""
    return ParallelKernel(numba.njit(parallel=True, cache=True)(fn))
