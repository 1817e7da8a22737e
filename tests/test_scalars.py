"""Scalar arguments: one validation helper, the same rules at every entry point (issue 10)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pysketch import (
    CountMinSketch,
    CountSketch,
    ErrorFeedback,
    Momentum,
    _arrays,
    hashing,
    randomk,
    scatter,
    threshold,
)

NOT_INTEGERS = [1.0, 2.5, "3", None, True, np.bool_(False), 1 + 0j, np.float64(4.0)]
NOT_REALS = ["1.0", None, True, np.bool_(True), 1 + 2j, np.complex128(3), [1.0]]


# ------------------------------------------------------------------ integers
@given(
    value=st.integers(-(2**70), 2**70), bounds=st.tuples(st.integers(-50, 50), st.integers(0, 99))
)
def test_check_int_accepts_exactly_the_range(value, bounds):
    low, width = bounds
    high = low + width
    for candidate in (value, low + value % (width + 1)):
        for typed in (candidate, np.int64(candidate) if abs(candidate) < 2**63 else candidate):
            if low <= candidate <= high:
                assert _arrays.check_int("n", typed, minimum=low, maximum=high) == candidate
                assert type(_arrays.check_int("n", typed, minimum=low, maximum=high)) is int
            else:
                with pytest.raises(ValueError, match=rf"n must be an integer in \[{low}, {high}\]"):
                    _arrays.check_int("n", typed, minimum=low, maximum=high)


@pytest.mark.parametrize("bad", NOT_INTEGERS)
def test_check_int_refuses_non_integers(bad):
    with pytest.raises(TypeError, match="count must be an integer, got"):
        _arrays.check_int("count", bad)


def _distributed_seed(seed):
    """broadcast_seed's check on the root (no MPI needed to reach it)."""
    from pysketch.distributed.agreement import _check_seed

    return _check_seed(seed)


@pytest.mark.parametrize(
    "call",
    [
        lambda seed: hashing.hash_keys(seed, 2),
        lambda seed: randomk(10, 2, seed=seed),
        lambda seed: CountSketch(10, 2, 4, seed=seed),
        lambda seed: CountMinSketch(2, 4, seed=seed),
        lambda seed: _distributed_seed(seed),
    ],
)
@pytest.mark.parametrize(
    ("seed", "error"), [(-1, ValueError), (2**64, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_every_seed_is_checked_alike(call, seed, error):
    with pytest.raises(error, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        call(seed)


@given(st.integers(0, 2**64 - 1))
def test_every_valid_seed_is_accepted(seed):
    assert _arrays.check_seed(np.uint64(seed)) == seed
    assert hashing.hash_keys(seed, 1).shape == (1, hashing.N_KEYS)


def test_randomk_beyond_int64_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"d must be a positive integer \(at most 9223372036854775807"
    ):
        randomk(2**63, 1, seed=0)
    assert randomk(2**63 - 1, 2, seed=0).shape == (2,)


# ------------------------------------------------------------------ reals
@given(
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(-(10**300), 10**300),
    )
)
def test_check_real_accepts_finite_reals(value):
    assert _arrays.check_real("x", value) == float(value)
    if isinstance(value, float):
        assert _arrays.check_real("x", np.float64(value)) == value


@pytest.mark.parametrize("bad", NOT_REALS)
def test_check_real_refuses_non_reals(bad):
    with pytest.raises(TypeError, match="x must be a real number"):
        _arrays.check_real("x", bad)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, 10**400, -(10**400)])
def test_check_real_refuses_non_finite(bad):
    with pytest.raises(ValueError, match="x must be finite"):
        _arrays.check_real("x", bad)


def test_scale_refuses_complex_and_huge_integers():
    sketch = CountSketch(10, 2, 4).accumulate(np.arange(10.0))
    before = sketch.table.copy()
    with pytest.raises(TypeError, match="factor must be a real number, got complex"):
        sketch.scale(1 + 2j)
    with pytest.raises(TypeError, match="factor must be a real number"):
        sketch.scale(np.complex64(2))
    with pytest.raises(ValueError, match="factor must be finite"):
        sketch.scale(10**400)
    np.testing.assert_array_equal(sketch.table, before)


def test_real_arguments_accept_numpy_integers():
    x = np.zeros(100)
    x[[3, 50]] = [10.0, -8.0]
    sketch = CountSketch(100, 5, 64, seed=1).accumulate(x)
    by_int = sketch.heavy_hitters(threshold=np.int64(0))[0]
    assert by_int.tolist() == sketch.heavy_hitters(threshold=0.0)[0].tolist()
    assert threshold(x, np.int32(5))[0].tolist() == [3, 50]
    ErrorFeedback(3).add(np.ones(3), scale=np.int64(2))
    assert Momentum(3, rho=np.float32(0.5)).rho == 0.5


# ------------------------------------------------------------------ flags, dtypes
@pytest.mark.parametrize("bad", ["no", "False", 0, 1, None])
def test_flags_must_be_bools(bad):
    with pytest.raises(TypeError, match="nesterov must be a bool"):
        Momentum(3, rho=0.5, nesterov=bad)
    with pytest.raises(TypeError, match="conservative must be a bool"):
        CountMinSketch(2, 4, conservative=bad)
    with pytest.raises(TypeError, match="accumulate must be a bool"):
        scatter(np.array([0]), np.array([1.0]), 2, out=np.zeros(2), accumulate=bad)
    assert Momentum(3, rho=0.5, nesterov=np.bool_(True)).nesterov is True


@pytest.mark.parametrize(
    "make",
    [
        lambda dtype: CountSketch(10, 2, 4, dtype=dtype),
        lambda dtype: CountMinSketch(2, 4, dtype=dtype),
        lambda dtype: ErrorFeedback(4, dtype=dtype),
        lambda dtype: Momentum(4, rho=0.1, dtype=dtype),
    ],
)
def test_dtype_none_is_refused_not_float64(make):
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got None"):
        make(None)
