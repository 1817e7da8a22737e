"""Hash families: exact arithmetic, determinism, CPU/CUDA agreement, quality."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pysketch import _cuda, hashing
from pysketch._cuda import cuda

P = (1 << 61) - 1
FAMILY_CODES = {name: hashing.family_code(name) for name in hashing.FAMILIES}


def reference_polynomial(keys: np.ndarray, row: int, index: int, cols: int) -> tuple[int, int]:
    """The polynomial family in Python big integers, straight from its definition."""
    k = [int(v) for v in keys[row]]
    h_bucket = (k[1] * index + k[0]) % P
    h_sign = (((k[5] * index + k[4]) * index + k[3]) * index + k[2]) % P
    return ((h_bucket >> 29) * cols) >> 32, 1 - 2 * (h_sign & 1)


@given(st.integers(0, P - 1), st.integers(0, P - 1))
def test_mulmod61_is_exact(a, b):
    assert int(hashing.mulmod61(np.uint64(a), np.uint64(b))) == a * b % P


@given(
    seed=st.integers(0, 2**64 - 1),
    index=st.integers(0, hashing.MAX_INDEX),
    cols=st.integers(1, hashing.MAX_COLS),
)
def test_polynomial_family_matches_its_definition(seed, index, cols):
    keys = hashing.hash_keys(seed, 2, "polynomial")
    buckets, signs = hashing.bucket_sign_batch(
        FAMILY_CODES["polynomial"], keys, 1, np.array([index], dtype=np.int64), cols
    )
    assert (int(buckets[0]), int(signs[0])) == reference_polynomial(keys, 1, index, cols)


def test_indices_beyond_2_pow_40_do_not_overflow():
    keys = hashing.hash_keys(5, 1, "polynomial")
    indices = np.array([2**40, 2**40 + 1, 2**50 + 7, hashing.MAX_INDEX], dtype=np.int64)
    buckets, signs = hashing.bucket_sign_batch(1, keys, 0, indices, 1000)
    expected = [reference_polynomial(keys, 0, int(i), 1000) for i in indices]
    assert list(zip(buckets.tolist(), signs.tolist(), strict=True)) == expected


@pytest.mark.parametrize("family", hashing.FAMILIES)
def test_keys_are_deterministic_and_seed_dependent(family):
    np.testing.assert_array_equal(hashing.hash_keys(9, 4, family), hashing.hash_keys(9, 4, family))
    assert not np.array_equal(hashing.hash_keys(9, 4, family), hashing.hash_keys(10, 4, family))
    if family == "polynomial":
        assert (hashing.hash_keys(9, 4, family) < P).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 2**64}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"seed": True}, TypeError, "seed"),
        ({"family": "md5"}, ValueError, "hash"),
    ],
)
def test_bad_key_arguments(kwargs, error, match):
    args = {"seed": 0, "rows": 2, "family": "mix"} | kwargs
    with pytest.raises(error, match=match):
        hashing.hash_keys(**args)


@cuda.jit
def _hash_kernel(family, keys, indices, cols, buckets, signs):
    i = cuda.grid(1)
    if i < indices.shape[0]:
        for j in range(keys.shape[0]):
            b, s = hashing.bucket_sign(family, keys, j, indices[i], cols)
            buckets[j, i] = b
            signs[j, i] = s


@pytest.mark.cuda
@pytest.mark.parametrize("family", hashing.FAMILIES)
def test_cuda_and_cpu_hash_bit_for_bit(family):
    keys = hashing.hash_keys(77, 3, family)
    indices = np.array([0, 1, 2, 99, 2**33 + 1, 2**45, hashing.MAX_INDEX], dtype=np.int64)
    n, cols = indices.size, 12345
    buckets = _cuda.zeros((3, n), np.int64)
    signs = _cuda.zeros((3, n), np.float32)
    _hash_kernel[1, 32](
        FAMILY_CODES[family], _cuda.to_device(keys), _cuda.to_device(indices), cols, buckets, signs
    )
    for row in range(3):
        expected_b, expected_s = hashing.bucket_sign_batch(
            FAMILY_CODES[family], keys, row, indices, cols
        )
        np.testing.assert_array_equal(_cuda.to_host(buckets)[row], expected_b)
        np.testing.assert_array_equal(_cuda.to_host(signs)[row], expected_s)


@pytest.mark.slow
@pytest.mark.parametrize("family", hashing.FAMILIES)
def test_bucket_load_and_sign_balance(family):
    """Buckets fill evenly and signs balance, for consecutive and for strided indices."""
    n, cols = 2_000_000, 1000
    code = FAMILY_CODES[family]
    for indices in (np.arange(n), np.arange(n) * 4096 + 17):
        for seed in range(3):
            keys = hashing.hash_keys(seed, 2, family)
            buckets, signs = hashing.bucket_sign_batch(code, keys, 1, indices, cols)
            load = np.bincount(buckets, minlength=cols)
            expected = n / cols
            # Chi-square over 999 degrees of freedom: mean 999, sd ~45; 1300 is ~6.7 sd.
            chi2 = float(((load - expected) ** 2 / expected).sum())
            assert chi2 < 1300, (family, seed, chi2)
            # Sign sum of n fair +-1: sd sqrt(n) ~ 1414; allow 5 sd.
            assert abs(int(signs.sum())) < 5 * np.sqrt(n)
            # Bucket and sign independent: signs balance inside the busiest bucket too.
            busiest = buckets == np.argmax(load)
            assert abs(int(signs[busiest].sum())) < 5 * np.sqrt(busiest.sum()) + 5


@pytest.mark.parametrize("family", hashing.FAMILIES)
def test_pairwise_collision_rate(family):
    """Two fixed indices collide with probability ~1/cols over seeds (2-wise independence)."""
    cols, seeds = 50, 4000
    pairs = np.array([[3, 4], [10, 10 + 2**20], [7, 2**40 + 7]], dtype=np.int64)
    code = FAMILY_CODES[family]
    for a, b in pairs:
        hits = 0
        for seed in range(seeds):
            keys = hashing.hash_keys(seed, 1, family)
            buckets, _ = hashing.bucket_sign_batch(code, keys, 0, np.array([a, b]), cols)
            hits += int(buckets[0] == buckets[1])
        # Expected 80 collisions; binomial sd ~8.9.
        assert 35 < hits < 125, (family, a, b, hits)
