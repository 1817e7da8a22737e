"""pysketch.compress under mpiexec: every algorithm, W workers spread over the ranks.

Each rank also runs the whole job in-process (``LocalCommunicator(W)``) and
checks that the MPI run gives the same trajectory and byte counts.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.distributed.conftest import skip_unless_under_mpiexec

skip_unless_under_mpiexec()

from pysketch.compress import LocalCommunicator, MPICommunicator  # noqa: E402
from tests.compress.scenarios import CONFIGS, D, build, trajectory  # noqa: E402

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("per_rank", [1, 2])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_trajectory_and_bytes_match_the_in_process_run(comm, config, per_rank):
    mpi = MPICommunicator(workers_per_rank=per_rank, comm=comm)
    local = LocalCommunicator(mpi.world_size)
    assert list(mpi.worker_ids) == list(
        range(comm.Get_rank() * per_rank, (comm.Get_rank() + 1) * per_rank)
    )
    a = trajectory(build(config), mpi)
    b = trajectory(build(config), local)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert mpi.total == local.total
    assert mpi.counter.total.payload > 0


def test_bad_vector_on_one_rank_raises_on_every_rank(comm):
    mpi = MPICommunicator(workers_per_rank=2, comm=comm)
    algo = build("fetchsgd-zero")
    trajectory(algo, mpi, steps=1)
    before = algo.state_dict()["server.error"].copy()
    grads = [np.zeros(D, np.float32) for _ in mpi.worker_ids]
    if comm.Get_rank() == comm.Get_size() - 1:
        grads[1] = np.zeros(D + 1, np.float32)
    with pytest.raises(ValueError, match=rf"rank {comm.Get_size() - 1}.*vectors\[1\] must have"):
        algo.step(grads, mpi)
    np.testing.assert_array_equal(algo.state_dict()["server.error"], before)
    assert algo.steps == 1


def test_different_parameters_on_one_rank_raise_on_every_rank(comm):
    mpi = MPICommunicator(comm=comm)
    algo = build("memsgd-topk", k=11 if comm.Get_rank() == 1 else 10)
    with pytest.raises(ValueError, match="ranks disagree.*k"):
        algo.step([np.ones(D, np.float32)], mpi)
    assert algo.steps == 0


def test_nan_on_one_rank_is_a_non_finite_error_on_every_rank(comm):
    from pysketch.errors import NonFiniteError

    mpi = MPICommunicator(comm=comm)
    algo = build("sgd")
    g = np.ones(D, np.float32)
    if comm.Get_rank() == 0:
        g[3] = np.nan
    with pytest.raises(NonFiniteError, match="rank 0"):
        algo.step([g], mpi)
