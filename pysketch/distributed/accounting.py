"""Byte accounting of the collectives: records, totals and the ring formulas.

:class:`ByteCounter` collects one :class:`CommRecord` per collective and sums
them into :class:`ByteTotals`; :func:`ring_allreduce_bytes` and
:func:`ring_allgather_bytes` give the bytes the ring algorithms move. This
module imports neither mpi4py nor numba, so communicators and simulators that
never touch MPI can count bytes the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

__all__ = [
    "ByteCounter",
    "ByteTotals",
    "CommRecord",
    "ring_allgather_bytes",
    "ring_allreduce_bytes",
]


@dataclass(frozen=True)
class CommRecord:
    """What one collective cost this rank, in bytes.

    Attributes
    ----------
    op : str
        ``"allreduce"``, ``"allreduce_sketch"``, ``"allgather_sparse"``,
        ``"check_compatible"`` or ``"broadcast_seed"``.
    path : str
        ``"host"``, ``"direct"`` or ``"staged"`` (see :func:`transfer_path`).
    world_size : int
        Number of ranks ``W`` of the communicator.
    step : int
        Index of the :class:`ByteCounter` step it belongs to.
    payload_sent, payload_received : int
        Bytes as the papers count them (values and indices at their dtype size).
    wire_sent, wire_received : int
        Bytes the (ring) collective moves to and from this rank.
    control : int
        Bytes of the consistency-check and length messages, sent plus received.
    """

    op: str
    path: str
    world_size: int
    step: int
    payload_sent: int = 0
    payload_received: int = 0
    wire_sent: int = 0
    wire_received: int = 0
    control: int = 0


@dataclass(frozen=True)
class ByteTotals:
    """Sums of :class:`CommRecord` byte fields over some collectives.

    Attributes
    ----------
    calls : int
        Number of collectives summed.
    payload_sent, payload_received, wire_sent, wire_received, control : int
        As in :class:`CommRecord`.
    """

    calls: int = 0
    payload_sent: int = 0
    payload_received: int = 0
    wire_sent: int = 0
    wire_received: int = 0
    control: int = 0

    @property
    def payload(self) -> int:
        """Payload bytes sent plus received."""
        return self.payload_sent + self.payload_received

    @property
    def wire(self) -> int:
        """Wire bytes sent plus received."""
        return self.wire_sent + self.wire_received

    def __add__(self, other: ByteTotals) -> ByteTotals:
        if not isinstance(other, ByteTotals):
            return NotImplemented
        return ByteTotals(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_dict(self) -> dict[str, int]:
        """The totals as a plain dict (for logging)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def of(cls, records: list[CommRecord]) -> ByteTotals:
        """The totals of ``records``."""
        return cls(
            calls=len(records),
            payload_sent=sum(r.payload_sent for r in records),
            payload_received=sum(r.payload_received for r in records),
            wire_sent=sum(r.wire_sent for r in records),
            wire_received=sum(r.wire_received for r in records),
            control=sum(r.control for r in records),
        )


class ByteCounter:
    """Bytes this rank sent and received in the collectives it was passed to.

    Collectives append one :class:`CommRecord` each; :meth:`step` closes a
    training step. Passing ``counter=`` without ``comm=`` makes a collective
    run on ``counter.comm``.

    Parameters
    ----------
    comm : mpi4py communicator, optional
        The communicator the collectives use when given no ``comm``
        (``None``: ``MPI.COMM_WORLD``, resolved lazily).

    Attributes
    ----------
    comm : mpi4py communicator or None
    records : list of CommRecord
        Every record so far, closed steps and the open one.
    steps : list of ByteTotals
        The totals of every closed step.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.distributed import ByteCounter, allreduce
    >>> counter = ByteCounter()
    >>> _ = allreduce(np.ones(1000, dtype=np.float32), counter=counter)
    >>> counter.current.payload_sent, counter.records[-1].path
    (4000, 'host')
    >>> counter.step().calls, counter.last_step.payload_received, counter.total.calls
    (1, 4000, 1)
    """

    def __init__(self, comm: Any = None) -> None:
        self.comm = comm
        self.records: list[CommRecord] = []
        self.steps: list[ByteTotals] = []
        self._open: list[CommRecord] = []

    def record(self, op: str, path: str, world_size: int, **nbytes: int) -> CommRecord:
        """Append a record to the open step (collectives call this)."""
        rec = CommRecord(op, path, world_size, len(self.steps), **nbytes)
        self.records.append(rec)
        self._open.append(rec)
        return rec

    @property
    def current(self) -> ByteTotals:
        """Totals of the open (not yet closed) step."""
        return ByteTotals.of(self._open)

    def step(self) -> ByteTotals:
        """Close the open step and return its totals."""
        totals = ByteTotals.of(self._open)
        self.steps.append(totals)
        self._open = []
        return totals

    def discard(self) -> None:
        """Forget the open step's records (a training step that failed and is not counted)."""
        if self._open:
            del self.records[-len(self._open) :]
        self._open = []

    @property
    def last_step(self) -> ByteTotals:
        """Totals of the last closed step (zeros before the first)."""
        return self.steps[-1] if self.steps else ByteTotals()

    @property
    def total(self) -> ByteTotals:
        """Cumulative totals, closed steps and the open one."""
        return ByteTotals.of(self.records)

    def reset(self) -> None:
        """Forget every record and step."""
        self.records.clear()
        self.steps.clear()
        self._open = []

    def __repr__(self) -> str:
        t = self.total
        return (
            f"ByteCounter(steps={len(self.steps)}, calls={t.calls}, "
            f"payload={t.payload}, wire={t.wire}, control={t.control})"
        )


def ring_allreduce_bytes(nbytes: int, world: int) -> int:
    """Bytes one rank sends (and as many it receives) in a ring allreduce.

    The ring reduce-scatter and allgather each move ``(W - 1)`` chunks of
    ``nbytes / W`` through every rank: ``2 * (W - 1) * nbytes // W`` in all.

    Parameters
    ----------
    nbytes : int
        Size of the array reduced, in bytes (the same on every rank).
    world : int
        Number of ranks ``W``.

    Returns
    -------
    int
        Bytes sent by each rank (0 for one rank).

    Examples
    --------
    >>> from pysketch.distributed import ring_allreduce_bytes
    >>> ring_allreduce_bytes(4000, 4)
    6000
    >>> ring_allreduce_bytes(4000, 1)
    0
    """
    return 2 * (world - 1) * nbytes // world


def ring_allgather_bytes(sizes: list[int], rank: int) -> tuple[int, int]:
    """Bytes ``rank`` sends and receives in a ring allgather of messages of ``sizes`` bytes.

    Every message travels around the ring once: ``rank`` receives every other
    rank's message and forwards all of them but the one its successor sent.

    Parameters
    ----------
    sizes : list of int
        Bytes contributed by each rank, in rank order (``len(sizes)`` is ``W``).
    rank : int
        The rank counted.

    Returns
    -------
    sent, received : int
        ``sum(sizes) - sizes[(rank + 1) % W]`` and ``sum(sizes) - sizes[rank]``
        (both 0 for one rank).

    Examples
    --------
    >>> from pysketch.distributed import ring_allgather_bytes
    >>> ring_allgather_bytes([100, 200, 300], rank=0)
    (400, 500)
    >>> ring_allgather_bytes([100, 100, 100, 100], rank=2)
    (300, 300)
    """
    world = len(sizes)
    if world == 1:
        return 0, 0
    total = sum(sizes)
    return total - sizes[(rank + 1) % world], total - sizes[rank]
