"""A tiny stand-in for ``pysketch.compress`` (SGD and mem-SGD only), for the tests.

Used only while the real module is missing: :func:`install` puts it in
``sys.modules``. It follows the documented API (communicators, ``make_algorithm``,
``step``, traffic, state dicts), in plain NumPy, with mpi4py for MPI.
"""

from __future__ import annotations

import sys
import types
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Traffic:
    upload: float = 0.0
    download: float = 0.0
    wire_sent: float = 0.0
    wire_received: float = 0.0

    def as_dict(self):
        return asdict(self)


class LocalCommunicator:
    def __init__(self, workers):
        self.world_size = self.local_workers = workers
        self.worker_ids = range(workers)
        self.rank, self.ranks, self.is_root = 0, 1, True
        self.total, self.last_step = Traffic(), Traffic()

    def sum(self, x):
        return x

    def record(self, up, down):
        w = self.world_size
        self.last_step = Traffic(up, down, 2 * (w - 1) / w * up, 2 * (w - 1) / w * up)
        for key, value in asdict(self.last_step).items():
            setattr(self.total, key, getattr(self.total, key) + value)

    def state_dict(self):
        return {f"total_{k}": v for k, v in self.total.as_dict().items()}

    def load_state_dict(self, state):
        self.total = Traffic(**{k[6:]: float(v) for k, v in state.items()})


class MPICommunicator(LocalCommunicator):
    def __init__(self, workers_per_rank=1):
        from mpi4py import MPI

        self.comm = MPI.COMM_WORLD
        super().__init__(self.comm.Get_size() * workers_per_rank)
        self.rank, self.ranks = self.comm.Get_rank(), self.comm.Get_size()
        self.is_root = self.rank == 0
        self.local_workers = workers_per_rank
        self.worker_ids = range(self.rank * workers_per_rank, (self.rank + 1) * workers_per_rank)

    def sum(self, x):
        from mpi4py import MPI

        out = np.empty_like(x)
        self.comm.Allreduce(x, out, op=MPI.SUM)
        return out


class SGD:
    def __init__(self, d, lr, seed=0, dtype=np.float32, device="cpu", rho=0.0, nesterov=False):
        self.d, self.lr, self.rho, self.steps = d, lr, rho, 0
        self.u = np.zeros(d, dtype=dtype)

    def step(self, vectors, comm, lr=None):
        g = comm.sum(np.sum(vectors, axis=0)) / comm.world_size
        self.u = self.rho * self.u + g
        comm.record(self.d * self.u.itemsize, self.d * self.u.itemsize)
        self.steps += 1
        return (self.lr if lr is None else lr) * self.u

    def state_dict(self):
        return {"u": self.u.copy(), "steps": self.steps}

    def load_state_dict(self, state):
        self.u[...] = state["u"]
        self.steps = int(state["steps"])


class MemSGD:
    def __init__(self, d, lr, k, seed=0, dtype=np.float32, device="cpu", compressor="topk",
                 memory=True):
        self.d, self.lr, self.k, self.steps, self.dtype = d, lr, k, 0, dtype
        self.memory = None

    def step(self, vectors, comm, lr=None):
        lr = self.lr if lr is None else lr
        if self.memory is None:
            self.memory = np.zeros((len(vectors), self.d), dtype=self.dtype)
        total = np.zeros(self.d, dtype=self.dtype)
        for m, g in zip(self.memory, vectors, strict=True):
            m += lr * g
            idx = np.argpartition(-np.abs(m), self.k - 1)[: self.k]
            total[idx] += m[idx]
            m[idx] = 0
        size = np.dtype(self.dtype).itemsize + 4
        comm.record(self.k * size, self.k * size * (comm.world_size - 1))
        self.steps += 1
        return comm.sum(total) / comm.world_size

    def state_dict(self):
        return {"memory": self.memory.copy(), "steps": self.steps}

    def load_state_dict(self, state):
        self.memory = np.array(state["memory"])
        self.steps = int(state["steps"])


ALGORITHMS = {"sgd": SGD, "memsgd": MemSGD}


def make_algorithm(name, **kwargs):
    return ALGORITHMS[name](**kwargs)


def install() -> types.ModuleType:
    """Put this module in ``sys.modules`` as ``pysketch.compress``."""
    module = sys.modules[__name__]
    sys.modules["pysketch.compress"] = module
    import pysketch

    pysketch.compress = module
    return module
