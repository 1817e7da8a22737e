"""MPI tests: run by ``mpiexec -n W python -m mpi4py -m pytest tests/distributed``.

``tests/test_distributed.py`` launches them (2 and 4 ranks) from a plain
``pytest`` run. Outside ``mpiexec`` they are skipped, so a plain run never
initialises MPI in the test process. Every rank runs every test in the same
order; a test must skip on all ranks or on none (otherwise the others wait in
a collective until the launcher's timeout).
"""

from __future__ import annotations

import os

if os.environ.get("PYSKETCH_REAL_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")  # before numba is imported

import pytest  # noqa: E402

# Variables that mpiexec (Open MPI, MPICH, PMIx launchers, Slurm) sets in every rank.
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS")


def skip_unless_under_mpiexec() -> None:
    """Skip the calling test module outside mpiexec (or without mpi4py); call it at import."""
    if os.environ.get("PYSKETCH_MPI_TESTS") != "1" and not any(
        v in os.environ for v in _LAUNCHER_VARS
    ):
        pytest.skip(
            "MPI tests run under mpiexec (tests/test_distributed.py launches them)",
            allow_module_level=True,
        )
    pytest.importorskip("mpi4py")


@pytest.fixture
def comm():
    """``MPI.COMM_WORLD``, after a barrier so every test starts together."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    world.Barrier()
    return world
