"""The algorithms: equivalences the papers imply, checkpoints, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pysketch import CountSketch, topk
from pysketch.compress import (
    ALGORITHMS,
    SGD,
    FetchSGD,
    LocalCommunicator,
    MemSGD,
    MPICommunicator,
    SketchDL,
    make_algorithm,
)
from pysketch.errors import NonFiniteError
from tests.compress.scenarios import (
    CONFIGS,
    STEPS,
    D,
    build,
    collision_free_seed,
    gradient,
    trajectory,
)

W = 4


@pytest.fixture(params=sorted(CONFIGS))
def config(request):
    return request.param


def _grads(rng, workers=W, d=D):
    return [rng.standard_normal(d).astype(np.float32) for _ in range(workers)]


# ------------------------------------------------------------ equivalences
@pytest.mark.parametrize("compressor", ["topk", "randomk"])
def test_memsgd_with_k_equal_d_is_sgd(compressor):
    mem = MemSGD(D, lr=0.3, k=D, compressor=compressor)
    sgd = SGD(D, lr=0.3)
    a = trajectory(mem, LocalCommunicator(W))
    b = trajectory(sgd, LocalCommunicator(W))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("error", ["subtract", "zero"])
def test_fetchsgd_without_collisions_is_server_topk(error, rng):
    d, k, rho, lr, rows, cols = 40, 3, 0.9, 0.5, 3, 1 << 14
    seed = collision_free_seed(d, rows, cols)
    algo = FetchSGD(
        d, lr=lr, k=k, rows=rows, cols=cols, rho=rho, error=error, seed=seed, dtype=np.float64
    )
    comm = LocalCommunicator(W)
    u, e = np.zeros(d), np.zeros(d)
    for _ in range(8):
        grads = [rng.standard_normal(d) for _ in range(W)]
        update = algo.step(grads, comm)
        # The same momentum and error handling on dense vectors, on the server.
        u = rho * u + np.mean(grads, axis=0)
        e += lr * u
        idx, val = topk(e, k)
        expected = np.zeros(d)
        expected[idx] = val
        e[idx] = 0.0  # subtracting S(delta) without collisions zeroes e there too
        if error == "zero":
            u[idx] = 0.0
        np.testing.assert_allclose(update, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("memory", [True, False])
def test_memsgd_momentum_is_the_released_local_topk(memory, rng):
    # FetchSGD's released code, local top-k: u = rho u + g; e += u; send topk(e);
    # e and u are zeroed where it sent (without memory, e is u itself each step).
    d, k, rho, lr = 50, 4, 0.9, 0.5
    algo = MemSGD(d, lr=lr, k=k, rho=rho, memory=memory, dtype=np.float64)
    comm = LocalCommunicator(W)
    u, e = np.zeros((W, d)), np.zeros((W, d))
    for _ in range(6):
        grads = [rng.standard_normal(d) for _ in range(W)]
        update = algo.step(grads, comm)
        expected = np.zeros(d)
        for i, g in enumerate(grads):
            u[i] = rho * u[i] + g
            e[i] = e[i] + lr * u[i] if memory else lr * u[i]
            idx, val = topk(e[i], k)
            expected[idx] += val / W
            e[i, idx] = 0.0
            u[i, idx] = 0.0
        np.testing.assert_allclose(update, expected, rtol=1e-12, atol=1e-14)


def test_sketchdl_update_is_mean_of_desketched_deltas(rng):
    algo = SketchDL(D, lr=0.7, rows=3, cols=50, seed=9, dtype=np.float64)
    deltas = _grads(rng)
    deltas = [x.astype(np.float64) for x in deltas]
    update = algo.step(deltas, LocalCommunicator(W))
    each = [
        CountSketch(D, 3, 50, seed=9, dtype=np.float64).accumulate(x).desketch() for x in deltas
    ]
    np.testing.assert_allclose(update, 0.7 * np.mean(each, axis=0), rtol=1e-10)


def test_sketchdl_error_feedback_keeps_what_the_sketch_lost(rng):
    algo = SketchDL(D, lr=1.0, rows=3, cols=50, error_feedback=True, dtype=np.float64)
    delta = rng.standard_normal(D)
    algo.step([delta], LocalCommunicator(1))
    sent = CountSketch(D, 3, 50, dtype=np.float64).accumulate(delta).desketch()
    np.testing.assert_allclose(algo.state_dict()["workers.error"][0], delta - sent, atol=1e-12)


def test_sketched_sgd_second_round_applies_exact_sums(rng):
    algo = make_algorithm(
        "sketched_sgd", D, lr=1.0, k=5, rows=5, cols=32, rho=0.0, p2=4, dtype=np.float64
    )
    grads = [x.astype(np.float64) for x in _grads(rng)]
    update = algo.step(grads, LocalCommunicator(W))
    support = np.flatnonzero(update)
    assert len(support) == 5
    np.testing.assert_allclose(update[support], np.mean(grads, axis=0)[support], rtol=1e-12)
    # Error reset and momentum stopping on the applied support, on every worker.
    state = algo.state_dict()
    assert not state["workers.error"][:, support].any()
    assert not state["workers.momentum"][:, support].any()


def test_fetchsgd_momentum_and_error_live_on_the_server():
    algo = build("fetchsgd-zero")
    trajectory(algo, LocalCommunicator(W), steps=2)
    state = algo.state_dict()
    assert "workers.memory" not in state and state["server.error"].shape == (5, 64)


# --------------------------------------------------- layouts and switches
def test_local_and_single_rank_mpi_agree(config):
    a = trajectory(build(config), LocalCommunicator(W))
    b = trajectory(build(config), MPICommunicator(workers_per_rank=W))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_presum_switch_gives_the_same_updates(config):
    plain = build(config)
    plain.presum = False
    a = trajectory(build(config), LocalCommunicator(W))
    b = trajectory(plain, LocalCommunicator(W))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_state_dict_round_trip_resumes_the_same_trajectory(config):
    full = trajectory(build(config), LocalCommunicator(W), steps=STEPS)
    first = build(config)
    head = trajectory(first, LocalCommunicator(W), steps=3)
    state = {
        k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in first.state_dict().items()
    }
    resumed = build(config)
    resumed.load_state_dict(state)
    tail = trajectory(resumed, LocalCommunicator(W), steps=STEPS - 3, w=head[-1])
    np.testing.assert_array_equal(np.array(head + tail), np.array(full))


def test_registry_names_every_algorithm():
    assert set(ALGORITHMS) == {
        "sgd",
        "true_topk",
        "memsgd",
        "sketched_sgd",
        "fetchsgd",
        "sketchdl",
    }
    assert all(cls.name == name for name, cls in ALGORITHMS.items())


# ---------------------------------------------------------------- bad input
def _snapshot(algo):
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in algo.state_dict().items()}


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda g: g[:-1], ValueError, "one array per local worker"),
        (lambda g: [g[0][:-1], *g[1:]], ValueError, r"vectors\[0\] must have shape"),
        (
            lambda g: [g[0], np.full(D, np.nan, np.float32), *g[2:]],
            ValueError,
            r"vectors\[1\] holds 300 NaN or Inf",
        ),
        (lambda g: [g[0].astype(complex), *g[1:]], TypeError, "real numbers"),
        (lambda g: [list(g[0]), *g[1:]], TypeError, r"vectors\[0\] must be an array"),
        (lambda g: g[0], TypeError, "list of arrays"),
    ],
    ids=["count", "shape", "nan", "complex", "list", "not-a-list"],
)
def test_bad_vectors_raise_and_change_nothing(config, mutate, error, match, rng):
    algo, comm = build(config), LocalCommunicator(W)
    trajectory(algo, comm, steps=2)
    before, steps = _snapshot(algo), algo.steps
    with pytest.raises(error, match=match):
        algo.step(mutate(_grads(rng)), comm)
    _assert_same_state(before, _snapshot(algo))
    assert algo.steps == steps and comm.step_count == 2


def test_bad_learning_rate_and_communicator(rng):
    algo = build("fetchsgd-zero")
    with pytest.raises(ValueError, match="lr must lie"):
        algo.step(_grads(rng), LocalCommunicator(W), lr=-1.0)
    with pytest.raises(TypeError, match="comm must be a pysketch Communicator"):
        algo.step(_grads(rng), object())
    trajectory(algo, LocalCommunicator(W), steps=1)
    with pytest.raises(ValueError, match=r"comm holds workers \[0, 1\]"):
        algo.step(_grads(rng, workers=2), LocalCommunicator(2))


@pytest.mark.parametrize(
    "name, params, error, match",
    [
        ("memsgd", dict(lr=0.1, k=D + 1), ValueError, r"k must be an integer in \[1, d=300\]"),
        (
            "memsgd",
            dict(lr=0.1, k=5, compressor="bottomk"),
            ValueError,
            "compressor must be one of",
        ),
        ("fetchsgd", dict(lr=0.1, k=5, rows=0, cols=10), ValueError, "rows must be a positive"),
        ("fetchsgd", dict(lr=0.1, k=5, rows=3, cols=10, error="add"), ValueError, "error must be"),
        ("sketched_sgd", dict(lr=0.1, k=5, rows=3, cols=10, p2=0.5), ValueError, "p2 must lie"),
        ("sgd", dict(lr=0.1, rho=1.0), ValueError, r"rho must lie in \[0.0, 1.0\)"),
        ("sgd", dict(lr=0.1, nesterov="no"), TypeError, "nesterov must be"),
        ("sgd", dict(lr=float("nan")), ValueError, "lr must be finite"),
        ("sgd", dict(lr=0.1, momentum=0.9), TypeError, "momentum"),
        ("adam", dict(lr=0.1), ValueError, "name must be one of"),
    ],
)
def test_bad_parameters_name_the_argument(name, params, error, match):
    with pytest.raises(error, match=match):
        make_algorithm(name, D, **params)


def test_load_state_dict_validates_before_changing_anything():
    algo = build("sketched")
    trajectory(algo, LocalCommunicator(W), steps=2)
    good = _snapshot(algo)
    for key, bad, match in [
        ("algorithm", "fetchsgd", "must be 'sketched_sgd'"),
        ("steps", -1, "non-negative integer"),
        ("workers.error", np.zeros((W, D + 1), np.float32), r"must have shape \(4, 300\)"),
        ("workers.momentum", np.full((W, D), np.inf, np.float32), "finite floats"),
    ]:
        with pytest.raises(ValueError, match=match):
            algo.load_state_dict({**good, key: bad})
        _assert_same_state(good, _snapshot(algo))


def test_update_dtype_and_lr_override(rng):
    algo = build("sgd", dtype=np.float64)
    update = algo.step(_grads(rng), LocalCommunicator(W), lr=0.0)
    assert update.dtype == np.float64 and not update.any()


def test_gradients_are_deterministic_per_worker():
    w = np.zeros(D, dtype=np.float32)
    np.testing.assert_array_equal(gradient(3, 1, w), gradient(3, 1, w))


@pytest.mark.parametrize("config", ["sgd", "sgd-nesterov", "fetchsgd-zero", "sketchdl"])
def test_step_summed_equals_step_on_each_worker(config):
    algo, summed = build(config), build(config)
    comm_a, comm_b = LocalCommunicator(W), LocalCommunicator(W)
    w = np.zeros(D, dtype=np.float32)
    for t in range(3):
        grads = [gradient(worker, t, w) for worker in range(W)]
        a = algo.step(grads, comm_a)
        b = summed.step_summed(np.sum(grads, axis=0), comm_b)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        w = w - a
    assert comm_a.total == comm_b.total


@pytest.mark.parametrize("config", ["memsgd-topk", "sketched", "sketchdl-ef"])
def test_step_summed_is_refused_when_workers_keep_state(config, rng):
    with pytest.raises(TypeError, match="keeps state on each worker"):
        build(config).step_summed(np.zeros(D, np.float32), LocalCommunicator(W))


def test_non_finite_vectors_raise_non_finite_error():
    from pysketch.errors import NonFiniteError

    algo = build("fetchsgd-zero")
    bad = np.full(D, np.inf, np.float32)
    with pytest.raises(NonFiniteError, match="local_sum holds 300 NaN or Inf"):
        algo.step_summed(bad, LocalCommunicator(W))
    assert issubclass(NonFiniteError, ValueError) and algo.steps == 0


def test_sketchdl_reseed_draws_new_hashes_each_round_on_every_worker(rng):
    d, rows, cols = 64, 2, 8
    fixed = SketchDL(d, lr=1.0, rows=rows, cols=cols, seed=1, dtype=np.float64)
    fresh = SketchDL(d, lr=1.0, rows=rows, cols=cols, seed=1, reseed=True, dtype=np.float64)
    x = rng.standard_normal(d)
    comm_a, comm_b = LocalCommunicator(2), LocalCommunicator(2)
    a = [fixed.step([x, x], comm_a) for _ in range(2)]
    b = [fresh.step([x, x], comm_b) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])  # same hashes: same update
    assert not np.allclose(b[0], b[1])  # fresh hashes each round
    # Averaged over rounds, the fresh sketches approach x (unbiased, independent rounds).
    many = SketchDL(d, lr=1.0, rows=rows, cols=cols, seed=3, reseed=True, dtype=np.float64)
    mean = np.mean([many.step([x], LocalCommunicator(1)) for _ in range(400)], axis=0)
    assert np.linalg.norm(mean - x) < 0.2 * np.linalg.norm(x)
    assert np.linalg.norm(a[0] - x) > 0.5 * np.linalg.norm(x)


def test_values_that_overflow_the_dtype_are_refused_and_change_nothing():
    algo, comm = build("sgd"), LocalCommunicator(W)
    trajectory(algo, comm, steps=1)
    before = _snapshot(algo)
    big = [np.zeros(D) for _ in range(W)]
    big[2][7] = 1e39  # finite in float64, inf once cast to the algorithm's float32
    with pytest.raises(ValueError, match=r"vectors\[2\] holds 1 value\(s\) that overflow float32"):
        algo.step(big, comm)
    _assert_same_state(before, _snapshot(algo))
    assert algo.steps == 1


# ----------------------------------------- issue 20: failed steps and loads
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_an_overflowing_step_raises_changes_nothing_and_the_run_goes_on(config):
    """lr x g overflowing float32 (issue 20, items 3 and 4): a ValueError, no state, no
    traffic, no step counted; the next steps are those of a run without the failed call."""
    algo, comm = build(config), LocalCommunicator(W)
    w = trajectory(algo, comm, steps=2)[-1]
    before, total, last, count = _snapshot(algo), comm.total, comm.last_step, comm.step_count
    grads = [100 * gradient(worker, algo.steps, w) for worker in comm.worker_ids]
    with pytest.raises(ValueError, match=r"overflow|non-finite") as raised:
        algo.step(grads, comm, lr=1e38)
    assert not isinstance(raised.value, NonFiniteError)  # the input itself was finite
    _assert_same_state(before, _snapshot(algo))
    assert (comm.total, comm.last_step, comm.step_count, algo.steps) == (total, last, count, 2)
    reference, ref_comm = build(config), LocalCommunicator(W)
    trajectory(reference, ref_comm, steps=2)
    np.testing.assert_array_equal(
        trajectory(algo, comm, steps=2, w=w), trajectory(reference, ref_comm, steps=2, w=w)
    )
    assert comm.total == ref_comm.total


def test_memsgd_names_the_vector_whose_scaled_values_overflow():
    algo, comm = build("memsgd-randomk"), LocalCommunicator(W)
    grads = _grads(np.random.default_rng(0))
    grads[1][7] = 3e30  # finite, but lr = 1e10 times it is not (issue 20, item 1)
    with pytest.raises(
        ValueError, match=r"vectors\[1\] holds 1 value\(s\) that overflow float32 once multiplied"
    ):
        algo.step(grads, comm, lr=1e10)


def test_a_nan_input_is_refused_even_when_another_worker_fails_too(rng):
    algo, comm = build("fetchsgd-zero"), LocalCommunicator(W)
    grads = _grads(rng)
    grads[2] = grads[2].astype(np.float64)
    grads[0][3], grads[2][5] = np.nan, 1e39  # 1e39 is finite, but not in float32
    with pytest.raises(
        NonFiniteError, match=r"vectors\[0\] holds 1 NaN.*vectors\[2\] holds 1 value\(s\) that"
    ):
        algo.step(grads, comm, lr=10.0)
    assert algo.steps == 0 and algo.state_dict()["worker_ids"].size == 0


@pytest.mark.parametrize("config", ["sgd", "memsgd-topk", "sketched-p1-p2", "fetchsgd-subtract"])
def test_unchecked_steps_update_in_place_on_the_same_trajectory(config):
    checked, unchecked = build(config), build(config)
    comm_a, comm_b = LocalCommunicator(W), LocalCommunicator(W)
    w = np.zeros(D, dtype=np.float32)
    out = np.empty(D, dtype=np.float32)
    for t in range(4):
        grads = [gradient(worker, t, w) for worker in range(W)]
        a = checked.step(grads, comm_a)
        assert unchecked.step(grads, comm_b, out=out, check_finite=False) is out
        np.testing.assert_array_equal(a, out)
        w = w - a
    _assert_same_state(_snapshot(checked), _snapshot(unchecked))


def test_out_must_match_the_update():
    algo, grads = build("sgd"), _grads(np.random.default_rng(0))
    for out, error, match in [
        (np.empty(D, np.float64), ValueError, r"out must have shape \(300,\) and dtype float32"),
        (np.empty(D + 1, np.float32), ValueError, "out must have shape"),
        (np.empty(2 * D, np.float32)[::2], ValueError, "C-contiguous"),
        ([0.0] * D, TypeError, "out must be a NumPy array"),
    ]:
        with pytest.raises(error, match=match):
            algo.step(grads, LocalCommunicator(W), out=out)
    assert algo.steps == 0


def test_a_refused_load_leaves_nothing_half_loaded():
    """Values that overflow float32 in one worker's array (issue 20, item 5)."""
    source = build("memsgd-topk")
    trajectory(source, LocalCommunicator(W), steps=1)
    state = source.state_dict()
    state["workers.memory"] = state["workers.memory"].astype(np.float64)
    state["workers.memory"][3, 7] = 1e39  # finite, but not in float32
    algo = build("memsgd-topk")
    with pytest.raises(ValueError) as raised:
        algo.load_state_dict(state)
    assert algo.state_dict()["worker_ids"].size == 0 and algo.steps == 0
    trajectory(algo, LocalCommunicator(W), steps=1)  # and it runs
    assert "state['workers.memory'] holds values that overflow float32" in str(raised.value)


@pytest.mark.parametrize(
    "saved, loading, names",
    [
        (dict(seed=0), dict(seed=1), "seed=0 in the state, 1 here"),
        (dict(hash="mix"), dict(hash="polynomial"), "hash='mix' in the state, 'polynomial' here"),
        (dict(k=10), dict(k=12), "k=10 in the state, 12 here"),
        (dict(rows=5, cols=64), dict(rows=5, cols=65), "cols=64 in the state, 65 here"),
    ],
)
def test_a_state_of_other_parameters_is_refused_by_name(saved, loading, names):
    source = build("fetchsgd-zero", **saved)
    trajectory(source, LocalCommunicator(W), steps=1)
    algo = build("fetchsgd-zero", **loading)
    before = _snapshot(algo)
    with pytest.raises(ValueError, match=rf"state\['params'\] does not match.*{names}"):
        algo.load_state_dict(source.state_dict())
    _assert_same_state(before, _snapshot(algo))


def test_a_state_of_another_dimension_is_refused_by_name():
    source = make_algorithm("sgd", 1000, lr=0.1)
    trajectory_state = source.state_dict()
    with pytest.raises(ValueError, match="d=1000 in the state, 2000 here"):
        make_algorithm("sgd", 2000, lr=0.1).load_state_dict(trajectory_state)


def test_the_learning_rate_and_device_may_change_on_resume():
    source = build("sgd")
    trajectory(source, LocalCommunicator(W), steps=1)
    resumed = build("sgd", lr=0.05)
    resumed.load_state_dict(source.state_dict())
    assert resumed.steps == 1


@pytest.mark.parametrize(
    "ids, match",
    [
        (np.array([0.7, 1.9, 2.0, 3.0]), "integers"),
        (np.array([0, 1, 1, 2]), "unique non-negative"),
        (np.array([-1, 0, 1, 2]), "unique non-negative"),
        (np.array([[0, 1], [2, 3]]), "1-D"),
    ],
    ids=["floats", "duplicates", "negative", "2-d"],
)
def test_bad_worker_ids_are_refused_at_load(ids, match):
    source = build("memsgd-topk")
    trajectory(source, LocalCommunicator(W), steps=1)
    state = {**source.state_dict(), "worker_ids": ids}
    algo = build("memsgd-topk")
    with pytest.raises(ValueError, match=rf"state\['worker_ids'\] must be .*{match}"):
        algo.load_state_dict(state)
    assert algo.state_dict()["worker_ids"].size == 0


def test_state_dicts_record_the_parameters_as_plain_values():
    state = build("sketched-p1-p2").state_dict()
    assert state["params"] == {
        "d": D,
        "seed": 3,
        "dtype": "float32",
        "participation": 1.0,
        "download": "collective",
        "download_k": None,
        "k": 10,
        "rows": 5,
        "cols": 64,
        "rho": 0.9,
        "p1": 2,
        "p2": 3,
        "momentum_stopping": True,
        "hash": "mix",
    }
