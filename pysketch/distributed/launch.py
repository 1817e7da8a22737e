"""Starting MPI jobs well: threads per rank, and one compilation per node.

Two things go wrong when several ranks of a job share a machine:

* every rank starts as many Numba threads as the machine has cores, so ``W``
  ranks run ``W`` times too many threads (2 ranks x 2 threads on 2 cores made
  accumulate 4x slower). :func:`configure_threads`, run when
  :mod:`pysketch.distributed` is imported (the launcher's variables: MPI,
  Slurm, torchrun) and by the DDP hook when it first meets its process group
  (``torch.multiprocessing.spawn`` sets no variable: the hook counts the ranks
  on this host), gives each rank its share of the cores unless the user chose
  (``NUMBA_NUM_THREADS`` set);
* every rank compiles the same kernels at once on a cold cache.
  :func:`warm_up` lets one rank per node compile (filling Numba's disk cache)
  while the others wait without spinning, then load.

This module imports mpi4py only inside :func:`warm_up`.
"""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = ["LOCAL_SIZE_VARIABLES", "configure_threads", "local_size", "warm_up"]

# Launchers' variables holding the number of ranks on this node.
LOCAL_SIZE_VARIABLES = (
    "OMPI_COMM_WORLD_LOCAL_SIZE",  # Open MPI
    "MPI_LOCALNRANKS",  # MPICH / Hydra
    "MV2_COMM_WORLD_LOCAL_SIZE",  # MVAPICH
    "PMI_LOCAL_SIZE",
    "SLURM_NTASKS_PER_NODE",
    "LOCAL_WORLD_SIZE",  # torchrun (torch.distributed.run)
)


def local_size(environ: Any = None) -> int | None:
    """Ranks on this node according to the launcher's environment, or ``None``.

    Examples
    --------
    >>> from pysketch.distributed import local_size
    >>> local_size({"OMPI_COMM_WORLD_LOCAL_SIZE": "4"})
    4
    >>> local_size({}) is None
    True
    """
    environ = os.environ if environ is None else environ
    for name in LOCAL_SIZE_VARIABLES:
        value = environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def _cores() -> int:
    """Cores this process may run on (its affinity mask when the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_threads(environ: Any = None, *, local_ranks: int | None = None) -> int | None:
    """Give this rank ``cores // ranks on this node`` kernel threads; return the count set.

    Does nothing (returns ``None``) when ``NUMBA_NUM_THREADS`` is set, when
    ``PYSKETCH_AUTO_THREADS=0``, or when neither ``local_ranks`` nor a launcher
    variable names the local rank count (see :data:`LOCAL_SIZE_VARIABLES`).
    When the launcher bound the rank to fewer cores than the machine has, the
    binding is the share. The share caps every pysketch kernel call of the
    process, from any thread (:func:`pysketch.kernels.parallel.num_threads`);
    it does not call ``numba.set_num_threads``, whose first call would start
    Numba's threading layer, and Numba's OpenMP layer changes the OpenMP thread
    count that PyTorch's CPU kernels use.

    Parameters
    ----------
    environ : mapping, optional
        The environment to read (``os.environ`` by default).
    local_ranks : int, optional
        The ranks on this node, when the caller counted them (the DDP hook
        does, for ``torch.multiprocessing.spawn``); the environment's count
        otherwise.

    Examples
    --------
    >>> from pysketch.distributed import configure_threads
    >>> from pysketch.kernels.parallel import num_threads, set_thread_share
    >>> configure_threads({"OMPI_COMM_WORLD_LOCAL_SIZE": "1024"})  # 1024 ranks here: 1 each
    1
    >>> num_threads()
    1
    >>> configure_threads({}, local_ranks=1024)  # counted by the caller
    1
    >>> configure_threads({"NUMBA_NUM_THREADS": "2", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}) is None
    True
    >>> set_thread_share(None)  # undo
    """
    environ = os.environ if environ is None else environ
    if "NUMBA_NUM_THREADS" in environ or environ.get("PYSKETCH_AUTO_THREADS") == "0":
        return None
    ranks = local_size(environ) if local_ranks is None else local_ranks
    if ranks is None:
        return None
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise ValueError(f"local_ranks must be a positive integer, got {ranks!r}")
    import numba

    from pysketch.kernels.parallel import set_thread_share

    available = _cores()
    machine = os.cpu_count() or available
    share = available if available < machine else available // ranks
    threads = max(1, min(share, numba.config.NUMBA_NUM_THREADS))
    set_thread_share(threads)
    return threads


def warm_up(
    comm: Any = None, *, dtypes=("float32", "float64"), groups=None, poll: float = 0.05
) -> float:
    """Compile pysketch's CPU kernels once per node; the other ranks then load them.

    Collective: every rank of ``comm`` calls it. Rank 0 of each node (of
    ``comm.Split_type(COMM_TYPE_SHARED)``) runs :func:`pysketch.warm_up`
    (``dtypes`` and ``groups`` are passed on), filling Numba's disk cache; the
    other ranks of the node wait in a non-blocking barrier, polled every
    ``poll`` seconds so that they leave the cores to the compiler. Afterwards
    their first calls load the compiled code from the cache instead of
    compiling it again. Needs a cache directory the node's ranks share (the
    default ``__pycache__`` beside the sources, or one ``NUMBA_CACHE_DIR``).

    Returns
    -------
    float
        Seconds this rank spent in the call.

    Examples
    --------
    >>> from pysketch.distributed import warm_up
    >>> warm_up(dtypes=["float64"]) >= 0.0   # one process: just pysketch.warm_up
    True
    """
    from pysketch._warmup import warm_up as warm_up_here
    from pysketch.distributed.transfer import _mpi, _resolve_comm

    start = time.perf_counter()
    comm = _resolve_comm(comm)
    node = comm.Split_type(_mpi().COMM_TYPE_SHARED)
    try:
        if node.Get_rank() == 0:
            warm_up_here(dtypes, groups=groups)
        request = node.Ibarrier()
        while not request.Test():
            time.sleep(poll)
    finally:
        node.Free()
    return time.perf_counter() - start
