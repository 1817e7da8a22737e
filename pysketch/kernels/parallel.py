"""How the CPU kernels use several cores.

Two ways, both safe to call from several Python threads at once:

:func:`task_kernel`
    A serial ``njit(nogil=True, cache=True)`` function that handles a range of
    tasks ``[first, last)``; a call cuts the tasks into one contiguous range
    per thread (``numba.get_num_threads()``, so ``NUMBA_NUM_THREADS`` and
    ``numba.set_num_threads`` apply) and runs the ranges on a pool of Python
    threads, the calling thread taking the first. Numba releases the GIL, so
    the ranges run in parallel. Compiling such a kernel costs about half of
    compiling the same loop with ``parallel=True`` (Numba's parfor lowering
    alone measured 2.5-3 s per kernel), at the same speed, and it needs no
    threading layer. Results depend on how the kernel defines its tasks,
    never on how they are cut among threads.
:func:`parallel_kernel`
    ``njit(parallel=True, cache=True)``, for kernels with a serial step between
    parallel ones. Numba's ``workqueue`` threading layer (its fallback when
    neither TBB nor OpenMP is installed) is not thread-safe: two Python threads
    that launch parallel kernels at the same time abort the process, so calls
    are serialised under one process-wide lock unless the layer in use is
    thread-safe (``tbb`` and ``omp`` are). Numba picks the layer at the first
    parallel launch, so calls are serialised until then; afterwards the check
    is one attribute read.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numba

_LOCK = threading.RLock()
_THREAD_SAFE_LAYERS = ("tbb", "omp")
_layer_is_thread_safe: bool | None = None

_POOL_LOCK = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None


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


class _Dispatching:
    """Forwards attribute reads (``signatures``, ``py_func``, ...) to the Numba dispatcher."""

    def __init__(self, dispatcher: Any) -> None:
        self._dispatcher = dispatcher
        self.__doc__ = dispatcher.__doc__
        self.__name__ = dispatcher.__name__
        self.__wrapped__ = dispatcher.py_func

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dispatcher, name)


class ParallelKernel(_Dispatching):
    """A ``parallel=True`` dispatcher whose calls hold the lock when :func:`serialised`."""

    def __call__(self, *args: Any) -> Any:
        if not serialised():
            return self._dispatcher(*args)
        with _LOCK:
            return self._dispatcher(*args)


def parallel_kernel(fn: Any) -> ParallelKernel:
    """``njit(parallel=True, cache=True)(fn)``, safe to call from several Python threads."""
    return ParallelKernel(numba.njit(parallel=True, cache=True)(fn))


def _thread_pool() -> ThreadPoolExecutor:
    """The process's worker threads (made again in a child forked after they started)."""
    global _pool, _pool_pid
    with _POOL_LOCK:
        if _pool is None or _pool_pid != os.getpid():
            workers = max(1, numba.config.NUMBA_NUM_THREADS - 1)
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="pysketch")
            _pool_pid = os.getpid()
        return _pool


class TaskKernel(_Dispatching):
    """A ``nogil`` dispatcher ``fn(*args, first, last)`` run over its tasks on several threads."""

    def __init__(self, dispatcher: Any, tasks: Callable[..., int]) -> None:
        super().__init__(dispatcher)
        self._tasks = tasks

    def __call__(self, *args: Any) -> None:
        tasks = int(self._tasks(*args))
        threads = min(numba.get_num_threads(), tasks)
        if threads <= 1:
            self._dispatcher(*args, 0, tasks)
            return
        bounds = [t * tasks // threads for t in range(threads + 1)]
        pool = _thread_pool()
        others = [
            pool.submit(self._dispatcher, *args, bounds[t], bounds[t + 1])
            for t in range(1, threads)
        ]
        try:
            self._dispatcher(*args, bounds[0], bounds[1])
        finally:
            wait(others)  # never return while a thread still writes the caller's arrays
        for future in others:
            future.result()  # re-raise a worker's exception


def task_kernel(tasks: Callable[..., int]) -> Callable[[Any], TaskKernel]:
    """Decorate ``fn(*args, first, last)``: compiled ``njit(nogil=True, cache=True)``.

    ``tasks(*args)`` gives the number of tasks of a call; the kernel returns nothing
    (it writes its results, per task where they are reduced afterwards, into arrays).
    """

    def decorate(fn: Any) -> TaskKernel:
        return TaskKernel(numba.njit(nogil=True, cache=True)(fn), tasks)

    return decorate
