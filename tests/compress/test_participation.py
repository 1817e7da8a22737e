"""Partial participation (issue 19, section 1): who takes part, absent state, mean, bytes."""

from __future__ import annotations

import numpy as np
import pytest

from pysketch.compress import (
    SGD,
    FetchSGD,
    LocalCommunicator,
    MemSGD,
    SketchedSGD,
    make_algorithm,
    sample_participants,
)
from pysketch.compress.messages import index_dtype
from pysketch.compress.participation import participant_count
from pysketch.distributed.accounting import ring_allreduce_bytes
from tests.compress.scenarios import CONFIGS, D, build, gradient, trajectory


# ----------------------------------------------------------------- the draw
def test_the_draw_is_a_function_of_seed_and_step():
    a = sample_participants(1000, 0.05, seed=3, step=11)
    assert a.tolist() == sample_participants(1000, 0.05, seed=3, step=11).tolist()
    assert len(a) == 50 and (np.diff(a) > 0).all() and 0 <= a[0] and a[-1] < 1000
    assert a.tolist() != sample_participants(1000, 0.05, seed=3, step=12).tolist()
    assert a.tolist() != sample_participants(1000, 0.05, seed=4, step=11).tolist()


def test_a_fraction_and_the_count_it_rounds_to_draw_the_same():
    for step in range(5):
        frac = sample_participants(40, 0.1, seed=0, step=step)
        assert frac.tolist() == sample_participants(40, 4, seed=0, step=step).tolist()
    assert participant_count(0.001, 10) == 1  # at least one
    assert participant_count(1.0, 7) == 7 and participant_count(1, 7) == 1


def test_every_worker_is_drawn_about_equally_often():
    counts = np.zeros(20)
    for step in range(2000):
        counts[sample_participants(20, 5, seed=1, step=step)] += 1
    expected = 2000 * 5 / 20  # 500; a binomial's sd is about 19
    assert np.abs(counts - expected).max() < 100, counts


@pytest.mark.parametrize(
    "value, error, match",
    [
        (0, ValueError, r"participation must be >= 1"),
        (-2, ValueError, r"participation must be >= 1"),
        (0.0, ValueError, r"participation must lie in \(0, 1\]"),
        (1.5, ValueError, r"participation must lie in \(0, 1\]"),
        (float("nan"), ValueError, r"participation must lie in \(0, 1\]"),
        (True, TypeError, r"participation must be a fraction"),
        ("half", TypeError, r"participation must be a fraction"),
    ],
)
def test_bad_participation_names_the_argument(value, error, match):
    with pytest.raises(error, match=match):
        sample_participants(10, value, seed=0, step=0)
    with pytest.raises(error, match=match):
        SGD(4, lr=0.1, participation=value)


def test_more_participants_than_workers_is_refused_and_changes_nothing():
    algo, comm = SGD(3, lr=1.0, participation=5), LocalCommunicator(4)
    with pytest.raises(ValueError, match="participation must be at most the 4 workers, got 5"):
        algo.step([np.ones(3)] * 4, comm)
    assert algo.steps == 0 and comm.total.rounds == 0


def test_vectors_of_every_worker_are_refused_when_some_take_part():
    algo, comm = SGD(3, lr=1.0, participation=2), LocalCommunicator(4)
    with pytest.raises(ValueError, match=r"one array per local worker that takes part .*\(2\)"):
        algo.step([np.ones(3, np.float32)] * 4, comm)


# ------------------------------------------------------------- the step
def test_the_update_is_the_mean_over_the_participants():
    """SGD with lr 1: the mean of the participants' vectors, by hand, not over W."""
    comm = LocalCommunicator(6)
    algo = SGD(2, lr=1.0, participation=2, dtype=np.float64)
    for _ in range(4):
        ids = algo.participants(comm)
        vectors = [np.array([float(i), 10.0 * i]) for i in ids]
        update = algo.step(vectors, comm)
        assert update.tolist() == [ids.mean(), 10.0 * ids.mean()]


def test_memsgd_mean_and_memories_by_hand():
    """k = d sends everything: the update is the mean over the participants of lr g + m."""
    comm = LocalCommunicator(3)
    algo = MemSGD(2, lr=0.5, k=2, participation=1, dtype=np.float64, compressor="randomk")
    ids = algo.participants(comm)
    update = algo.step([np.array([2.0, 4.0])], comm)
    assert update.tolist() == [1.0, 2.0]  # one participant: its own 0.5 g
    assert len(ids) == 1


@pytest.mark.parametrize("config", ["sgd", "fetchsgd-zero", "fetchsgd-subtract", "sketchdl"])
def test_stateless_run_equals_a_run_of_the_participants_alone(config):
    """Workers without state: W workers with P taking part step like P workers that all do."""
    comm = LocalCommunicator(10)
    algo, alone = build(config, participation=3), build(config)
    w = np.zeros(D, dtype=np.float32)
    for _ in range(4):
        ids = algo.participants(comm)
        grads = [gradient(int(i), algo.steps, w) for i in ids]
        few = LocalCommunicator(3)
        update = algo.step(grads, comm)
        np.testing.assert_array_equal(update, alone.step(grads, few))
        assert comm.last_step == few.last_step  # the bytes of the 3 that took part
        w = w - update


@pytest.mark.parametrize("algo_cls, keys", [(MemSGD, ("memory",)), (SketchedSGD, ("error",))])
def test_absent_workers_keep_their_state_bit_for_bit(algo_cls, keys):
    params = dict(k=5) if algo_cls is MemSGD else dict(k=5, rows=3, cols=32, rho=0.5)
    comm = LocalCommunicator(6)
    algo = algo_cls(D, lr=0.1, participation=2, **params)
    w = np.zeros(D, dtype=np.float32)
    changed = set()
    for _ in range(6):
        before = algo.state_dict()
        ids = algo.participants(comm)
        w = w - algo.step([gradient(int(i), algo.steps, w) for i in ids], comm)
        after = algo.state_dict()
        for key in keys:
            stack = f"workers.{key}"
            was = before.get(stack, np.zeros((6, D), np.float32))  # zeros before step 1
            for worker in range(6):
                if worker in ids:
                    changed.add(worker)
                    assert not np.array_equal(after[stack][worker], was[worker])
                else:
                    assert after[stack][worker].tobytes() == was[worker].tobytes()
    assert len(changed) > 2  # several workers took part over the run


def test_the_traffic_is_the_participants():
    d, comm = 1000, LocalCommunicator(20)
    algo = SGD(d, lr=0.1, participation=0.25)
    algo.step([np.ones(d, np.float32)] * 5, comm)
    traffic = comm.last_step
    assert traffic.upload == traffic.download == 4 * d
    assert traffic.wire_sent == ring_allreduce_bytes(4 * d, 5)  # a ring among 5, not 20
    top = make_algorithm("memsgd", d, lr=0.1, k=10, participation=4)
    top.step([np.ones(d, np.float32)] * 4, comm)
    entry = index_dtype(d).itemsize + 4  # an index and a float32 value
    assert comm.last_step.upload == 10 * entry and comm.last_step.download == 3 * 10 * entry


def test_participation_is_part_of_the_checkpoint():
    comm = LocalCommunicator(4)
    algo = build("memsgd-topk", participation=0.5)
    trajectory(algo, comm, steps=2)
    state = algo.state_dict()
    assert state["params"]["participation"] == 0.5
    with pytest.raises(ValueError, match="participation=0.5 in the state, 1.0 here"):
        build("memsgd-topk").load_state_dict(state)
    again = build("memsgd-topk", participation=0.5)
    again.load_state_dict(state)  # resumes with the same draws: they depend on the step
    assert again.participants(comm).tolist() == algo.participants(comm).tolist()
    old = build("memsgd-topk").state_dict()
    del old["params"]["participation"]  # saved before participation existed: everyone
    build("memsgd-topk").load_state_dict(old)
    with pytest.raises(ValueError, match="participation=None in the state, 0.5 here"):
        build("memsgd-topk", participation=0.5).load_state_dict(old)
    one = build("memsgd-topk", participation=1).state_dict()  # the int 1: one worker
    with pytest.raises(ValueError, match="participation=1 in the state, 1.0 here"):
        build("memsgd-topk").load_state_dict(one)


def test_full_participation_is_the_plain_step():
    for config in CONFIGS:
        a, b = LocalCommunicator(3), LocalCommunicator(3)
        np.testing.assert_array_equal(
            trajectory(build(config), a, steps=2), trajectory(build(config, participation=3), b)[:2]
        )


def test_fetchsgd_summed_with_participants():
    comm = LocalCommunicator(8)
    algo = FetchSGD(D, lr=0.1, k=10, rows=5, cols=64, participation=3)
    other = FetchSGD(D, lr=0.1, k=10, rows=5, cols=64, participation=3)
    ids = algo.participants(comm)
    grads = [gradient(int(i), 0, np.zeros(D, np.float32)) for i in ids]
    np.testing.assert_array_equal(
        algo.step_summed(np.sum(grads, axis=0), comm), other.step(grads, LocalCommunicator(8))
    )


# ------------------------------------------------- download as FetchSGD's code counts it
def _changed_download_reference(config, steps=8, workers=6, participation=2):
    """Per step: the mean over the participants of the values of w that differ from the w
    each last received (the initial w if never), in bytes, as CommEfficient counts it."""
    algo, comm = build(config, participation=participation, download="changed"), None
    comm = LocalCommunicator(workers)
    w = np.zeros(D, dtype=np.float32)
    seen = [w.copy() for _ in range(workers)]
    for _ in range(steps):
        ids = algo.participants(comm)
        expected = np.mean([np.count_nonzero(w != seen[i]) for i in ids]) * 4
        for i in ids:
            seen[i] = w.copy()
        w = w - algo.step([gradient(int(i), algo.steps, w) for i in ids], comm)
        yield algo, comm.last_step.download, expected


@pytest.mark.parametrize("config", ["memsgd-topk", "fetchsgd-zero", "sgd"])
def test_changed_download_counts_the_weights_changed_since_the_last_round(config):
    counted = [(got, want) for _, got, want in _changed_download_reference(config)]
    assert [got for got, _ in counted] == [want for _, want in counted]
    assert counted[0] == (0.0, 0.0) and max(want for _, want in counted) > 0


def test_changed_download_resumes_from_a_checkpoint():
    runs = list(_changed_download_reference("fetchsgd-zero", steps=6))
    algo = runs[2][0]  # the same object: its state after all 6 steps
    state = algo.state_dict()
    assert state["download.changed"].shape == (D,) and state["download.joined"].shape == (6,)
    again = build("fetchsgd-zero", participation=2, download="changed")
    again.load_state_dict(state)
    assert again.state_dict()["download.joined"].tolist() == state["download.joined"].tolist()
    bad = {**state, "download.joined": np.zeros(6, dtype=np.float32)}
    with pytest.raises(ValueError, match=r"state\['download.joined'\] must be 6 integer steps"):
        build("fetchsgd-zero", participation=2, download="changed").load_state_dict(bad)


def test_bad_download_names_the_argument():
    with pytest.raises(ValueError, match="download must be one of"):
        SGD(4, lr=0.1, download="sparse")
