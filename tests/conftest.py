"""Shared fixtures: every backend test runs on the CPU and on CUDA (simulated in CI)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pysketch import _cuda

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]

# A script that the DDP tests launch with torchrun, not a test module: --doctest-modules
# would import it, and without PyTorch (whose tests skip) that import fails.
collect_ignore = ["compress/ddp_worker.py"]


@pytest.fixture(params=DEVICES)
def device(request):
    """``"cpu"`` or ``"cuda"``; CUDA is skipped where neither a GPU nor the simulator is."""
    if request.param == "cuda" and not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    return request.param


def on_device(array, device: str):
    """``array`` (NumPy) placed on ``device``: itself, or a device copy."""
    array = np.ascontiguousarray(array)
    return array if device == "cpu" else _cuda.to_device(array)


def to_host(array) -> np.ndarray:
    """A NumPy copy of a host or device array."""
    return np.array(array) if isinstance(array, np.ndarray) else _cuda.to_host(array)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def device_calls(monkeypatch):
    """Counts of the ``_cuda`` helpers that copy to the host, wait or allocate."""
    counts = dict.fromkeys(("to_host", "synchronize", "empty", "zeros", "to_device"), 0)
    for name in counts:
        real = getattr(_cuda, name)

        def counted(*args, _name=name, _real=real, **kwargs):
            counts[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(_cuda, name, counted)
    return counts


def contended(array):
    """The device ``array`` whose element reads, under the simulator, give way to the
    block's other threads before they return: a read-modify-write that is not atomic
    (``table[i] += v``) then loses updates, as on a GPU when threads hit one cell at
    once (the simulator's atomics hold a lock across their read and write). On a GPU
    the array itself."""
    if not _cuda.SIMULATOR:
        return array
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    class Contended(FakeCUDAArray):
        def __getitem__(self, index):
            value = super().__getitem__(index)
            time.sleep(1e-4)
            return value

    return Contended(array._ary)
