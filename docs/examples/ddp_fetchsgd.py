"""FetchSGD inside PyTorch DDP: 2 processes on the CPU (gloo) train a small MLP.

Run it as ``python docs/examples/ddp_fetchsgd.py``; it starts both processes
itself. The communication hook replaces DDP's gradient allreduce: each process
sends a Count Sketch of its gradient bucket instead of the gradient.
"""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from pysketch.compress.torch_ddp import fetchsgd_state, sketch_hook

WORLD, STEPS = 2, 60


def train(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.manual_seed(0)  # the same initial model on every process
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    model = DDP(net)
    # FetchSGD: 5% of the gradients applied per step; a 3 x (d / 10) sketch sent per step.
    state = fetchsgd_state(lr=0.5, k_ratio=0.05, rows=3, cols_ratio=0.1, rho=0.9)
    model.register_comm_hook(state, sketch_hook)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)  # the hook's update has lr and momentum in it

    gen = torch.Generator().manual_seed(rank)  # each process its own shard of data
    x = torch.randn(512, 32, generator=gen)
    y = x[:, :4].argmax(dim=1)
    for step in range(STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if rank == 0 and step % 20 == 0:
            print(f"step {step:3d}  loss {loss.item():.3f}")
    if rank == 0:
        d = sum(p.numel() for p in net.parameters())
        sent = state.comm.total.upload / STEPS
        print(f"final loss {loss.item():.3f}; {sent:,.0f} bytes sent per step instead of {4 * d:,}")
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(train, args=(os.path.join(tmp, "rendezvous"),), nprocs=WORLD)
