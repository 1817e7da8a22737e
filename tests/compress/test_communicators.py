"""Communicators: combining and the byte counts of ALGORITHMS §5."""

from __future__ import annotations

import numpy as np
import pytest

from pysketch.compress import (
    SGD,
    CountSketchCompressor,
    FetchSGD,
    LocalCommunicator,
    MemSGD,
    MPICommunicator,
    RandomK,
    SketchDL,
    SketchedSGD,
    TopK,
    Traffic,
)
from pysketch.compress.messages import Dense, Sparse

W, D, K = 8, 1000, 10
F32 = 4


def _run(algo, workers=W, steps=1):
    comm = LocalCommunicator(workers)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        algo.step([rng.standard_normal(D).astype(np.float32) for _ in range(workers)], comm)
    return comm


def _ring_allreduce(n, w):
    return 2 * (w - 1) * n // w


@pytest.mark.parametrize(
    "algo, up",
    [
        (SGD(D, lr=0.1), D * F32),
        (MemSGD(D, lr=0.1, k=K, compressor="randomk"), K * F32),
        (FetchSGD(D, lr=0.1, k=K, rows=5, cols=40), 5 * 40 * F32),
        (SketchDL(D, lr=0.1, rows=5, cols=40), 5 * 40 * F32),
    ],
    ids=["sgd", "randomk", "fetchsgd", "sketchdl"],
)
def test_allreduced_messages_count_n_up_n_down(algo, up):
    t = _run(algo).last_step
    assert t == Traffic(1, up, up, _ring_allreduce(up, W), _ring_allreduce(up, W))


def test_topk_allgather_counts_values_and_int32_indices():
    t = _run(MemSGD(D, lr=0.1, k=K)).last_step
    m = K * (F32 + 4)  # d < 2**31: indices travel as int32
    assert (t.upload, t.download) == (m, (W - 1) * m)
    assert (t.wire_sent, t.wire_received) == ((W - 1) * m, (W - 1) * m)


def test_sketched_sgd_second_round_adds_p2k_values():
    one = _run(SketchedSGD(D, lr=0.1, k=K, rows=5, cols=40)).last_step
    two = _run(SketchedSGD(D, lr=0.1, k=K, rows=5, cols=40, p2=3)).last_step
    assert one.rounds == 1 and two.rounds == 2
    assert two.upload - one.upload == 3 * K * F32


def test_totals_accumulate_and_survive_state_dict():
    comm = _run(FetchSGD(D, lr=0.1, k=K, rows=5, cols=40), steps=3)
    assert comm.step_count == 3 and comm.total.upload == 3 * 5 * 40 * F32
    other = LocalCommunicator(W)
    other.load_state_dict(comm.state_dict())
    assert other.total == comm.total and other.step_count == 3
    with pytest.raises(ValueError, match="not a communicator state_dict"):
        other.load_state_dict({"upload": 1.0})


def test_sparse_messages_concatenate_in_worker_order():
    comm = LocalCommunicator(3)
    msgs = [Sparse(np.array([i], np.int32), np.array([float(i)], np.float32)) for i in range(3)]
    out = comm.combine(msgs)
    assert out.indices.tolist() == [0, 1, 2] and out.values.tolist() == [0.0, 1.0, 2.0]


def test_combine_refuses_mismatched_messages():
    comm = LocalCommunicator(2)
    a = Dense(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="one message per local worker"):
        comm.combine([a])
    with pytest.raises(ValueError, match=r"messages\[1\] has payload"):
        comm.combine([a, Dense(np.ones(4, np.float32))])
    with pytest.raises(TypeError, match="one Message type"):
        comm.combine([a, Sparse(np.zeros(1, np.int32), np.ones(1, np.float32))])
    assert comm.total == Traffic()


def test_random_k_workers_share_indices_each_step():
    c = RandomK(D, k=K, seed=11)
    a = [c.compress(np.arange(D, dtype=np.float32), step=s).indices for s in range(3)]
    b = [c.compress(np.ones(D, np.float32), step=s).indices for s in range(3)]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], a[1])


def test_communicator_arguments():
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        LocalCommunicator(0)
    with pytest.raises(TypeError, match="workers_per_rank must be a positive integer"):
        MPICommunicator(workers_per_rank=2.0)
    assert list(LocalCommunicator(3).worker_ids) == [0, 1, 2]


def test_topk_compressor_decompress_sums_repeated_indices():
    c = TopK(5, k=1)
    msg = Sparse(np.array([2, 2], np.int32), np.array([1.0, 2.0], np.float32))
    assert c.decompress(msg).tolist() == [0, 0, 3.0, 0, 0]


# ------------------------------------------- issue 20: what combine and load refuse
def test_combine_refuses_sketches_with_other_hashes():
    comm = LocalCommunicator(2)
    a = CountSketchCompressor(D, 3, 16, k=2, seed=0).compress(np.ones(D, np.float32))
    b = CountSketchCompressor(D, 3, 16, k=2, seed=1).compress(np.ones(D, np.float32))
    with pytest.raises(ValueError, match=r"messages\[1\].sketch is not compatible.*seed: 0 != 1"):
        comm.combine([a, b])
    assert comm.total == Traffic()


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("upload", float("nan"), r"state\['upload'\] must be a finite non-negative"),
        ("wire_sent", -1.0, r"state\['wire_sent'\] must be a finite non-negative"),
        ("rounds", 1.7, r"state\['rounds'\] must be an integer"),
        ("step_count", 2.5, r"state\['step_count'\] must be an integer"),
        ("step_count", -1, r"state\['step_count'\] must be an integer >= 0"),
        ("download", "12", r"state\['download'\] must be a real number"),
    ],
)
def test_communicator_state_with_bad_counts_is_refused(field, value, match):
    comm = _run(FetchSGD(D, lr=0.1, k=K, rows=5, cols=40), steps=2)
    other = LocalCommunicator(W)
    with pytest.raises(ValueError, match=match):
        other.load_state_dict({**comm.state_dict(), field: value})
    assert other.total == Traffic() and other.step_count == 0


def test_communicator_state_from_json_loads():
    comm = _run(SGD(D, lr=0.1), steps=2)
    state = {k: float(v) for k, v in comm.state_dict().items()}  # ints written as 2.0
    other = LocalCommunicator(W)
    other.load_state_dict(state)
    assert other.total == comm.total and other.step_count == 2


def test_the_layout_names_every_process_workers():
    assert LocalCommunicator(3).layout == (3,)
    mpi = MPICommunicator(workers_per_rank=2)
    assert mpi.layout == (2,) and mpi.world_size == 2 and list(mpi.worker_ids) == [0, 1]
