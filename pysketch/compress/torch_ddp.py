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
    At each step the hook runs the local phase of its group's algorithm step
    (the memory and momentum, the top-k pairs or the sketch, no communication),
    launches the step's one collective (``async_op=True``) on the process
    group and returns a future chained on its future; the server phase
    (decoding, FetchSGD's sketch momentum and error) runs when the collective
    completes, while backward goes on. The step's status (NaN/Inf and overflow
    counts of every rank, :mod:`pysketch.compress._step`) travels in that
    collective, so a NaN or Inf on any rank raises
    :class:`~pysketch.errors.NonFiniteError` on every rank at the end of
    ``backward()`` (``nonfinite="propagate"`` returns NaN instead, for
    ``GradScaler``). The new state is computed into scratch and committed at
    the end of ``backward()`` only when every group's step succeeded on every
    rank: a failed pass leaves the hook state as it was, with no copy of it.

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
    run on the process group (gloo, NCCL) with the tensors themselves. On a
    GPU a group's step reads its status once, when its collective completes
    (its cost is not yet measured).
"""

from __future__ import annotations

import hashlib
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pysketch import _arrays, _dense
from pysketch.compress._step import Step
from pysketch.compress.algorithms import Algorithm, FetchSGD, MemSGD
from pysketch.compress.communicators import Communicator, LocalCommunicator, Traffic
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


def _torch():
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        raise ImportError(
            "pysketch.compress.torch_ddp needs PyTorch: pip install -e '.[torch]' "
            "from pysketch's source tree"
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
    (``algorithm.step(grads, comm)``), and asynchronously for the DDP hook,
    which starts a step's collective (:meth:`_start_sum_packed`,
    :meth:`_start_gather_packed`) and runs the rest of the step when it completes,
    while backward goes on.

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
        self._lock = threading.Lock()  # collectives complete on the process group's threads

    # ------------------------------------------------------- collectives
    def _allreduce(self, payload: tuple[Any, ...]) -> tuple[Any, ...]:
        dist = _torch()[1]
        for array in payload:
            dist.all_reduce(to_tensor(array), group=self.group)
        return payload

    def _start_sum_packed(self, packed: Any, nbytes: int):
        """:meth:`_sum_packed`, started: a ``torch.futures.Future`` done once ``packed``
        holds the sum (and its bytes are counted)."""
        dist = _torch()[1]
        work = dist.all_reduce(to_tensor(packed), group=self.group, async_op=True)
        return work.get_future().then(lambda _: self._record_allreduce(nbytes))

    def _allgather(self, indices: Any, values: Any, lengths: list[int]):
        torch, _ = _torch()
        mine = torch.tensor(lengths, device=to_tensor(values).device)
        everyone = self._gather_tensor(mine).tolist()  # ranks may send different numbers
        return self._start_allgather(indices, values, everyone).wait()

    def _start_gather_packed(self, indices: Any, values: Any, lengths: list[int], extra: int):
        """:meth:`_gather_packed`, started: a ``torch.futures.Future`` of its result.

        Every rank must send as many entries (the hook's one worker per rank, its
        ``k`` agreed on): no collective of the lengths first.
        """
        sent = [*lengths, extra]  # as _gather_packed: the status count always travels
        future = self._start_allgather(indices, values, [sent] * self.ranks)
        return future.then(lambda done: self._gathered(*done.value(), extra))

    def _start_allgather(self, indices: Any, values: Any, everyone: list[list[int]]):
        """Every rank's pairs, ``everyone[r]`` entries per worker of rank ``r``, in one
        collective of the bytes of both arrays (padded to the longest rank's)."""
        torch, dist = _torch()
        totals = [sum(lengths) for lengths in everyone]
        width = max(totals)

        def padded(array: Any) -> Any:
            tensor = to_tensor(array).reshape(-1)
            if tensor.numel() != width:
                tensor = torch.cat([tensor, tensor.new_zeros(width - tensor.numel())])
            return tensor.view(torch.uint8)

        pieces = [padded(indices), padded(values)]
        buffer = torch.cat(pieces)
        out = torch.empty(self.ranks * buffer.numel(), dtype=torch.uint8, device=buffer.device)
        work = dist.all_gather_single(out, buffer, group=self.group, async_op=True)
        dtypes = [to_tensor(indices).dtype, to_tensor(values).dtype]

        def unpack(_):
            columns = out.view(self.ranks, -1).split([p.numel() for p in pieces], dim=1)
            idx, val = (
                to_array(torch.cat([row[:n] for row, n in zip(rows, totals, strict=True)]))
                for rows in (c.contiguous().view(t) for c, t in zip(columns, dtypes, strict=True))
            )
            return idx, val, [n for lengths in everyone for n in lengths]

        return work.get_future().then(unpack)

    def _gather_tensor(self, tensor: Any) -> Any:
        torch, dist = _torch()
        out = torch.empty(self.ranks * tensor.numel(), dtype=tensor.dtype, device=tensor.device)
        dist.all_gather_single(out, tensor.contiguous(), group=self.group)
        return out.view(self.ranks, *tensor.shape)

    def agree(self, what, fingerprint, error, ignore=()):
        return self.gather_agreed(what, fingerprint, error, ignore=ignore)

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

    # ------------------------------------------------------- accounting
    def _record(self, traffic: Traffic) -> None:
        with self._lock:
            super()._record(traffic)

    def _forget_step(self) -> None:
        with self._lock:
            super()._forget_step()

    def step(self) -> Traffic:
        with self._lock:
            return super().step()


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
    steps: list[Step] = field(default_factory=list)  # compressed groups' steps, to commit
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
            if iteration.failed:  # all or nothing: no group's new state is committed
                comm._forget_step()
            else:
                for step in iteration.steps:
                    step.commit()
                    step.algo.steps += 1
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
            comm._record_allreduce(nbytes)
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
        if algo._worker_ids is None:
            # The hook is one worker per process (Algorithm.step would do this at its first step).
            algo._worker_ids = tuple(self.comm.worker_ids)
            algo._workers = [algo._new_worker()]
        return algo

    def _launch(self, g: int, gradient: Any, iteration: _Iteration, out_dtype: Any):
        """Group ``g``'s local phase, its collective started, the server phase chained on it."""
        torch, _ = _torch()
        group = self._groups[g]
        device = "cpu" if gradient.device.type == "cpu" else "cuda"
        algo = self._algorithm(group, device)
        state_dtype = getattr(torch, algo.dtype.name)
        array = to_array(gradient if gradient.dtype == state_dtype else gradient.to(state_dtype))
        step, local_error = self._local_phase(algo, array)
        update = torch.empty(group.size, dtype=state_dtype, device=gradient.device)

        def finish(future):
            try:
                step.received(future.value())
                with np.errstate(all="ignore"):  # counted in the status
                    algo._server_phase(step, step.on_stream(to_array(update)))
                error = step.failure()
                if error is not None:
                    raise _failure(group.names, error, step.failed_ranks(), local_error)
                iteration.steps.append(step)  # committed after backward, if every group is fine
                return update.to(out_dtype)
            except BaseException as exc:
                iteration.failed = True
                if not (isinstance(exc, NonFiniteError) and self.nonfinite == "propagate"):
                    iteration.errors.append(exc)
                return torch.full(
                    (group.size,), float("nan"), dtype=out_dtype, device=gradient.device
                )

        return step.collective(async_op=True).then(finish)

    def _local_phase(self, algo: Algorithm, gradient: Any) -> tuple[Step, Exception | None]:
        """The step of ``algo`` on ``gradient``, its local phase run (NaN and Inf counted in
        its status), and the error that kept it from running here, if any: then it runs on
        zeros, marked failed, so that every rank still joins the collective and raises."""

        def local(array: Any) -> Step:
            inputs = [algo._input(array, "gradient")]
            step = Step(algo, self.comm, inputs, 1.0, True, False, algo._workers)
            with np.errstate(all="ignore"):  # counted in the status
                algo._local_phase(step)
            return step

        try:
            return local(gradient), None
        except Exception as exc:
            step = local(_dense.zeros(algo.d, algo.dtype, algo.device))
            step.mark_failed()
            return step, exc


def _failure(
    names: tuple[str, ...], error: BaseException, ranks: list[int], local: Exception | None
) -> BaseException:
    """What every rank raises when a group's step failed (``error``, on ``ranks``)."""
    if local is not None:
        return local
    where = ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))
    if isinstance(error, NonFiniteError):
        return NonFiniteError(
            f"sketch_hook: the gradients of {list(names)} hold NaN or Inf on {where}; nothing "
            "was applied and the hook state is as it was (with torch.amp.GradScaler, use "
            "nonfinite='propagate')"
        )
    return type(error)(f"sketch_hook: compressing {list(names)} failed: {error}")


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
    MemSGD(d=200, lr=1.0, k=10, rho=0.9)
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
