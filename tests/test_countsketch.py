"""CountSketch against a plain-NumPy reference, on the CPU and on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pysketch import CountSketch, _arrays, _cuda, hashing
from pysketch.kernels import reductions
from tests.conftest import contended, on_device, to_host

SMALL = {"d": 300, "rows": 5, "cols": 32}


def reference_table(x, *, d, rows, cols, seed=0, hash="mix", dtype=np.float64, indices=None):
    """The sketch by its definition: np.add.at with the same hashes."""
    keys = hashing.hash_keys(seed, rows, hash)
    idx = np.arange(d) if indices is None else np.asarray(indices)
    table = np.zeros((rows, cols), dtype=np.float64)
    for j in range(rows):
        buckets, signs = hashing.bucket_sign_batch(hashing.family_code(hash), keys, j, idx, cols)
        np.add.at(table[j], buckets, signs * np.asarray(x, dtype=np.float64))
    return table.astype(dtype)


def reference_estimates(table, *, d, seed=0, hash="mix", mean=False):
    rows, cols = table.shape
    keys = hashing.hash_keys(seed, rows, hash)
    per_row = np.empty((rows, d))
    for j in range(rows):
        buckets, signs = hashing.bucket_sign_batch(
            hashing.family_code(hash), keys, j, np.arange(d), cols
        )
        per_row[j] = signs * table[j, buckets]
    return per_row.mean(axis=0) if mean else np.median(per_row, axis=0)


def integer_vector(rng, d):
    """Small integers: every sum is exact, so tables compare bit for bit."""
    return rng.integers(-50, 50, size=d).astype(np.float32)


@pytest.fixture(params=hashing.FAMILIES)
def family(request):
    return request.param


# ------------------------------------------------------------- accumulation
def test_dense_accumulate_matches_reference(device, family, rng):
    x = rng.standard_normal(SMALL["d"]).astype(np.float32)
    sketch = CountSketch(**SMALL, seed=3, hash=family, device=device).accumulate(
        on_device(x, device)
    )
    expected = reference_table(x, **SMALL, seed=3, hash=family)
    np.testing.assert_allclose(sketch.table_to_host(), expected, rtol=1e-5, atol=1e-5)


def test_sparse_accumulate_matches_reference_with_repeats(device, family, rng):
    idx = rng.integers(0, SMALL["d"], size=80)
    idx[:10] = idx[0]  # repeated indices add up, as with np.add.at
    values = integer_vector(rng, idx.size)
    sketch = CountSketch(**SMALL, seed=4, hash=family, device=device)
    sketch.accumulate_sparse(on_device(idx, device), on_device(values, device))
    expected = reference_table(values, **SMALL, seed=4, hash=family, indices=idx)
    np.testing.assert_array_equal(sketch.table_to_host(), expected.astype(np.float32))


def test_sparse_and_dense_agree(device, rng):
    idx = rng.choice(SMALL["d"], size=40, replace=False)
    values = integer_vector(rng, 40)
    dense = np.zeros(SMALL["d"], dtype=np.float32)
    dense[idx] = values
    a = CountSketch(**SMALL, device=device).accumulate(on_device(dense, device))
    b = CountSketch(**SMALL, device=device)
    b.accumulate_sparse(on_device(idx, device), on_device(values, device))
    np.testing.assert_array_equal(a.table_to_host(), b.table_to_host())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_and_cuda_tables_equal(family, dtype, rng):
    pytest.importorskip("numba.cuda")
    x = integer_vector(rng, SMALL["d"]).astype(dtype)
    cpu = CountSketch(**SMALL, seed=11, hash=family, dtype=dtype).accumulate(x)
    gpu = CountSketch(**SMALL, seed=11, hash=family, dtype=dtype, device="cuda")
    gpu.accumulate(on_device(x, "cuda"))
    np.testing.assert_array_equal(cpu.table, gpu.table_to_host())
    np.testing.assert_array_equal(cpu.estimate(), to_host(gpu.estimate()))
    np.testing.assert_array_equal(cpu.desketch(), to_host(gpu.desketch()))
    assert cpu.l2_estimate() == gpu.l2_estimate()


@given(
    a=st.lists(st.integers(-1000, 1000), min_size=64, max_size=64),
    b=st.lists(st.integers(-1000, 1000), min_size=64, max_size=64),
    seed=st.integers(0, 2**64 - 1),
    family=st.sampled_from(hashing.FAMILIES),
)
def test_linearity(a, b, seed, family):
    a, b = np.array(a, np.float64), np.array(b, np.float64)

    def sketch(v):
        return CountSketch(64, 3, 8, seed=seed, hash=family, dtype=np.float64).accumulate(v)

    np.testing.assert_array_equal((sketch(a) + sketch(b)).table, sketch(a + b).table)
    np.testing.assert_array_equal((sketch(a) - sketch(b)).table, sketch(a - b).table)
    np.testing.assert_array_equal((3 * sketch(a)).table, sketch(3 * a).table)


@pytest.mark.cuda
@given(a=st.lists(st.integers(-100, 100), min_size=16, max_size=16), seed=st.integers(0, 1000))
def test_linearity_on_cuda(a, seed):
    a = np.array(a, np.float32)

    def sketch(v):
        return CountSketch(16, 3, 4, seed=seed, device="cuda").accumulate(on_device(v, "cuda"))

    s = sketch(a)
    s += sketch(2 * a)
    np.testing.assert_array_equal(s.table_to_host(), sketch(3 * a).table_to_host())
    s -= sketch(a)
    s *= 0.5
    np.testing.assert_array_equal(s.table_to_host(), sketch(a).table_to_host())


def test_more_threads_than_rows_sums_the_second_chunk_apart(rng):
    """rows=1 with more inputs than cells: the second chunk is summed apart (by the second
    thread, into the spill the caller adds) and added to the first."""
    x = integer_vector(rng, 5000)
    sketch = CountSketch(5000, 1, 64).accumulate(x)
    np.testing.assert_array_equal(sketch.table, reference_table(x, d=5000, rows=1, cols=64))


def test_integer_and_float64_inputs(rng):
    x = rng.integers(-9, 9, size=SMALL["d"])
    a = CountSketch(**SMALL).accumulate(x)
    b = CountSketch(**SMALL).accumulate(x.astype(np.float64))
    np.testing.assert_array_equal(a.table, b.table)


def test_accepts_non_contiguous_input(rng):
    x = integer_vector(rng, 2 * SMALL["d"])
    a = CountSketch(**SMALL).accumulate(x[::2])
    b = CountSketch(**SMALL).accumulate(np.ascontiguousarray(x[::2]))
    np.testing.assert_array_equal(a.table, b.table)


# ---------------------------------------------------------------- estimates
@pytest.mark.parametrize("rows", [4, 5])  # even rows: the mean of the two middle values
def test_estimate_matches_reference_median(device, family, rows, rng):
    params = {"d": 200, "rows": rows, "cols": 16}
    x = integer_vector(rng, 200)
    sketch = CountSketch(**params, seed=2, hash=family, dtype=np.float64, device=device)
    sketch.accumulate(on_device(x, device))
    table = sketch.table_to_host()
    expected = reference_estimates(table, d=200, seed=2, hash=family)
    np.testing.assert_array_equal(to_host(sketch.estimate()), expected)
    idx = np.array([5, 0, 199, 5])
    np.testing.assert_array_equal(to_host(sketch.estimate(on_device(idx, device))), expected[idx])


@pytest.mark.cuda
@settings(max_examples=5)
@given(
    rows=st.integers(1, reductions.MAX_ROWS),
    d=st.integers(1, 24),
    cols=st.integers(1, 9),
    seed=st.integers(0, 2**64 - 1),
    family=st.sampled_from(hashing.FAMILIES),
    dtype=st.sampled_from([np.float32, np.float64]),
)
@example(rows=reductions.MAX_ROWS, d=9, cols=5, seed=1, family="mix", dtype=np.float32)
@example(rows=reductions.MAX_ROWS - 1, d=7, cols=4, seed=2, family="polynomial", dtype=np.float64)
@example(rows=2, d=25, cols=3, seed=3, family="mix", dtype=np.float64)
def test_estimates_cpu_equal_cuda_for_every_rows(rows, d, cols, seed, family, dtype):
    """Estimate (median, odd and even rows), desketch and l2: the kernel generated for the
    number of rows gives the CPU's values bit for bit (integer inputs: exact sums)."""
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    x = np.random.default_rng(seed % 2**32).integers(-9, 10, d).astype(dtype)
    params = {"d": d, "rows": rows, "cols": cols, "seed": seed, "hash": family, "dtype": dtype}
    cpu = CountSketch(**params).accumulate(x)
    gpu = CountSketch(**params, device="cuda").accumulate(on_device(x, "cuda"))
    np.testing.assert_array_equal(to_host(gpu.table), cpu.table)
    np.testing.assert_array_equal(to_host(gpu.estimate()), cpu.estimate())
    np.testing.assert_array_equal(to_host(gpu.desketch()), cpu.desketch())
    idx = np.array([d - 1, 0, d // 2], dtype=np.uint64)
    np.testing.assert_array_equal(to_host(gpu.estimate(on_device(idx, "cuda"))), cpu.estimate(idx))
    assert gpu.l2_estimate() == cpu.l2_estimate()


def test_desketch_is_the_mean_transpose(device, family, rng):
    x = integer_vector(rng, 200)
    sketch = CountSketch(200, 4, 16, hash=family, dtype=np.float64, device=device)
    sketch.accumulate(on_device(x, device))
    expected = reference_estimates(sketch.table_to_host(), d=200, hash=family, mean=True)
    np.testing.assert_allclose(to_host(sketch.desketch()), expected, rtol=1e-12)


def test_desketch_is_linear_and_unbiased_over_seeds(rng):
    """E[R^T R x] = x: averaging the desketch over many seeds converges to x."""
    d = 50
    x = rng.standard_normal(d)
    mean = np.zeros(d)
    seeds = 400
    for seed in range(seeds):
        mean += CountSketch(d, 3, 10, seed=seed, dtype=np.float64).accumulate(x).desketch()
    mean /= seeds
    # Each desketch has noise sd ~ ||x|| / sqrt(r c) ~ 1.3; the mean over 400 seeds ~ 0.065.
    assert np.abs(mean - x).max() < 0.35


def test_l2_estimate(device, rng):
    x = rng.standard_normal(2000)
    norms = [
        CountSketch(2000, 7, 400, seed=s, dtype=np.float64, device=device)
        .accumulate(on_device(x, device))
        .l2_estimate()
        for s in range(3)
    ]
    assert np.allclose(norms, np.linalg.norm(x), rtol=0.2)


@pytest.mark.slow
@pytest.mark.parametrize("family", hashing.FAMILIES)
def test_estimation_error_within_bound_over_seeds(family):
    """|x_hat_i - x_i| <= eps ||x_tail||_2 with c = 3 / eps^2 for nearly all i, over seeds.

    With c buckets one row's error has variance ||x||^2 / c, so a single row
    exceeds eps ||x|| = sqrt(3/c) ||x|| with probability <= 1/3 (Chebyshev);
    the median of r = 7 rows fails only when 4 rows do: <= 0.17, and far less
    in practice. We require at most 2% failures over all coordinates and seeds.
    """
    rng = np.random.default_rng(7)
    d, eps = 20_000, 0.05
    cols = int(3 / eps**2)
    failures = total = 0
    for seed in range(5):
        x = rng.standard_normal(d)
        heavy = rng.choice(d, 10, replace=False)
        x[heavy] = 500.0
        tail = np.delete(x, heavy)
        bound = eps * np.linalg.norm(tail)
        sketch = CountSketch(d, 7, cols, seed=seed, hash=family, dtype=np.float64).accumulate(x)
        error = np.abs(sketch.estimate() - x)
        failures += int((error > bound).sum())
        total += d
    assert failures / total < 0.02


@pytest.mark.slow
@pytest.mark.parametrize("family", hashing.FAMILIES)
def test_planted_heavy_hitters_are_recovered(family):
    """Coordinates with x_i^2 >= phi ||x||^2 are found with c = O(1/phi) columns."""
    rng = np.random.default_rng(3)
    d, k, phi = 200_000, 20, 0.01
    for seed in range(5):
        x = rng.standard_normal(d).astype(np.float32)
        heavy = rng.choice(d, k, replace=False)
        # Each planted coordinate holds at least phi of the total squared norm.
        x[heavy] = np.sqrt(phi * 2 * d) * rng.choice([-1, 1], k)
        assert (x[heavy] ** 2 >= phi * np.sum(x**2)).all()
        # r = O(log(d / delta)): with r = 5 a light coordinate collides with some
        # heavy one in 3 of 5 rows about 0.6 times per seed at this d; r = 7
        # makes a majority of colliding rows ~0.01 times per seed.
        cols = int(30 / phi)
        sketch = CountSketch(d, 7, cols, seed=seed, hash=family).accumulate(x)
        found, values = sketch.heavy_hitters(k=k)
        assert set(found.tolist()) == set(heavy.tolist())
        # One row's error has sd ||x|| / sqrt(c); the median of 7 rows rarely exceeds 2 sd.
        assert np.abs(values - x[found]).max() < 2 * np.linalg.norm(x) / np.sqrt(cols)
        by_threshold, _ = sketch.heavy_hitters(threshold=np.sqrt(phi) / 2)
        assert set(heavy.tolist()) <= set(by_threshold.tolist())


def test_heavy_hitters_on_both_devices_agree(rng):
    x = integer_vector(rng, SMALL["d"])
    x[[7, 100, 250]] = [900, -800, 700]
    params = SMALL | {"cols": 128}
    cpu = CountSketch(**params).accumulate(x)
    gpu = CountSketch(**params, device="cuda").accumulate(on_device(x, "cuda"))
    for cpu_part, gpu_part in zip(cpu.heavy_hitters(k=3), gpu.heavy_hitters(k=3), strict=True):
        np.testing.assert_array_equal(cpu_part, to_host(gpu_part))
    assert sorted(cpu.heavy_hitters(k=3)[0].tolist()) == [7, 100, 250]
    for phi in (0.0, 0.05, 0.3, 2.0):  # everything, some, the planted ones, nothing
        cpu_hh, gpu_hh = cpu.heavy_hitters(threshold=phi), gpu.heavy_hitters(threshold=phi)
        for cpu_part, gpu_part in zip(cpu_hh, gpu_hh, strict=True):
            np.testing.assert_array_equal(cpu_part, to_host(gpu_part))


@pytest.mark.cuda
def test_cuda_heavy_hitters_read_back_only_a_threshold_count(rng, device_calls):
    """heavy_hitters(k) reads nothing back; heavy_hitters(threshold) one count, the
    threshold phi * l2 staying on the device."""
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    sketch = CountSketch(**SMALL, device="cuda").accumulate(
        on_device(integer_vector(rng, 300), "cuda")
    )
    device_calls["to_host"] = 0
    sketch.heavy_hitters(k=5)
    assert device_calls["to_host"] == 0
    sketch.heavy_hitters(threshold=0.1)
    assert device_calls["to_host"] == 1 and device_calls["synchronize"] == 0


# ------------------------------------------------------- algebra, copy, io
def test_copy_is_independent(device):
    a = CountSketch(**SMALL, device=device).accumulate(on_device(np.ones(300, np.float32), device))
    b = a.copy()
    b.zero()
    assert np.abs(a.table_to_host()).sum() > 0
    assert np.abs(b.table_to_host()).sum() == 0


def test_to_moves_between_devices(rng):
    x = integer_vector(rng, SMALL["d"])
    cpu = CountSketch(**SMALL).accumulate(x)
    back = cpu.to("cuda").to("cpu")
    np.testing.assert_array_equal(back.table, cpu.table)
    assert back.params == cpu.params


@pytest.mark.parametrize(
    "change",
    [
        {"d": 301},
        {"rows": 4},
        {"cols": 33},
        {"seed": 1},
        {"hash": "polynomial"},
        {"dtype": np.float64},
    ],
)
def test_merge_refuses_mismatch(change):
    a = CountSketch(**SMALL).accumulate(np.ones(300))
    b = CountSketch(
        **(SMALL | {k: v for k, v in change.items() if k in SMALL}),
        **{k: v for k, v in change.items() if k not in SMALL},
    )
    before = a.table.copy()
    name = next(iter(change))
    for op in (a.merge, a.add, a.subtract, a.__add__, a.__sub__):
        with pytest.raises(ValueError, match=name):
            op(b)
    np.testing.assert_array_equal(a.table, before)


def test_merge_refuses_other_types_and_devices():
    a = CountSketch(**SMALL)
    with pytest.raises(TypeError, match="other must be a CountSketch"):
        a.merge(np.zeros((5, 32)))
    with pytest.raises(ValueError, match="device"):
        a.merge(CountSketch(**SMALL, device="cuda"))


def test_save_load_round_trip(tmp_path, device, family, rng):
    sketch = CountSketch(**SMALL, seed=2**63 + 5, hash=family, dtype=np.float64, device=device)
    sketch.accumulate(on_device(rng.standard_normal(300), device))
    path = tmp_path / "sketch.npz"
    sketch.save(path)
    loaded = CountSketch.load(path, device=device)
    assert loaded.params == sketch.params
    assert loaded.device == device
    np.testing.assert_array_equal(loaded.table_to_host(), sketch.table_to_host())
    np.testing.assert_array_equal(to_host(loaded.estimate()), to_host(sketch.estimate()))


def test_load_validates_the_archive(tmp_path):
    path = tmp_path / "s.npz"
    CountSketch(**SMALL).save(path)
    fields = dict(np.load(path))

    def tampered(**changes):
        target = tmp_path / "bad.npz"
        np.savez(target, **(fields | changes))
        return target

    with pytest.raises(ValueError, match="format"):
        CountSketch.load(tampered(format=np.asarray("pysketch.CountMinSketch")))
    with pytest.raises(ValueError, match="version"):
        CountSketch.load(tampered(version=np.asarray(99)))
    with pytest.raises(ValueError, match="table"):
        CountSketch.load(tampered(table=np.zeros((5, 31), np.float32)))
    with pytest.raises(ValueError, match="table"):
        CountSketch.load(tampered(table=np.zeros((5, 32), np.float64)))
    with pytest.raises(ValueError, match="missing"):
        np.savez(tmp_path / "partial.npz", table=fields["table"])
        CountSketch.load(tmp_path / "partial.npz")
    with pytest.raises(ValueError, match="rows"):
        CountSketch.load(tampered(rows=np.asarray(-1)))


def test_load_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    CountSketch(**SMALL).save(path)
    fields = dict(np.load(path))
    np.savez(path, **(fields | {"hash": np.array([object()], dtype=object)}))
    with pytest.raises(ValueError, match="pickle"):
        CountSketch.load(path)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"d": 0}, ValueError, "d must be a positive integer"),
        ({"d": 2**61}, ValueError, r"d must be a positive integer \(at most"),
        ({"d": 10.0}, TypeError, "d must be a positive integer"),
        ({"rows": 0}, ValueError, "rows"),
        ({"rows": 65}, ValueError, r"rows must be a positive integer \(at most 64\)"),
        ({"cols": -3}, ValueError, "cols"),
        ({"cols": 2**32}, ValueError, "cols"),
        ({"dtype": np.int32}, TypeError, "dtype"),
        ({"dtype": "complex64"}, TypeError, "dtype"),
        ({"hash": "sha"}, ValueError, "hash"),
        ({"seed": -1}, ValueError, "seed"),
        ({"device": "tpu"}, ValueError, "device"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        CountSketch(**(SMALL | kwargs))


def _bad_inputs(device):
    """(method, args, error, message) cases; arrays are built on ``device``."""
    d = SMALL["d"]

    def put(values, dtype=None, where=device):
        return on_device(np.asarray(values, dtype=dtype), where)

    ones = np.ones(d, np.float32)
    other_device = "cpu" if device == "cuda" else "cuda"
    return [
        ("accumulate", (put(np.ones(d + 1)),), ValueError, "x must have length"),
        ("accumulate", (put(np.ones((2, d))),), ValueError, "x must be 1-dim"),
        ("accumulate", (put(np.where(np.arange(d) == 7, np.nan, 1)),), ValueError, "x holds 1"),
        ("accumulate", (put(np.where(np.arange(d) == 0, -np.inf, 1)),), ValueError, "x holds 1"),
        ("accumulate", (put(ones, np.complex64),), TypeError, "x must hold real"),
        ("accumulate", (put(ones, where=other_device),), ValueError, "x is a"),
        ("accumulate_sparse", (put([0, d]), put([1.0, 1.0])), IndexError, "indices must lie"),
        ("accumulate_sparse", (put([-1, 2]), put([1.0, 1.0])), IndexError, "indices must lie"),
        ("accumulate_sparse", (put([0.0, 1.0]), put([1.0, 1.0])), TypeError, "indices must hold"),
        ("accumulate_sparse", (put([0, 1]), put([1.0, 1, 1])), ValueError, "same length"),
        ("accumulate_sparse", (put([0, 1]), put([1.0, np.nan])), ValueError, "values holds"),
        ("estimate", (put([d]),), IndexError, "indices must lie in"),
        ("desketch", (put([-2]),), IndexError, "indices must lie in"),
        ("heavy_hitters", (0,), ValueError, "k must be a positive integer"),
        ("heavy_hitters", (d + 1,), ValueError, r"k must be a positive integer \(at most"),
        ("heavy_hitters", (), ValueError, "exactly one of k and threshold"),
    ]


N_BAD_INPUTS = 16


@pytest.mark.parametrize("case", range(N_BAD_INPUTS))
def test_bad_input_raises_and_leaves_sketch_unchanged(device, case):
    sketch = CountSketch(**SMALL, device=device).accumulate(on_device(np.arange(300.0), device))
    before = sketch.table_to_host()
    cases = _bad_inputs(device)
    assert len(cases) == N_BAD_INPUTS
    method, args, error, match = cases[case]
    with pytest.raises(error, match=match):
        getattr(sketch, method)(*args)
    np.testing.assert_array_equal(sketch.table_to_host(), before)


def test_bad_threshold_and_factor():
    sketch = CountSketch(**SMALL).accumulate(np.ones(300))
    with pytest.raises(ValueError, match="threshold must be finite and non-negative"):
        sketch.heavy_hitters(threshold=-0.1)
    with pytest.raises(TypeError, match="threshold must be a real number"):
        sketch.heavy_hitters(threshold="0.1")
    with pytest.raises(ValueError, match="factor must be finite"):
        sketch.scale(np.nan)
    with pytest.raises(TypeError, match="factor must be a real number"):
        sketch.scale("2")


@pytest.mark.cuda
@pytest.mark.parametrize("check", [True, False])
def test_cuda_accumulate_reads_back_only_its_check(check, rng, device_calls):
    """A checked accumulate counts on the device and reads the counts once, after the
    accumulate it guards is queued; unchecked, nothing comes back. The sparse one checks
    its indices always, its values too when asked: one read either way."""
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    sketch = CountSketch(**SMALL, device="cuda")
    x = on_device(integer_vector(rng, 300), "cuda")
    device_calls["to_host"] = 0
    sketch.accumulate(x, check_finite=check)
    assert device_calls["to_host"] == int(check) and device_calls["synchronize"] == 0
    idx = on_device(np.array([3, 7, 7]), "cuda")
    device_calls["to_host"] = 0
    sketch.accumulate_sparse(idx, on_device(np.ones(3), "cuda"), check_finite=check)
    assert device_calls["to_host"] == 1


@pytest.mark.cuda
def test_cuda_accumulate_status_seam(rng, device_calls):
    """The compression step's seam: one launch counts NaN/Inf, values that overflow the
    table and indices outside [0, d) into the caller's status and adds the others,
    reading nothing back; a status that holds a count stops the next launch."""
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    d = 60
    params = {"d": d, "rows": 3, "cols": 16, "seed": 4, "dtype": np.float32}
    idx = rng.integers(0, d, 40)
    val = rng.integers(-5, 6, 40).astype(np.float64)
    idx[[1, 2]] = [d, -1]
    val[[5, 6, 7]] = [np.nan, 1e39, -np.inf]  # 1e39 overflows float32
    good = np.ones(40, dtype=bool)
    good[[1, 2, 5, 6, 7]] = False
    sketch = CountSketch(**params, device="cuda")
    status = _arrays.new_status()
    values = _arrays.Input(on_device(val, "cuda"), "cuda")
    device_calls["to_host"] = 0
    sketch._accumulate(on_device(idx, "cuda"), values, dense=False, status=status, check=True)
    assert device_calls["to_host"] == 0
    counts = to_host(status)
    assert counts[reductions.STATUS_NONFINITE] == 2
    assert counts[reductions.STATUS_OVERFLOW] == 1
    assert counts[reductions.STATUS_OUT_OF_RANGE] == 2
    expected = CountSketch(**params).accumulate_sparse(idx[good], val[good]).table
    np.testing.assert_array_equal(to_host(sketch.table), expected)
    sketch._accumulate(on_device(idx, "cuda"), values, dense=False, status=status)
    np.testing.assert_array_equal(to_host(sketch.table), expected)


@pytest.mark.cuda
@pytest.mark.parametrize("dense", [False, True])
def test_cuda_accumulate_threads_of_one_block_hitting_one_cell_lose_nothing(dense):
    """32 threads of one block add into the same cell of every row at once: the sum is
    exact only if the kernel adds with atomics."""
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    sketch = CountSketch(32, 3, 1, seed=5, device="cuda")  # one column: every index collides
    sketch._table = contended(sketch._table)
    values = np.full(32, 3.0, dtype=np.float32)
    reference = CountSketch(32, 3, 1, seed=5)
    if dense:
        sketch.accumulate(on_device(values, "cuda"))
        reference.accumulate(values)
    else:
        sketch.accumulate_sparse(on_device(np.full(32, 5), "cuda"), on_device(values, "cuda"))
        reference.accumulate_sparse(np.full(32, 5), values)
        assert (np.abs(reference.table) == 96.0).all()
    np.testing.assert_array_equal(to_host(sketch.table), reference.table)


def test_check_finite_false_skips_the_scan():
    sketch = CountSketch(**SMALL)
    x = np.ones(300)
    x[3] = np.inf
    sketch.accumulate(x, check_finite=False)
    assert not np.isfinite(sketch.table).all()


def test_repr_and_nbytes():
    sketch = CountSketch(**SMALL, seed=9)
    assert "CountSketch(d=300, rows=5, cols=32, seed=9" in repr(sketch)
    assert sketch.nbytes == 5 * 32 * 4


def test_cpu_torch_tensors_go_through_dlpack_zero_copy(rng):
    torch = pytest.importorskip("torch")
    x = integer_vector(rng, SMALL["d"])
    tensor = torch.from_numpy(x.copy())
    a = CountSketch(**SMALL).accumulate(tensor)
    b = CountSketch(**SMALL).accumulate(x)
    np.testing.assert_array_equal(a.table, b.table)
    idx = torch.tensor([3, 7, 3])
    np.testing.assert_array_equal(a.estimate(idx), b.estimate(idx.numpy()))
    # Zero-copy: what the kernels receive is a view of the tensor's memory.
    seen = _arrays.as_input(tensor, "x", device="cpu").array
    assert np.shares_memory(seen, tensor.numpy())


@pytest.mark.parametrize("family", ["mix", "polynomial"])
def test_zero_buckets_zeroes_exactly_the_cells_the_indices_hash_to(device, family, rng):
    x = rng.standard_normal(SMALL["d"])
    sketch = CountSketch(**SMALL, seed=6, hash=family, dtype=np.float64, device=device)
    sketch.accumulate(on_device(x, device))
    idx = np.array([3, 77, 3, 250])
    expected = sketch.table_to_host()
    keys = hashing.hash_keys(6, SMALL["rows"], family)
    for j in range(SMALL["rows"]):
        buckets, _ = hashing.bucket_sign_batch(
            hashing.family_code(family), keys, j, idx, SMALL["cols"]
        )
        expected[j, buckets] = 0.0
    assert sketch.zero_buckets(on_device(idx, device)) is sketch
    np.testing.assert_array_equal(sketch.table_to_host(), expected)


def test_zero_buckets_refuses_bad_indices_and_changes_nothing(device, rng):
    sketch = CountSketch(**SMALL, device=device).accumulate(
        on_device(rng.standard_normal(SMALL["d"]).astype(np.float32), device)
    )
    before = sketch.table_to_host()
    with pytest.raises(IndexError, match=r"indices must lie in \[0, 300\)"):
        sketch.zero_buckets(on_device(np.array([1, SMALL["d"]]), device))
    with pytest.raises(TypeError, match="indices"):
        sketch.zero_buckets(on_device(np.array([1.5]), device))
    np.testing.assert_array_equal(sketch.table_to_host(), before)
