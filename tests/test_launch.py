"""Launch helpers without mpiexec: warm-up, threads per rank (MPI side: tests/distributed)."""

from __future__ import annotations

import pytest

import pysketch
from pysketch.distributed import launch
from tests.test_cold_start import assert_runs


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({"OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, 4),
        ({"MPI_LOCALNRANKS": "3"}, 3),
        ({"SLURM_NTASKS_PER_NODE": "2"}, 2),
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
        "import numba, pysketch.distributed",
        "cores = len(os.sched_getaffinity(0))",
        "assert numba.get_num_threads() == max(1, cores // 2), numba.get_num_threads()",
    )


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
