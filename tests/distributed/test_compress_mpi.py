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


@pytest.mark.parametrize("per_rank", [1, 2, "uneven"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_trajectory_and_bytes_match_the_in_process_run(comm, config, per_rank):
    """Also with ranks holding different numbers of workers (rank r holds r + 1: issue 20,
    item 2): W is their sum, every rank applies the mean over W, the bytes are W workers'."""
    rank = comm.Get_rank()
    counts = [r + 1 if per_rank == "uneven" else per_rank for r in range(comm.Get_size())]
    mpi = MPICommunicator(workers_per_rank=counts[rank], comm=comm)
    local = LocalCommunicator(mpi.world_size)
    assert mpi.world_size == sum(counts) and mpi.layout == tuple(counts)
    first = sum(counts[:rank])
    assert list(mpi.worker_ids) == list(range(first, first + counts[rank]))
    a = trajectory(build(config), mpi)
    b = trajectory(build(config), local)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert mpi.total == local.total
    assert mpi.counter.total.payload > 0


@pytest.mark.parametrize("participation", [1, 0.5])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_participation_matches_the_in_process_run(comm, config, participation):
    """Clients sampled per step (issue 19): the same on every rank, the same trajectory and
    bytes as in one process; with one participant, every step leaves a rank without any."""
    mpi = MPICommunicator(workers_per_rank=2, comm=comm)
    local = LocalCommunicator(mpi.world_size)
    a = trajectory(build(config, participation=participation), mpi)
    b = trajectory(build(config, participation=participation), local)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert mpi.total == local.total


@pytest.mark.parametrize("config", ["memsgd-topk", "fetchsgd-zero"])
def test_changed_download_matches_the_in_process_run(comm, config):
    mpi = MPICommunicator(workers_per_rank=3, comm=comm)
    local = LocalCommunicator(mpi.world_size)
    for c in (mpi, local):
        trajectory(build(config, participation=0.5, download="changed"), c)
    assert mpi.total == local.total and mpi.total.download > 0


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


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_an_overflow_on_one_rank_raises_on_every_rank_and_changes_nothing(comm, config):
    """A finite gradient that overflows float32 once multiplied by lr, on the last rank only
    (issue 20, item 1): every rank raises (none waits in a collective), names the rank and
    the vector, and goes on from the same state."""
    mpi = MPICommunicator(comm=comm)
    params = CONFIGS[config][1]
    # Clipping would scale the big value down to clip_norm, and lr times that is finite.
    algo = build(config, **({"clip_norm": None} if "clip_norm" in params else {}))
    w = trajectory(algo, mpi, steps=1)[-1]
    before, total = algo.state_dict(), mpi.total
    last = comm.Get_size() - 1
    grads = [np.ones(D, np.float32)]
    if comm.Get_rank() == last:
        grads[0][7] = 3e30
    with pytest.raises(ValueError, match="overflow") as raised:
        algo.step(grads, mpi, lr=1e10)
    message = str(raised.value)
    lr_inside = params.get("lr_placement", "state") == "state"
    if config.startswith("memsgd") and lr_inside:  # lr multiplies the gradient: it is named
        assert f"rank {last}: vectors[0] holds 1 value(s) that overflow float32" in message
    else:  # lr multiplies the sum over the workers: the same update on every rank overflows
        assert "the update or the server's state would hold" in message
    after = algo.state_dict()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value)
    assert mpi.total == total and algo.steps == 1
    b = trajectory(algo, mpi, steps=1, w=w)  # every rank is still in step
    assert np.isfinite(b[-1]).all()


def test_a_state_that_overflows_on_one_rank_raises_on_every_rank(comm):
    """The memory of one rank's worker overflows (input finite, lr times it finite too)."""
    mpi = MPICommunicator(comm=comm)
    algo = build("memsgd-randomk", lr=1.0)
    big = np.zeros(D, np.float32)
    if comm.Get_rank() == 0:
        big[:] = 3e38  # fits; twice it does not
    algo.step([big], mpi)  # the memory keeps most of it (random-k sends 10 of 300)
    with pytest.raises(
        ValueError, match=r"rank 0: the worker of vectors\[0\] would keep 290 non-finite"
    ):
        algo.step([big], mpi)
    assert algo.steps == 1


@pytest.mark.parametrize("config", ["sgd", "memsgd-code", "true-topk", "fetchsgd-code"])
def test_weighted_averaging_and_topk_download_match_the_in_process_run(comm, config):
    """The total weight is gathered with the step's agreement; each worker's replica lives on
    its rank (FetchSGD's code's batch-size averaging and top-k download, issue 19)."""
    counts = [r + 1 for r in range(comm.Get_size())]
    mpi = MPICommunicator(workers_per_rank=counts[comm.Get_rank()], comm=comm)
    local = LocalCommunicator(mpi.world_size)
    params = dict(participation=0.5, download="topk", download_k=20)
    a = trajectory(build(config, **params), mpi, weighted=True)
    b = trajectory(build(config, **params), local, weighted=True)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert mpi.total == local.total and mpi.total.download > 0
