"""The round-trip budget of every algorithm's step on CUDA arrays, counted in the simulator.

Every CUDA call of pysketch goes through :mod:`pysketch._cuda`, which counts
launches, allocations, copies and waits (:func:`pysketch._cuda.counting`).
A warm step (the second, with ``out=`` given) of each algorithm, two local
workers, must stay within:

- one host round trip with ``check_finite=True`` (the read of the status at
  the end of the step), none with ``check_finite=False``;
- no device allocation, and no host-to-device copy but the random-k indices
  (drawn on the host) and the fresh hashes of sketch-DL's ``reseed``;
- the launches stated in :data:`LAUNCHES` for the step outside top-k, plus
  :data:`TOPK_LAUNCHES` for each top-k call;
- every call on the stream of the input.

The calls made inside top-k are counted apart, so
:func:`test_step_budget_outside_topk` also holds each algorithm's own launches
to its budget.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from pysketch import _cuda, selection
from pysketch.compress import LocalCommunicator, make_algorithm
from tests.compress.scenarios import CONFIGS

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not _cuda.SIMULATOR, reason="counts the simulator's calls"),
]

WORKERS = 2
D = 64  # the scenarios' parameters (k = 10, p2 k = 30) at a size the simulator runs fast
#: Launches of a warm step outside top-k, (check_finite=True, check_finite=False).
LAUNCHES = {
    "sgd": (11, 6),
    "sgd-nesterov": (11, 6),
    "memsgd-topk": (21, 11),
    "memsgd-topk-nomemory": (19, 11),
    "memsgd-topk-momentum": (27, 15),  # per worker: u = rho u + g, its count, its masking
    "memsgd-randomk": (16, 10),
    # worker momentum, the update scaled by lr, server momentum v = rho v + mean, its count
    "memsgd-code": (31, 18),
    "true-topk": (15, 9),
    "true-topk-code": (16, 10),
    "sketched": (22, 15),
    "sketched-p1-p2": (26, 19),
    "fetchsgd-zero": (17, 12),
    "fetchsgd-subtract": (18, 13),
    # per worker: its own sketch zeroed, accumulated, its l2 ratio, clipped, added in; the
    # sketch of the update (zeroed, accumulated) and the two tables zeroed where it is not 0
    "fetchsgd-code": (29, 24),
    "fetchsgd-none": (15, 11),
    "sketchdl": (9, 6),
    "sketchdl-ef": (20, 15),
    "sketchdl-reseed": (9, 6),
}
#: What the device top-k launches per unsorted float32 call: three digit passes, count, write.
TOPK_LAUNCHES = 5
#: Host-to-device copies per step: the random-k indices, sketch-DL's fresh hashes.
UPLOADS = {"memsgd-randomk": 1, "sketchdl-reseed": 1}
USES_TOPK = {
    c
    for c, (name, params) in CONFIGS.items()
    if name in ("true_topk", "sketched_sgd", "fetchsgd")
    or (name == "memsgd" and params.get("compressor", "topk") == "topk")
}


class _Counts:
    """One warm step's calls, and those made inside the device top-k."""

    def __init__(self, step: _cuda.Calls, topk: list[_cuda.Calls]) -> None:
        self.step, self.topk = step, topk

    def outside(self, field: str) -> int:
        return getattr(self.step, field) - sum(getattr(t, field) for t in self.topk)


def _gradients(step: int, stream) -> list:
    rng = np.random.default_rng(step)
    return [
        _cuda.bind(_cuda.to_device(rng.standard_normal(D, np.float32)), stream)
        for _ in range(WORKERS)
    ]


def _warm_step(config: str, checked: bool, stream=0) -> _Counts:
    """The calls of the second step (the first allocates), those of top-k apart."""
    real = selection._topk_device
    inner: list[_cuda.Calls] = []

    def counted(*args, **kwargs):
        with _cuda.counting() as calls:
            result = real(*args, **kwargs)
        inner.append(calls)
        return result

    name, params = CONFIGS[config]
    algo, comm = make_algorithm(name, D, **params, device="cuda"), LocalCommunicator(WORKERS)
    out = _cuda.bind(_cuda.zeros(D, np.float32), stream)
    selection._topk_device = counted
    try:
        for t in range(2):
            grads = _gradients(t, stream)
            inner.clear()
            with _cuda.counting() as calls:
                algo.step(grads, comm, out=out, check_finite=checked)
    finally:
        selection._topk_device = real
    return _Counts(calls, list(inner))


@functools.cache
def _measured(config: str, checked: bool) -> _Counts:
    return _warm_step(config, checked)


@pytest.mark.parametrize("checked", [True, False], ids=["checked", "unchecked"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_step_budget_outside_topk(config, checked):
    counts = _measured(config, checked)
    assert counts.outside("synchronizations") == int(checked)
    assert counts.outside("to_host") == int(checked)
    assert counts.outside("allocations") == 0
    assert counts.outside("to_device") == UPLOADS.get(config, 0)
    assert counts.outside("launches") <= LAUNCHES[config][0 if checked else 1]


@pytest.mark.parametrize("checked", [True, False], ids=["checked", "unchecked"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_whole_step_budget(config, checked):
    counts = _measured(config, checked)
    step = counts.step
    assert bool(counts.topk) == (config in USES_TOPK)
    assert step.round_trips == int(checked) and step.to_host == int(checked)
    assert step.allocations == 0
    assert step.to_device == UPLOADS.get(config, 0)
    budget = LAUNCHES[config][0 if checked else 1] + TOPK_LAUNCHES * len(counts.topk)
    assert step.launches <= budget


@pytest.mark.parametrize("config", ["sgd", "memsgd-topk", "fetchsgd-subtract", "sketchdl-ef"])
def test_every_call_of_a_step_is_on_the_input_stream(config):
    """A step on arrays of a non-default stream launches, allocates and copies only there."""
    caller = _cuda.cuda.stream()
    counts = _warm_step(config, True, stream=caller)
    streams = counts.step.streams
    assert streams and all(s is caller for _, s in streams), {
        k for k, s in streams if s is not caller
    }


def test_the_first_step_allocates_on_the_input_stream_too():
    caller = _cuda.cuda.stream()
    name, params = CONFIGS["sketched"]
    algo, comm = make_algorithm(name, D, **params, device="cuda"), LocalCommunicator(WORKERS)
    grads = _gradients(0, caller)
    with _cuda.counting() as calls:
        algo.step(grads, comm)
    kinds = {kind for kind, _ in calls.streams}
    assert "allocations" in kinds
    assert all(s is caller for _, s in calls.streams)
