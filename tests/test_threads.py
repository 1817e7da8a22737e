"""Results that do not depend on the number of threads, and scratch memory that does not grow
with it (issue 10, items 4 and 5)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pysketch import CountMinSketch, CountSketch, hashing

ROOT = Path(__file__).resolve().parents[1]
THREADS = list(range(1, numba.config.NUMBA_NUM_THREADS + 1))


def fixed_chunk_reference(before, values, indices, *, seed, hash):
    """The Count Sketch accumulate by its definition, independently of the kernels.

    Inputs at least as many as the table's cells are cut into two halves:
    the first half is added into the table, the second into a zero table that
    is then added to it; each cell receives its inputs in index order
    (``np.add.at`` adds sequentially), in the table's dtype.
    """
    rows, cols = before.shape
    n = values.shape[0]
    keys = hashing.hash_keys(seed, rows, hash)
    idx = np.arange(n) if indices is None else np.asarray(indices)
    chunks = [before.copy()]
    if n >= before.size:
        chunks.append(np.zeros_like(before))
    bounds = [c * n // len(chunks) for c in range(len(chunks) + 1)]
    for j in range(rows):
        buckets, signs = hashing.bucket_sign_batch(hashing.family_code(hash), keys, j, idx, cols)
        contributions = signs.astype(before.dtype) * values
        for target, lo, hi in zip(chunks, bounds, bounds[1:], strict=False):
            np.add.at(target[j], buckets[lo:hi], contributions[lo:hi])
    return chunks[0] if len(chunks) == 1 else chunks[0] + chunks[1]


def accumulate_with(threads, sketch, values, indices):
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        if indices is None:
            return sketch.accumulate(values)
        return sketch.accumulate_sparse(indices, values)
    finally:
        numba.set_num_threads(previous)


@settings(max_examples=30)
@given(
    rows=st.integers(1, 9),
    cols=st.integers(1, 70),
    n=st.integers(1, 700),
    dtype=st.sampled_from([np.float32, np.float64]),
    sparse=st.booleans(),
    hash=st.sampled_from(hashing.FAMILIES),
    seed=st.integers(0, 2**64 - 1),
    data=st.data(),
)
def test_tables_do_not_depend_on_the_thread_count(rows, cols, n, dtype, sparse, hash, seed, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    values = rng.standard_normal(n).astype(dtype) * 10.0 ** rng.integers(-3, 4, n)
    d = n if not sparse else max(1, n // 3)
    indices = rng.integers(0, d, n) if sparse else None  # sparse: many repeated indices
    start = rng.standard_normal((rows, cols)).astype(dtype)
    expected = fixed_chunk_reference(start, values, indices, seed=seed, hash=hash)
    for threads in THREADS:
        sketch = CountSketch(d, rows, cols, seed=seed, hash=hash, dtype=dtype)
        sketch.table[...] = start
        accumulate_with(threads, sketch, values, indices)
        np.testing.assert_array_equal(sketch.table, expected, err_msg=f"threads={threads}")


@pytest.mark.parametrize("rows", [1, 2, 3, 5])
def test_tables_match_the_reference_at_the_headline_shape(rows):
    """Inexact float32 sums over many more inputs than cells."""
    rng = np.random.default_rng(rows)
    values = rng.standard_normal(200_000).astype(np.float32)
    start = np.zeros((rows, 997), np.float32)
    expected = fixed_chunk_reference(start, values, None, seed=5, hash="mix")
    tables = {
        threads: accumulate_with(threads, CountSketch(200_000, rows, 997, seed=5), values, None)
        for threads in THREADS
    }
    for threads, sketch in tables.items():
        np.testing.assert_array_equal(sketch.table, expected, err_msg=f"threads={threads}")


_SIXTEEN = textwrap.dedent(
    """
    import hashlib, json, sys
    sys.path.insert(0, {root!r})
    import numba, numpy as np
    from pysketch import CountMinSketch, CountSketch
    rng = np.random.default_rng(3)
    x = rng.standard_normal({n}).astype(np.float32)
    keys, weights = rng.integers(0, 10**9, {n}), rng.exponential(1.0, {n})
    out = {{}}
    for threads in {threads}:
        numba.set_num_threads(threads)
        sketch = CountSketch({n}, 5, {cols}, seed=9).accumulate(x)
        cms = CountMinSketch(4, 257, dtype=np.float32).update(keys, weights)
        out[threads] = dict(
            table=hashlib.sha256(sketch.table.tobytes()).hexdigest(),
            total=cms.total_weight,
            counters=hashlib.sha256(cms.table.tobytes()).hexdigest(),
        )
    print(json.dumps(out))
    """
)


def test_sixteen_threads_on_any_machine():
    """NUMBA_NUM_THREADS=16 works on 2 cores: the same tables and total weights at 1 to 16
    threads."""
    n, cols, threads = 300_000, 4099, [1, 2, 3, 5, 7, 16]
    code = _SIXTEEN.format(root=str(ROOT), n=n, cols=cols, threads=threads)
    env = dict(os.environ, NUMBA_NUM_THREADS="16")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    first = runs[str(threads[0])]
    for count, run in runs.items():
        assert run["table"] == first["table"], f"Count Sketch table differs at {count} threads"
        assert run["counters"] == first["counters"], f"Count-Min table differs at {count} threads"
        assert run["total"] == first["total"], f"total_weight differs at {count} threads"
    x = np.random.default_rng(3).standard_normal(n).astype(np.float32)
    expected = fixed_chunk_reference(np.zeros((5, cols), np.float32), x, None, seed=9, hash="mix")
    assert first["table"] == hashlib.sha256(expected.tobytes()).hexdigest()


_RESIDENT = textwrap.dedent(
    """
    import json, resource, sys
    sys.path.insert(0, {root!r})
    import numba, numpy as np
    from pysketch import CountSketch
    numba.set_num_threads({threads})
    CountSketch(4096, 5, 64).accumulate(np.ones(4096, np.float32))  # kernels loaded
    x = np.ones({n}, np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sketch = CountSketch({n}, 5, {cols}).accumulate(x)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(extra=after - before - sketch.table.nbytes, table=sketch.table.nbytes)))
    """
)


@pytest.mark.parametrize(("threads", "rows_of_scratch"), [(1, 1), (2, 2), (16, 5)])
def test_accumulate_scratch_is_rows_not_a_second_table(threads, rows_of_scratch):
    """The second chunk of a large input is summed in one scratch row per thread: resident
    memory, measured in a fresh process. With 16 threads on 5 rows each thread owns a part
    of a row's cells, so the scratch is those parts: one table at most."""
    cols = 1 << 20  # rows of 4 MiB: the 2 MiB huge pages round each row up by at most one
    code = _RESIDENT.format(root=str(ROOT), threads=threads, n=6_000_000, cols=cols)
    env = dict(os.environ, NUMBA_NUM_THREADS="16")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(result.stdout.strip().splitlines()[-1])
    row_bytes = run["table"] // 5
    assert run["extra"] <= rows_of_scratch * row_bytes + 2 * 2**20 * rows_of_scratch, run


def test_count_min_total_weight_does_not_depend_on_the_thread_count():
    weights = np.random.default_rng(1).exponential(1.0, 100_003)
    totals = set()
    for threads in THREADS:
        numba.set_num_threads(threads)
        totals.add(CountMinSketch(3, 64).update(np.arange(100_003), weights).total_weight)
    numba.set_num_threads(THREADS[-1])
    assert len(totals) == 1
