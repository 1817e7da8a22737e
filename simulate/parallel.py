"""Where the workers live: one process (``LocalCommunicator``) or MPI ranks.

Under ``mpirun -n R``, every rank simulates ``W / R`` workers (or
``--workers-per-rank``) through ``MPICommunicator``; rank 0 evaluates, prints
and writes the run's files, and an exception on any rank aborts them all.
"""

from __future__ import annotations

import os
from typing import Any

from .config import ConfigError

_MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def under_mpi() -> bool:
    """Whether an MPI launcher (``mpirun``, ``mpiexec``, ``srun``) started this process."""
    return any(key in os.environ for key in _MPI_ENV)


class Layout:
    """Ranks and workers of a run; ``comm`` is mpi4py's world or ``None`` in-process.

    Parameters
    ----------
    workers_per_rank : int, optional
        Under MPI: workers per rank (the total becomes ``ranks * workers_per_rank``);
        by default the config's ``workers`` are divided among the ranks.
    mpi : bool, optional
        Force MPI on or off (default: :func:`under_mpi`).
    """

    def __init__(self, workers_per_rank: int | None = None, mpi: bool | None = None):
        self.workers_per_rank = workers_per_rank
        self.comm: Any = None
        if under_mpi() if mpi is None else mpi:
            from mpi4py import MPI

            self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank() if self.comm is not None else 0
        self.ranks = self.comm.Get_size() if self.comm is not None else 1

    @property
    def is_root(self) -> bool:
        """Rank 0 (always true in-process)."""
        return self.rank == 0

    def workers(self, configured: int) -> int:
        """The total number of workers for a config asking for ``configured``."""
        if self.comm is None:
            return configured
        if self.workers_per_rank is not None:
            return self.ranks * self.workers_per_rank
        if configured % self.ranks:
            raise ConfigError(
                f"workers: {configured} workers do not divide among {self.ranks} MPI ranks "
                "(use --workers-per-rank, or a multiple of the rank count)"
            )
        return configured

    def communicator(self, workers: int):
        """A fresh pysketch communicator for ``workers`` workers (byte totals at zero)."""
        from pysketch.compress import LocalCommunicator, MPICommunicator

        if self.comm is None:
            return LocalCommunicator(workers=workers)
        return MPICommunicator(workers_per_rank=workers // self.ranks)

    def bcast(self, obj: Any) -> Any:
        """``obj`` from rank 0 on every rank."""
        return obj if self.comm is None else self.comm.bcast(obj, root=0)

    def gather(self, obj: Any) -> list | None:
        """Every rank's ``obj`` on rank 0 (``None`` elsewhere)."""
        return [obj] if self.comm is None else self.comm.gather(obj, root=0)

    def raise_together(self, error: Exception | None) -> None:
        """Raise a ``ConfigError`` on every rank when any rank passes an error (else nothing).

        For errors that one rank alone may meet (its own file is damaged): the
        ranks exchange their errors, so every rank raises, naming the first
        rank's error, and none waits in a collective for the others.
        """
        errors = [error] if self.comm is None else self.comm.allgather(error and str(error))
        first = next((e for e in errors if e), None)
        if first is not None:
            raise first if isinstance(first, ConfigError) else ConfigError(str(first))

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.comm is not None:
            self.comm.Barrier()


def limit_threads(threads: int) -> None:
    """Use ``threads`` threads in Numba's parallel kernels and in BLAS, in this process.

    Many small kernels (one per worker and step) lose more to waking threads than
    they gain, above all on a loaded machine or with one MPI rank per core.
    """
    if threads < 1:
        raise ConfigError(f"--threads: must be >= 1, got {threads}")
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return
    threadpool_limits(threads)
