"""Count-Min sketch: against a NumPy reference, across devices, and its error bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pysketch import CountSketch, _cuda, hashing
from pysketch.countmin import CountMinSketch
from tests.conftest import contended, on_device, to_host

# The device fixture is a constant per test item, so reusing it across examples is safe.
fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def needs_cuda():
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")


# ---------------------------------------------------------------- references


def buckets(rows, cols, seed, family, indices):
    """``(rows, n)`` bucket of every index in every row, from the shared hash."""
    keys = hashing.hash_keys(seed, rows, family)
    code = hashing.family_code(family)
    idx = np.asarray(indices, dtype=np.int64)
    return np.stack([hashing.bucket_sign_batch(code, keys, j, idx, cols)[0] for j in range(rows)])


def reference_plain(rows, cols, seed, family, indices, weights, dtype=np.float64):
    table = np.zeros((rows, cols), dtype=dtype)
    b = buckets(rows, cols, seed, family, indices)
    w = np.broadcast_to(np.asarray(weights, dtype=dtype), (len(indices),))
    for j in range(rows):
        np.add.at(table[j], b[j], w)
    return table


def reference_conservative(rows, cols, seed, family, indices, weights, dtype=np.float64):
    """One call on an empty table: each key's weights (as the table stores them) summed
    in order, its target ``min + sum`` (in float64, rounded once to ``dtype``) taken
    before any cell moves, every cell raised to the largest target of its keys."""
    table = np.zeros((rows, cols), dtype=dtype)
    w = np.broadcast_to(np.asarray(weights, dtype=dtype), (len(indices),))
    sums: dict[int, float] = {}
    for key, weight in zip(
        np.asarray(indices).tolist(), w.astype(np.float64).tolist(), strict=True
    ):
        sums[key] = sums.get(key, 0.0) + weight
    keys = list(sums)
    b = buckets(rows, cols, seed, family, keys)
    rr = np.arange(rows)
    targets = [dtype(np.float64(table[rr, b[:, t]].min()) + sums[k]) for t, k in enumerate(keys)]
    for t, target in enumerate(targets):
        table[rr, b[:, t]] = np.maximum(table[rr, b[:, t]], target)
    return table


def reference_sequential(rows, cols, seed, family, indices, weights):
    """Estan and Varghese's update, one key at a time (float64)."""
    table = np.zeros((rows, cols))
    b = buckets(rows, cols, seed, family, indices)
    rr = np.arange(rows)
    for t, weight in enumerate(np.broadcast_to(np.asarray(weights, dtype=float), len(indices))):
        table[rr, b[:, t]] = np.maximum(table[rr, b[:, t]], table[rr, b[:, t]].min() + weight)
    return table


def true_totals(indices, weights, d):
    totals = np.zeros(d)
    np.add.at(totals, np.asarray(indices), np.broadcast_to(weights, (len(indices),)))
    return totals


def sketch_of(device, indices, weights, **kw):
    cms = CountMinSketch(device=device, **kw)
    w = weights if np.ndim(weights) == 0 else on_device(np.asarray(weights), device)
    return cms.update(on_device(np.asarray(indices, dtype=np.int64), device), w)


updates = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 60), min_size=n, max_size=n),
        st.lists(st.integers(0, 9), min_size=n, max_size=n),
    )
)
shapes = st.tuples(st.integers(1, 5), st.integers(1, 17), st.integers(0, 2**64 - 1))
families = st.sampled_from(hashing.FAMILIES)


# ------------------------------------------------------------- construction


def test_defaults_and_params():
    cms = CountMinSketch(3, 10)
    assert cms.params == {
        "rows": 3,
        "cols": 10,
        "seed": 0,
        "hash": "mix",
        "dtype": np.dtype(np.float64),
        "conservative": False,
    }
    assert cms.table.shape == (3, 10) and cms.total_weight == 0.0
    assert cms.relative_error == pytest.approx(math.e / 10)


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"rows": 0}, ValueError, "rows"),
        ({"rows": 65}, ValueError, "rows"),
        ({"rows": 2.0}, TypeError, "rows"),
        ({"cols": 0}, ValueError, "cols"),
        ({"cols": 2**32}, ValueError, "cols"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"hash": "md5"}, ValueError, "hash"),
        ({"dtype": np.int32}, TypeError, "dtype"),
        ({"conservative": "yes"}, TypeError, "conservative"),
        ({"device": "tpu"}, ValueError, "device"),
    ],
)
def test_constructor_rejects(kwargs, exc, name):
    args = {"rows": 3, "cols": 8, **kwargs}
    with pytest.raises(exc, match=name):
        CountMinSketch(**args)


# ------------------------------------------------------------- correctness


@fixture_ok
@given(data=updates, shape=shapes, family=families, dtype=st.sampled_from([np.float32, np.float64]))
def test_plain_matches_numpy_reference(device, data, shape, family, dtype):
    (indices, weights), (rows, cols, seed) = data, shape
    cms = sketch_of(
        device, indices, weights, rows=rows, cols=cols, seed=seed, hash=family, dtype=dtype
    )
    expected = reference_plain(rows, cols, seed, family, indices, weights, dtype)
    np.testing.assert_array_equal(to_host(cms.table), expected)
    assert cms.total_weight == sum(weights)


@fixture_ok
@given(data=updates, shape=shapes, family=families, dtype=st.sampled_from([np.float32, np.float64]))
def test_conservative_matches_batch_reference(device, data, shape, family, dtype):
    (indices, weights), (rows, cols, seed) = data, shape
    w = np.asarray(weights) / 3.0  # non-dyadic: rounding must also agree
    kw = {"rows": rows, "cols": cols, "seed": seed, "hash": family, "dtype": dtype}
    cms = sketch_of(device, indices, w, conservative=True, **kw)
    expected = reference_conservative(rows, cols, seed, family, indices, w, dtype)
    if device == "cpu":  # the sums of repeated keys in update order
        np.testing.assert_array_equal(cms.table, expected)
    else:  # added by atomics, in no fixed order: equal up to their rounding
        np.testing.assert_allclose(
            to_host(cms.table), expected, rtol=1e-6 if dtype == np.float32 else 1e-14
        )
    np.testing.assert_array_equal(to_host(cms.table) > 0, expected > 0)


few_updates = st.integers(1, 12).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 20), min_size=n, max_size=n),
        st.lists(st.integers(0, 9), min_size=n, max_size=n),
    )
)


@settings(fixture_ok, max_examples=10)
@given(data=few_updates, shape=shapes, family=families)
def test_conservative_one_key_per_call_is_the_sequential_update(device, data, shape, family):
    (indices, weights), (rows, cols, seed) = data, shape
    cms = CountMinSketch(rows, cols, seed=seed, hash=family, conservative=True, device=device)
    for key, weight in zip(indices, weights, strict=True):
        cms.update(on_device(np.array([key]), device), float(weight))
    expected = reference_sequential(rows, cols, seed, family, indices, weights)
    np.testing.assert_array_equal(to_host(cms.table), expected)


def test_conservative_order_within_a_call_does_not_matter(device, rng):
    """Colliding keys in one call: every order gives the same table (integer weights)."""
    indices = rng.integers(0, 30, 200)
    weights = rng.integers(1, 5, 200).astype(float)
    first = sketch_of(device, indices, weights, rows=3, cols=4, seed=2, conservative=True)
    order = rng.permutation(200)
    second = sketch_of(
        device, indices[order], weights[order], rows=3, cols=4, seed=2, conservative=True
    )
    np.testing.assert_array_equal(to_host(first.table), to_host(second.table))


def test_float_weights_match_reference(device, rng):
    indices = rng.integers(0, 1000, 50)
    weights = rng.random(50)
    cms = sketch_of(device, indices, weights, rows=4, cols=32, seed=9)
    np.testing.assert_allclose(
        to_host(cms.table), reference_plain(4, 32, 9, "mix", indices, weights), rtol=1e-12
    )
    assert cms.total_weight == pytest.approx(weights.sum(), rel=1e-12)


@pytest.mark.cuda
@pytest.mark.parametrize("conservative", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_and_cuda_tables_equal(conservative, dtype):
    needs_cuda()
    rng = np.random.default_rng(3)
    indices = rng.integers(0, 2**61 - 1, 60)
    indices[::3] = indices[0]  # repeats: summed per key by the conservative update
    # Integers keep the sums exact in any order: the CUDA atomics add in no fixed one.
    weights = rng.integers(0, 100, 60).astype(float)
    kw = {"rows": 5, "cols": 23, "seed": 77, "dtype": dtype, "conservative": conservative}
    cpu = sketch_of("cpu", indices, weights, **kw)
    gpu = sketch_of("cuda", indices, weights, **kw)
    np.testing.assert_array_equal(to_host(gpu.table), cpu.table)
    queries = np.arange(0, 2**61 - 1, 2**55, dtype=np.int64)
    got = to_host(gpu.estimate(on_device(queries, "cuda")))
    np.testing.assert_array_equal(got, cpu.estimate(queries))
    # The bounds use total_weight, a float sum whose order differs between backends.
    assert gpu.total_weight == pytest.approx(cpu.total_weight, rel=1e-12)
    for method in ("upper_bound", "lower_bound"):
        got = to_host(getattr(gpu, method)(on_device(queries, "cuda")))
        np.testing.assert_allclose(got, getattr(cpu, method)(queries), rtol=1e-6)
    np.testing.assert_array_equal(to_host(cpu.to("cuda").table), cpu.table)
    assert gpu.to("cpu").total_weight == gpu.total_weight


@pytest.mark.parametrize("conservative", [False, True])
def test_sparse_and_dense_agree(device, rng, conservative):
    x = rng.integers(0, 5, 40).astype(np.float64)
    x[rng.random(40) < 0.5] = 0.0
    kw = {"rows": 3, "cols": 11, "seed": 5, "conservative": conservative}
    dense = CountMinSketch(device=device, **kw).update_dense(on_device(x, device))
    sparse = sketch_of(device, np.arange(40), x, **kw)
    np.testing.assert_array_equal(to_host(dense.table), to_host(sparse.table))
    assert dense.total_weight == sparse.total_weight == x.sum()


@pytest.mark.cuda
def test_cuda_update_threads_of_one_block_hitting_one_cell_lose_nothing():
    """32 threads of one block add into the same cells at once (one key, 32 times): the
    counters are exact only if the kernel adds with atomics."""
    needs_cuda()
    cms = CountMinSketch(3, 8, seed=2, device="cuda")
    cms._table = contended(cms._table)
    cms.update(on_device(np.full(32, 7), "cuda"), on_device(np.full(32, 2.0), "cuda"))
    np.testing.assert_array_equal(to_host(cms.estimate(on_device(np.array([7]), "cuda"))), [64.0])
    assert to_host(cms.table).sum() == 3 * 64.0


def test_scalar_weight_equals_array(device):
    indices = [4, 8, 4, 15]
    a = sketch_of(device, indices, 2, rows=3, cols=7)
    b = sketch_of(device, indices, np.full(4, 2.0), rows=3, cols=7)
    c = sketch_of(device, indices, 1.0, rows=3, cols=7)
    np.testing.assert_array_equal(to_host(a.table), to_host(b.table))
    np.testing.assert_array_equal(to_host(a.table), 2 * to_host(c.table))
    assert a.total_weight == b.total_weight == 8.0 and c.total_weight == 4.0


def test_integer_and_unsigned_inputs(device):
    idx = np.array([1, 2, 3], dtype=np.uint64)
    w = np.array([1, 2, 3], dtype=np.int32)
    cms = CountMinSketch(2, 64, seed=1, device=device)
    cms.update(on_device(idx, device), on_device(w, device))
    est = to_host(cms.estimate(on_device(idx.astype(np.uint32), device)))
    assert (est >= [1, 2, 3]).all() and cms.total_weight == 6.0


def test_empty_update_is_a_no_op(device):
    cms = CountMinSketch(2, 8, device=device)
    cms.update(on_device(np.array([], dtype=np.int64), device), on_device(np.array([]), device))
    cms.update(on_device(np.array([], dtype=np.int64), device), 3.0)
    assert cms.total_weight == 0.0 and not to_host(cms.table).any()
    assert to_host(cms.estimate(on_device(np.array([], dtype=np.int64), device))).shape == (0,)


def test_results_live_on_the_sketch_device(device):
    cms = sketch_of(device, [1], [1.0], rows=2, cols=8)
    query = on_device(np.array([1]), device)
    for out in (cms.estimate(query), cms.upper_bound(query), cms.lower_bound(query)):
        assert _cuda.is_cuda_array(out) == (device == "cuda")
        assert np.dtype(out.dtype) == np.float64


# ------------------------------------------------------------- guarantees


@fixture_ok
@given(data=updates, shape=shapes)
def test_never_underestimates_and_conservative_is_tighter(device, data, shape):
    (indices, weights), (rows, cols, seed) = data, shape
    query = on_device(np.arange(61), device)
    truth = true_totals(indices, weights, 61)
    plain = sketch_of(device, indices, weights, rows=rows, cols=cols, seed=seed)
    cons = sketch_of(device, indices, weights, rows=rows, cols=cols, seed=seed, conservative=True)
    est_plain = to_host(plain.estimate(query))
    est_cons = to_host(cons.estimate(query))
    assert (est_plain >= truth).all()
    assert (est_cons >= truth).all()
    assert (est_cons <= est_plain).all()
    assert (to_host(cons.table) <= to_host(plain.table)).all()
    assert cons.total_weight == plain.total_weight


def test_bounds_follow_their_formulas(device, rng):
    indices = rng.integers(0, 50, 30)
    weights = rng.integers(1, 10, 30).astype(float)
    cms = sketch_of(device, indices, weights, rows=3, cols=16, seed=2)
    query = on_device(np.arange(50), device)
    est = to_host(cms.estimate(query))
    slack = math.e / 16 * weights.sum()
    np.testing.assert_allclose(to_host(cms.upper_bound(query)), est + slack)
    np.testing.assert_allclose(to_host(cms.lower_bound(query)), np.maximum(est - slack, 0.0))


@pytest.mark.slow
def test_error_bound_holds_as_often_as_theory_predicts(device):
    """``est <= true + eps * ||w||_1`` fails for at most a ``delta = e^-rows`` fraction.

    Markov + independent rows give ``P(fail) <= e^-rows`` per key. A sketch
    whose rows collide together, or a biased hash, fails this.
    """
    rows, cols = 2, 16
    eps, delta = math.e / cols, math.exp(-rows)
    d, seeds = (64, 6) if device == "cuda" else (400, 25)
    failures = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        weights = rng.pareto(1.5, d) + 0.01  # heavy tailed, like gradient magnitudes
        cms = CountMinSketch(rows, cols, seed=1000 + seed, device=device)
        cms.update_dense(on_device(weights, device))
        est = to_host(cms.estimate(on_device(np.arange(d), device)))
        assert (est >= weights * (1 - 1e-12)).all()
        failures += int((est > weights + eps * weights.sum()).sum())
    assert failures / (d * seeds) <= delta


def test_conservative_is_strictly_tighter_on_skewed_input(rng):
    indices = rng.zipf(1.3, 2000) % 5000
    plain = CountMinSketch(3, 64, seed=1).update(indices)
    cons = CountMinSketch(3, 64, seed=1, conservative=True).update(indices)
    query = np.unique(indices)
    truth = true_totals(indices, 1.0, 5000)[query]
    err_plain = (plain.estimate(query) - truth).sum()
    err_cons = (cons.estimate(query) - truth).sum()
    assert 0 <= err_cons < err_plain


# ------------------------------------------------------------- sizing


@pytest.mark.parametrize(
    ("eps", "cols"), [(0.01, 272), (0.1, 28), (1.0, 3), (math.e, 1), (10.0, 1), (1e-3, 2719)]
)
def test_suggest_cols(eps, cols):
    assert CountMinSketch.suggest_cols(eps) == cols == math.ceil(math.e / eps)


@pytest.mark.parametrize(("delta", "rows"), [(0.01, 5), (0.05, 3), (0.5, 1), (0.99, 1), (1e-6, 14)])
def test_suggest_rows(delta, rows):
    assert CountMinSketch.suggest_rows(delta) == rows


@pytest.mark.parametrize(
    ("value", "exc"),
    [(0.0, ValueError), (-0.1, ValueError), (math.nan, ValueError), (math.inf, ValueError),
     (1e-12, ValueError), ("0.1", TypeError), (True, TypeError), (None, TypeError)],
)  # fmt: skip
def test_suggest_cols_rejects(value, exc):
    with pytest.raises(exc, match="eps"):
        CountMinSketch.suggest_cols(value)


@pytest.mark.parametrize(
    ("value", "exc"),
    [(0.0, ValueError), (1.0, ValueError), (1.5, ValueError), (-0.1, ValueError),
     (math.nan, ValueError), (1e-30, ValueError), ("0.1", TypeError), (False, TypeError)],
)  # fmt: skip
def test_suggest_rows_rejects(value, exc):
    with pytest.raises(exc, match="delta"):
        CountMinSketch.suggest_rows(value)


# ------------------------------------------------------------- merge and state


def test_merge_is_the_sketch_of_both_streams(device, rng):
    a_idx, b_idx = rng.integers(0, 100, 20), rng.integers(0, 100, 25)
    a_w, b_w = rng.integers(0, 9, 20).astype(float), rng.integers(0, 9, 25).astype(float)
    a = sketch_of(device, a_idx, a_w, rows=3, cols=13, seed=4)
    b = sketch_of(device, b_idx, b_w, rows=3, cols=13, seed=4)
    both = sketch_of(device, np.r_[a_idx, b_idx], np.r_[a_w, b_w], rows=3, cols=13, seed=4)
    assert a.merge(b) is a
    np.testing.assert_array_equal(to_host(a.table), to_host(both.table))
    assert a.total_weight == both.total_weight
    table = to_host(a.table)
    a.merge(a)  # merging with itself doubles, like merging a copy
    np.testing.assert_array_equal(to_host(a.table), 2 * table)
    assert a.total_weight == 2 * both.total_weight


@pytest.mark.parametrize(
    "change",
    [
        {"rows": 4},
        {"cols": 14},
        {"seed": 5},
        {"hash": "polynomial"},
        {"dtype": np.float32},
        {"conservative": True},
    ],
)
def test_merge_refuses_each_mismatch(device, change):
    base = {"rows": 3, "cols": 13, "seed": 4}
    a = sketch_of(device, [1, 2], [1.0, 2.0], **base)
    b = sketch_of(device, [1, 2], [1.0, 2.0], **{**base, **change})
    before = to_host(a.table)
    (key,) = change
    with pytest.raises(ValueError, match=key):
        a.merge(b)
    np.testing.assert_array_equal(to_host(a.table), before)
    assert a.total_weight == 3.0


@pytest.mark.cuda
def test_merge_refuses_other_device_and_type():
    needs_cuda()
    a = CountMinSketch(3, 13).update([1], 1.0)
    with pytest.raises(ValueError, match="device"):
        a.merge(CountMinSketch(3, 13, device="cuda"))
    with pytest.raises(TypeError, match="other"):
        a.merge(np.zeros((3, 13)))
    assert a.total_weight == 1.0


def test_zero_and_copy(device):
    a = sketch_of(device, [1, 2], [1.0, 2.0], rows=2, cols=8)
    b = a.copy()
    assert b.total_weight == 3.0 and b.params == a.params and b.device == device
    np.testing.assert_array_equal(to_host(b.table), to_host(a.table))
    assert a.zero() is a
    assert a.total_weight == 0.0 and not to_host(a.table).any()
    assert b.total_weight == 3.0 and to_host(b.table).sum() == 6.0


def test_summed_state_hook_is_the_total_weight_and_never_copies_the_table(device, monkeypatch):
    a = sketch_of(device, [1, 2], [1.0, 2.0], rows=2, cols=8)

    def no_copy(*args, **kwargs):
        raise AssertionError("the hook copied the table to the host")

    monkeypatch.setattr(CountMinSketch, "table_to_host", no_copy)
    monkeypatch.setattr(_cuda, "to_host", no_copy)
    assert a._summed_state() == 3.0
    a._set_summed_state(7.0)
    assert a.total_weight == 7.0 and a._summed_state() == 7.0
    assert CountSketch(d=10, rows=2, cols=8)._summed_state() is None


# ------------------------------------------------------------- save / load


@pytest.mark.parametrize("conservative", [False, True])
def test_save_load_round_trip(device, tmp_path, conservative):
    kw = {"rows": 3, "cols": 9, "seed": 2**64 - 1, "hash": "polynomial", "dtype": np.float32}
    cms = sketch_of(device, [5, 6, 5], [0.5, 2.0, 1.0], conservative=conservative, **kw)
    path = tmp_path / "cms.npz"
    cms.save(path)
    back = CountMinSketch.load(path, device=device)
    assert back.params == cms.params and back.device == device
    assert back.total_weight == cms.total_weight == 3.5
    np.testing.assert_array_equal(to_host(back.table), to_host(cms.table))
    back.merge(cms)  # still compatible after the round trip
    assert back.total_weight == 7.0


def _tamper(src, dst, **changes):
    with np.load(src, allow_pickle=False) as archive:
        fields = {k: archive[k] for k in archive.files}
    for key, value in changes.items():
        if value is None:
            del fields[key]
        else:
            fields[key] = np.asarray(value)
    np.savez(dst, **fields)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"total_weight": None}, "total_weight"),
        ({"total_weight": -1.0}, "total_weight"),
        ({"total_weight": np.nan}, "total_weight"),
        ({"total_weight": [1.0, 2.0]}, "total_weight"),
        ({"total_weight": "3.0"}, "total_weight"),
        ({"table": np.full((2, 8), -1.0)}, "table"),
        ({"table": np.full((2, 8), np.inf)}, "table"),
        ({"table": np.zeros((2, 9))}, "table"),
        ({"table": np.zeros((2, 8), dtype=np.float32)}, "table"),
        ({"format": "pysketch.CountSketch"}, "CountMinSketch"),
        ({"version": 99}, "version"),
        ({"seed": None}, "seed"),
        ({"rows": 0}, "rows"),
        ({"hash": "md5"}, "hash"),
    ],
)
def test_load_rejects_tampered_files(tmp_path, changes, match):
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    CountMinSketch(2, 8).update([1], 2.0).save(good)
    _tamper(good, bad, **changes)
    with pytest.raises(ValueError, match=match):
        CountMinSketch.load(bad)


# ------------------------------------------------------------- bad input


def _bad_update_cases():
    i = np.array([1, 2, 3])
    w = np.array([1.0, 2.0, 3.0])
    return [
        ("update", {"indices": i.astype(float), "weights": w}, TypeError, "indices"),
        ("update", {"indices": i[None], "weights": w}, ValueError, "indices"),
        ("update", {"indices": np.array([1, -2, 3]), "weights": w}, IndexError, "indices"),
        ("update", {"indices": np.array([1, 2**61 - 1, 3]), "weights": w}, IndexError, "indices"),
        ("update", {"indices": np.array([2**63], dtype=np.uint64), "weights": 1.0}, IndexError,
         "indices"),
        ("update", {"indices": i, "weights": np.array([1.0, -2.0, 3.0])}, ValueError,
         "weights must be non-negative"),
        ("update", {"indices": i, "weights": np.array([1, -2, 3])}, ValueError,
         "weights must be non-negative"),
        ("update", {"indices": i, "weights": -1.0}, ValueError, "weights must be non-negative"),
        ("update", {"indices": i, "weights": np.array([1.0, np.nan, 3.0])}, ValueError,
         "weights holds 1 NaN"),
        ("update", {"indices": i, "weights": np.array([np.inf, 1.0, -np.inf])}, ValueError,
         "weights holds 2 NaN"),
        ("update", {"indices": i, "weights": math.inf}, ValueError, "weights must be finite"),
        ("update", {"indices": i, "weights": np.array([1.0, 2.0])}, ValueError,
         "indices and weights"),
        ("update", {"indices": i, "weights": w.astype(complex)}, TypeError, "weights"),
        ("update", {"indices": i, "weights": np.array([True, False, True])}, TypeError, "weights"),
        ("update", {"indices": i, "weights": True}, TypeError, "weights"),
        ("update", {"indices": i, "weights": "1"}, TypeError, "weights"),
        ("update_dense", {"x": np.array([1.0, -0.5])}, ValueError, "x must be non-negative"),
        ("update_dense", {"x": np.array([1.0, np.nan])}, ValueError, "x holds 1 NaN"),
        ("update_dense", {"x": np.ones((2, 2))}, ValueError, "x"),
        ("update_dense", {"x": np.array(["a", "b"])}, TypeError, "x"),
        ("estimate", {"indices": np.array([0.5])}, TypeError, "indices"),
        ("estimate", {"indices": np.array([-1])}, IndexError, "indices"),
        ("upper_bound", {"indices": np.array([2**61])}, IndexError, "indices"),
        ("lower_bound", {"indices": np.zeros((1, 1), dtype=int)}, ValueError, "indices"),
    ]  # fmt: skip


@pytest.mark.parametrize("conservative", [False, True])
@pytest.mark.parametrize(("method", "kwargs", "exc", "match"), _bad_update_cases())
def test_bad_input_raises_and_leaves_sketch_unchanged(
    device, conservative, method, kwargs, exc, match
):
    cms = sketch_of(device, [1, 7], [2.0, 3.0], rows=3, cols=8, conservative=conservative)
    before = to_host(cms.table)
    # Arrays go to the sketch's device; strings/bools/scalars stay on the host.
    args = {
        k: on_device(v, device) if isinstance(v, np.ndarray) and v.dtype.kind in "biufc" else v
        for k, v in kwargs.items()
    }
    if device == "cuda" and any(isinstance(v, np.ndarray) for v in args.values()):
        pytest.skip("a string array cannot be placed on the device")
    with pytest.raises(exc, match=match):
        getattr(cms, method)(**args)
    np.testing.assert_array_equal(to_host(cms.table), before)
    assert cms.total_weight == 5.0


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["update", "update_dense", "estimate"])
def test_wrong_device_raises_and_leaves_sketch_unchanged(method):
    needs_cuda()
    for device, other in (("cpu", "cuda"), ("cuda", "cpu")):
        cms = sketch_of(device, [1], [2.0], rows=2, cols=8)
        before = to_host(cms.table)
        arr = on_device(np.array([1, 2]), other)
        name = "x" if method == "update_dense" else "indices"
        with pytest.raises(ValueError, match=name):
            getattr(cms, method)(arr)
        if method == "update":
            with pytest.raises(ValueError, match="weights"):
                cms.update(on_device(np.array([1, 2]), device), on_device(np.ones(2), other))
        np.testing.assert_array_equal(to_host(cms.table), before)
        assert cms.total_weight == 2.0
