"""Launch helpers without mpiexec: warm-up, threads per rank (MPI side: tests/distributed)."""

from __future__ import annotations

import pytest

import pysketch
from pysketch.distributed import launch
from pysketch.kernels.parallel import set_thread_share
from tests.test_cold_start import assert_runs


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({"OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, 4),
        ({"MPI_LOCALNRANKS": "3"}, 3),
        ({"SLURM_NTASKS_PER_NODE": "2"}, 2),
        ({"LOCAL_WORLD_SIZE": "2"}, 2),  # torchrun
        ({"OMPI_COMM_WORLD_LOCAL_SIZE": "0"}, None),
        ({"OMPI_COMM_WORLD_LOCAL_SIZE": "x"}, None),
        ({}, None),
    ],
)
def test_local_size(environ, expected):
    assert launch.local_size(environ) == expected


def test_threads_follow_the_local_rank_count():
    assert_runs(
        "import os",
        "os.environ['OMPI_COMM_WORLD_LOCAL_SIZE'] = '2'",
        "import pysketch.distributed",
        "from pysketch.kernels.parallel import num_threads",
        "cores = len(os.sched_getaffinity(0))",
        "assert num_threads() == max(1, cores // 2), num_threads()",
    )


@pytest.mark.parametrize("variable", ["OMPI_COMM_WORLD_LOCAL_SIZE", "LOCAL_WORLD_SIZE"])
def test_the_share_caps_every_thread_without_starting_numbas_threading_layer(variable):
    # Numba's OpenMP layer would set this thread's OpenMP count, which PyTorch reads.
    assert_runs(
        "import os, threading",
        f"os.environ[{variable!r}] = '2'",
        "import numpy as np, pysketch, pysketch.distributed",
        "from numba.np.ufunc import parallel as layer",
        "from pysketch.kernels.parallel import num_threads",
        "share = max(1, len(os.sched_getaffinity(0)) // 2)",
        "seen = []",
        "worker = threading.Thread(target=lambda: seen.append(num_threads()))",
        "worker.start(); worker.join()",
        "assert seen == [share], seen",
        "pysketch.CountSketch(10**5, 3, 64).accumulate(np.ones(10**5, np.float32))",
        "pysketch.topk(np.arange(10**5, dtype=np.float32), 5)",
        "assert not layer._is_initialized",
    )


def test_local_ranks_counted_by_the_caller():
    try:
        assert launch.configure_threads({}, local_ranks=10**6) == 1
        with pytest.raises(ValueError, match="local_ranks must be a positive integer"):
            launch.configure_threads({}, local_ranks=0)
        assert launch.configure_threads({"NUMBA_NUM_THREADS": "2"}, local_ranks=2) is None
    finally:
        set_thread_share(None)


@pytest.mark.parametrize("opt_out", [{"NUMBA_NUM_THREADS": "1"}, {"PYSKETCH_AUTO_THREADS": "0"}])
def test_user_choice_of_threads_stands(opt_out):
    assert launch.configure_threads({"OMPI_COMM_WORLD_LOCAL_SIZE": "2", **opt_out}) is None
    assert launch.configure_threads({}) is None


def test_warm_up_reports_each_group():
    seconds = pysketch.warm_up(["float32"], groups=["selection", "ErrorFeedback"])
    assert set(seconds) == {"selection[float32]", "ErrorFeedback[float32]", "total"}
    assert all(value >= 0 for value in seconds.values())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"dtypes": ["int32"]}, TypeError, "dtypes"),
        ({"groups": ["Bloom"]}, ValueError, "groups"),
    ],
)
def test_warm_up_refuses_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        pysketch.warm_up(**kwargs)
