"""A CNN on scikit-learn's digits with pysketch's top-k hook and Adam: a checkpoint, and the resume.

Run it as ``python docs/examples/ddp_digits.py [STEPS]``. It starts 2 processes
(gloo, on the CPU) that train for STEPS steps and checkpoint, then 2 new
processes that load the checkpoint and train STEPS more, as a job restarted
after a failure would. Every rank saves its own checkpoint: the hook's error
memory is the rank's own.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.datasets import load_digits
from torch.nn.parallel import DistributedDataParallel as DDP

from pysketch.compress.torch_ddp import topk_state

WORLD, BATCH = 2, 32


def cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(64 * 4 * 4, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )


def digits():
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x = torch.tensor(x[order] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y[order])
    return (x[:-300], y[:-300]), (x[-300:], y[-300:])  # 1,497 to train on, 300 to test


def train(rank: int, init: str, folder: Path, steps: int, resume: bool) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    torch.manual_seed(0)  # the same initial model on every process
    net = cnn()
    model = DDP(net)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # Each rank sends 1% of its error-fed gradient per step; DDP's allreduce for 10 steps first.
    hook = topk_state(k_ratio=0.01, start_iter=10)
    checkpoint, first = folder / f"rank{rank}.pt", 0
    if resume:
        saved = torch.load(checkpoint, weights_only=True)
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        hook.load_state_dict(saved["hook"])
        first = saved["step"]
    hook.register(model)  # model.register_comm_hook(hook, sketch_hook), parameters by name

    (x, y), (x_test, y_test) = digits()
    shard = torch.arange(rank, len(y), WORLD)  # each process its half of the data
    for step in range(first, first + steps):
        draw = torch.Generator().manual_seed(step)  # the data order depends on the step alone
        batch = shard[torch.randint(len(shard), (BATCH,), generator=draw)]
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        loss.backward()
        opt.step()

    partial = checkpoint.with_suffix(".tmp")  # written whole, then renamed: never half a file
    state = {"model": net.state_dict(), "opt": opt.state_dict(), "hook": hook.state_dict()}
    torch.save({**state, "step": first + steps}, partial)
    os.replace(partial, checkpoint)
    if rank == 0:
        with torch.no_grad():
            accuracy = (net(x_test).argmax(dim=1) == y_test).float().mean().item()
        sent = hook.comm.last_step.upload
        dense = 4 * sum(p.numel() for p in net.parameters())
        print(
            f"{'resumed, ' if resume else ''}step {first + steps}: loss {loss.item():.3f}, "
            f"test accuracy {accuracy:.1%}, {sent:,.0f} bytes sent per step instead of {dense:,}"
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 150
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 processes share the cores
    with tempfile.TemporaryDirectory() as tmp:
        for resume in (False, True):  # the second start is a new job: new processes
            init = f"file://{tmp}/rendezvous{int(resume)}"
            mp.spawn(train, args=(init, Path(tmp), steps, resume), nprocs=WORLD)
