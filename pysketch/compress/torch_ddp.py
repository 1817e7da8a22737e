"""PyTorch DistributedDataParallel communication hooks running pysketch's algorithms.

``model.register_comm_hook(state, hook)`` replaces DDP's gradient allreduce
(the shape of ``torch.distributed.algorithms.ddp_comm_hooks``): for every
gradient bucket, the hook hands the bucket's flat gradient to a
:mod:`pysketch.compress` algorithm over a :class:`TorchCommunicator` (the
process group's collectives) and returns the update. The algorithm keeps its
state (FetchSGD's momentum and error sketches, mem-SGD's memory) in the hook
state, one algorithm per bucket.

The returned tensor is the *update* ``w -= update``, learning rate and momentum
included, so pair the hook with ``torch.optim.SGD(model.parameters(), lr=1.0)``
and no momentum; change :attr:`HookState.lr` for schedules.

Tensors go to the kernels through DLPack without copies: CPU tensors as NumPy
arrays, CUDA tensors as CuPy arrays (``pip install pysketch[cuda12]``).

Example (2 processes on CPU, gloo)::

    state = fetchsgd_state(lr=0.1, k_ratio=0.01, rows=5, cols_ratio=0.1)
    model = DDP(net)
    model.register_comm_hook(state, sketch_hook)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    loss_fn(model(x), y).backward(); opt.step()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pysketch.compress.algorithms import Algorithm, FetchSGD, MemSGD
from pysketch.compress.communicators import Communicator

__all__ = [
    "HookState",
    "TorchCommunicator",
    "fetchsgd_state",
    "sketch_hook",
    "topk_state",
]


def _torch():
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        raise ImportError(
            "pysketch.compress.torch_ddp needs PyTorch: pip install pysketch[torch]"
        ) from None
    return torch, dist


def to_array(tensor: Any):
    """A NumPy (CPU) or CuPy (CUDA) view of ``tensor``, sharing its memory."""
    if tensor.device.type == "cpu":
        return tensor.detach().numpy()
    import cupy

    return cupy.from_dlpack(tensor.detach())


def to_tensor(array: Any):
    """A torch view of a NumPy or CuPy array (DLPack, no copy)."""
    torch, _ = _torch()
    return torch.from_numpy(array) if isinstance(array, np.ndarray) else torch.from_dlpack(array)


class _GroupAsMPI:
    """The two methods of an mpi4py communicator that pysketch's agreement check uses."""

    def __init__(self, group: Any) -> None:
        self._group = group

    def Get_rank(self) -> int:  # noqa: N802 (mpi4py's name)
        return _torch()[1].get_rank(self._group)

    def allgather(self, obj: Any) -> list[Any]:
        dist = _torch()[1]
        out: list[Any] = [None] * dist.get_world_size(self._group)
        dist.all_gather_object(out, obj, group=self._group)
        return out


class TorchCommunicator(Communicator):
    """The processes of a ``torch.distributed`` group, one worker each.

    Parameters
    ----------
    group : ProcessGroup, optional
        The default group when omitted. gloo (CPU) and NCCL (CUDA) both work.
    """

    def __init__(self, group: Any = None) -> None:
        _, dist = _torch()
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("TorchCommunicator needs torch.distributed.init_process_group first")
        super().__init__()
        self.group = group
        self.rank, self.ranks = dist.get_rank(group), dist.get_world_size(group)
        self.world_size, self.local_workers = self.ranks, 1

    def _allreduce(self, payload: tuple[Any, ...]) -> tuple[Any, ...]:
        dist = _torch()[1]
        for array in payload:
            dist.all_reduce(to_tensor(array), group=self.group)
        return payload

    def _allgather(self, indices: Any, values: Any, lengths: list[int]):
        torch, dist = _torch()
        per_rank = _GroupAsMPI(self.group).allgather(lengths)
        counts = [sum(r) for r in per_rank]
        longest = max(counts)
        gathered = []
        for array in (indices, values):
            mine = to_tensor(array)
            padded = torch.zeros(longest, dtype=mine.dtype, device=mine.device)
            padded[: mine.numel()] = mine
            parts = [torch.empty_like(padded) for _ in range(self.ranks)]
            dist.all_gather(parts, padded, group=self.group)
            whole = torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)])
            gathered.append(to_array(whole))
        return gathered[0], gathered[1], [n for r in per_rank for n in r]

    def agree(self, what: str, fingerprint: dict[str, Any], error: BaseException | None) -> None:
        from pysketch.distributed.agreement import _agree

        _agree(_GroupAsMPI(self.group), what, fingerprint, error)


@dataclass
class HookState:
    """What :func:`sketch_hook` keeps between steps.

    Parameters
    ----------
    make_algorithm : callable
        ``make_algorithm(d, lr)`` builds the algorithm for a bucket of ``d`` gradients.
    lr : float
        The learning rate of the next steps (change it for schedules).
    group : ProcessGroup, optional

    Attributes
    ----------
    algorithms : dict
        One algorithm per bucket, keyed by ``(bucket index, size)``.
    comm : TorchCommunicator
        Created on the first call; its ``total`` counts the bytes.
    """

    make_algorithm: Callable[[int, float], Algorithm]
    lr: float
    group: Any = None
    algorithms: dict[tuple[int, int], Algorithm] = field(default_factory=dict)
    comm: TorchCommunicator | None = None

    def algorithm_for(self, index: int, d: int) -> Algorithm:
        """The algorithm of bucket ``index`` (new when DDP rebuilt its buckets)."""
        key = (index, d)
        if key not in self.algorithms:
            self.algorithms[key] = self.make_algorithm(d, self.lr)
        return self.algorithms[key]


def _count(ratio: float, d: int) -> int:
    return max(1, min(d, round(ratio * d)))


def fetchsgd_state(
    lr: float,
    *,
    k_ratio: float = 0.01,
    rows: int = 5,
    cols_ratio: float = 0.1,
    rho: float = 0.9,
    error: str = "zero",
    seed: int = 0,
    group: Any = None,
) -> HookState:
    """Hook state for FetchSGD [RPU20]_: ``k = k_ratio d`` and ``cols = cols_ratio d`` per bucket.

    Examples
    --------
    >>> from pysketch.compress.torch_ddp import fetchsgd_state
    >>> state = fetchsgd_state(lr=0.1, k_ratio=0.01, cols_ratio=0.1)
    >>> state.make_algorithm(10_000, 0.1).k, state.make_algorithm(10_000, 0.1).cols
    (100, 1000)
    """

    def make(d: int, step_lr: float) -> FetchSGD:
        return FetchSGD(
            d,
            lr=step_lr,
            k=_count(k_ratio, d),
            rows=rows,
            cols=_count(cols_ratio, d),
            rho=rho,
            error=error,
            seed=seed,
        )

    make(1, lr)  # validates the arguments now, not at the first backward pass
    return HookState(make, lr, group)


def topk_state(
    lr: float,
    *,
    k_ratio: float = 0.01,
    compressor: str = "topk",
    memory: bool = True,
    seed: int = 0,
    group: Any = None,
) -> HookState:
    """Hook state for mem-SGD [SCJ18]_ (top-k or random-k with error feedback).

    Examples
    --------
    >>> from pysketch.compress.torch_ddp import topk_state
    >>> topk_state(lr=0.1, k_ratio=0.05).make_algorithm(200, 0.1).k
    10
    """

    def make(d: int, step_lr: float) -> MemSGD:
        return MemSGD(
            d, lr=step_lr, k=_count(k_ratio, d), compressor=compressor, memory=memory, seed=seed
        )

    make(1, lr)
    return HookState(make, lr, group)


def sketch_hook(state: HookState, bucket):
    """DDP communication hook: the bucket's gradients through ``state``'s algorithm.

    (``bucket`` and the result carry no annotations: DDP checks that any it
    finds are ``dist.GradBucket`` and ``torch.futures.Future[torch.Tensor]``,
    which would import torch with pysketch.)

    Parameters
    ----------
    state : HookState
        From :func:`fetchsgd_state`, :func:`topk_state` or built directly.
    bucket : torch.distributed.GradBucket
        Given by DDP.

    Returns
    -------
    torch.futures.Future
        Holding the update for the bucket's parameters (``w -= update``, so
        use an SGD optimizer with ``lr=1.0``).
    """
    torch, _ = _torch()
    if state.comm is None:
        state.comm = TorchCommunicator(state.group)
    grad = bucket.buffer()
    algo = state.algorithm_for(bucket.index(), grad.numel())
    update = algo.step([to_array(grad)], state.comm, lr=state.lr)
    future: Any = torch.futures.Future()
    future.set_result(to_tensor(update).to(grad.dtype))
    return future
