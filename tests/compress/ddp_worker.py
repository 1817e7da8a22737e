"""One process of the DDP hook test.

Run as ``python -m tests.compress.ddp_worker RANK WORLD INIT OUT HOOK``.

Trains a small MLP under DistributedDataParallel (gloo, CPU) with a pysketch
communication hook and saves, per step, the bucket gradient the hook received
and the update it returned, plus the losses and the final parameters.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from pysketch.compress.torch_ddp import fetchsgd_state, sketch_hook, topk_state

STEPS = 12
STATES = {
    "fetchsgd": lambda: fetchsgd_state(lr=0.2, k_ratio=0.1, rows=3, cols_ratio=0.5, seed=3),
    "topk": lambda: topk_state(lr=0.2, k_ratio=0.1),
}


def main(rank: int, world: int, init: str, out: str, hook: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)  # the same initial model on every rank
    net = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    model = DDP(net)
    state = STATES[hook]()
    grads, updates = [], []

    def recording_hook(state, bucket):
        grads.append(bucket.buffer().detach().clone().numpy())
        future = sketch_hook(state, bucket)
        updates.append(future.value().detach().clone().numpy())
        return future

    model.register_comm_hook(state, recording_hook)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    x = torch.randn(64, 10, generator=gen)
    y = (x[:, :3].argmax(dim=1) + rank) % 3
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    params = torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()
    np.savez(
        out,
        grads=np.stack(grads),
        updates=np.stack(updates),
        losses=np.array(losses),
        params=params,
        upload=state.comm.total.upload,
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
