"""Error-feedback memory and momentum, on CPU and CUDA, against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from pysketch import gather, randomk, topk
from pysketch.feedback import ErrorFeedback, Momentum
from tests.conftest import on_device, to_host


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mem_sgd_identity(device, dtype, rng):
    """memory + everything sent == everything accumulated (mem-SGD, top-k and random-k)."""
    d, k, eta = 64, 5, 0.1
    ef = ErrorFeedback(d, dtype=dtype, device=device)
    total = np.zeros(d)
    sent = np.zeros(d)
    for step in range(4):
        g = rng.standard_normal(d).astype(dtype)
        ef.add(on_device(g, device), scale=eta)
        total += eta * g.astype(np.float64)
        if step % 2 == 0:
            idx, val = ef.compress(lambda m: topk(m, k))
        else:
            chosen = randomk(d, k, seed=1000 + step, device=device)
            idx, val = ef.compress(lambda m, chosen=chosen: (chosen, gather(m, chosen)))
        np.add.at(sent, to_host(idx), to_host(val).astype(np.float64))
        memory = to_host(ef.memory)
        assert memory.dtype == dtype
        np.testing.assert_array_equal(memory[to_host(idx)], 0)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(memory + sent, total, rtol=tol, atol=tol)


def test_error_feedback_sparse_and_reset(device):
    ef = ErrorFeedback(6, dtype=np.float64, device=device)
    ef.add(on_device(np.arange(6.0), device), scale=2.0)
    ef.subtract_sparse(
        on_device(np.array([1, 1, 5]), device), on_device(np.array([1.0, 0.5, 3.0]), device)
    )
    np.testing.assert_array_equal(to_host(ef.memory), [0, 0.5, 4, 6, 8, 7])
    ef.zero_at(on_device(np.array([2, 3]), device))
    np.testing.assert_array_equal(to_host(ef.memory), [0, 0.5, 0, 0, 8, 7])
    ef.reset()
    np.testing.assert_array_equal(to_host(ef.memory), np.zeros(6))
    assert "ErrorFeedback(d=6" in repr(ef)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_matches_numpy(device, nesterov, rng):
    d, rho = 40, 0.9
    mom = Momentum(d, rho=rho, dtype=np.float64, device=device, nesterov=nesterov)
    u = np.zeros(d)
    for step in range(4):
        g = rng.standard_normal(d)
        direction = mom.update(on_device(g, device))
        u = rho * u + g
        expected = g + rho * u if nesterov else u
        np.testing.assert_allclose(to_host(direction), expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(to_host(mom.buffer), u, rtol=1e-12, atol=1e-12)
        if step == 1:
            stop = np.array([0, 3, 39])
            mom.zero_at(on_device(stop, device))
            u[stop] = 0
            np.testing.assert_array_equal(to_host(mom.buffer)[stop], 0)


def test_momentum_float32(device, rng):
    mom = Momentum(30, rho=0.5, device=device)
    g = rng.standard_normal(30).astype(np.float32)
    mom.update(on_device(g, device))
    out = to_host(mom.update(on_device(g, device)))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 1.5 * g, rtol=1e-6)


@pytest.mark.parametrize("cls", ["ef", "mom"])
def test_state_round_trip(device, cls, rng):
    def make(dev):
        if cls == "ef":
            return ErrorFeedback(25, dtype=np.float32, device=dev)
        return Momentum(25, rho=0.8, dtype=np.float32, device=dev)

    a = make(device)
    g = rng.standard_normal(25).astype(np.float32)
    if cls == "ef":
        a.add(on_device(g, device))
    else:
        a.update(on_device(g, device))
    state = a.state_dict()
    (arr,) = state.values()
    assert isinstance(arr, np.ndarray) and arr.shape == (25,)
    arr_before = arr.copy()
    for dev in ("cpu", device):  # resume on either device
        b = make(dev)
        b.load_state_dict(state)
        (restored,) = b.state_dict().values()
        np.testing.assert_array_equal(restored, arr_before)
    # the state dict is a copy: changing the object leaves it alone
    a.reset()
    np.testing.assert_array_equal(arr, arr_before)


def _snapshot(obj):
    return next(iter(obj.state_dict().values()))


def test_bad_input_leaves_state_unchanged(device, rng):
    ef = ErrorFeedback(10, device=device)
    mom = Momentum(10, rho=0.5, device=device)
    ef.add(on_device(rng.standard_normal(10), device))
    mom.update(on_device(rng.standard_normal(10), device))
    before_ef, before_mom = _snapshot(ef), _snapshot(mom)
    nan = np.ones(10)
    nan[4] = np.nan

    def on(values):
        return on_device(np.asarray(values), device)

    ones = on(np.ones(10))
    cases = [
        (ValueError, "x must have shape", lambda: ef.add(on(np.ones(9)))),
        (ValueError, "x must be 1-dimensional", lambda: ef.add(on(np.ones((2, 5))))),
        (ValueError, "x holds 1 NaN", lambda: ef.add(on(nan))),
        (ValueError, "scale must be finite", lambda: ef.add(ones, scale=np.inf)),
        (TypeError, "scale must be a real number", lambda: ef.add(ones, scale="2")),
        (IndexError, "indices must lie in", lambda: ef.subtract_sparse(on([3, 10]), on([1.0, 1]))),
        (ValueError, "same length", lambda: ef.subtract_sparse(on([3]), on([1.0, 1]))),
        (ValueError, "values holds 1 NaN", lambda: ef.subtract_sparse(on([3]), on([np.nan]))),
        (TypeError, "indices must hold integers", lambda: ef.zero_at(on([1.0]))),
        (TypeError, "compressor must be callable", lambda: ef.compress(3)),
        (ValueError, "g must have shape", lambda: mom.update(on(np.ones(11)))),
        (ValueError, "g holds 1 NaN", lambda: mom.update(on(nan))),
        (IndexError, "indices must lie in", lambda: mom.zero_at(on([-1]))),
        (KeyError, "memory", lambda: ef.load_state_dict({"buffer": np.zeros(10)})),
        (ValueError, "must have shape", lambda: ef.load_state_dict({"memory": np.zeros(3)})),
        (ValueError, "NaN", lambda: mom.load_state_dict({"buffer": nan})),
        (TypeError, "real numbers", lambda: mom.load_state_dict({"buffer": np.zeros(10, complex)})),
    ]
    if device == "cpu":
        from pysketch import _cuda

        if _cuda.available():
            cases.append(
                (ValueError, "x is a CUDA array", lambda: ef.add(_cuda.to_device(np.ones(10))))
            )
    else:
        cases.append((ValueError, "x is a host array", lambda: ef.add(np.ones(10))))
    for exc, msg, call in cases:
        with pytest.raises(exc, match=msg):
            call()
        np.testing.assert_array_equal(_snapshot(ef), before_ef)
        np.testing.assert_array_equal(_snapshot(mom), before_mom)


@pytest.mark.parametrize(
    ("kwargs", "exc", "msg"),
    [
        ({"d": 0}, ValueError, "d must be a positive integer"),
        ({"d": 4, "dtype": np.int32}, TypeError, "dtype must be float32 or float64"),
        ({"d": 4, "device": "gpu"}, ValueError, "device must be one of"),
    ],
)
def test_constructor_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        ErrorFeedback(**kwargs)
    with pytest.raises(exc, match=msg):
        Momentum(**kwargs, rho=0.5)


@pytest.mark.parametrize("rho", [-0.1, 1.0, float("nan")])
def test_momentum_rho_errors(rho):
    with pytest.raises(ValueError, match="rho must"):
        Momentum(4, rho=rho)
