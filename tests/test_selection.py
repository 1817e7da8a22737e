"""Top-k, random-k, threshold, gather and scatter against NumPy, on CPU and CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pysketch import _cuda, gather, randomk, scatter, selection, threshold, topk
from pysketch.kernels import reductions
from tests.conftest import contended, on_device, to_host

DTYPES = [np.float32, np.float64]


def reference_topk(x: np.ndarray, k: int) -> np.ndarray:
    """Indices by descending |x|, ties by ascending index (a full lexsort)."""
    mag = np.abs(x.astype(np.float64))
    return np.lexsort((np.arange(x.shape[0]), -mag))[:k]


def check_topk(x: np.ndarray, k: int, device: str) -> None:
    idx, val = topk(on_device(x, device), k)
    idx, val = to_host(idx), to_host(val)
    assert idx.dtype == np.int64
    assert val.dtype == x.dtype
    np.testing.assert_array_equal(idx, reference_topk(x, k))
    np.testing.assert_array_equal(val, x[idx])


def inputs(rng, d: int, dtype) -> dict[str, np.ndarray]:
    return {
        "normal": rng.standard_normal(d).astype(dtype),
        "ties": rng.integers(-3, 4, d).astype(dtype),
        "equal": np.full(d, -2.5, dtype=dtype),
        "zeros": np.zeros(d, dtype=dtype),
        "tiny": (rng.standard_normal(d) * 1e-30).astype(dtype),
        "signed_zero": np.where(rng.random(d) < 0.5, -0.0, 0.0).astype(dtype),
    }


# ----------------------------------------------------------------- top-k


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["normal", "ties", "equal", "zeros", "tiny", "signed_zero"])
def test_topk_matches_reference(device, dtype, kind, rng):
    if device == "cuda" and kind in ("zeros", "tiny"):
        pytest.skip("covered on the CPU; the simulator is slow")
    d = 150
    x = inputs(rng, d, dtype)[kind]
    for k in (1, 7, 64, d) if device == "cpu" else (5, d):
        check_topk(x, k, device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["normal", "ties", "equal"])
@pytest.mark.parametrize("k", [1, 1000, 30_000, 100_000])
@pytest.mark.parametrize("route", ["select", "narrow"])
def test_topk_cpu_parallel_path(dtype, kind, k, route, rng, monkeypatch):
    """Inputs long enough for the parallel histogram and compaction; the candidates'
    winners picked by NumPy, or (as when the top bucket holds very many) narrowed by
    the compiled kernel first."""
    if route == "narrow":
        monkeypatch.setattr(selection, "_UNSORTED_CANDIDATES_MAX", 0)
    check_topk(inputs(rng, 100_000, dtype)[kind], k, "cpu")


@given(
    st.lists(st.integers(-4, 4), min_size=1, max_size=300),
    st.data(),
    st.sampled_from(DTYPES),
)
def test_topk_property_cpu(values, data, dtype):
    """Both orders of the same set, on short inputs with many ties."""
    x = np.array(values, dtype=dtype) * dtype(0.75)
    k = data.draw(st.integers(0, x.shape[0]))
    idx, val = topk(x, k)
    np.testing.assert_array_equal(idx, reference_topk(x, k))
    np.testing.assert_array_equal(val, x[idx])
    check_topk_unsorted(x, k)


_BIG32 = float(np.float32(1e30))


@given(st.lists(st.floats(-_BIG32, _BIG32, width=32), min_size=1, max_size=300), st.data())
def test_topk_property_floats_cpu(values, data):
    x = np.array(values, dtype=np.float32)
    k = data.draw(st.integers(1, x.shape[0]))
    np.testing.assert_array_equal(topk(x, k)[0], reference_topk(x, k))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("ordered", "n", "ks"), [(True, 300, (3, 40)), (False, 200, (3, 100))])
def test_topk_cpu_equals_cuda(dtype, ordered, n, ks, rng):
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    x = rng.integers(-20, 21, n).astype(dtype) / dtype(4)
    for k in ks:
        i_cpu, v_cpu = topk(x, k, sorted=ordered)
        i_gpu, v_gpu = topk(_cuda.to_device(x), k, sorted=ordered)
        np.testing.assert_array_equal(i_cpu, to_host(i_gpu))
        np.testing.assert_array_equal(v_cpu, to_host(v_gpu))
        if not ordered:
            np.testing.assert_array_equal(i_cpu, reference_topk_set(x, k))
    idx, val = topk(_cuda.to_device(x), 0, sorted=ordered)
    assert to_host(idx).shape == (0,) and to_host(val).shape == (0,)


@pytest.mark.cuda
@settings(max_examples=10)
@given(
    values=st.lists(st.integers(-4, 4), min_size=1, max_size=70),
    k=st.integers(0, 70),
    dtype=st.sampled_from(DTYPES),
    ordered=st.booleans(),
    scale=st.sampled_from([0.75, 1e-30, 1e30]),
)
@example(values=[1, -1, 1, 0, 2], k=0, dtype=np.float32, ordered=True, scale=0.75)
@example(values=[2, -2, 1, 3, 0, -3], k=6, dtype=np.float64, ordered=False, scale=0.75)
@example(values=[2, -2, 1, 3, 0, -3], k=6, dtype=np.float32, ordered=True, scale=1e-30)
def test_topk_property_cpu_equals_cuda(values, k, dtype, ordered, scale):
    """Many ties (few distinct magnitudes), both orders, k from 0 to d."""
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    x = (np.array(values, dtype=np.float64) * scale).astype(dtype)
    k = min(k, x.shape[0])
    i_cpu, v_cpu = topk(x, k, sorted=ordered)
    i_gpu, v_gpu = topk(_cuda.to_device(x), k, sorted=ordered)
    np.testing.assert_array_equal(to_host(i_gpu), i_cpu)
    np.testing.assert_array_equal(to_host(v_gpu), v_cpu)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_topk_cuda_without_candidates(dtype, rng, monkeypatch):
    """When the top digit's bucket does not fit the candidate buffer, the later digits
    are counted on the whole input instead: the same indices."""
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    monkeypatch.setattr(selection, "_candidate_capacity", lambda d: 1)
    x = rng.integers(-40, 41, 300).astype(dtype) / dtype(8)
    for k, ordered in ((5, True), (150, False), (300, True)):
        idx, val = topk(_cuda.to_device(x), k, sorted=ordered)
        np.testing.assert_array_equal(to_host(idx), topk(x, k, sorted=ordered)[0])


@pytest.mark.cuda
@pytest.mark.parametrize("ordered", [True, False])
def test_topk_cuda_workspace_allocates_and_reads_nothing(ordered, rng, device_calls):
    """The seam for a compression step: with a workspace, top-k of a CUDA array makes no
    allocation and no copy to the host; NaN are counted into the caller's status."""
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    d, k = 200, 17
    ws = selection.TopkWorkspace(d, k, np.float32, sorted=ordered)
    status = _cuda.zeros(reductions.STATUS_SLOTS, np.int64)
    for _ in range(2):  # reused: its counters are left zeroed
        x = rng.integers(-9, 10, d).astype(np.float32)
        x[[3, 50]] = np.nan
        device_calls.update(dict.fromkeys(device_calls, 0))
        arr = _cuda.to_device(x)
        device_calls["to_device"] = 0
        idx, val = selection._topk_device(
            arr, arr, k, ordered=ordered, stream=0, workspace=ws, status=status
        )
        assert device_calls == dict.fromkeys(device_calls, 0)
        assert idx is ws.indices and val is ws.values
        expected = topk(x, k, sorted=ordered, check_finite=False)[0]
        np.testing.assert_array_equal(to_host(idx), expected)
    assert to_host(status)[reductions.STATUS_NONFINITE] == 4
    with pytest.raises(ValueError, match="workspace serves d=200, k=17"):
        selection._topk_device(arr, arr, 16, ordered=ordered, stream=0, workspace=ws)


@pytest.mark.cuda
@pytest.mark.parametrize("check", [True, False])
def test_topk_cuda_reads_back_only_the_check(check, rng, device_calls):
    """A checked top-k of a CUDA array reads one status array back; unchecked, nothing."""
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    x = _cuda.to_device(rng.standard_normal(100).astype(np.float32))
    topk(x, 5, check_finite=check)
    assert device_calls["to_host"] == int(check) and device_calls["synchronize"] == 0


def test_topk_k_zero_and_integers(device):
    x = np.array([3, -7, 1, 7], dtype=np.int64)
    if device == "cpu":
        idx, val = topk(x, 2)
        np.testing.assert_array_equal(idx, [1, 3])
        np.testing.assert_array_equal(val, [-7, 7])
        assert val.dtype == np.int64
    idx, val = topk(on_device(x.astype(np.float32), device), 0)
    assert to_host(idx).shape == (0,) and to_host(val).shape == (0,)
    assert to_host(idx).dtype == np.int64


def test_topk_non_contiguous_cpu():
    x = np.arange(20, dtype=np.float64)[::2] - 4.5
    np.testing.assert_array_equal(topk(x, 4)[0], reference_topk(np.ascontiguousarray(x), 4))
    for k in (4, x.size):  # k = d returns every index without selecting: a copy of x
        idx, val = topk(x, k, sorted=False)
        np.testing.assert_array_equal(idx, np.sort(reference_topk(np.ascontiguousarray(x), k)))
        np.testing.assert_array_equal(val, x[idx])
        assert not np.shares_memory(val, x)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_topk_rejects_nonfinite(device, bad):
    x = np.ones(10, dtype=np.float32)
    x[3] = bad
    with pytest.raises(ValueError, match="x holds 1 NaN or Inf"):
        topk(on_device(x, device), 2)


K_RANGE = r"k must be an integer in \[0, d\] = \[0, 10\]"


@pytest.mark.parametrize(
    ("k", "exc", "msg"),
    [(11, ValueError, K_RANGE), (-1, ValueError, K_RANGE),
     (2.0, TypeError, "k must be an integer"), (True, TypeError, "k must be an integer")],
)  # fmt: skip
def test_topk_rejects_bad_k(device, k, exc, msg):
    with pytest.raises(exc, match=msg):
        topk(on_device(np.ones(10, dtype=np.float32), device), k)


def test_topk_rejects_bad_x(device):
    with pytest.raises(ValueError, match="x must be 1-dimensional"):
        topk(on_device(np.ones((3, 3), dtype=np.float32), device), 2)
    if device == "cpu":
        with pytest.raises(TypeError, match="x must hold real numbers"):
            topk(np.ones(4, dtype=np.complex64), 2)
        with pytest.raises(TypeError, match="x must hold real numbers"):
            topk(np.array(["a", "b"]), 1)


# ----------------------------------------------------------------- top-k, sorted=False


def spread_values(seed: int, n: int, spread: int | None, dtype) -> np.ndarray:
    """``n`` values at a random scale: integers in ``[-spread, spread]`` (few distinct
    magnitudes, so ties) or, with ``spread=None``, normal draws."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) if spread is None else rng.integers(-spread, spread + 1, n)
    return (x * 10.0 ** rng.integers(-30, 30)).astype(dtype)


def reference_topk_set(x: np.ndarray, k: int) -> np.ndarray:
    """The indices of :func:`reference_topk`, in ascending order."""
    return np.sort(reference_topk(x, k))


def check_topk_unsorted(x: np.ndarray, k: int, device: str = "cpu") -> None:
    idx, val = topk(on_device(x, device), k, sorted=False)
    idx, val = to_host(idx), to_host(val)
    assert idx.dtype == np.int64 and idx.shape == (k,)
    assert val.dtype == x.dtype
    np.testing.assert_array_equal(idx, reference_topk_set(x, k))
    np.testing.assert_array_equal(val, x[idx])


# Both sides of the serial size and of the sorted path's candidate-sort threshold.
_UNSORTED_SIZES = [
    150,
    selection._SERIAL_MAX,
    selection._SERIAL_MAX + 1,
    selection._SORT_CANDIDATES_MIN + 3,
]


@pytest.mark.parametrize("d", _UNSORTED_SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_topk_unsorted_is_the_sorted_set_in_index_order(d, dtype, rng):
    """Few distinct magnitudes (many ties at the cut), many, and all equal."""
    for x in (
        rng.integers(-3, 4, d).astype(dtype),
        (rng.standard_normal(d) * 1000).astype(dtype),
        np.full(d, -2, dtype=dtype),
    ):
        order = reference_topk(x, d)
        for k in (0, 1, d // 2, d - 1, d):
            idx, val = topk(x, k, sorted=False)
            assert idx.dtype == np.int64 and val.dtype == x.dtype
            np.testing.assert_array_equal(idx, np.sort(order[:k]))
            np.testing.assert_array_equal(val, x[idx])
            np.testing.assert_array_equal(np.sort(topk(x, k)[0]), idx)


@given(
    n=st.integers(selection._SERIAL_MAX + 1, 1 << 17),
    fraction=st.floats(0.0, 1.0),
    dtype=st.sampled_from(DTYPES),
    spread=st.sampled_from([2, 1000, None]),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=10)
def test_topk_unsorted_property_parallel(n, fraction, dtype, spread, seed):
    x = spread_values(seed, n, spread, dtype)
    check_topk_unsorted(x, round(fraction * n))


@pytest.mark.parametrize("kind", ["ties", "normal"])
@pytest.mark.parametrize("route", ["histograms", "candidates"])
def test_topk_unsorted_does_not_depend_on_the_chunks(kind, route, rng, monkeypatch):
    """Any chunk count (1, uneven, more chunks than threads) gives the same indices, both
    when every digit is resolved by histograms and when few candidates are narrowed."""
    if route == "histograms":
        monkeypatch.setattr(selection, "_UNSORTED_CANDIDATES_MAX", 0)
    else:
        monkeypatch.setattr(selection, "_UNSORTED_CANDIDATES_MAX", 1 << 40)
    d = selection._SERIAL_MAX * 3 + 5
    x = inputs(rng, d, np.float32)[kind]
    for k in (1, 999, d // 3, d):
        expected = reference_topk_set(x, k)
        for chunks in (1, 2, 7, 64, 300):
            np.testing.assert_array_equal(selection._topk_cpu_unsorted(x, k, chunks), expected)


@pytest.mark.parametrize("bad", ["no", None, 1, 0.0])
def test_topk_rejects_a_non_bool_sorted(device, bad):
    with pytest.raises(TypeError, match="sorted must be a bool, got"):
        topk(on_device(np.ones(10, dtype=np.float32), device), 2, sorted=bad)


# ----------------------------------------------------------------- random-k


def test_randomk_basic(device):
    for d, k in [(1, 1), (10, 0), (10, 10), (1000, 37), (2**40, 20)]:
        idx = to_host(randomk(d, k, seed=99, device=device))
        assert idx.dtype == np.int64 and idx.shape == (k,)
        assert np.all(np.diff(idx) > 0)
        assert k == 0 or (idx[0] >= 0 and idx[-1] < d)
        np.testing.assert_array_equal(idx, randomk(d, k, seed=99))
    assert not np.array_equal(randomk(1000, 37, seed=1), randomk(1000, 37, seed=2))


@given(st.integers(1, 10_000), st.data(), st.integers(0, 2**64 - 1))
def test_randomk_property(d, data, seed):
    k = data.draw(st.integers(0, d))
    idx = randomk(d, k, seed=seed)
    assert idx.shape == (k,)
    assert np.all(np.diff(idx) > 0)
    assert k == 0 or (0 <= idx[0] and idx[-1] < d)
    np.testing.assert_array_equal(idx, randomk(d, k, seed=seed))


def test_randomk_uniform():
    """Each index is picked with probability k/d: chi-square over many seeds."""
    d, k, trials = 40, 6, 4000
    counts = np.zeros(d)
    first = np.zeros(d)
    for seed in range(trials):
        idx = randomk(d, k, seed=seed)
        counts[idx] += 1
        first[idx[0]] += 1
    expected = trials * k / d
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 39 degrees of freedom (counts are slightly negatively correlated): p < 1e-4 above 80.
    assert chi2 < 80, chi2
    # the smallest index of a uniform k-subset: P(min = i) = C(d-1-i, k-1) / C(d, k)
    from math import comb

    p_min = np.array([comb(d - 1 - i, k - 1) for i in range(d)]) / comb(d, k)
    assert abs(p_min.sum() - 1) < 1e-12
    mask = p_min * trials >= 5
    chi2_min = float(((first[mask] - trials * p_min[mask]) ** 2 / (trials * p_min[mask])).sum())
    assert chi2_min < 3 * mask.sum() + 20, chi2_min


@pytest.mark.parametrize(
    ("kwargs", "exc", "msg"),
    [
        ({"d": 0, "k": 0, "seed": 1}, ValueError, "d must be a positive integer"),
        ({"d": 5, "k": 6, "seed": 1}, ValueError, r"k must be an integer in \[0, d\]"),
        ({"d": 5, "k": 2, "seed": -1}, ValueError, r"seed must be an integer in \[0, 2\*\*64\)"),
        ({"d": 5, "k": 2, "seed": 1.5}, TypeError, "seed must be an integer"),
        ({"d": 5, "k": 2, "seed": 1, "device": "tpu"}, ValueError, "device must be one of"),
    ],
)
def test_randomk_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        randomk(**kwargs)


def test_gather(device, rng):
    x = rng.standard_normal(50)
    idx = np.array([49, 0, 7, 7])
    np.testing.assert_array_equal(
        to_host(gather(on_device(x, device), on_device(idx, device))), x[idx]
    )
    with pytest.raises(IndexError, match="indices must lie in"):
        gather(on_device(x, device), on_device(np.array([50]), device))
    with pytest.raises(TypeError, match="indices must hold integers"):
        gather(on_device(x, device), on_device(np.array([1.0]), device))


# ----------------------------------------------------------------- threshold


@pytest.mark.parametrize("dtype", DTYPES)
def test_threshold_matches_numpy(device, dtype, rng):
    x = rng.standard_normal(200).astype(dtype)
    for tau in (0.0, 0.5, 1.5, 10.0):
        idx, val = threshold(on_device(x, device), tau)
        idx, val = to_host(idx), to_host(val)
        expected = np.flatnonzero(np.abs(x.astype(np.float64)) >= tau)
        np.testing.assert_array_equal(idx, expected)
        np.testing.assert_array_equal(val, x[expected])
        assert idx.dtype == np.int64 and val.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_threshold_compares_in_float64(device, dtype):
    """tau between two values of x's dtype: |x| >= tau decided exactly, as in float64."""
    one = dtype(1.0)
    above = np.nextafter(one, dtype(2.0))
    x = np.array([one, above, -above, np.nextafter(one, dtype(0.0)), 0.0, -0.0], dtype=dtype)
    for tau in (0.0, 1.0, float(one) + 1e-300, (float(one) + float(above)) / 2, float(above)):
        idx, val = threshold(on_device(x, device), tau)
        expected = np.flatnonzero(np.abs(x.astype(np.float64)) >= tau)
        np.testing.assert_array_equal(to_host(idx), expected)
        np.testing.assert_array_equal(to_host(val), x[expected])


@pytest.mark.cuda
def test_threshold_cuda_reads_one_count(rng, device_calls):
    """One read: the selected count and the non-finite count come back together."""
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    x = _cuda.to_device(rng.standard_normal(300).astype(np.float32))
    idx, _ = threshold(x, 1.0)
    assert device_calls["to_host"] == 1 and device_calls["synchronize"] == 0
    expected = np.flatnonzero(np.abs(to_host(x).astype(np.float64)) >= 1.0)
    np.testing.assert_array_equal(to_host(idx), expected)


def test_threshold_cpu_large(rng):
    x = rng.standard_normal(100_001).astype(np.float32)
    idx, _ = threshold(x, 2.0)
    np.testing.assert_array_equal(idx, np.flatnonzero(np.abs(x) >= 2.0))


def test_threshold_errors(device):
    x = on_device(np.ones(8, dtype=np.float32), device)
    with pytest.raises(ValueError, match="tau must be finite and >= 0"):
        threshold(x, -1.0)
    with pytest.raises(ValueError, match="tau must be finite and >= 0"):
        threshold(x, float("nan"))
    with pytest.raises(TypeError, match="tau must be a real number"):
        threshold(x, "1")
    bad = np.ones(8, dtype=np.float32)
    bad[0] = np.nan
    with pytest.raises(ValueError, match="x holds 1 NaN"):
        threshold(on_device(bad, device), 0.5)


# ----------------------------------------------------------------- scatter


def test_scatter_round_trip(device, rng):
    x = rng.standard_normal(120).astype(np.float32)
    idx, val = topk(on_device(x, device), 10)
    dense = to_host(scatter(idx, val, 120))
    assert dense.dtype == np.float32
    expected = np.zeros(120, dtype=np.float32)
    keep = reference_topk(x, 10)
    expected[keep] = x[keep]
    np.testing.assert_array_equal(dense, expected)
    ti, tv = threshold(on_device(x, device), 1.0)
    np.testing.assert_array_equal(to_host(scatter(ti, tv, 120)), np.where(np.abs(x) >= 1, x, 0))


def test_scatter_out_and_duplicates(device):
    idx = on_device(np.array([1, 3, 1]), device)
    val = on_device(np.array([1.0, 2.0, 0.5]), device)
    out = on_device(np.full(5, 7.0), device)
    res = scatter(idx, val, 5, out=out)
    assert res is out
    np.testing.assert_array_equal(to_host(out), [0, 1.5, 0, 2, 0])
    scatter(idx, val, 5, out=out, accumulate=True)
    np.testing.assert_array_equal(to_host(out), [0, 3, 0, 4, 0])


@pytest.mark.cuda
def test_scatter_threads_of_one_block_hitting_one_index_lose_nothing():
    """32 threads of one block add into out[3] at once: exact only with atomics."""
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    out = contended(_cuda.to_device(np.zeros(8)))
    scatter(_cuda.to_device(np.full(32, 3)), _cuda.to_device(np.full(32, 0.5)), 8, out=out)
    np.testing.assert_array_equal(to_host(out), [0, 0, 0, 16.0, 0, 0, 0, 0])


def test_scatter_errors(device):
    idx = on_device(np.array([0, 5]), device)
    val = on_device(np.array([1.0, 2.0]), device)
    with pytest.raises(IndexError, match=r"indices must lie in \[0, 5\)"):
        scatter(idx, val, 5)
    with pytest.raises(IndexError, match="indices must lie in"):
        scatter(on_device(np.array([-1, 0]), device), val, 5)
    with pytest.raises(ValueError, match="indices and values must have the same length"):
        scatter(on_device(np.array([0]), device), val, 6)
    with pytest.raises(ValueError, match="d must be a positive integer"):
        scatter(idx, val, 0)
    with pytest.raises(ValueError, match=r"out must have shape \(6,\)"):
        scatter(idx, val, 6, out=on_device(np.zeros(5), device))
    with pytest.raises(ValueError, match="accumulate=True needs out"):
        scatter(idx, val, 6, accumulate=True)
    bad = on_device(np.array([1.0, np.inf]), device)
    with pytest.raises(ValueError, match="values holds 1 NaN or Inf"):
        scatter(idx, bad, 6)
    if device == "cuda":
        with pytest.raises(ValueError, match="indices is a host array"):
            scatter(np.array([0, 1]), val, 6)


# ----------------------------------------------------------------- large k (issue 10, item 10)
@given(
    n=st.integers(1 << 17, 1 << 18),
    fraction=st.floats(0.0, 1.0),
    dtype=st.sampled_from([np.float32, np.float64]),
    spread=st.sampled_from([3, 1000, None]),  # few distinct magnitudes (ties), many, continuous
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=12)
def test_topk_large_k_is_the_stable_sort(n, fraction, dtype, spread, seed):
    x = spread_values(seed, n, spread, dtype)
    k = max(selection._SORT_CANDIDATES_MIN, min(n, round(fraction * n)))
    idx, values = topk(x, k)
    expected = np.argsort(-np.abs(x.astype(np.float64)), kind="stable")[:k]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(values, x[expected])
    assert idx.dtype == np.int64


_TOPK_PEAK = """
import json, sys
sys.path.insert(0, {root!r})
import numpy as np
from pysketch import topk
x = np.random.default_rng(0).standard_normal({n}).astype(np.float32)
topk(x[:100_000], 100_000)
topk(x[:100_000], 50_000, sorted=False)
def rss(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ":"))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = rss("VmRSS")
topk(x, {k}, sorted={ordered})
print(json.dumps(rss("VmHWM") - base))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's VmHWM reset")
def test_topk_of_everything_stays_within_its_memory_bound():
    """k = n float32 values: at most 24 bytes per value (uint32 keys and indices, their
    scratch, int64 output), where merge-sorting the candidates took 40."""
    n = 2_000_000
    code = _TOPK_PEAK.format(root=str(Path(__file__).resolve().parents[1]), n=n, k=n, ordered=True)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) <= 26 * n


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's VmHWM reset")
def test_topk_unsorted_stays_within_its_memory_bound():
    """sorted=False, k = n/2 of n float32: the result (8-byte indices, 4-byte values) and
    at most 4 MiB of histograms (plus the allocator's slack), no candidates."""
    n = 2_000_000
    k = n // 2
    code = _TOPK_PEAK.format(root=str(Path(__file__).resolve().parents[1]), n=n, k=k, ordered=False)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) <= 12 * k + (6 << 20)
