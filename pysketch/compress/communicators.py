"""Communicators: combine W workers' messages, wherever the workers run.

One protocol, three places the workers can live:

:class:`LocalCommunicator`
    W workers simulated in one process (no MPI import): the training
    simulator, tests, notebooks.
:class:`MPICommunicator`
    ``mpiexec -n R``; each rank simulates ``workers_per_rank`` workers (their
    number may differ between ranks), so ``W`` is their sum (256 workers on 2
    cores). Built on :mod:`pysketch.distributed`.
:func:`pysketch.compress.torch_ddp.sketch_hook`
    A PyTorch DDP communication hook drives the same algorithms with a
    communicator over ``torch.distributed``.

A communicator combines one message per local worker: summable messages
(dense, random-k, Count Sketch) by a sum, gatherable ones (top-k, threshold)
by concatenating every worker's pairs in worker order. The result is the same
in value whatever the layout, up to the order of float additions.

Byte accounting
---------------
Every combine is counted per worker, as :class:`Traffic`: the *payload* a
worker uploads and downloads as the papers count it (ALGORITHMS: values and
indices at their dtype size), and the *wire* bytes a ring collective among the
W workers would move per worker (allreduce of ``n`` bytes:
``2 (W - 1) n / W`` each way; allgather: everything but the worker's own
message in, everything but its successor's out). These figures depend only on
W and the messages, so they are identical in every layout. The bytes that MPI
really moved between ranks are in :attr:`MPICommunicator.counter`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from pysketch import _arrays, _cuda, _dense
from pysketch._arrays import check_positive_int
from pysketch.compress.messages import Message, Sketch, Sparse
from pysketch.distributed.accounting import ring_allgather_bytes, ring_allreduce_bytes
from pysketch.errors import NonFiniteError

__all__ = ["Communicator", "LocalCommunicator", "MPICommunicator", "Traffic"]


@dataclass(frozen=True)
class Traffic:
    """Bytes per worker (the mean over the W workers) of some communication rounds.

    Attributes
    ----------
    rounds : int
        Number of combines (collectives) counted.
    upload, download : float
        Payload bytes a worker sent and received, as the papers count them.
    wire_sent, wire_received : float
        Bytes a ring collective among the W workers moves per worker.
    """

    rounds: int = 0
    upload: float = 0.0
    download: float = 0.0
    wire_sent: float = 0.0
    wire_received: float = 0.0

    def __add__(self, other: Traffic) -> Traffic:
        if not isinstance(other, Traffic):
            return NotImplemented
        return Traffic(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_dict(self) -> dict[str, float]:
        """The fields as a plain dict (for logs and checkpoints)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _check_messages(messages: Sequence[Message], count: int) -> None:
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        raise TypeError(f"messages must be a list of messages, got {type(messages).__name__}")
    if len(messages) != count:
        raise ValueError(
            f"messages must hold one message per local worker ({count}), got {len(messages)}"
        )
    kinds = {type(m) for m in messages}
    if len(kinds) != 1 or not isinstance(messages[0], Message):
        raise TypeError(
            f"messages must all be of one Message type, got {sorted(k.__name__ for k in kinds)}"
        )
    if isinstance(messages[0], Sketch):
        # Tables of sketches with other hashes add up to nothing meaningful.
        for w, m in enumerate(messages[1:], start=1):
            messages[0].sketch.check_compatible(m.sketch, f"messages[{w}].sketch")
    if messages[0].summable:
        first = [(tuple(a.shape), np.dtype(a.dtype)) for a in messages[0].payload]
        for w, m in enumerate(messages[1:], start=1):
            mine = [(tuple(a.shape), np.dtype(a.dtype)) for a in m.payload]
            if mine != first:
                raise ValueError(
                    f"messages[{w}] has payload shapes/dtypes {mine}, messages[0] has {first}: "
                    "summable messages must match"
                )


def _stream_of(array: Any) -> Any:
    return 0 if _dense.on_cpu(array) else _cuda.stream_for(array)


class Communicator:
    """The protocol: W workers, some of them in this process, and how they combine.

    Attributes
    ----------
    world_size : int
        W, the number of workers in the whole run.
    local_workers : int
        Workers simulated by this process.
    rank, ranks : int
        This process and the number of processes.
    layout : tuple of int
        The workers of every process, in rank order (``sum(layout) == world_size``).
    """

    world_size: int
    local_workers: int
    rank: int = 0
    ranks: int = 1

    def __init__(self) -> None:
        #: Number of closed steps (the per-step figures are not kept: runs are long).
        self.step_count = 0
        self._last = Traffic()
        self._open = Traffic()
        self._closed = Traffic()

    # ------------------------------------------------------------- layout
    @property
    def layout(self) -> tuple[int, ...]:
        """The number of workers of every process, in rank order."""
        layout = getattr(self, "_layout", None)
        return layout if layout is not None else (self.local_workers,) * self.ranks

    @property
    def worker_ids(self) -> range:
        """Global indices of the workers held here (rank ``r`` holds a contiguous block)."""
        start = sum(self.layout[: self.rank])
        return range(start, start + self.local_workers)

    @property
    def is_root(self) -> bool:
        """Whether this is rank 0 (the one that prints and writes files)."""
        return self.rank == 0

    # ----------------------------------------------------------- combining
    def combine(self, messages: Sequence[Message]) -> Message:
        """Combine one message per local worker with every other worker's.

        Parameters
        ----------
        messages : list of Message
            ``local_workers`` messages of one type (summable ones with equal
            payload shapes; sketches with equal parameters), in worker order.
            NumPy arrays, or CUDA arrays of any producer.

        Returns
        -------
        Message
            The sum over all W workers (summable), or every worker's pairs
            concatenated in worker order (:class:`~pysketch.compress.messages.Sparse`).
        """
        _check_messages(messages, self.local_workers)
        if not messages[0].summable:
            return self._gather(messages)
        totals = []
        for p, first in enumerate(messages[0].payload):
            stream = _stream_of(first)
            total = _dense.new(first.shape, first.dtype, _arrays.device_of(first), stream)
            flat, one = _dense.flat(total), first.dtype.type(1)
            _dense.copy(flat, _dense.flat(first), stream)
            for m in messages[1:]:
                _dense.axpy(flat, one, _dense.flat(m.payload[p]), stream)
            totals.append(total)
        return self.combine_local_sum(messages[0].with_payload(tuple(totals)))

    def combine_local_sum(self, message: Message) -> Message:
        """Sum over all workers, given the sum over this process's workers.

        The caller sums its local workers itself, where linearity makes that
        exact (a sketch of the sum equals the sum of the sketches); the bytes
        counted are still those of ``W`` messages of ``message``'s size. The
        payload is summed in place.
        """
        if not isinstance(message, Message) or not message.summable:
            raise TypeError(f"message must be a summable Message, got {type(message).__name__}")
        summed = self._allreduce(tuple(message.payload))
        self._record_allreduce(message.nbytes)
        return message.with_payload(summed)

    def _sum_packed(self, packed: Any, nbytes: int) -> None:
        """Sum ``packed`` over every worker in place, and count a message of ``nbytes``.

        ``packed`` is one contiguous 1-D array: a message's payload and, after it,
        the status of a checked step (:mod:`pysketch.compress._step`), so that one
        collective carries both. Only the payload is counted, as the papers count it.
        """
        (summed,) = self._allreduce((packed,))
        if summed is not packed:
            _dense.copy(packed, summed, _stream_of(packed))
        self._record_allreduce(nbytes)

    def _record_allreduce(self, nbytes: int) -> None:
        wire = ring_allreduce_bytes(nbytes, self.world_size)
        self._record(Traffic(1, nbytes, nbytes, wire, wire))

    def _gather(self, messages: Sequence[Message]) -> Sparse:
        lengths = [int(m.indices.shape[0]) for m in messages]
        first = messages[0]
        stream = _stream_of(first.values)
        device = _arrays.device_of(first.values)
        idx = _dense.new(sum(lengths), first.indices.dtype, device, stream)
        val = _dense.new(sum(lengths), first.values.dtype, device, stream)
        start = 0
        for m, n in zip(messages, lengths, strict=True):
            _dense.copy(idx[start : start + n], m.indices, stream)
            _dense.copy(val[start : start + n], m.values, stream)
            start += n
        idx, val, _ = self._gather_packed(idx, val, lengths, 0)
        return Sparse(idx, val)

    def _gather_packed(self, indices: Any, values: Any, lengths: list[int], extra: int):
        """Allgather this process's pairs (``lengths[w]`` for each local worker), followed
        by ``extra`` entries of status that are not counted as traffic.

        Returns every process's ``(indices, values)`` in rank order and the
        positions of the status entries in them (every process's block, in rank order).
        """
        # Every process sends its number of status entries (perhaps 0: it may hold no
        # worker that takes part, see _Participants), so the lengths always line up.
        return self._gathered(*self._allgather(indices, values, [*lengths, extra]), extra)

    def _gathered(self, idx: Any, val: Any, gathered: list[int], extra: int):
        """:meth:`_gather_packed`'s result from the allgather's (the traffic counted)."""
        real, positions, at, start = [], [], 0, 0
        for workers in self.layout:
            block = gathered[at : at + workers]
            real += block
            start += sum(block)
            at += workers
            positions += range(start, start + gathered[at])
            start += gathered[at]
            at += 1
        entry = np.dtype(idx.dtype).itemsize + np.dtype(val.dtype).itemsize
        sizes = [n * entry for n in real]
        total, world = sum(sizes), self.world_size
        wire = [ring_allgather_bytes(sizes, w) for w in range(world)]
        self._record(
            Traffic(
                1,
                total / world,
                (world - 1) * total / world,
                sum(s for s, _ in wire) / world,
                sum(r for _, r in wire) / world,
            )
        )
        return idx, val, positions

    def _allreduce(self, payload: tuple[Any, ...]) -> tuple[Any, ...]:
        raise NotImplementedError

    def _allgather(self, indices: Any, values: Any, lengths: list[int]):
        raise NotImplementedError

    def agree(
        self,
        what: str,
        fingerprint: dict[str, Any],
        error: BaseException | None,
        ignore: tuple[str, ...] = (),
    ) -> list[dict[str, Any]]:
        """Raise on every process if ``error`` is set on any, or fingerprints differ (but for
        the keys in ``ignore``, data that may differ); return every process's fingerprint."""
        raise NotImplementedError

    # ---------------------------------------------------------- accounting
    def _record(self, traffic: Traffic) -> None:
        self._open = self._open + traffic

    def _count_download(self, nbytes: float) -> None:
        """Count ``nbytes`` per worker as the open step's download, for what its collectives
        received (see :class:`~pysketch.compress.participation.ChangedWeights`)."""
        self._open = replace(self._open, download=nbytes)

    def _forget_step(self) -> None:
        """Drop the open step's traffic: a step that failed moved nothing that counts."""
        self._open = Traffic()

    def step(self) -> Traffic:
        """Close the current training step; returns its traffic."""
        closed, self._open = self._open, Traffic()
        self.step_count += 1
        self._last = closed
        self._closed = self._closed + closed
        return closed

    @property
    def last_step(self) -> Traffic:
        """Traffic of the last closed step (zeros before the first)."""
        return self._last

    @property
    def total(self) -> Traffic:
        """Traffic of every step so far, the open one included."""
        return self._closed + self._open

    def state_dict(self) -> dict[str, float]:
        """The step count and cumulative byte totals (JSON-serialisable), for resuming."""
        return {"step_count": self.step_count, **self.total.as_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (``last_step`` starts at zeros).

        Raises ``ValueError``, naming the field and changing nothing, unless
        ``step_count`` and ``rounds`` are non-negative integers and the byte
        totals finite non-negative numbers.
        """
        if not isinstance(state, dict):
            raise ValueError(f"state is not a communicator state_dict (a {type(state).__name__})")
        missing = [f for f in ("step_count", *(f.name for f in fields(Traffic))) if f not in state]
        if missing:
            raise ValueError(f"state is not a communicator state_dict (missing {missing})")
        count = _count_field(state, "step_count")
        values = {}
        for f in fields(Traffic):
            if f.name == "rounds":
                values[f.name] = _count_field(state, f.name)
            else:
                values[f.name] = _bytes_field(state, f.name)
        total = Traffic(**values)
        self.step_count, self._last, self._open, self._closed = count, Traffic(), Traffic(), total

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(world_size={self.world_size}, "
            f"local_workers={self.local_workers}, rank={self.rank}, ranks={self.ranks})"
        )


def _count_field(state: dict[str, Any], name: str) -> int:
    """``state[name]`` as a non-negative integer (an integral float from JSON is fine)."""
    value = state[name]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    try:
        return _arrays.check_int(f"state[{name!r}]", value, minimum=0)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _bytes_field(state: dict[str, Any], name: str) -> float:
    """``state[name]`` as a finite non-negative number of bytes."""
    value = state[name]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    try:
        value = _arrays.check_real(f"state[{name!r}]", value, finite=False)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"state[{name!r}] must be a finite non-negative byte count, got {value}")
    return value


class _Participants(Communicator):
    """The workers of ``parent`` that take part in a step, as a communicator of their own.

    W is their number and each process holds those of its workers that take
    part (perhaps none), in order, so an algorithm's step divides by the
    participants and sizes its status by them. The collectives still run over
    every process of ``parent``; the traffic is that of the participants,
    counted into ``parent``.
    """

    def __init__(self, parent: Communicator, ids: np.ndarray) -> None:
        super().__init__()
        self._parent = parent
        starts = np.cumsum((0, *parent.layout))
        self._layout = tuple(int(n) for n in np.diff(np.searchsorted(ids, starts)))
        self.rank, self.ranks = parent.rank, parent.ranks
        self.world_size = int(len(ids))
        self.local_workers = self._layout[self.rank]
        first = sum(self._layout[: self.rank])
        #: The global ids of every worker that takes part, and of this process's.
        self.everyone, self.ids = ids, ids[first : first + self.local_workers]

    def _allreduce(self, payload: tuple[Any, ...]) -> tuple[Any, ...]:
        return self._parent._allreduce(payload)

    def _allgather(self, indices: Any, values: Any, lengths: list[int]):
        return self._parent._allgather(indices, values, lengths)

    def agree(self, what, fingerprint, error, ignore=()):
        return self._parent.agree(what, fingerprint, error, ignore)

    def _record(self, traffic: Traffic) -> None:
        self._parent._record(traffic)

    def _count_download(self, nbytes: float) -> None:
        self._parent._count_download(nbytes)


class LocalCommunicator(Communicator):
    """``workers`` workers simulated in this process; combining needs no MPI.

    Parameters
    ----------
    workers : int
        W.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.compress import LocalCommunicator, TopK
    >>> comm = LocalCommunicator(workers=2)
    >>> c = TopK(4, k=1)
    >>> msgs = [c.compress(np.array([0.0, 5.0, 0.0, 1.0])), c.compress(np.array([2.0, 0, 0, 0]))]
    >>> c.decompress(comm.combine(msgs)).tolist()
    [2.0, 5.0, 0.0, 0.0]
    >>> comm.step().upload    # one (int32 index, float64 value) pair per worker
    12.0
    """

    def __init__(self, workers: int) -> None:
        workers = check_positive_int("workers", workers)
        super().__init__()
        self.world_size = self.local_workers = int(workers)

    def _allreduce(self, payload: tuple[Any, ...]) -> tuple[Any, ...]:
        return payload

    def _allgather(self, indices: Any, values: Any, lengths: list[int]):
        return indices, values, lengths

    def agree(self, what, fingerprint, error, ignore=()):
        if error is not None:
            raise error
        return [fingerprint]


class MPICommunicator(Communicator):
    """Ranks of an MPI job, each simulating ``workers_per_rank`` workers.

    Every rank constructs it together (one small allgather of the layout).
    Ranks may hold different numbers of workers: ``W`` is their sum, and rank
    ``r`` holds the workers after those of ranks ``0 .. r-1``.

    Parameters
    ----------
    workers_per_rank : int, default 1
        Workers this rank holds.
    comm : mpi4py communicator, optional
        ``MPI.COMM_WORLD`` by default.

    Attributes
    ----------
    counter : pysketch.distributed.ByteCounter
        The bytes the MPI collectives really moved, per rank.

    Raises
    ------
    TypeError, ValueError
        ``workers_per_rank`` is not a positive integer on this rank
        (``ValueError`` naming the rank on every other rank).

    Examples
    --------
    >>> from pysketch.compress import MPICommunicator
    >>> comm = MPICommunicator(workers_per_rank=4)   # on one process: 4 workers
    >>> comm.world_size, list(comm.worker_ids), comm.layout
    (4, [0, 1, 2, 3], (4,))
    """

    def __init__(self, workers_per_rank: int = 1, comm: Any = None) -> None:
        from pysketch import distributed

        error = None
        try:
            workers_per_rank = check_positive_int("workers_per_rank", workers_per_rank)
        except (TypeError, ValueError) as exc:
            error = exc
        from mpi4py import MPI

        super().__init__()
        self._dist = distributed
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.ranks = self.comm.Get_rank(), self.comm.Get_size()
        mine = ("error", f"{type(error).__name__}: {error}") if error else ("ok", workers_per_rank)
        everyone = self.comm.allgather(mine)
        if error is not None:
            raise error
        failed = [f"rank {r} ({msg})" for r, (kind, msg) in enumerate(everyone) if kind == "error"]
        if failed:
            raise ValueError(f"MPICommunicator: bad workers_per_rank on {', '.join(failed)}")
        self.counter = distributed.ByteCounter(self.comm)
        self._layout = tuple(int(n) for _, n in everyone)
        self.local_workers = self._layout[self.rank]
        self.world_size = sum(self._layout)

    def _allreduce(self, payload: tuple[Any, ...]) -> tuple[Any, ...]:
        for array in payload:
            self._dist.allreduce(array, self.comm, out=array, counter=self.counter, check=False)
        return payload

    def _allgather(self, indices: Any, values: Any, lengths: list[int]):
        per_rank = self.comm.allgather(lengths)
        idx, val, _ = self._dist.allgather_sparse(indices, values, self.comm, counter=self.counter)
        return idx, val, [n for rank_lengths in per_rank for n in rank_lengths]

    def agree(self, what, fingerprint, error, ignore=()):
        from pysketch.distributed.agreement import _agree

        try:
            prints, control = _agree(self.comm, what, fingerprint, error, ignore)
        except ValueError as exc:
            # Every rank raises the same type: a NaN on one rank is a divergence on all.
            if f"{NonFiniteError.__name__}:" in str(exc):
                raise NonFiniteError(str(exc)) from exc
            raise
        self.counter.record("agree", "host", self.ranks, control=control)
        return prints

    def _forget_step(self) -> None:
        super()._forget_step()
        self.counter.discard()

    def step(self) -> Traffic:
        self.counter.step()
        return super().step()
