"""Shared fixtures: every backend test runs on the CPU and on CUDA (simulated in CI)."""

from __future__ import annotations

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
