"""The dense vector algebra: the same values on the CPU and CUDA, on the stream given."""

from __future__ import annotations

import numpy as np
import pytest

from pysketch import _cuda, _dense
from tests.conftest import on_device, to_host


def _pair(rng, dtype=np.float32, n=50):
    return rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)


@pytest.mark.parametrize("factor", [np.float32(0.3), 0.3], ids=["float32", "python"])
def test_every_operation_computes_what_the_cpu_computes(device, rng, factor):
    """Bit for bit in the simulator: a float32 factor stays float32, a Python one is float64."""
    x, y = _pair(rng)
    idx = np.array([3, 9, 9, 40])
    results = {}
    for dev in ("cpu", device):
        a, b = on_device(x.copy(), dev), on_device(y.copy(), dev)
        out = _dense.zeros(50, np.float32, dev)
        _dense.axpby(out, a, factor, b)  # out = x + f y
        _dense.axpy(out, factor, a)  # out += f x
        _dense.scale(out, factor)
        _dense.scatter_add(out, on_device(idx, dev), on_device(y[:4].copy(), dev), -1.0)
        _dense.set_at(out, on_device(idx[:1], dev), 7)
        picked = _dense.empty(4, np.float32, dev)
        _dense.gather(picked, out, on_device(idx, dev))
        counts = _dense.zeros(2, np.float32, dev)
        _dense.count_unfit(out, 1e38, 3e38, counts)
        results[dev] = [to_host(out), to_host(picked), to_host(counts)]
    for cpu, other in zip(results["cpu"], results[device], strict=True):
        np.testing.assert_array_equal(cpu, other)
    assert results[device][2].tolist() == [0, np.count_nonzero(np.abs(results["cpu"][0]) > 3)]


def test_in_place_forms_alias_safely(device, rng):
    x, y = _pair(rng)
    a = on_device(x.copy(), device)
    _dense.axpby(a, a, np.float32(2), on_device(y, device))  # a = a + 2 y
    np.testing.assert_array_equal(to_host(a), x + np.float32(2) * y)
    b = on_device(x.copy(), device)
    _dense.axpby(b, on_device(y, device), np.float32(0.5), b)  # b = y + 0.5 b
    np.testing.assert_array_equal(to_host(b), y + np.float32(0.5) * x)


@pytest.mark.cuda
def test_operations_launch_allocate_and_copy_on_the_stream_given():
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    caller = _cuda.cuda.stream()
    with _cuda.counting() as calls:
        out = _dense.zeros(10, np.float32, "cuda", caller)
        x = _dense.empty(10, np.float32, "cuda", caller)
        _cuda.upload(np.arange(10, dtype=np.float32), x, caller)
        _dense.axpy(out, 2.0, x, caller)
        assert _dense.to_host(out, caller).tolist() == [2.0 * i for i in range(10)]
    assert calls.allocations == 2 and calls.to_host == 1 and calls.round_trips == 1
    assert all(s is caller for _, s in calls.streams)


@pytest.mark.cuda
def test_no_stream_zero_in_the_table_algebra_or_the_feedback_buffers(monkeypatch):
    """Calls without an input run on the stream of the state's producer (issue 16 item 6)."""
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    from pysketch import CountSketch
    from pysketch.feedback import ErrorFeedback, Momentum

    sketch = CountSketch(40, 3, 16, device="cuda").accumulate(on_device(np.ones(40), "cuda"))
    other = sketch.copy()
    ef, mom = ErrorFeedback(40, device="cuda"), Momentum(40, rho=0.5, device="cuda")
    caller = _cuda.cuda.stream()
    monkeypatch.setattr(_cuda, "stream_for", lambda obj: caller)
    with _cuda.counting() as calls:
        sketch.add(other).subtract(other).scale(0.5).zero()
        sketch.table_to_host()
        ef.reset()
        ef.load_state_dict(ef.state_dict())
        mom.load_state_dict(mom.state_dict())
    kinds = {kind for kind, _ in calls.streams}
    assert {"launches", "to_host", "to_device"} <= kinds
    assert all(s is caller for _, s in calls.streams), calls.streams
