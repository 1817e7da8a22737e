"""The algorithms on CUDA arrays: the CPU's trajectory, in the simulator and on a GPU.

Under ``NUMBA_ENABLE_CUDASIM=1`` (CI) the vectors are Numba device arrays; on
a real GPU (``PYSKETCH_REAL_GPU=1``) also CuPy arrays and PyTorch tensors,
when installed. Every algorithm runs a few steps at small sizes on both
devices from the same gradients and must follow the same trajectory: the
simulator computes what the CPU computes, operation for operation, so only the
order of the Count Sketch's float additions differs (atomics); a GPU may also
fuse a multiply and an add.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from pysketch import _cuda
from pysketch.compress import LocalCommunicator
from tests.compress.scenarios import CONFIGS, D, build, gradient

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not _cuda.available(), reason="no CUDA device and the simulator is off"),
]

WORKERS, STEPS = 2, 3


def _numba(host):
    return _cuda.to_device(host)


def _cupy(host):
    import cupy

    return cupy.asarray(host)


def _torch(host):
    import torch

    return torch.as_tensor(host, device="cuda")


def _module(array) -> str:
    return type(array).__module__.split(".")[0]


def _as_host(update) -> np.ndarray:
    if hasattr(update, "cpu"):  # a PyTorch tensor
        return update.cpu().numpy()
    return np.asarray(update) if isinstance(update, np.ndarray) else _cuda.to_host(update)


FRAMEWORKS = {"numba": _numba}
if not _cuda.SIMULATOR:
    if importlib.util.find_spec("cupy"):
        FRAMEWORKS["cupy"] = _cupy
    if importlib.util.find_spec("torch"):
        FRAMEWORKS["torch"] = _torch


def _run(algo, device, convert=None, out=None, workers=WORKERS):
    comm = LocalCommunicator(workers)
    w, path = np.zeros(D, dtype=np.float32), []
    for _ in range(STEPS):
        grads = [gradient(worker, algo.steps, w) for worker in algo.participants(comm)]
        if device == "cuda":
            grads = [convert(g) for g in grads]
        update = algo.step(grads, comm, out=out)
        if device == "cuda" and out is None:  # the update in the framework of the input
            assert _module(update) == _module(grads[0])
        w = w - _as_host(update)
        path.append(w)
    return np.array(path), comm


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_cuda_trajectory_equals_cpu(config, framework):
    cpu, cpu_comm = _run(build(config), "cpu")
    gpu_algo = build(config, device="cuda")
    gpu, gpu_comm = _run(gpu_algo, "cuda", FRAMEWORKS[framework])
    tolerance = 1e-6 if _cuda.SIMULATOR else 1e-4
    np.testing.assert_allclose(gpu, cpu, rtol=tolerance, atol=tolerance)
    assert gpu_comm.total == cpu_comm.total
    state = gpu_algo.state_dict()
    assert all(isinstance(v, (np.ndarray, int, str, dict)) for v in state.values())


@pytest.mark.parametrize("config", ["sgd", "memsgd-topk", "sketched-p1-p2", "fetchsgd-zero"])
def test_cuda_participation_equals_cpu(config):
    """Two of five workers take part in each step (issue 19): the CPU's trajectory and bytes."""
    cpu, cpu_comm = _run(build(config, participation=2), "cpu", workers=5)
    gpu, gpu_comm = _run(build(config, participation=2, device="cuda"), "cuda", _numba, workers=5)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-6, atol=1e-6)
    assert gpu_comm.total == cpu_comm.total


@pytest.mark.parametrize("config", ["sgd-nesterov", "memsgd-randomk", "sketchdl-ef"])
def test_cuda_state_resumes_on_the_cpu(config):
    """A checkpoint of a CUDA run continues on the CPU (and back) on the same trajectory."""
    full, _ = _run(build(config), "cpu")
    head = build(config, device="cuda")
    comm = LocalCommunicator(WORKERS)
    w = np.zeros(D, dtype=np.float32)
    for _ in range(2):
        grads = [_numba(gradient(worker, head.steps, w)) for worker in comm.worker_ids]
        w = w - _cuda.to_host(head.step(grads, comm))
    tail = build(config)
    tail.load_state_dict(head.state_dict())
    grads = [gradient(worker, tail.steps, w) for worker in comm.worker_ids]
    w = w - tail.step(grads, comm)
    np.testing.assert_allclose(w, full[2], rtol=1e-6, atol=1e-6)
    back = build(config, device="cuda")
    back.load_state_dict(tail.state_dict())
    np.testing.assert_array_equal(back.state_dict()["steps"], 3)


def test_out_receives_the_update_without_allocating():
    algo = build("sketchdl", device="cuda")
    out = _cuda.zeros(D, np.float32)
    comm = LocalCommunicator(WORKERS)
    grads = [_numba(gradient(k, 0, np.zeros(D, np.float32))) for k in range(WORKERS)]
    algo.step(grads, comm, out=out)
    grads = [_numba(gradient(k, 1, np.zeros(D, np.float32))) for k in range(WORKERS)]
    with _cuda.counting() as calls:
        assert algo.step(grads, comm, out=out) is out
    assert calls.allocations == 0
    cpu = build("sketchdl")
    for t in range(2):
        expected = cpu.step([gradient(k, t, np.zeros(D, np.float32)) for k in range(WORKERS)], comm)
    np.testing.assert_allclose(_cuda.to_host(out), expected, rtol=1e-6, atol=1e-6)


def test_cuda_out_of_another_dtype_or_device_is_refused():
    algo = build("sgd", device="cuda")
    grads = [_numba(np.ones(D, np.float32)) for _ in range(WORKERS)]
    with pytest.raises(ValueError, match=r"out must have shape \(300,\) and dtype float32"):
        algo.step(grads, LocalCommunicator(WORKERS), out=_cuda.zeros(D, np.float64))
    with pytest.raises(TypeError, match="out must be a CUDA array"):
        algo.step(grads, LocalCommunicator(WORKERS), out=np.zeros(D, np.float32))
    with pytest.raises(ValueError, match=r"vectors\[0\] is on 'cpu', the algorithm on 'cuda'"):
        algo.step([np.ones(D, np.float32)] * WORKERS, LocalCommunicator(WORKERS))
    assert algo.steps == 0
