"""Seeded hash families, computed inside the kernels.

A sketch row ``j`` needs a bucket hash ``h_j: [d] -> [c]`` and a sign hash
``s_j: [d] -> {-1, +1}``. Nothing is materialised per coordinate: a sketch
keeps a small table of per-row keys (``rows x 6`` unsigned 64-bit words derived
from the seed), and the kernels hash each index on the fly with the scalar
functions below. These are ``@numba.njit`` functions that the CPU kernels and
the CUDA kernels both call, so the same ``(seed, row, index)`` gives the same
bucket and sign on every backend and every rank, bit for bit.

Two families:

``"polynomial"``
    Carter-Wegman polynomials over the Mersenne prime ``p = 2^61 - 1``: degree
    1 for buckets (2-wise independent), degree 3 for signs (4-wise
    independent), as the Count Sketch proofs require [CCF02]_. Products are
    reduced modulo ``p`` with shifts and adds (no 64-bit modulo, no 128-bit
    type), so it runs unchanged on the GPU.
``"mix"``
    One murmur3 ``fmix64`` finaliser of ``index + key_j`` gives both the bucket
    (high bits) and the sign (low bit). Not provably k-wise independent, but
    with full avalanche and about 4x fewer multiplications. The default.

Range reduction is Lemire's multiply-shift ``(h32 * c) >> 32`` on 32 uniform
bits, never a modulo. Indices must lie in ``[0, 2^61 - 1)``.

References
----------
.. [CCF02] M. Charikar, K. Chen, M. Farach-Colton, "Finding frequent items in
   data streams", ICALP 2002.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
from numba import njit

from pysketch._arrays import check_seed
from pysketch._cuda import device_function

__all__ = [
    "FAMILIES",
    "DEFAULT_FAMILY",
    "MAX_INDEX",
    "MAX_COLS",
    "hash_keys",
    "family_code",
    "bucket_sign",
    "bucket_sign_batch",
    "cpu_family",
    "mix_bucket_sign",
    "polynomial_bucket_sign",
    "splitmix64",
    "splitmix64_host",
    "item_key",
    "item_keys",
]

FAMILIES = ("mix", "polynomial")
DEFAULT_FAMILY = "mix"
MIX, POLYNOMIAL = 0, 1
N_KEYS = 6
MERSENNE_EXP = 61
_P_INT = (1 << MERSENNE_EXP) - 1
MAX_INDEX = _P_INT - 1
MAX_COLS = (1 << 32) - 1
# Indices the CPU kernels hash at once with hash_block before using them: the
# buckets and signs of a block stay in L1 while the hash loop vectorises.
HASH_BLOCK = 1024

# Typed constants: numba keeps uint64 arithmetic exact only when both operands
# are uint64 (mixing with int64 would promote to float64).
_P = np.uint64(_P_INT)
_LO32 = np.uint64(0xFFFFFFFF)
_LO29 = np.uint64((1 << 29) - 1)
_ONE = np.uint64(1)
_S3 = np.uint64(3)
_S29 = np.uint64(29)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_S33 = np.uint64(33)
_S61 = np.uint64(61)
_FMIX_C1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX_C2 = np.uint64(0xC4CEB9FE1A85EC53)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SPLITMIX_C1 = np.uint64(0xBF58476D1CE4E5B9)
_SPLITMIX_C2 = np.uint64(0x94D049BB133111EB)


@device_function
def mulmod61(a, b):
    """``a * b mod (2^61 - 1)`` for ``a, b < 2^61`` with 64-bit words only."""
    a_lo = a & _LO32
    a_hi = a >> _S32
    b_lo = b & _LO32
    b_hi = b >> _S32
    lo = a_lo * b_lo
    mid = a_lo * b_hi + a_hi * b_lo
    hi = a_hi * b_hi
    # 2^61 = 1 (mod p): fold each partial product into 61-bit pieces.
    r = (hi << _S3) + (mid >> _S29) + ((mid & _LO29) << _S32) + (lo & _P) + (lo >> _S61)
    r = (r & _P) + (r >> _S61)
    if r >= _P:
        r -= _P
    return r


@device_function
def addmod61(a, b):
    r = a + b
    if r >= _P:
        r -= _P
    return r


@device_function
def fmix64(z):
    """murmur3's 64-bit finaliser: a bijection with full avalanche."""
    z ^= z >> _S33
    z *= _FMIX_C1
    z ^= z >> _S33
    z *= _FMIX_C2
    z ^= z >> _S33
    return z


@device_function
def fastrange32(h32, n):
    """Map 32 uniform bits onto ``[0, n)`` without a modulo (Lemire 2019)."""
    # n < 2**32 (MAX_COLS): masking tells LLVM so, and a 32 x 32 -> 64-bit multiply
    # (one vpmuludq lane-wise) replaces the emulated 64-bit one on AVX2.
    return (h32 * (n & _LO32)) >> _S32


@device_function
def mix_bucket_sign(keys, row, index, cols):
    """:func:`bucket_sign` of the ``"mix"`` family."""
    z = fmix64(np.uint64(index) + keys[row, 0])
    return _bucket_and_sign(z >> _S32, z, np.uint64(cols))


@device_function
def polynomial_bucket_sign(keys, row, index, cols):
    """:func:`bucket_sign` of the ``"polynomial"`` family."""
    x = np.uint64(index)
    hb = addmod61(mulmod61(keys[row, 1], x), keys[row, 0])
    hs = addmod61(mulmod61(keys[row, 5], x), keys[row, 4])
    hs = addmod61(mulmod61(hs, x), keys[row, 3])
    hs = addmod61(mulmod61(hs, x), keys[row, 2])
    return _bucket_and_sign(hb >> _S29, hs, np.uint64(cols))


@device_function
def _bucket_and_sign(h32, sign_bits, n):
    bucket = fastrange32(h32, n)
    sign = np.float32(1.0) if (sign_bits & _ONE) == 0 else np.float32(-1.0)
    return np.int64(bucket), sign


@device_function
def bucket_sign(family, keys, row, index, cols):
    """Bucket in ``[0, cols)`` and sign (+1/-1) of ``index`` in sketch row ``row``.

    ``keys`` is the ``(rows, 6)`` uint64 table from :func:`hash_keys`; ``family``
    is 0 for ``"mix"``, 1 for ``"polynomial"``. Returns ``(bucket, sign)`` as
    (int64, float32): a float sign keeps float32 tables in float32 arithmetic.
    """
    if family == MIX:
        return mix_bucket_sign(keys, row, index, cols)
    return polynomial_bucket_sign(keys, row, index, cols)


def cpu_family(code: int) -> int | None:
    """The family as the CPU kernels take it: ``None`` for ``"mix"``, the code otherwise.

    They test ``family is None``, which Numba decides from the argument's type
    when it compiles, so each compiled kernel holds one family's hash only
    (about half the compile time of both).
    """
    return None if code == MIX else code


# hash_block is called, not inlined (no ``inline="always"``): Numba-level inlining
# into the kernels multiplied their compile time (accumulate 6.8 s ->
# 1.4 s once hash_block is compiled) and the call, once per block, costs nothing
# measurable: its own loops still vectorise.
@njit
def hash_block(family, keys, row, cols, indices, start, width, dense, buckets, signs):
    """Buckets and signs in ``row`` of indices ``start .. start + width``: the
    positions themselves (dense) or ``indices[start:start + width]``.

    ``family`` is :func:`~pysketch.hashing.cpu_family`'s: ``None`` selects the
    mix hash when Numba compiles, so only one family's loops are compiled. The
    dense/sparse branch stays outside the loops, which then vectorise; inside
    them it cost 5x on estimate-all (single thread, d = 4e6, r = 5).
    """
    # ``family is None`` is decided when Numba compiles (from the argument's type), so
    # each compiled loop holds one family's hash only.
    if dense:
        for t in range(width):
            index = start + t
            if family is None:
                buckets[t], signs[t] = mix_bucket_sign(keys, row, index, cols)
            else:
                buckets[t], signs[t] = polynomial_bucket_sign(keys, row, index, cols)
    else:
        for t in range(width):
            index = indices[np.uintp(start + t)]
            if family is None:
                buckets[t], signs[t] = mix_bucket_sign(keys, row, index, cols)
            else:
                buckets[t], signs[t] = polynomial_bucket_sign(keys, row, index, cols)


def bucket_sign_batch(family, keys, row, indices, cols):
    """Buckets and signs (int64) of many indices in one row (for tests and baselines)."""
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    n = indices.shape[0]
    buckets = np.empty(n, dtype=np.int64)
    signs = np.empty(n, dtype=np.float32)
    hash_block(cpu_family(family), keys, row, cols, indices, 0, n, False, buckets, signs)
    return buckets, signs.astype(np.int64)


@device_function
def splitmix64(state):
    """One step of SplitMix64 on uint64 words: ``(new_state, output)``.

    Expands a user seed into hash keys on the host and drives random-k's
    draws; unsigned wrap-around arithmetic, so every platform and rank derives
    the same stream.
    """
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> _S30)) * _SPLITMIX_C1
    z = (z ^ (z >> _S27)) * _SPLITMIX_C2
    return state, z ^ (z >> _S31)


def splitmix64_host(state):
    """:func:`splitmix64` run in NumPy ``uint64`` scalars, for host code.

    The same function (its ``py_func``) with wrap-around arithmetic, so host
    callers (:func:`hash_keys`, :func:`pysketch.randomk`) need no JIT
    compilation: a few hundred draws cost microseconds instead of a compile.
    """
    with np.errstate(over="ignore"):
        return splitmix64.py_func(np.uint64(state))


def family_code(family: str) -> int:
    """The integer the kernels use for ``family``; a clear error when unknown."""
    if family not in FAMILIES:
        raise ValueError(f"hash must be one of {FAMILIES}, got {family!r}")
    return POLYNOMIAL if family == "polynomial" else MIX


def hash_keys(seed: int, rows: int, family: str = DEFAULT_FAMILY) -> np.ndarray:
    """Per-row hash keys derived from ``seed``: a ``(rows, 6)`` uint64 array.

    Column 0 is the mix key (family ``"mix"``) or the bucket polynomial's
    constant term; columns 1 (bucket slope) and 2..5 (sign polynomial) are
    drawn uniformly from ``[0, 2^61 - 1)`` by rejection.

    Examples
    --------
    >>> from pysketch.hashing import hash_keys
    >>> keys = hash_keys(seed=42, rows=3)
    >>> keys.shape, keys.dtype
    ((3, 6), dtype('uint64'))
    >>> bool((hash_keys(42, 3) == keys).all())
    True
    """
    code = family_code(family)
    seed = check_seed(seed)
    state = np.uint64((seed ^ (0x5EED << 48) ^ (code << 40)) & ((1 << 64) - 1))
    keys = np.empty((rows, N_KEYS), dtype=np.uint64)
    for j in range(rows):
        for t in range(N_KEYS):
            while True:
                state, out = splitmix64_host(state)
                value = int(out) if (code == MIX and t == 0) else int(out) >> 3
                if code == MIX or value < _P_INT:
                    break
            keys[j, t] = value
    return keys


def item_key(item: Any) -> int:
    """The integer key of one item: itself for an integer, a stable hash for str or bytes.

    Strings (UTF-8) and bytes are hashed with BLAKE2b (8-byte digest, a
    type tag first so that ``"a"`` and ``b"a"`` differ) and reduced to
    ``[0, 2^61 - 1)``, the range of sketch indices: the same item gives the
    same key in every process and on every machine (unlike Python's salted
    ``hash``). Integers pass through unchanged (their range is checked where
    they are used).

    Examples
    --------
    >>> from pysketch.hashing import item_key
    >>> item_key("apple") == item_key("apple") != item_key(b"apple")
    True
    >>> item_key(42)
    42
    """
    if isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
        return int(item)
    if isinstance(item, str):
        data = b"s" + item.encode("utf-8")
    elif isinstance(item, (bytes, bytearray, memoryview)):
        data = b"b" + bytes(item)
    else:
        raise TypeError(f"items must be integers, str or bytes, got {type(item).__name__}")
    digest = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    return digest % (MAX_INDEX + 1)


def item_keys(items: Iterable[Any]) -> np.ndarray:
    """:func:`item_key` of every item, as an int64 array.

    Examples
    --------
    >>> from pysketch.hashing import item_keys
    >>> keys = item_keys(["a", "b", 7])
    >>> keys.dtype, keys[2]
    (dtype('int64'), np.int64(7))
    """
    return np.array([item_key(item) for item in items], dtype=np.int64)
