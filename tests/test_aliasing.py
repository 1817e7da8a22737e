"""Inputs that share memory with the state they update give the result of a copy (issue 10)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from pysketch import CountMinSketch, CountSketch, ErrorFeedback, Momentum, scatter
from tests.conftest import on_device, to_host

D = 12


def views(n: int):
    """A slice of a length-``n`` array: (start, step, length), with length >= 1."""
    return st.tuples(st.integers(0, n - 1), st.sampled_from([1, 2, -1])).flatmap(
        lambda s: st.tuples(
            st.just(s[0]),
            st.just(s[1]),
            st.integers(1, (n - s[0] + s[1] - 1) // s[1] if s[1] > 0 else s[0] + 1),
        )
    )


def view_of(array, spec):
    start, step, length = spec
    stop = start + step * length
    return array[start : (stop if stop >= 0 else None) : step]


def indices_for(length, seed, d=D):
    return np.random.default_rng(seed).integers(0, d, length)


@given(spec=views(D), seed=st.integers(0, 99))
def test_error_feedback_subtract_its_own_memory(spec, seed):
    ef, ref = ErrorFeedback(D, dtype=np.float64), ErrorFeedback(D, dtype=np.float64)
    for state in (ef, ref):
        state.add(np.arange(1.0, D + 1))
    idx = indices_for(spec[2], seed)
    ref.subtract_sparse(idx, view_of(ref.memory, spec).copy())
    ef.subtract_sparse(idx, view_of(ef.memory, spec))
    np.testing.assert_array_equal(ef.memory, ref.memory)


@given(spec=views(D), seed=st.integers(0, 99))
def test_scatter_into_its_own_values(spec, seed):
    out = np.arange(1.0, D + 1)
    ref_out = out.copy()
    values = view_of(out, spec)
    idx = indices_for(values.size, seed)
    expected = scatter(idx, values.copy(), D, out=ref_out, accumulate=True)
    np.testing.assert_array_equal(scatter(idx, values, D, out=out, accumulate=True), expected)


def count_sketch():
    return CountSketch(D, 5, 8, dtype=np.float64).accumulate(np.arange(1.0, D + 1))


def count_min():
    return CountMinSketch(3, 8).update(np.arange(D), np.arange(1.0, D + 1))


@given(make=st.sampled_from([count_sketch, count_min]), spec=views(3 * 8), seed=st.integers(0, 99))
def test_sketches_take_a_view_of_their_own_table(make, spec, seed):
    sketch = make()
    ref = sketch.copy()
    values = view_of(sketch.table.reshape(-1), spec)
    idx = indices_for(values.size, seed)
    update = "accumulate_sparse" if isinstance(sketch, CountSketch) else "update"
    getattr(ref, update)(idx, values.copy())
    getattr(sketch, update)(idx, values)
    np.testing.assert_array_equal(sketch.table, ref.table)
    assert getattr(sketch, "total_weight", None) == getattr(ref, "total_weight", None)


def test_examples_from_the_issue(device):
    d = 6
    x = on_device(np.arange(1.0, d + 1), device)
    out = scatter(on_device(np.array([5, 0, 3]), device), x[:3], d, out=x)
    np.testing.assert_array_equal(to_host(out), [2.0, 0, 0, 3.0, 0, 1.0])

    mom = Momentum(d, rho=0.5, dtype=np.float64, device=device)
    mom.update(on_device(np.arange(1.0, d + 1), device))
    mom.update(mom.buffer)  # u = 0.5 u + u
    np.testing.assert_array_equal(to_host(mom.buffer), 1.5 * np.arange(1.0, d + 1))

    ef = ErrorFeedback(d, dtype=np.float64, device=device)
    ef.add(on_device(np.arange(1.0, d + 1), device))
    ef.subtract_sparse(on_device(np.array([1, 0]), device), ef.memory[0:2])
    np.testing.assert_array_equal(to_host(ef.memory), [-1.0, 1.0, 3.0, 4.0, 5.0, 6.0])

    sketch = CountSketch(d, 3, 4, dtype=np.float64, device=device)
    sketch.accumulate(on_device(np.arange(1.0, d + 1), device))
    ref = sketch.copy()
    row = sketch.table[0]
    ref.accumulate_sparse(on_device(np.arange(4), device), on_device(to_host(row), device))
    sketch.accumulate_sparse(on_device(np.arange(4), device), row)
    np.testing.assert_array_equal(sketch.table_to_host(), ref.table_to_host())
