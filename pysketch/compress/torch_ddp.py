"""PyTorch DistributedDataParallel communication hooks running pysketch's algorithms.

A drop-in for PowerSGD users (``torch.distributed.algorithms.ddp_comm_hooks``)::

    model = DDP(net)
    state = topk_state(k_ratio=0.01, rho=0.9, start_iter=10)   # or fetchsgd_state(...)
    state.register(model)             # model.register_comm_hook(state, sketch_hook), by name
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)        # any optimizer
    ...
    torch.save({"model": net.state_dict(), "opt": opt.state_dict(),
                "hook": state.state_dict()}, f"ckpt{rank}.pt")  # every rank: its own memory

What the hook returns
    For every gradient bucket, the future holds the *compressed, error-fed
    average gradient* of the bucket, in the bucket's dtype: what DDP's
    allreduce would have given, compressed. Any optimizer, learning-rate
    scheduler, weight decay, gradient clipping or ``GradScaler`` applies to it
    as to DDP's gradients. Two algorithms:

    :func:`topk_state`
        mem-SGD [SCJ18]_: each rank keeps an error memory ``m += g`` and sends
        its top-k (or random-k) pairs; the hook returns the mean of the sent
        vectors. With ``rho > 0`` it is the local top-k of FetchSGD's released
        code [RPU20]_: worker momentum ``u = rho u + g`` and ``m += u``, both
        masked where the rank sent; the hook then returns the compressed
        momentum, so use an optimizer without momentum.
    :func:`fetchsgd_state`
        FetchSGD [RPU20]_: ranks send a Count Sketch of their gradient; the
        error (and, with ``rho > 0``, the momentum) accumulate in sketch space
        on every rank, ``S_u = rho S_u + mean S(g)``, ``S_e += S_u``, and the
        hook returns ``unSketch(S_e, k)``, the released code's placement of
        the learning rate. With ``rho = 0`` (default) that is the error-fed
        compressed gradient. With ``rho > 0`` it is FetchSGD with momentum in
        sketch space: pair it with ``torch.optim.SGD(lr=lr)`` *without*
        momentum; ``w -= lr * returned`` is the paper's update at a constant
        learning rate (under a schedule the error holds momentum in gradient
        units, as in the released code). Weight decay of the optimizer is then
        applied outside the sketch.

State tied to parameters
    :meth:`HookState.register` names the parameters (``model.module``'s
    names). When compression starts (at iteration ``start_iter``, after DDP
    has rebuilt its buckets in the order gradients become ready, as PowerSGD's
    ``start_powerSGD_iter``), each bucket becomes a *group* of parameters with
    one algorithm: its error memory, momentum and sketches. Groups are fixed
    from then on and saved with the state. DDP's buckets are mapped onto them
    by parameter name: a bucket that is one group, in its order, is compressed
    directly; otherwise (the first iteration after a resume, whose buckets are
    DDP's initial ones, or buckets of another size) the gradients are gathered
    by name into their groups, which are compressed once complete. So the same
    parameters keep the same state whatever DDP does to its buckets, and a
    sketch's state never mixes the coordinates of different parameters; a
    resumed run computes what the uninterrupted one does, bit for bit.

Saving
    :meth:`HookState.state_dict` (tensors and plain values, for
    ``torch.load(weights_only=True)``) and ``torch.save(state)`` itself (its
    ``__getstate__`` leaves out the process group and the model, like
    PowerSGD's). Each rank saves and loads its own: the error memory of top-k
    is per rank.

Asynchronous
    The configuration is agreed on (one pickled gather) when the hook first
    meets its process group and when a group is formed, not at every step.
    At each step the hook compresses a bucket, launches one collective
    (``async_op=True``) on the process group and returns a future chained on
    its future; the rest of the algorithm (the server half: decoding,
    FetchSGD's sketch momentum and error) runs when the collective completes,
    while backward goes on. A flag that every rank adds to that collective
    says whether its gradient was finite, so a NaN or Inf on any rank raises
    :class:`~pysketch.errors.NonFiniteError` on every rank at the end of
    ``backward()`` and leaves the hook state as it was
    (``nonfinite="propagate"`` returns NaN instead, for ``GradScaler``).

Threads
    When the hook first meets its process group it counts the ranks on this
    host and gives this process its share of the cores for pysketch's kernels
    (:func:`pysketch.distributed.configure_threads`), as ``mpiexec`` and
    torchrun's ``LOCAL_WORLD_SIZE`` do; ``NUMBA_NUM_THREADS`` keeps your
    choice. Results do not depend on the count.

Dtypes
    float16 and bfloat16 buckets are compressed in float32 (state in float32)
    and returned in their dtype; float32 and float64 buckets keep state in
    their own dtype. Other dtypes are refused.

Devices
    CPU tensors reach the kernels as NumPy arrays, CUDA tensors as CuPy arrays
    (DLPack, no copies; ``pip install pysketch[cuda12]``), and the collectives
    run on the process group (gloo, NCCL) with the tensors themselves. The
    copy of each group's state that a failed step is rolled back to is taken
    with the algorithm's ``state_dict()``, on the host: on a GPU that is a
    device-to-host copy of the dense state per step (its cost is not yet
    measured).
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pysketch import _arrays
from pysketch.compress.algorithms import Algorithm, FetchSGD, MemSGD
from pysketch.compress.communicators import Communicator, LocalCommunicator, Traffic
from pysketch.compress.messages import Message
from pysketch.distributed.accounting import ring_allreduce_bytes
from pysketch.errors import NonFiniteError

__all__ = [
    "HookState",
    "TorchCommunicator",
    "fetchsgd_state",
    "sketch_hook",
    "topk_state",
]

_VERSION = 1
_NONFINITE = ("raise", "propagate")
# The bucket dtypes the hook compresses, and the dtype of their state.
_STATE_DTYPES = {
    "float16": np.dtype(np.float32),
    "bfloat16": np.dtype(np.float32),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}
_OK, _NONFINITE_STATUS, _FAILED = 0, 1, 2


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
    try:
        import cupy
    except ImportError:
        raise ImportError(
            "the DDP hook on CUDA tensors needs CuPy: pip install pysketch[cuda12]"
        ) from None
    return cupy.from_dlpack(tensor.detach())


def to_tensor(array: Any):
    """A torch view of a NumPy or CuPy array (DLPack, no copy)."""
    torch, _ = _torch()
    return torch.from_numpy(array) if isinstance(array, np.ndarray) else torch.from_dlpack(array)


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


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

    Works two ways: synchronously, as every communicator does
    (``algorithm.step(grads, comm)``), and asynchronously for the DDP hook
    (:meth:`start`), where the collective runs while backward goes on.

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
        self._lock = threading.Lock()  # the hook's callbacks may run on several threads
        self._completed: Any = None  # the result of a collective that start() launched

    # ------------------------------------------------------- synchronous
    def _allreduce(self, payload: tuple[Any, ...]) -> tuple[Any, ...]:
        if self._completed is not None:
            return self._completed
        dist = _torch()[1]
        for array in payload:
            dist.all_reduce(to_tensor(array), group=self.group)
        return payload

    def _allgather(self, indices: Any, values: Any, lengths: list[int]):
        if self._completed is not None:
            return self._completed
        torch, _ = _torch()
        mine = [to_tensor(indices), to_tensor(values)]
        (length,) = lengths  # one worker per process
        counts = self._gather_tensor(torch.tensor([length], device=mine[0].device))
        counts = counts.reshape(-1).tolist()
        gathered = []
        for tensor in mine:
            padded = torch.zeros(max(counts), dtype=tensor.dtype, device=tensor.device)
            padded[:length] = tensor
            parts = self._gather_tensor(padded)
            whole = torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])
            gathered.append(to_array(whole))
        return gathered[0], gathered[1], counts

    def _gather_tensor(self, tensor: Any) -> Any:
        torch, dist = _torch()
        out = torch.empty(self.ranks * tensor.numel(), dtype=tensor.dtype, device=tensor.device)
        dist.all_gather_single(out, tensor.contiguous(), group=self.group)
        return out.view(self.ranks, *tensor.shape)

    def agree(self, what: str, fingerprint: dict[str, Any], error: BaseException | None) -> None:
        self.gather_agreed(what, fingerprint, error)

    def gather_agreed(
        self,
        what: str,
        fingerprint: dict[str, Any],
        error: BaseException | None = None,
        *,
        ignore: tuple[str, ...] = (),
    ) -> list[dict[str, Any]]:
        """Every rank's fingerprint; raises on every rank if one failed or they differ.

        The keys in ``ignore`` may differ between ranks (data gathered with the
        check). A ``NonFiniteError`` on any rank is a ``NonFiniteError`` on all.
        """
        from pysketch.distributed.agreement import _agree

        try:
            prints, _ = _agree(_GroupAsMPI(self.group), what, fingerprint, error, ignore)
        except ValueError as exc:
            # Every rank raises the same type: a NaN on one rank is a divergence on all.
            if f"{NonFiniteError.__name__}:" in str(exc):
                raise NonFiniteError(str(exc)) from exc
            raise
        return prints

    # ------------------------------------------------------ asynchronous
    @contextlib.contextmanager
    def _given(self, result: Any) -> Iterator[None]:
        """Make combine() account for and build on ``result`` instead of communicating."""
        with self._lock:
            self._completed = result
            try:
                yield
            finally:
                self._completed = None

    def start(self, message: Message, status: int = _OK):
        """Launch the combination of this process's ``message`` with every rank's; no wait.

        One collective on the process group, on the message's own device:
        an allreduce of the payload (summable messages) or an allgather of
        the packed pairs (top-k), with ``status`` (0: fine, 1: non-finite
        input, 2: failed) added to it so that every rank learns each rank's.

        Returns
        -------
        torch.futures.Future
            Of ``(combined, statuses)``: the message :meth:`combine` would
            return (its bytes counted), or ``None`` when any rank's status is
            not 0, and the list of every rank's status.
        """
        torch, dist = _torch()
        parts = [to_tensor(a).reshape(-1) for a in message.payload]
        device = parts[0].device
        if message.summable:
            flags = torch.zeros(self.ranks, dtype=parts[0].dtype, device=device)
            flags[self.rank] = status
            buffer = torch.cat([*parts, flags])
            work = dist.all_reduce(buffer, group=self.group, async_op=True)

            def finish(_):
                statuses = [int(s) for s in buffer[-self.ranks :].tolist()]
                if any(statuses):
                    return None, statuses
                sizes = [p.numel() for p in parts]
                summed = tuple(
                    to_array(chunk.view(a.shape))
                    for chunk, a in zip(
                        buffer[: -self.ranks].split(sizes), message.payload, strict=True
                    )
                )
                with self._given(summed):
                    return self.combine_local_sum(message), statuses

        else:
            status_bytes = torch.tensor([status], dtype=torch.int32, device=device)
            pieces = [p.view(torch.uint8) for p in (*parts, status_bytes)]
            buffer = torch.cat(pieces)
            out = torch.empty(self.ranks * buffer.numel(), dtype=torch.uint8, device=device)
            work = dist.all_gather_single(out, buffer, group=self.group, async_op=True)

            def finish(_):
                columns = out.view(self.ranks, -1).split([p.numel() for p in pieces], dim=1)
                statuses = columns[-1].contiguous().view(torch.int32).reshape(-1).tolist()
                if any(statuses):
                    return None, statuses
                indices, values = (
                    to_array(c.contiguous().view(p.dtype).reshape(-1))
                    for c, p in zip(columns[:-1], parts, strict=True)
                )
                with self._given((indices, values, [parts[0].numel()] * self.ranks)):
                    return self.combine([message]), statuses

        return work.get_future().then(finish)

    def count_allreduce(self, nbytes: int) -> None:
        """Count an allreduce of ``nbytes`` per worker run outside :meth:`combine`."""
        wire = ring_allreduce_bytes(nbytes, self.world_size)
        with self._lock:
            self._record(Traffic(1, nbytes, nbytes, wire, wire))

    def step(self) -> Traffic:
        with self._lock:
            return super().step()

    def discard_step(self) -> None:
        """Forget the traffic of the open step: a step that changed nothing is not counted."""
        with self._lock:
            self._open = Traffic()


# ==================================================================== state
def _count(ratio: float, d: int) -> int:
    return max(1, min(d, round(ratio * d)))


def _check_ratio(name: str, value: Any) -> float:
    value = _arrays.check_real(name, value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {value}")
    return value


@dataclass
class _Group:
    """Parameters compressed together, in this order, by one algorithm."""

    names: tuple[str, ...]
    numels: tuple[int, ...]
    dtype: str  # the parameters' dtype (float16, bfloat16, float32, float64)
    algorithm: Algorithm
    template: Message | None = None  # what a rank sends when its input cannot be compressed

    @property
    def size(self) -> int:
        return sum(self.numels)

    def offsets(self) -> dict[str, int]:
        return dict(zip(self.names, np.cumsum((0, *self.numels[:-1])).tolist(), strict=True))


@dataclass
class _Plan:
    """How one DDP bucket layout maps onto the groups."""

    group: int | None  # the bucket is this group, in its order
    segments: list[tuple[int, int, int, int]] = field(default_factory=list)
    # (group, offset in the bucket, offset in the group, size) otherwise
    groups: list[int] = field(default_factory=list)


@dataclass
class _Iteration:
    """One backward pass: its futures, its gathered groups, its errors."""

    futures: list[Any] = field(default_factory=list)
    buffers: dict[int, Any] = field(default_factory=dict)  # gathered gradients of groups
    remaining: dict[int, int] = field(default_factory=dict)  # their entries still to come
    launched: dict[int, Any] = field(default_factory=dict)
    waiting: dict[int, Any] = field(default_factory=dict)  # futures of groups not launched yet
    saved: dict[int, dict[str, Any]] = field(default_factory=dict)  # groups' state before
    failed: bool = False  # a group's input could not be used on some rank
    errors: list[BaseException] = field(default_factory=list)  # to raise after backward


class HookState:
    """What :func:`sketch_hook` keeps: the configuration, and per group of parameters its state.

    Build it with :func:`topk_state` or :func:`fetchsgd_state`, then
    :meth:`register` it with the DDP model.

    Parameters
    ----------
    algorithm : {"memsgd", "fetchsgd"}
    start_iter : int, default 1
        Iterations of plain allreduce (the averaged gradient, as DDP's own
        hook) before compression starts, as PowerSGD's ``start_powerSGD_iter``.
        At least 1: DDP rebuilds its buckets after the first iteration, and
        the groups of parameters are taken from the buckets of the first
        compressed iteration.
    nonfinite : {"raise", "propagate"}, default "raise"
        A NaN or Inf gradient on any rank: ``"raise"`` raises
        :class:`~pysketch.errors.NonFiniteError` on every rank at the end of
        ``backward()``; ``"propagate"`` returns NaN for the affected
        parameters on every rank (``torch.amp.GradScaler`` then skips the
        step). Either way the hook state is left as it was.
    group : ProcessGroup, optional
        The DDP model's process group by default.
    **params
        The algorithm's, as :func:`topk_state` and :func:`fetchsgd_state` take them.

    Attributes
    ----------
    iter : int
        Backward passes the hook has seen.
    comm : TorchCommunicator or None
        Created at the first step; ``comm.last_step`` and ``comm.total`` are
        the bytes per worker (``comm.last_step`` of the last backward pass).
    """

    _DEFAULTS = {
        "memsgd": {"k_ratio": 0.01, "compressor": "topk", "memory": True, "rho": 0.0, "seed": 0},
        "fetchsgd": {
            "k_ratio": 0.01,
            "rows": 5,
            "cols_ratio": 0.1,
            "rho": 0.0,
            "error": "zero",
            "hash": "mix",
            "seed": 0,
        },
    }

    def __init__(
        self,
        algorithm: str,
        *,
        start_iter: int = 1,
        nonfinite: str = "raise",
        group: Any = None,
        **params: Any,
    ) -> None:
        if algorithm not in self._DEFAULTS:
            raise ValueError(
                f"algorithm must be one of {sorted(self._DEFAULTS)}, got {algorithm!r}"
            )
        unknown = sorted(set(params) - set(self._DEFAULTS[algorithm]))
        if unknown:
            raise TypeError(f"{algorithm} takes {sorted(self._DEFAULTS[algorithm])}, not {unknown}")
        params = {**self._DEFAULTS[algorithm], **params}
        params["k_ratio"] = _check_ratio("k_ratio", params["k_ratio"])
        if algorithm == "fetchsgd":
            params["cols_ratio"] = _check_ratio("cols_ratio", params["cols_ratio"])
        start_iter = _arrays.check_int("start_iter", start_iter, minimum=1)
        if nonfinite not in _NONFINITE:
            raise ValueError(f"nonfinite must be one of {_NONFINITE}, got {nonfinite!r}")
        self.algorithm, self.params = algorithm, params
        self.start_iter, self.nonfinite, self.group = start_iter, nonfinite, group
        self.make_algorithm(
            64, np.dtype(np.float32), "cpu"
        )  # validates the rest now, not at step 1
        self.iter = 0
        self._groups: list[_Group] = []
        self._traffic: dict[str, float] | None = None
        self._detach()

    def _detach(self) -> None:
        """Forget the model, the process group's communicator and the current iteration."""
        if getattr(self, "comm", None) is not None:
            self._traffic = self.comm.state_dict()
        self.comm: TorchCommunicator | None = None
        self._named: dict[str, Any] | None = None  # name -> parameter
        self._names: dict[int, str] = {}  # id(parameter) -> name
        self._plans: dict[tuple[int, ...], _Plan] = {}
        self._iteration: _Iteration | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The configuration: every rank must have the same; saved with the state."""
        return {
            "algorithm": self.algorithm,
            **self.params,
            "start_iter": self.start_iter,
            "nonfinite": self.nonfinite,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"HookState({args}, iter={self.iter}, groups={len(self._groups)})"

    def make_algorithm(self, d: int, dtype: Any = np.float32, device: str = "cpu") -> Algorithm:
        """The algorithm a group of ``d`` parameters gets (a new one, ``lr = 1``).

        Examples
        --------
        >>> from pysketch.compress.torch_ddp import fetchsgd_state
        >>> algo = fetchsgd_state(k_ratio=0.01, cols_ratio=0.1, rho=0.9).make_algorithm(10_000)
        >>> algo.k, algo.rows, algo.cols, algo.rho, algo.lr
        (100, 5, 1000, 0.9, 1.0)
        """
        p = self.params
        common = dict(lr=1.0, k=_count(p["k_ratio"], d), rho=p["rho"], seed=p["seed"])
        common.update(dtype=dtype, device=device)
        if self.algorithm == "fetchsgd":
            cols = _count(p["cols_ratio"], d)
            return FetchSGD(
                d, rows=p["rows"], cols=cols, error=p["error"], hash=p["hash"], **common
            )
        return MemSGD(d, compressor=p["compressor"], memory=p["memory"], **common)

    # ---------------------------------------------------------- the model
    def register(self, model: Any, hook: Any = None) -> None:
        """Register :func:`sketch_hook` with a DDP model, naming its parameters for the state.

        Parameters
        ----------
        model : torch.nn.parallel.DistributedDataParallel
            The parameters are named as in ``model.module.named_parameters()``;
            a loaded state must name the same ones (same sizes and dtypes).
        hook : callable, optional
            A hook of your own that calls :func:`sketch_hook` (to log, say);
            :func:`sketch_hook` itself by default.
        """
        torch, _ = _torch()
        if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
            raise TypeError(
                "model must be a torch.nn.parallel.DistributedDataParallel (the hook is a DDP "
                f"communication hook), got {type(model).__name__}"
            )
        named = {n: p for n, p in model.module.named_parameters() if p.requires_grad}
        _check_groups_fit(self._groups, named)
        self._detach()
        self._named = named
        self._names = {id(p): n for n, p in named.items()}
        if self.group is None:
            self.group = model.process_group
        model.register_comm_hook(self, sketch_hook if hook is None else hook)

    # --------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The state as tensors and plain values (``torch.load(weights_only=True)`` reads it).

        Keys: ``version``, ``config``, ``iter``, ``traffic`` (the byte totals)
        and ``groups``, one dict per group: ``params`` (names, in order),
        ``numels``, ``dtype`` and ``algorithm`` (its ``state_dict``, arrays
        as CPU tensors). This rank's share: save it on every rank.
        """
        torch, _ = _torch()
        traffic = self.comm.state_dict() if self.comm is not None else self._traffic
        return {
            "version": _VERSION,
            "config": self.config,
            "iter": self.iter,
            "traffic": dict(traffic) if traffic is not None else None,
            "groups": [
                {
                    "params": list(g.names),
                    "numels": list(g.numels),
                    "dtype": g.dtype,
                    "algorithm": {
                        k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                        for k, v in g.algorithm.state_dict().items()
                    },
                }
                for g in self._groups
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; validates everything before changing anything.

        Raises
        ------
        ValueError, TypeError
            Naming the field: another configuration (the keys that differ),
            another version, malformed groups, state arrays that do not fit.
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        if state.get("version") != _VERSION:
            raise ValueError(f"state['version'] must be {_VERSION}, got {state.get('version')!r}")
        config = state.get("config")
        if not isinstance(config, dict):
            raise ValueError("state['config'] must be a dict")
        differ = sorted(k for k in {*config, *self.config} if config.get(k) != self.config.get(k))
        if differ:
            detail = ", ".join(
                f"{k} ({config.get(k)!r} in the state, {self.config.get(k)!r} here)" for k in differ
            )
            raise ValueError(f"state['config'] differs from this HookState's: {detail}")
        iteration = state.get("iter")
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise ValueError(f"state['iter'] must be a non-negative integer, got {iteration!r}")
        traffic = state.get("traffic")
        if traffic is not None:
            LocalCommunicator(1).load_state_dict(traffic)  # validates
        groups = self._load_groups(state.get("groups"))
        named = self._named
        if named is not None:
            _check_groups_fit(groups, named)
        self._detach()  # the next step agrees on the new state with every rank
        self._groups, self.iter = groups, iteration
        self._traffic = None if traffic is None else dict(traffic)
        if named is not None:
            self._named, self._names = named, {id(p): n for n, p in named.items()}

    def _load_groups(self, groups: Any) -> list[_Group]:
        if not isinstance(groups, list):
            raise ValueError("state['groups'] must be a list")
        out, seen = [], set()
        for i, g in enumerate(groups):
            where = f"state['groups'][{i}]"
            if not isinstance(g, dict) or not {"params", "numels", "dtype", "algorithm"} <= set(g):
                raise ValueError(f"{where} must be a dict with params, numels, dtype, algorithm")
            names, numels = g["params"], g["numels"]
            if (
                not isinstance(names, list)
                or not names
                or not all(isinstance(n, str) for n in names)
                or not isinstance(numels, list)
                or len(numels) != len(names)
                or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in numels)
            ):
                raise ValueError(
                    f"{where}: params must be names and numels as many positive integers"
                )
            repeated = seen.intersection(names)
            if repeated or len(set(names)) != len(names):
                raise ValueError(f"{where}: parameters in two groups: {sorted(repeated or names)}")
            seen.update(names)
            if g["dtype"] not in _STATE_DTYPES:
                raise ValueError(f"{where}['dtype'] must be one of {list(_STATE_DTYPES)}")
            algo = self.make_algorithm(sum(numels), _STATE_DTYPES[g["dtype"]], "cpu")
            arrays = g["algorithm"]
            if not isinstance(arrays, dict):
                raise ValueError(f"{where}['algorithm'] must be a dict")
            try:
                algo.load_state_dict(
                    {k: v.numpy() if hasattr(v, "numpy") else v for k, v in arrays.items()}
                )
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}['algorithm']: {exc}") from None
            out.append(_Group(tuple(names), tuple(numels), g["dtype"], algo))
        return out

    def __getstate__(self) -> dict[str, Any]:
        """What ``torch.save(state)`` pickles: the configuration and :meth:`state_dict`.

        The process group and the model are left out: after ``torch.load``,
        :meth:`register` the state with the model (the process group is then
        the model's, unless ``state.group`` is set first).
        """
        return {"config": self.config, "state": self.state_dict()}

    def __setstate__(self, pickled: dict[str, Any]) -> None:
        config = dict(pickled["config"])
        algorithm = config.pop("algorithm")
        self.__init__(algorithm, **config)
        self.load_state_dict(pickled["state"])

    # ----------------------------------------------------------- the hook
    def _bucket(self, bucket: Any):
        if self._named is None:
            raise RuntimeError(
                "this HookState knows no model: register the hook with state.register(ddp_model) "
                "(also after torch.load), not model.register_comm_hook"
            )
        if self.comm is None:
            self._meet_group()
        iteration = self._iteration
        if iteration is None:
            iteration = self._iteration = _Iteration()
            self._after_backward(iteration)
        try:
            tensor = bucket.buffer()
            if self.iter < self.start_iter:
                future = self._allreduce(tensor)
            else:
                future = self._compress(bucket, tensor, iteration)
            iteration.futures.append(future)
            if bucket.is_last():
                unfinished = [self._groups[g].names for g, n in iteration.remaining.items() if n]
                if unfinished:
                    raise RuntimeError(
                        f"sketch_hook: parameters {unfinished} of the hook state's groups were "
                        "in no DDP bucket (the model changed since the state was made?)"
                    )
                self.iter += 1
                self._iteration = None
        except BaseException:
            self._iteration = None
            raise
        return future

    def _meet_group(self) -> None:
        """Agree on the state with every rank; give this process its share of the cores."""
        from pysketch.distributed.launch import configure_threads

        comm = TorchCommunicator(self.group)
        fingerprint = {
            **self.config,
            "iter": self.iter,
            "groups": _digest(self._groups),
            "ranks": comm.ranks,
            "host": socket.gethostname(),
        }
        error = None
        owners = [list(g.algorithm._worker_ids or ()) for g in self._groups]
        foreign = [ids for ids in owners if ids not in ([], [comm.rank])]
        if foreign:
            error = ValueError(
                f"rank {comm.rank} holds the hook state of worker(s) {foreign[0]}: "
                "each rank must load the state it saved"
            )
        prints = comm.gather_agreed("sketch_hook", fingerprint, error, ignore=("host",))
        configure_threads(local_ranks=sum(p["host"] == fingerprint["host"] for p in prints))
        if self._traffic is not None:
            comm.load_state_dict(self._traffic)
        self.comm = comm

    def _after_backward(self, iteration: _Iteration) -> None:
        """At the end of backward, after DDP's reducer: close the step, raise what failed."""
        torch, _ = _torch()
        engine = torch.autograd.Variable._execution_engine
        comm = self.comm

        def after_ddp() -> None:
            for future in iteration.futures:
                future.wait()  # done already: DDP waited for them
            if iteration.failed:  # all or nothing: every group as it was before this pass
                for g, saved in iteration.saved.items():
                    self._groups[g].algorithm.load_state_dict(saved)
                comm.discard_step()
            else:
                comm.step()
            if iteration.errors:
                raise iteration.errors[0]

        # DDP queues its own end-of-backward callback after the last bucket's hook, so a
        # callback queued now runs first; the one it queues runs after DDP's.
        engine.queue_callback(lambda: engine.queue_callback(after_ddp))

    def _allreduce(self, tensor: Any):
        """DDP's own hook: the averaged gradient (divided first, as DDP does)."""
        _, dist = _torch()
        comm = self.comm
        tensor.div_(comm.ranks)
        nbytes = tensor.numel() * tensor.element_size()

        def counted(future):
            comm.count_allreduce(nbytes)
            return future.value()[0]

        work = dist.all_reduce(tensor, group=self.group, async_op=True)
        return work.get_future().then(counted)

    # --------------------------------------------------------- compression
    def _compress(self, bucket: Any, tensor: Any, iteration: _Iteration):
        torch, _ = _torch()
        params = bucket.parameters()
        key = tuple(id(p) for p in params)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(params, tensor)
        if plan.group is not None:
            return self._launch(plan.group, tensor, iteration, tensor.dtype)
        for g, bucket_at, group_at, size in plan.segments:
            if g not in iteration.buffers:
                state_dtype = getattr(torch, self._groups[g].algorithm.dtype.name)
                iteration.buffers[g] = torch.empty(
                    self._groups[g].size, dtype=state_dtype, device=tensor.device
                )
                iteration.remaining[g] = self._groups[g].size
            iteration.buffers[g][group_at : group_at + size].copy_(
                tensor[bucket_at : bucket_at + size]
            )
            iteration.remaining[g] -= size
        for g in plan.groups:
            if iteration.remaining[g] == 0 and g not in iteration.launched:
                buffer = iteration.buffers[g]
                launched = iteration.launched[g] = self._launch(g, buffer, iteration, buffer.dtype)
                if g in iteration.waiting:
                    waiting = iteration.waiting.pop(g)
                    launched.then(lambda f, w=waiting: w.set_result(f.value()))
        futures = []
        for g in plan.groups:
            if g not in iteration.launched and g not in iteration.waiting:
                iteration.waiting[g] = torch.futures.Future()
            futures.append(iteration.launched.get(g) or iteration.waiting[g])

        def scatter(done):
            results = dict(zip(plan.groups, (f.value() for f in done.value()), strict=True))
            out = torch.empty_like(tensor)
            for g, bucket_at, group_at, size in plan.segments:
                out[bucket_at : bucket_at + size].copy_(results[g][group_at : group_at + size])
            return out

        return torch.futures.collect_all(futures).then(scatter)

    def _plan(self, params: list[Any], tensor: Any) -> _Plan:
        names = [self._names.get(id(p)) for p in params]
        if None in names:
            raise RuntimeError(
                "sketch_hook: a DDP bucket holds a parameter the hook state does not know: "
                "register the state with the DDP model that holds the parameters"
            )
        numels = [p.numel() for p in params]
        if sum(numels) != tensor.numel():
            raise RuntimeError(
                f"sketch_hook: a bucket of {tensor.numel()} gradients holds parameters of "
                f"{sum(numels)} entries"
            )
        where = {
            n: (g, at) for g, grp in enumerate(self._groups) for n, at in grp.offsets().items()
        }
        known = [n for n in names if n in where]
        if not known:
            return _Plan(group=self._form_group(tuple(names), tuple(numels), tensor))
        if len(known) != len(names):
            raise RuntimeError(
                f"sketch_hook: parameters {sorted(set(names) - set(known))} are in no group of "
                "the hook state (the model changed since compression started?)"
            )
        first = where[names[0]][0]
        if tuple(names) == self._groups[first].names:
            return _Plan(group=first)
        plan, at = _Plan(group=None), 0
        for name, size in zip(names, numels, strict=True):
            g, group_at = where[name]
            plan.segments.append((g, at, group_at, size))
            if g not in plan.groups:
                plan.groups.append(g)
            at += size
        return plan

    def _form_group(self, names: tuple[str, ...], numels: tuple[int, ...], tensor: Any) -> int:
        """A new group of the bucket's parameters, agreed on by every rank."""
        dtype = _dtype_name(tensor.dtype)
        error = None
        if dtype not in _STATE_DTYPES:
            error = TypeError(
                f"sketch_hook compresses gradients of dtype {list(_STATE_DTYPES)}; parameters "
                f"{list(names)} have dtype {dtype}"
            )
        fingerprint = {"group": len(self._groups), "params": names, "numels": numels}
        self.comm.gather_agreed("sketch_hook group", {**fingerprint, "dtype": dtype}, error)
        device = "cpu" if tensor.device.type == "cpu" else "cuda"
        algorithm = self.make_algorithm(sum(numels), _STATE_DTYPES[dtype], device)
        self._groups.append(_Group(names, numels, dtype, algorithm))
        return len(self._groups) - 1

    def _algorithm(self, group: _Group, device: str) -> Algorithm:
        algo = group.algorithm
        if algo.device != device:  # a state loaded on the host, for CUDA tensors
            moved = self.make_algorithm(group.size, algo.dtype, device)
            moved.load_state_dict(algo.state_dict())
            group.algorithm = algo = moved
            group.template = None
        if algo._worker_ids is None:
            # The hook is one worker per process (Algorithm.step would do this at its first step).
            algo._worker_ids = tuple(self.comm.worker_ids)
            algo._workers = [algo._new_worker()]
        if group.template is None:
            group.template = self._template(algo)
        return algo

    def _template(self, algo: Algorithm) -> Message:
        """A message of the right shapes, for a rank whose input cannot be compressed."""
        xp = np if algo.device == "cpu" else _cupy()
        saved = algo.state_dict() if algo.stateful_workers else None
        try:
            (message,) = algo._local_messages([xp.zeros(algo.d, dtype=algo.dtype)], 1.0)
        finally:
            if saved is not None:
                algo.load_state_dict(saved)
        return message

    def _launch(self, g: int, gradient: Any, iteration: _Iteration, out_dtype: Any):
        """Compress group ``g``'s gradient, start its collective, chain the server half."""
        torch, _ = _torch()
        group = self._groups[g]
        device = "cpu" if gradient.device.type == "cpu" else "cuda"
        algo = self._algorithm(group, device)
        state_dtype = getattr(torch, algo.dtype.name)
        array = to_array(gradient if gradient.dtype == state_dtype else gradient.to(state_dtype))
        iteration.saved[g] = algo.state_dict()  # restored if any group fails in this pass
        status, local_error = _OK, None
        try:
            _arrays.check_finite(_arrays.as_input(array, "gradient", device=device), "gradient")
            (message,) = algo._local_messages([array], 1.0)
        except Exception as exc:
            status = _NONFINITE_STATUS if isinstance(exc, NonFiniteError) else _FAILED
            local_error, message = exc, group.template
        comm = self.comm

        def finish(future):
            try:
                combined, statuses = future.value()
                failed = [rank for rank, s in enumerate(statuses) if s != _OK]
                if failed:
                    raise _failure(group.names, failed, statuses, local_error)
                update = algo._server_update(combined, comm, 1.0)
                algo.steps += 1
                return to_tensor(update).to(out_dtype)
            except BaseException as exc:
                iteration.failed = True
                if not (isinstance(exc, NonFiniteError) and self.nonfinite == "propagate"):
                    iteration.errors.append(exc)
                return torch.full(
                    (group.size,), float("nan"), dtype=out_dtype, device=gradient.device
                )

        return comm.start(message, status).then(finish)


def _failure(
    names: tuple[str, ...], failed: list[int], statuses: list[int], local: BaseException | None
) -> BaseException:
    """The error every rank raises when the input of ``failed`` ranks could not be used."""
    ranks = ("rank " if len(failed) == 1 else "ranks ") + ", ".join(map(str, failed))
    if all(statuses[r] == _NONFINITE_STATUS for r in failed):
        return NonFiniteError(
            f"sketch_hook: the gradients of {list(names)} hold NaN or Inf on {ranks}; nothing "
            "was applied and the hook state is as it was (with torch.amp.GradScaler, use "
            "nonfinite='propagate')"
        )
    if local is not None and not isinstance(local, NonFiniteError):
        return local
    return RuntimeError(
        f"sketch_hook: compressing {list(names)} failed on {ranks} (the error is raised there); "
        "nothing was applied"
    )


def _digest(groups: list[_Group]) -> str:
    """A short fingerprint of the groups and of their state that every rank shares."""
    h = hashlib.sha256()
    for g in groups:
        state = g.algorithm.state_dict()
        h.update(repr((g.names, g.numels, g.dtype, state["steps"])).encode())
        for key in sorted(k for k in state if k.startswith("server.")):
            h.update(np.ascontiguousarray(state[key]).tobytes())
    return h.hexdigest()[:16]


def _check_groups_fit(groups: list[_Group], named: dict[str, Any]) -> None:
    for g in groups:
        for name, numel in zip(g.names, g.numels, strict=True):
            param = named.get(name)
            if param is None:
                raise ValueError(
                    f"the hook state compresses parameter {name!r}, which the model does not "
                    "have (or which does not require grad)"
                )
            if param.numel() != numel or _dtype_name(param.dtype) != g.dtype:
                raise ValueError(
                    f"the hook state holds parameter {name!r} as {numel} {g.dtype} entries, "
                    f"the model as {param.numel()} {_dtype_name(param.dtype)}"
                )


def _cupy():
    import cupy

    return cupy


# ================================================================ builders
def fetchsgd_state(
    *,
    k_ratio: float = 0.01,
    rows: int = 5,
    cols_ratio: float = 0.1,
    rho: float = 0.0,
    error: str = "zero",
    hash: str = "mix",
    seed: int = 0,
    start_iter: int = 1,
    nonfinite: str = "raise",
    group: Any = None,
) -> HookState:
    """Hook state for FetchSGD [RPU20]_: ``k = k_ratio d`` and ``cols = cols_ratio d`` per group.

    Parameters
    ----------
    k_ratio : float, default 0.01
        Coordinates recovered per step, as a fraction of the group's size.
    rows : int, default 5
    cols_ratio : float, default 0.1
        Sketch columns as a fraction of the group's size: each rank sends
        ``rows * cols`` values per step.
    rho : float, default 0.0
        Momentum in sketch space. 0: the hook returns the error-fed compressed
        gradient (use any optimizer). Above 0: it returns ``unSketch(S_e)``
        with the momentum inside; use ``torch.optim.SGD(lr=...)`` without
        momentum.
    error : {"zero", "subtract"}, default "zero"
        How the error sketch forgets what was applied (see
        :class:`~pysketch.compress.FetchSGD`).
    hash, seed
        The Count Sketch's hash family and seed.
    start_iter, nonfinite, group
        See :class:`HookState`.

    Examples
    --------
    >>> from pysketch.compress.torch_ddp import fetchsgd_state
    >>> fetchsgd_state(k_ratio=0.01, cols_ratio=0.1, start_iter=10)
    HookState(algorithm='fetchsgd', k_ratio=0.01, rows=5, cols_ratio=0.1, rho=0.0, error='zero', \
hash='mix', seed=0, start_iter=10, nonfinite='raise', iter=0, groups=0)
    """
    return HookState(
        "fetchsgd",
        k_ratio=k_ratio,
        rows=rows,
        cols_ratio=cols_ratio,
        rho=rho,
        error=error,
        hash=hash,
        seed=seed,
        start_iter=start_iter,
        nonfinite=nonfinite,
        group=group,
    )


def topk_state(
    *,
    k_ratio: float = 0.01,
    compressor: str = "topk",
    memory: bool = True,
    rho: float = 0.0,
    seed: int = 0,
    start_iter: int = 1,
    nonfinite: str = "raise",
    group: Any = None,
) -> HookState:
    """Hook state for mem-SGD [SCJ18]_: top-k (or random-k) with error feedback.

    Parameters
    ----------
    k_ratio : float, default 0.01
        Coordinates each rank sends per step, as a fraction of the group's size.
    compressor : {"topk", "randomk"}, default "topk"
    memory : bool, default True
        Error feedback (``False``: what is not sent is forgotten).
    rho : float, default 0.0
        Worker momentum, masked where the rank sent (the local top-k of
        FetchSGD's released code): the hook then returns the compressed
        momentum, so use an optimizer without momentum.
    seed : int, default 0
        Random-k's seed.
    start_iter, nonfinite, group
        See :class:`HookState`.

    Examples
    --------
    >>> from pysketch.compress.torch_ddp import topk_state
    >>> topk_state(k_ratio=0.05, rho=0.9).make_algorithm(200)
    MemSGD(d=200, lr=1.0, seed=0, dtype=dtype('float32'), device='cpu', k=10, \
compressor='topk', memory=True, rho=0.9)
    """
    return HookState(
        "memsgd",
        k_ratio=k_ratio,
        compressor=compressor,
        memory=memory,
        rho=rho,
        seed=seed,
        start_iter=start_iter,
        nonfinite=nonfinite,
        group=group,
    )


def sketch_hook(state: HookState, bucket):
    """DDP communication hook: the bucket's gradients through ``state``'s algorithm.

    Register it with :meth:`HookState.register` (which names the
    parameters). (``bucket`` and the result carry no annotations: DDP checks
    that any it finds are ``dist.GradBucket`` and
    ``torch.futures.Future[torch.Tensor]``, which would import torch with
    pysketch.)

    Parameters
    ----------
    state : HookState
        From :func:`topk_state` or :func:`fetchsgd_state`.
    bucket : torch.distributed.GradBucket
        Given by DDP.

    Returns
    -------
    torch.futures.Future
        Of the compressed, error-fed average gradient of the bucket, in its
        dtype (the plain average for the first ``state.start_iter``
        iterations).
    """
    if not isinstance(state, HookState):
        raise TypeError(f"state must be a HookState, got {type(state).__name__}")
    return state._bucket(bucket)
