"""How the CPU kernels use several cores: task kernels on a pool of Python threads.

A kernel is a serial ``njit(nogil=True, cache=True)`` function that handles a
range of tasks ``[first, last)`` (:func:`task_kernel`). A call cuts the tasks
into one contiguous range per thread (:func:`num_threads`: ``NUMBA_NUM_THREADS``,
``numba.set_num_threads`` and the rank's share set by
:func:`pysketch.distributed.configure_threads` apply) and runs the ranges
on a pool of Python threads, the calling thread taking the first; Numba
releases the GIL, so they run in parallel. A kernel with a serial step between
parallel ones is two task kernels with the step in NumPy between them.

Why not ``njit(parallel=True)``: compiling such a kernel costs about twice as
much (Numba's parfor lowering alone measured 2.5-3 s per kernel) for the same
speed, and Numba's ``workqueue`` threading layer, its fallback when neither
TBB nor OpenMP is installed, aborts the process when two Python threads launch
parallel kernels at once. Task kernels need no threading layer, so several
Python threads may call them concurrently (each call waits for its own
ranges only). Results depend on how a kernel defines its tasks, never on how
they are cut among threads.

Inside the kernels, an array indexed by a loop variable whose start is not a
constant (a task's first element, ``c * chunk``) is indexed as ``x[np.uintp(i)]``:
Numba then skips its negative-index wrap-around test, which otherwise keeps the
loop from vectorising (the finiteness count ran 2x faster).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numba

_POOL_LOCK = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_share: int | None = None  # this process's threads per call, from configure_threads


def num_threads() -> int:
    """Threads a kernel call uses: Numba's count for the calling thread, capped by the share.

    Numba's count is ``numba.get_num_threads()`` once Numba's threading layer
    runs (then ``numba.set_num_threads`` applies to the calling thread), and
    ``NUMBA_NUM_THREADS`` before. pysketch never launches that layer itself:
    Numba's OpenMP layer sets the launching thread's OpenMP thread count to
    ``NUMBA_NUM_THREADS``, and PyTorch in the same process reads that count
    for its own intra-op threads, whose reductions then add in another order
    (a DDP run gave other parameters at ``NUMBA_NUM_THREADS=1`` and ``2``).
    The share (:func:`set_thread_share`, set by
    :func:`~pysketch.distributed.configure_threads` under a launcher) applies
    to every thread of the process: ``numba.set_num_threads`` can lower the
    count below it, not raise it (``NUMBA_NUM_THREADS`` or
    ``PYSKETCH_AUTO_THREADS=0`` leave the share unset).

    Examples
    --------
    >>> from pysketch.kernels.parallel import num_threads, set_thread_share
    >>> set_thread_share(1)
    >>> num_threads()
    1
    >>> set_thread_share(None)  # undo
    """
    from numba.np.ufunc import parallel as layer

    launched = getattr(layer, "_is_initialized", True)
    count = numba.get_num_threads() if launched else numba.config.NUMBA_NUM_THREADS
    return count if _share is None else min(count, _share)


def set_thread_share(threads: int | None) -> None:
    """Cap every kernel call of this process at ``threads`` threads (``None``: no cap)."""
    global _share
    if threads is not None and (
        isinstance(threads, bool) or int(threads) != threads or threads < 1
    ):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    _share = None if threads is None else int(threads)


def _forget_pool_after_fork() -> None:
    # A forked child has none of the parent's threads (and maybe a lock taken by one
    # of them): it starts a pool of its own on its first kernel call.
    global _pool, _POOL_LOCK
    _pool = None
    _POOL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _thread_pool() -> ThreadPoolExecutor:
    """The process's worker threads, started on first use."""
    global _pool
    with _POOL_LOCK:
        if _pool is None:
            workers = max(1, numba.config.NUMBA_NUM_THREADS - 1)
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="pysketch")
        return _pool


class TaskKernel:
    """A ``nogil`` dispatcher ``fn(*args, first, last)`` run over its tasks on several threads.

    Attribute reads (``signatures``, ``py_func``, ...) go to the Numba dispatcher.
    """

    def __init__(self, dispatcher: Any, tasks: Callable[..., int]) -> None:
        self._dispatcher = dispatcher
        self._tasks = tasks
        self.__doc__ = dispatcher.__doc__
        self.__name__ = dispatcher.__name__
        self.__wrapped__ = dispatcher.py_func

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dispatcher, name)

    def __call__(self, *args: Any) -> None:
        tasks = int(self._tasks(*args))
        threads = min(num_threads(), tasks)
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


# The usual ways a call's arguments give its number of tasks, for ``task_kernel(tasks=...)``.


def length_of(position: int) -> Callable[..., int]:
    """Tasks: the length of argument ``position`` (one per table row, histogram row, ...)."""
    return lambda *args: args[position].shape[0]


def blocks_of(position: int, size: int) -> Callable[..., int]:
    """Tasks: argument ``position`` cut into blocks of ``size`` entries (the last one shorter)."""
    return lambda *args: -(-args[position].shape[0] // size)


def intervals_of(position: int) -> Callable[..., int]:
    """Tasks: the intervals between the boundaries in argument ``position`` (offsets)."""
    return lambda *args: args[position].shape[0] - 1


def task_kernel(tasks: Callable[..., int]) -> Callable[[Any], TaskKernel]:
    """Decorate ``fn(*args, first, last)``: compiled ``njit(nogil=True, cache=True)``.

    ``tasks(*args)`` gives the number of tasks of a call; the kernel returns nothing
    (it writes its results, per task where they are reduced afterwards, into arrays).
    """

    def decorate(fn: Any) -> TaskKernel:
        return TaskKernel(numba.njit(nogil=True, cache=True)(fn), tasks)

    return decorate
