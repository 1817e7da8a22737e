"""What a worker sends: a message knows its payload, its size and how it combines.

Two kinds of messages, by how W workers' messages are combined:

*summable* (:class:`Dense`, :class:`SharedIndex`, :class:`Sketch`)
    The sum of the messages is the message of the sum, so an allreduce
    combines them: dense vectors, random-k values at indices that every worker
    derives from the same seed, Count Sketch tables with the same hashes.
*gatherable* (:class:`Sparse`)
    Top-k and threshold pick different indices on every worker: the
    ``(indices, values)`` pairs are concatenated by an allgather.

``nbytes`` counts what the papers count: the values and the indices at their
dtype sizes, nothing that every worker can derive itself (random-k indices,
hash functions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pysketch.countsketch import CountSketch

__all__ = ["Dense", "Message", "SharedIndex", "Sketch", "Sparse", "index_dtype"]


def index_dtype(d: int) -> np.dtype:
    """The smallest signed integer dtype that holds every index of ``[0, d)``."""
    return np.dtype(np.int32) if d <= np.iinfo(np.int32).max + 1 else np.dtype(np.int64)


def _nbytes(array: Any) -> int:
    return int(array.size) * np.dtype(array.dtype).itemsize


class Message:
    """Base class: ``payload`` is the tuple of arrays that travel."""

    summable: ClassVar[bool] = True

    @property
    def payload(self) -> tuple[Any, ...]:
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Bytes of the payload, as the papers count them."""
        return sum(_nbytes(a) for a in self.payload)

    def with_payload(self, payload: tuple[Any, ...]) -> Message:
        """The same kind of message carrying ``payload`` (e.g. a sum over workers)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Dense(Message):
    """A dense vector of ``d`` values (uncompressed SGD), or of a candidate set's values."""

    values: Any

    @property
    def payload(self) -> tuple[Any, ...]:
        return (self.values,)

    def with_payload(self, payload: tuple[Any, ...]) -> Dense:
        return Dense(*payload)


@dataclass(frozen=True)
class SharedIndex(Message):
    """Values at indices that every worker derives from a shared seed (random-k).

    Only the values travel; the indices are the same on every worker.
    """

    indices: Any
    values: Any

    @property
    def payload(self) -> tuple[Any, ...]:
        return (self.values,)

    def with_payload(self, payload: tuple[Any, ...]) -> SharedIndex:
        return SharedIndex(self.indices, *payload)


@dataclass(frozen=True)
class Sparse(Message):
    """``(indices, values)`` pairs chosen by each worker (top-k, threshold)."""

    summable: ClassVar[bool] = False
    indices: Any
    values: Any

    @property
    def payload(self) -> tuple[Any, ...]:
        return (self.indices, self.values)

    def with_payload(self, payload: tuple[Any, ...]) -> Sparse:
        return Sparse(*payload)


@dataclass(frozen=True)
class Sketch(Message):
    """A Count Sketch: its table travels, its hashes are shared through the seed."""

    sketch: CountSketch

    @property
    def payload(self) -> tuple[Any, ...]:
        return (self.sketch.table,)

    def with_payload(self, payload: tuple[Any, ...]) -> Sketch:
        (table,) = payload
        # The same hashes over the new table: nothing is allocated or uploaded.
        return Sketch(self.sketch._sharing_keys(table))
