"""Values that do not fit the state's dtype are refused, never stored as inf or NaN (issue 10)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pysketch import CountMinSketch, CountSketch, ErrorFeedback, Momentum, scatter
from tests.conftest import on_device, to_host

F32_MAX = float(np.finfo(np.float32).max)
# Magnitudes around float32's range, where a float64 value may or may not fit.
MAGNITUDES = st.one_of(
    st.floats(0.0, allow_nan=False, allow_infinity=False),
    st.sampled_from([F32_MAX, np.nextafter(F32_MAX, np.inf), 3.4028236e38, 1e39, 1e300]),
    st.floats(1e37, 1e40),
)
VALUES = st.builds(lambda m, negative: -m if negative else m, MAGNITUDES, st.booleans())


def fits_float32(value: float) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.float32(value)))


def snapshot(obj):
    if isinstance(obj, (CountSketch, CountMinSketch)):
        return obj.table_to_host(), getattr(obj, "total_weight", None)
    return next(iter(obj.state_dict().values())), None


def assert_refused_or_finite(obj, call, must_fit):
    """The invariant: either a ValueError and nothing changed, or every stored value finite."""
    before, total = snapshot(obj)
    try:
        call()
    except ValueError as exc:
        assert not must_fit, f"a value that fits was refused: {exc}"
        after, total_after = snapshot(obj)
        np.testing.assert_array_equal(after, before)
        assert total_after == total
        return
    after, _ = snapshot(obj)
    assert np.isfinite(after).all()


@given(value=VALUES)
def test_count_sketch_accumulate(value):
    sketch = CountSketch(8, 3, 4)
    x = np.zeros(8)
    x[5] = value
    assert_refused_or_finite(sketch, lambda: sketch.accumulate(x), fits_float32(value))
    sparse = CountSketch(8, 3, 4)
    call = lambda: sparse.accumulate_sparse([5], np.array([value]))  # noqa: E731
    assert_refused_or_finite(sparse, call, fits_float32(value))


@given(value=VALUES)
def test_count_min_update(value):
    value = abs(value)
    cms = CountMinSketch(3, 4, dtype=np.float32)
    fits = fits_float32(value) and value <= F32_MAX / 2
    assert_refused_or_finite(cms, lambda: cms.update([1], np.array([value])), fits)
    assert_refused_or_finite(cms, lambda: cms.update([2], value), False)
    assert_refused_or_finite(cms, lambda: cms.update_dense(np.array([0.0, value])), False)


@given(value=VALUES, factor=VALUES)
def test_error_feedback_and_momentum(value, factor):
    ef = ErrorFeedback(2)
    x = np.array([value, 1.0])
    with np.errstate(over="ignore"):
        product_fits = fits_float32(value) and fits_float32(factor) and fits_float32(value * factor)
    assert_refused_or_finite(ef, lambda: ef.add(x, scale=factor), product_fits)
    state = ErrorFeedback(2)
    assert_refused_or_finite(
        state, lambda: state.load_state_dict({"memory": x}), fits_float32(value)
    )
    assert_refused_or_finite(state, lambda: state.subtract_sparse([0], np.array([value])), False)
    mom = Momentum(2, rho=0.5)
    assert_refused_or_finite(mom, lambda: mom.update(x), fits_float32(value))


@given(value=VALUES, factor=VALUES)
def test_count_sketch_scale(value, factor):
    sketch = CountSketch(4, 2, 4)
    if fits_float32(value):
        sketch.accumulate(np.array([value, 0.0, 0.0, 0.0]))
    # Clearly inside the range must be accepted; at the very edge either answer is fine.
    peak = max(float(np.abs(sketch.table).max()), 1.0)
    fits = peak * abs(factor) <= F32_MAX * (1 - 1e-6)
    assert_refused_or_finite(sketch, lambda: sketch.scale(factor), fits)


@given(value=VALUES)
def test_scatter_into_float32_out(value):
    out = np.ones(3, dtype=np.float32)
    try:
        scatter(np.array([1]), np.array([value]), 3, out=out, accumulate=True)
    except ValueError:
        assert not fits_float32(value) or not fits_float32(value + 1.0)
        np.testing.assert_array_equal(out, np.ones(3, np.float32))
        return
    assert np.isfinite(out).all()


# ------------------------------------------------------------------ the examples of the issue
def test_examples_from_the_issue(device):
    x = np.zeros(300)
    x[7] = 1e39
    sketch = CountSketch(300, 5, 32, device=device)
    with pytest.raises(ValueError, match=r"x holds 1 value\(s\) that overflow float32"):
        sketch.accumulate(on_device(x, device))
    assert np.all(to_host(sketch.table) == 0)
    wide = CountSketch(300, 5, 32, dtype=np.float64, device=device)
    wide.accumulate(on_device(x, device))  # fits float64
    assert np.isfinite(wide.table_to_host()).all()

    sketch.accumulate(on_device(np.ones(300), device))
    for factor in (1e300, -1e39):
        with pytest.raises(ValueError, match="factor .* would overflow the float32 table"):
            sketch.scale(factor)
    assert np.isfinite(sketch.table_to_host()).all()
    sketch.accumulate(on_device(np.full(300, 1e30), device))
    with pytest.raises(ValueError, match="would overflow"):
        sketch.scale(1e9)

    cms = CountMinSketch(3, 16, dtype=np.float32, device=device)
    with pytest.raises(ValueError, match="overflow float32"):
        cms.update(on_device(np.array([1, 2]), device), on_device(np.array([1.0, 1e39]), device))
    cms.update(on_device(np.array([1]), device), 1e38)
    with pytest.raises(ValueError, match="would take total_weight"):
        cms.update(on_device(np.array([1]), device), 1e38)
    with pytest.raises(ValueError, match="would take total_weight"):
        cms.merge(cms.copy())
    assert cms.total_weight == float(np.float32(1e38))
    assert np.isfinite(to_host(cms.table)).all()

    ef = ErrorFeedback(2, device=device)
    with pytest.raises(ValueError, match=r"overflow float32 once multiplied by 1e\+10"):
        ef.add(on_device(np.array([1e30, 0.0]), device), scale=1e10)
    with pytest.raises(ValueError, match="overflow float32"):
        ef.load_state_dict({"memory": np.array([1e39, 0.0])})
    mom = Momentum(2, rho=0.9, device=device)
    with pytest.raises(ValueError, match="g holds 1 value"):
        mom.update(on_device(np.array([0.0, -1e39]), device))

    out = on_device(np.zeros(4, dtype=np.float32), device)
    with pytest.raises(ValueError, match="values holds 1 value"):
        scatter(on_device(np.array([1]), device), on_device(np.array([1e39]), device), 4, out=out)


def test_total_weight_counts_what_the_table_stores():
    cms = CountMinSketch(2, 8, dtype=np.float32).update([1, 2], np.array([0.1, 0.2]))
    assert cms.total_weight == float(np.float32(0.1)) + float(np.float32(0.2))
    np.testing.assert_allclose(cms.table.sum(axis=1, dtype=np.float64), cms.total_weight, rtol=1e-7)


# ------------------------------------------------------------------ item 9: integer out
def test_scatter_refuses_an_integer_out(device):
    idx = on_device(np.array([0, 0]), device)
    for dtype in (np.int64, np.int32, np.uint8):
        out = on_device(np.zeros(3, dtype=dtype), device)
        with pytest.raises(TypeError, match="out must be float32 or float64"):
            scatter(idx, on_device(np.array([1.7, 2.6]), device), 3, out=out)
        np.testing.assert_array_equal(to_host(out), 0)


def test_scatter_of_integers_sums_in_float64(device):
    big = on_device(np.array([2**62, 2**62], dtype=np.int64), device)
    dense = to_host(scatter(on_device(np.array([1, 1]), device), big, 3))
    assert dense.dtype == np.float64
    assert dense.tolist() == [0.0, 2.0**63, 0.0]  # not wrapped around to -2**63
