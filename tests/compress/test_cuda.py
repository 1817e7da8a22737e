"""The algorithms on a GPU: CuPy gradients in, CuPy updates out, the CPU's trajectory.

Needs a real GPU and CuPy (``PYSKETCH_REAL_GPU=1``); Numba's simulator has no
CuPy arrays, so these tests skip in CI.
"""

from __future__ import annotations

import numpy as np
import pytest

from pysketch import _cuda
from pysketch.compress import LocalCommunicator
from tests.compress.scenarios import CONFIGS, D, build, gradient

cupy = pytest.importorskip("cupy")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(_cuda.SIMULATOR or not _cuda.available(), reason="needs a real GPU"),
]


def _run(algo, comm, steps, device):
    w = np.zeros(D, dtype=np.float32)
    out = []
    for _ in range(steps):
        grads = [gradient(worker, algo.steps, w) for worker in comm.worker_ids]
        if device == "cuda":
            grads = [cupy.asarray(g) for g in grads]
        update = algo.step(grads, comm)
        assert isinstance(update, cupy.ndarray if device == "cuda" else np.ndarray)
        w = w - (cupy.asnumpy(update) if device == "cuda" else update)
        out.append(w)
    return np.array(out)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_gpu_trajectory_equals_cpu(config):
    cpu = _run(build(config), LocalCommunicator(4), 5, "cpu")
    gpu_algo = build(config, device="cuda")
    gpu = _run(gpu_algo, LocalCommunicator(4), 5, "cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-5)
    state = gpu_algo.state_dict()
    assert all(isinstance(v, (np.ndarray, int, str)) for v in state.values())
