"""The DDP hook: 2 gloo processes on CPU train a small model through pysketch.

The updates the hook returned must equal the same pysketch algorithm run in
one process (LocalCommunicator) on the gradients the two processes saw.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed")

from pysketch.compress import LocalCommunicator  # noqa: E402
from tests.compress.ddp_worker import STATES, STEPS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=sorted(STATES))
def ddp_run(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    init = f"file://{tmp / 'rendezvous'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.compress.ddp_worker",
                str(rank),
                "2",
                init,
                str(tmp / f"rank{rank}.npz"),
                request.param,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-4000:]
    return request.param, [np.load(tmp / f"rank{rank}.npz") for rank in range(2)]


def test_hook_updates_equal_the_in_process_algorithm(ddp_run):
    hook, ranks = ddp_run
    grads = [r["grads"] for r in ranks]
    assert grads[0].shape[0] == STEPS  # one bucket: the whole small model
    algo = STATES[hook]().make_algorithm(grads[0].shape[1], 0.2)
    comm = LocalCommunicator(2)
    for step in range(STEPS):
        expected = algo.step([grads[0][step], grads[1][step]], comm)
        for r in ranks:
            np.testing.assert_allclose(r["updates"][step], expected, rtol=1e-5, atol=1e-7)
    assert ranks[0]["upload"] == comm.total.upload


def test_ranks_stay_in_sync_and_train(ddp_run):
    _, ranks = ddp_run
    np.testing.assert_array_equal(ranks[0]["params"], ranks[1]["params"])
    for r in ranks:
        assert r["losses"][-1] < r["losses"][0]


def test_hook_needs_an_initialised_process_group():
    from pysketch.compress.torch_ddp import TorchCommunicator

    with pytest.raises(RuntimeError, match="init_process_group"):
        TorchCommunicator()


def test_state_helpers_validate_early():
    from pysketch.compress.torch_ddp import fetchsgd_state

    with pytest.raises(ValueError, match="error must be"):
        fetchsgd_state(lr=0.1, error="both")
