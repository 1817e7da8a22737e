"""The options that follow FetchSGD's released code (CommEfficient), each on a case computed
by hand: lr placement, momentum masking, error types, true top-k, local top-k with server
momentum, clipping by the sketch's norm, weighted averaging, the zeroing rule, top-k download."""

from __future__ import annotations

import numpy as np
import pytest

from pysketch import CountSketch
from pysketch.compress import SGD, FetchSGD, LocalCommunicator, MemSGD, TrueTopK
from tests.compress.scenarios import collision_free_seed

D, ROWS, COLS = 2, 1, 64


@pytest.fixture(scope="module")
def seed():
    """Coordinates 0 and 1 in cells of their own: the sketch's estimates are exact."""
    return collision_free_seed(D, ROWS, COLS)


def fetch(seed, **params):
    base = dict(lr=1.0, k=1, rows=ROWS, cols=COLS, rho=0.0, seed=seed, dtype=np.float64)
    return FetchSGD(D, **{**base, **params})


def run(algo, steps, workers=1):
    """The updates of ``steps``: ``(gradient, lr)`` pairs, every worker sending the gradient."""
    comm = LocalCommunicator(workers)
    return [
        algo.step([np.asarray(g, dtype=np.float64)] * workers, comm, lr=lr).tolist()
        for g, lr in steps
    ]


ZERO = [0.0, 0.0]


# ----------------------------------------------------------------- lr placement
@pytest.mark.parametrize(
    "placement, second",
    [
        # S_e = S([3, 2]); [3, 0] applied; S_e = S([0, 2]); then S_e += 0.5 * 0: [0, 2]
        ("state", [0.0, 2.0]),
        # the same S_e, but the update is lr * unSketch(S_e) = 0.5 * [0, 2]
        ("update", [0.0, 1.0]),
    ],
)
def test_fetchsgd_lr_placement_differs_under_a_schedule(seed, placement, second):
    algo = fetch(seed, lr_placement=placement)
    assert run(algo, [([3, 2], 1.0), (ZERO, 0.5)]) == [[3.0, 0.0], second]


def test_fetchsgd_lr_placement_agrees_at_a_constant_rate(seed):
    steps = [([3, 2], 0.5), ([1, -4], 0.5), (ZERO, 0.5)]
    state = run(fetch(seed, rho=0.5), steps)
    update = run(fetch(seed, rho=0.5, lr_placement="update"), steps)
    np.testing.assert_allclose(state, update, rtol=1e-12)


# ------------------------------------------------------------- momentum masking
@pytest.mark.parametrize(
    "masking, second",
    [
        # u = e = S([3, 1]); [3, 0] applied; e = S([0, 1]); masked u = S([0, 1]):
        # u = 0.9 u = S([0, 0.9]), e = S([0, 1.9])
        (True, [0.0, 1.9]),
        # unmasked u = S([3, 1]): u = S([2.7, 0.9]), e = S([2.7, 1.9])
        (False, [2.7, 0.0]),
    ],
)
def test_fetchsgd_momentum_masking_with_the_subtracted_error(seed, masking, second):
    algo = fetch(seed, rho=0.9, error="subtract", momentum_masking=masking)
    updates = run(algo, [([3, 1], 1.0), (ZERO, 1.0)])
    np.testing.assert_allclose(updates, [[3.0, 0.0], second], rtol=1e-12)


def test_fetchsgd_masks_momentum_by_default_except_when_subtracting(seed):
    assert fetch(seed, error="zero")._masking and fetch(seed, error="none")._masking
    assert not fetch(seed, error="subtract")._masking


# ----------------------------------------------------------------- error types
@pytest.mark.parametrize(
    "error, rho, updates",
    [
        # nothing kept: what was not applied is gone
        ("none", 0.0, [[3.0, 0.0], ZERO]),
        # the error keeps the 2
        ("zero", 0.0, [[3.0, 0.0], [0.0, 2.0]]),
        # no error, masked momentum: u = S([0, 2]) after the first step, then 0.5 u
        ("none", 0.5, [[3.0, 0.0], [0.0, 1.0]]),
    ],
)
def test_fetchsgd_error_types(seed, error, rho, updates):
    algo = fetch(seed, error=error, rho=rho)
    assert run(algo, [([3, 2], 1.0), (ZERO, 1.0)]) == updates
    assert ("error" in algo.state_dict()["params"]) and (
        ("server.error" in algo.state_dict()) == (error != "none")
    )


# ------------------------------------------------------------------ true top-k
@pytest.mark.parametrize(
    "params, lr, second",
    [
        # u = e = [3, -1, 0]: [3, 0, 0] applied, e = u = [0, -1, 0] (masked);
        # u = 0.9 u = [0, -0.9, 0], e = [0, -1.9, 0]
        (dict(), 1.0, [0.0, -1.9, 0.0]),
        # unmasked u = [3, -1, 0]: u = [2.7, -0.9, 0], e = [2.7, -1.9, 0]
        (dict(momentum_masking=False), 1.0, [2.7, 0.0, 0.0]),
        # the paper's placement at lr 0.5: e = [0, -1, 0] + 0.5 [0, -0.9, 0]
        (dict(), 0.5, [0.0, -1.45, 0.0]),
        # the code's: e = [0, -1, 0] + [0, -0.9, 0], the update 0.5 top_k(e)
        (dict(lr_placement="update"), 0.5, [0.0, -0.95, 0.0]),
        # no error: top_k(lr u) of u = [0, -0.9, 0]
        (dict(error="none"), 1.0, [0.0, -0.9, 0.0]),
    ],
)
def test_true_topk_keeps_dense_momentum_and_error_on_the_server(params, lr, second):
    algo = TrueTopK(3, lr=1.0, k=1, rho=0.9, dtype=np.float64, **params)
    got = run(algo, [([3, -1, 0], 1.0), ([0, 0, 0], lr)], workers=2)
    np.testing.assert_allclose(got, [[3.0, 0.0, 0.0], second], rtol=1e-12)


def test_true_topk_uploads_every_coordinate():
    comm = LocalCommunicator(2)
    TrueTopK(10, lr=1.0, k=2).step([np.ones(10, np.float32)] * 2, comm)
    assert comm.last_step.upload == 10 * 4  # per worker: d float32 values


# ---------------------------------------------- local top-k with server momentum
@pytest.mark.parametrize(
    "params, second",
    [
        # m = 0.5 g = [.5, -1.5, 0, 1]: [0, -1.5, 0, 0] sent; then m += 0.1 * 0: [0, 0, 0, 1]
        (dict(), [0.0, 0.0, 0.0, 1.0]),
        # m = g: [0, -3, 0, 0] sent, 0.5 times it applied; then [0, 0, 0, 2] sent, 0.1 x
        (dict(lr_placement="update"), [0.0, 0.0, 0.0, 0.2]),
        # v = [0, -1.5, 0, 0], then v = 0.5 v + [0, 0, 0, 1]
        (dict(server_rho=0.5), [0.0, -0.75, 0.0, 1.0]),
        # no memory: top_k(g) sent, lr times it applied, the rest dropped
        (dict(memory=False, lr_placement="update"), [0.0, 0.0, 0.0, 0.0]),
        # v = [0, -3, 0, 0], then v = 0.5 v + [0, 0, 0, 2], times 0.1
        (dict(server_rho=0.5, lr_placement="update"), [0.0, -0.15, 0.0, 0.2]),
    ],
)
def test_memsgd_options_of_the_released_local_topk(params, second):
    algo = MemSGD(4, lr=0.5, k=1, dtype=np.float64, **params)
    got = run(algo, [([1, -3, 0, 2], 0.5), ([0, 0, 0, 0], 0.1)])
    np.testing.assert_allclose(got, [[0.0, -1.5, 0.0, 0.0], second], rtol=1e-12)


# -------------------------------------------------------------------- clipping
@pytest.mark.parametrize(
    "clip, expected",
    [
        (1.0, [0.45, 0.6]),  # [3, 4] (norm 5) scaled to [0.6, 0.8]; [0.3, 0.4] kept
        (10.0, [1.65, 2.2]),  # neither is clipped
    ],
)
def test_fetchsgd_clips_each_workers_sketch_by_its_estimated_norm(seed, clip, expected):
    algo = fetch(seed, k=2, clip_norm=clip)
    comm = LocalCommunicator(2)
    update = algo.step([np.array([3.0, 4.0]), np.array([0.3, 0.4])], comm)
    np.testing.assert_allclose(update, expected, rtol=1e-12)


def test_clipping_sketches_each_worker_apart_even_when_presumming(seed):
    """The sum [3.3, 4.4] would be clipped as one; each worker is clipped on its own."""
    algo = fetch(seed, k=2, clip_norm=1.0)
    algo.presum = True
    update = algo.step([np.array([3.0, 4.0]), np.array([0.3, 0.4])], LocalCommunicator(2))
    np.testing.assert_allclose(update, [0.45, 0.6], rtol=1e-12)


@pytest.mark.parametrize("clip", [0.0, -1.0, float("inf")])
def test_clip_norm_must_be_positive_and_finite(seed, clip):
    with pytest.raises(ValueError, match="clip_norm"):
        fetch(seed, clip_norm=clip)


# ---------------------------------------------------------- weighted averaging
def test_weights_average_by_batch_size():
    comm = LocalCommunicator(2)
    update = SGD(2, lr=1.0).step([np.array([4.0, 0.0]), np.array([0.0, 4.0])], comm, weights=[1, 3])
    assert update.tolist() == [1.0, 3.0]  # (1 [4, 0] + 3 [0, 4]) / 4


def test_weighted_step_summed_takes_the_weighted_sum_and_its_weight():
    comm = LocalCommunicator(2)
    update = SGD(2, lr=1.0).step_summed(np.array([4.0, 12.0]), comm, weight=4.0)
    assert update.tolist() == [1.0, 3.0]


def test_weights_scale_what_workers_keep(seed):
    """The code multiplies a client's gradient by its batch size before its local state."""
    algo = MemSGD(2, lr=1.0, k=1, dtype=np.float64)
    comm = LocalCommunicator(2)
    first = algo.step([np.array([3.0, 2.0]), np.array([0.0, 0.0])], comm, weights=[2, 2])
    assert first.tolist() == [1.5, 0.0]  # (2 [3, 0] + 0) / 4
    assert algo.state_dict()["workers.memory"].tolist() == [[0.0, 4.0], [0.0, 0.0]]


def test_weights_of_the_workers_that_take_part_only():
    algo, comm = SGD(1, lr=1.0, participation=2), LocalCommunicator(workers=5)
    ids = algo.participants(comm)
    weights = [float(i + 1) for i in ids]
    update = algo.step([np.array([float(i)]) for i in ids], comm, weights=weights)
    expected = sum(w * i for w, i in zip(weights, ids, strict=True)) / sum(weights)
    assert update[0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "weights, error, match",
    [
        ([1.0], ValueError, r"weights must hold one number per vector \(2\)"),
        ([1.0, 0.0], ValueError, r"weights\[1\] must be positive"),
        ([1.0, float("nan")], ValueError, r"weights\[1\] must be finite"),
        ("ab", TypeError, "weights must be a list of numbers"),
    ],
)
def test_bad_weights_are_refused_by_name_and_change_nothing(weights, error, match):
    algo, comm = MemSGD(2, lr=1.0, k=1), LocalCommunicator(2)
    algo.step([np.ones(2, np.float32)] * 2, comm)
    before = algo.state_dict()
    with pytest.raises(error, match=match):
        algo.step([np.ones(2, np.float32)] * 2, comm, weights=weights)
    after = algo.state_dict()
    assert after["steps"] == before["steps"] == 1
    np.testing.assert_array_equal(after["workers.memory"], before["workers.memory"])
    assert comm.step_count == 1


def test_old_states_load_with_the_papers_defaults(seed):
    """A state saved before these options existed resumes as the paper's variant."""
    algo = fetch(seed)
    algo.step([np.ones(2)], LocalCommunicator(1))
    state = algo.state_dict()
    for key in ("lr_placement", "momentum_masking", "clip_norm"):
        del state["params"][key]
    fresh = fetch(seed)
    fresh.load_state_dict(state)
    assert fresh.steps == 1
    with pytest.raises(ValueError, match="lr_placement"):
        fetch(seed, lr_placement="update").load_state_dict(state)


# ------------------------------------------------------------- top-k download
def test_a_client_trains_on_its_replica_which_downloads_topk_of_what_it_lacks():
    """One of two clients a step: a client that sat out lags the server by two updates."""
    algo = SGD(3, lr=1.0, participation=1, download="topk", download_k=1, dtype=np.float64)
    comm = LocalCommunicator(workers=2)
    w = np.zeros(3)
    updates = [np.array([1.0, -3.0, 2.0]), np.array([0.5, 0.0, 0.0]), np.zeros(3)]
    seen = {}
    for g in updates:
        (i,) = algo.participants(comm)
        (weights,) = algo.worker_weights(w, comm)
        assert algo.worker_weights(w, comm)[0] is weights  # one pull a step
        seen.setdefault(int(i), []).append(weights.tolist())
        w = w - algo.step([g], comm)
        assert comm.last_step.download == 1 * (8 + 4)  # one float64 value, one int32 index
    # Hand computation: w goes [0, 0, 0] -> [-1, 3, -2] -> [-1.5, 3, -2]; a client's first
    # pull finds its replica equal to the initial weights, later pulls take the largest gap.
    replicas = {0: np.zeros(3), 1: np.zeros(3)}
    ws = [np.zeros(3), np.array([-1.0, 3.0, -2.0]), np.array([-1.5, 3.0, -2.0])]
    order = [int(sample) for sample in _participants(algo.seed, 3)]
    expected: dict[int, list] = {}
    for t, i in enumerate(order):
        gap = ws[t] - replicas[i]
        j = int(np.argmax(np.abs(gap)))
        replicas[i][j] += gap[j]
        expected.setdefault(i, []).append(replicas[i].tolist())
    assert seen == expected


def _participants(seed, steps):
    from pysketch.compress import sample_participants

    return [sample_participants(2, 1, seed=seed, step=t)[0] for t in range(steps)]


def test_replicas_are_checkpointed_and_checked():
    algo = SGD(3, lr=1.0, download="topk", download_k=1)
    comm = LocalCommunicator(workers=2)
    w = np.ones(3, np.float32)
    algo.worker_weights(w, comm)
    w -= algo.step([np.array([0.0, 2.0, 0.0], np.float32)] * 2, comm)
    algo.worker_weights(w, comm)
    state = algo.state_dict()
    assert state["download.replicas"].tolist() == [[1.0, -1.0, 1.0]] * 2
    back = SGD(3, lr=1.0, download="topk", download_k=1)
    back.load_state_dict(state)
    np.testing.assert_array_equal(
        back.state_dict()["download.replicas"], state["download.replicas"]
    )
    state["download.replicas"] = state["download.replicas"][:1]
    with pytest.raises(ValueError, match="must hold 2 replicas"):
        SGD(3, lr=1.0, download="topk", download_k=1).load_state_dict(state)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(download="topk"), "download_k must be"),
        (dict(download="changed", download_k=2), "download_k is for download='topk'"),
        (dict(download="topk", download_k=4), r"download_k must be an integer in \[1, d=3\]"),
    ],
)
def test_bad_download_k_is_refused_by_name(params, match):
    with pytest.raises((TypeError, ValueError), match=match):
        SGD(3, lr=1.0, **params)


# ---------------------------------------------------------------- zeroing rule
def _one_step_tables(zeroing, seed, g, k):
    algo = FetchSGD(
        len(g), lr=1.0, k=k, rows=3, cols=4, rho=0.5, seed=seed, dtype=np.float64, zeroing=zeroing
    )
    update = algo.step([g], LocalCommunicator(1))
    state = algo.state_dict()
    return update, state["server.error"], state["server.momentum"]


def test_nonzero_zeroing_forgets_the_cells_where_the_sketch_of_the_update_is_not_zero():
    """The released code's rule, against its definition: S_e and S_u (masked) keep every
    cell where CountSketch(delta) is 0. Small integer gradients in a 3 x 4 sketch make exact
    cancellations, where it differs from zeroing every cell a chosen coordinate hashes to."""
    rng = np.random.default_rng(0)
    differed = 0
    for trial in range(60):
        g = rng.integers(-2, 3, size=8).astype(np.float64)
        seed, k = trial, 6
        update, error, momentum = _one_step_tables("nonzero", seed, g, k)
        sketch_of = CountSketch(8, 3, 4, seed=seed, dtype=np.float64)
        table = sketch_of.copy().accumulate(g).table
        applied = sketch_of.copy().accumulate(update).table
        expected = np.where(applied != 0, 0.0, table)
        np.testing.assert_array_equal(error, expected)
        np.testing.assert_array_equal(momentum, expected)
        _, cells_error, _ = _one_step_tables("cells", seed, g, k)
        differed += not np.array_equal(cells_error, error)
    assert differed > 0  # the two rules are told apart on these cases
