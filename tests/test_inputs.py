"""Array inputs that used to crash or be refused wrongly (issue 10, item 7)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pysketch import (
    CountMinSketch,
    CountSketch,
    ErrorFeedback,
    Momentum,
    gather,
    scatter,
    threshold,
    topk,
)
from tests.conftest import on_device, to_host


# ------------------------------------------------------------------ byte order
@given(
    values=st.lists(st.integers(-1000, 1000), min_size=1, max_size=40),
    value_type=st.sampled_from(["f4", "f8", "i4", "i8"]),
    index_type=st.sampled_from(["i4", "i8", "u8"]),
)
def test_other_byte_order_gives_the_native_result(values, value_type, index_type):
    n = len(values)
    native_x = np.array(values, dtype="<" + value_type)
    swapped_x = native_x.astype(">" + value_type)
    native_i = (np.arange(n) * 7 % n).astype("<" + index_type)
    swapped_i = native_i.astype(">" + index_type)

    def results(x, i):
        sketch = CountSketch(n, 3, 8).accumulate(x).accumulate_sparse(i, x)
        cms = CountMinSketch(3, 8).update(i, np.abs(x)).update_dense(np.abs(x))
        ef = ErrorFeedback(n)
        ef.load_state_dict({"memory": x})
        ef.subtract_sparse(i, x)
        return [
            sketch.table,
            sketch.estimate(i),
            cms.table,
            cms.estimate(i),
            *topk(x, min(3, n)),
            *threshold(x, 10),
            gather(x, i),
            scatter(i, x, n),
            ef.memory,
            Momentum(n, rho=0.5).update(x),
        ]

    for got, expected in zip(
        results(swapped_x, swapped_i), results(native_x, native_i), strict=True
    ):
        np.testing.assert_array_equal(got, expected)


def test_out_of_the_other_byte_order_is_refused():
    out = np.zeros(3, dtype=">f8")
    with pytest.raises(ValueError, match="out must be in native byte order"):
        scatter(np.array([1]), np.array([2.0]), 3, out=out)


# ------------------------------------------------------------------ uint64 indices
@given(
    index=st.one_of(
        st.integers(2**53, 2**61 - 3), st.integers(0, 2**61 - 3), st.sampled_from([2**61 - 3])
    )
)
def test_large_uint64_indices_are_valid(index):
    as_u64 = np.array([index], dtype=np.uint64)
    as_i64 = as_u64.astype(np.int64)
    cms = CountMinSketch(3, 32).update(as_u64, 2.0)
    assert cms.estimate(as_u64).tolist() == cms.estimate(as_i64).tolist() == [2.0]
    largest_d = 2**61 - 2
    sketch = CountSketch(largest_d, 3, 32).accumulate_sparse(as_u64, [5.0])
    assert sketch.estimate(as_u64).tolist() == sketch.estimate(as_i64).tolist() == [5.0]


@pytest.mark.parametrize("bad", [2**61 - 1, 2**61, 2**63, 2**64 - 1])
def test_uint64_indices_out_of_range_are_still_refused(device, bad):
    cms = CountMinSketch(3, 32, device=device)
    with pytest.raises(IndexError, match="indices must lie in"):
        cms.update(on_device(np.array([1, bad], dtype=np.uint64), device))
    assert np.all(to_host(cms.table) == 0)


def test_uint64_indices_on_cuda_agree_with_the_cpu():
    idx = np.array([2**60 + 3, 2**53 + 1, 5], dtype=np.uint64)
    cpu = CountMinSketch(3, 32).update(idx, 1.0)
    gpu = CountMinSketch(3, 32, device="cuda").update(on_device(idx, "cuda"), 1.0)
    np.testing.assert_array_equal(cpu.table, to_host(gpu.table))


# ------------------------------------------------------------------ empty lists
def test_empty_python_lists_are_empty_index_arrays():
    sketch = CountSketch(10, 3, 8).accumulate(np.arange(10.0))
    before = sketch.table.copy()
    sketch.accumulate_sparse([], [])
    np.testing.assert_array_equal(sketch.table, before)
    assert sketch.estimate([]).shape == (0,) and sketch.desketch([]).dtype == np.float32
    assert gather(np.arange(3.0), []).tolist() == []
    assert scatter([], [], 4).tolist() == [0.0] * 4
    cms = CountMinSketch(2, 8).update([], [])
    assert cms.total_weight == 0.0 and cms.estimate([]).shape == (0,)
    ErrorFeedback(3).zero_at([])
    # An empty float *array* is still not an index array.
    with pytest.raises(TypeError, match="indices must hold integers"):
        sketch.estimate(np.array([], dtype=np.float64))
