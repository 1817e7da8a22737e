"""Cross-rank agreement: every rank passes matching arguments, or every rank raises.

Collectives allgather a small fingerprint of each rank's arguments (or the
error their local validation raised) before moving any data; also the shared
seed and ``MPI_Abort`` on an exception.
"""

from __future__ import annotations

import contextlib
import pickle
import secrets
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import numpy as np

from pysketch import _arrays
from pysketch._base import TableSketch
from pysketch.distributed.accounting import ByteCounter, ring_allgather_bytes
from pysketch.distributed.transfer import _resolve_comm, _shape_dtype

__all__ = ["abort_on_error", "broadcast_seed", "check_compatible"]


# ======================================================= collective checking
def _plain(value: Any) -> Any:
    """A picklable, printable, comparable form of a parameter value."""
    if isinstance(value, np.dtype) or isinstance(value, type):
        return str(np.dtype(value))
    if isinstance(value, np.generic):
        return value.item()
    return value


def _agree(
    comm: Any,
    what: str,
    local: dict[str, Any] | None,
    error: BaseException | None,
    ignore: tuple[str, ...] = (),
) -> tuple[list[dict[str, Any]], int]:
    """Allgather each rank's fingerprint (or local error); raise the same ValueError everywhere.

    Fingerprints are dicts; every rank is compared with rank 0, except for the
    keys in ``ignore`` (data that may differ, gathered in the same message).
    Returns the fingerprints and the control bytes this rank sent plus received.
    """
    mine = ("error", f"{type(error).__name__}: {error}") if error is not None else ("ok", local)
    items = comm.allgather(mine)
    sizes = [len(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)) for item in items]
    sent, received = ring_allgather_bytes(sizes, comm.Get_rank())
    failed = [(rank, msg) for rank, (kind, msg) in enumerate(items) if kind == "error"]
    if failed:
        detail = "; ".join(f"rank {rank}: {msg}" for rank, msg in failed)
        raise ValueError(f"{what} failed on {_ranks(failed)} ({detail})") from error
    prints = [fp for _, fp in items]
    ref = prints[0]
    diffs = []
    for rank, fp in enumerate(prints[1:], start=1):
        keys = [k for k in [*ref, *(k for k in fp if k not in ref)] if k not in ignore]
        bad = [
            f"{k} ({ref.get(k)!r} on rank 0, {fp.get(k)!r} on rank {rank})"
            for k in keys
            if ref.get(k) != fp.get(k)
        ]
        if bad:
            diffs.append((rank, f"rank {rank} differs from rank 0 in {', '.join(bad)}"))
    if diffs:
        raise ValueError(
            f"{what}: ranks disagree, {'; '.join(msg for _, msg in diffs)}. "
            "Every rank must pass the same shapes, dtypes and parameters."
        )
    return prints, sent + received


def _ranks(items: list[tuple[int, Any]]) -> str:
    ranks = [str(rank) for rank, _ in items]
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(ranks)


def _sketch_fingerprint(sketch: Any) -> dict[str, Any]:
    if not isinstance(sketch, TableSketch):
        raise TypeError(
            f"sketch must be a pysketch sketch (CountSketch, CountMinSketch), "
            f"got {type(sketch).__name__}"
        )
    shape, dtype = _shape_dtype(sketch.table)
    fp = {"type": type(sketch).__name__}
    fp.update({k: _plain(v) for k, v in sketch.params.items()})
    fp["table shape"], fp["table dtype"] = shape, str(dtype)
    return fp


def check_compatible(
    sketch: TableSketch, comm: Any = None, *, counter: ByteCounter | None = None
) -> dict[str, Any]:
    """Check that every rank holds a sketch that can be summed with the others'.

    Collective and cheap: one allgather of a small fingerprint (sketch type,
    parameters such as ``d``, ``rows``, ``cols``, ``seed``, ``hash`` and
    ``dtype``, and the table's shape and dtype).

    Parameters
    ----------
    sketch : TableSketch
        This rank's sketch (``CountSketch`` or ``CountMinSketch``).
    comm : mpi4py communicator, optional
        Defaults to ``counter.comm`` or ``MPI.COMM_WORLD``.
    counter : ByteCounter, optional
        Records the check's control bytes.

    Returns
    -------
    dict
        The common fingerprint.

    Raises
    ------
    ValueError
        On **every** rank, when any rank's sketch differs from rank 0's (the
        message names the ranks and fields) or is not a sketch at all.

    Examples
    --------
    >>> from pysketch import CountSketch
    >>> from pysketch.distributed import check_compatible
    >>> fp = check_compatible(CountSketch(d=100, rows=3, cols=20, seed=5))
    >>> fp["seed"], fp["cols"], fp["dtype"]
    (5, 20, 'float32')
    """
    comm = _resolve_comm(comm, counter)
    fp, error = None, None
    try:
        fp = _sketch_fingerprint(sketch)
    except Exception as exc:
        error = exc
    prints, control = _agree(comm, "check_compatible", fp, error)
    if counter is not None:
        counter.record("check_compatible", "host", comm.Get_size(), control=control)
    return prints[0]


# ================================================================ seeds, abort
def broadcast_seed(seed: int | None = None, comm: Any = None, root: int = 0) -> int:
    """The root's seed on every rank, so every rank builds identical hashes.

    Parameters
    ----------
    seed : int, optional
        Used on ``root`` only (ignored elsewhere): an integer in
        ``[0, 2**64)``, or ``None`` to draw a fresh 63-bit seed from the
        operating system's entropy.
    comm : mpi4py communicator, optional
        Defaults to ``MPI.COMM_WORLD``.
    root : int, default 0

    Returns
    -------
    int
        The root's seed.

    Raises
    ------
    ValueError
        On every rank, when the root's seed is not a valid seed.

    Examples
    --------
    >>> from pysketch.distributed import broadcast_seed
    >>> broadcast_seed(42)
    42
    >>> 0 <= broadcast_seed() < 2**63
    True
    """
    comm = _resolve_comm(comm)
    message: tuple[str, Any] = ("ok", None)
    if comm.Get_rank() == root:
        try:
            message = ("ok", _check_seed(seed))
        except Exception as exc:
            message = ("error", f"{type(exc).__name__}: {exc}")
    kind, value = comm.bcast(message, root=root)
    if kind == "error":
        raise ValueError(f"broadcast_seed: the root (rank {root}) has a bad seed ({value})")
    return int(value)


def _check_seed(seed: Any) -> int:
    return secrets.randbits(63) if seed is None else _arrays.check_seed(seed)


@contextlib.contextmanager
def abort_on_error(comm: Any = None, errorcode: int = 1) -> Iterator[None]:
    """Call ``MPI_Abort`` when the block raises, so no other rank waits forever.

    Prints the traceback (with the rank) to stderr first. Prefer running the
    whole program as ``mpiexec ... python -m mpi4py script.py``, which does the
    same for any unhandled exception.

    Parameters
    ----------
    comm : mpi4py communicator, optional
        The communicator to abort (``MPI.COMM_WORLD`` by default; Open MPI and
        MPICH terminate the whole job either way).
    errorcode : int, default 1
        Exit status handed to ``MPI_Abort``.

    Examples
    --------
    >>> from pysketch.distributed import abort_on_error
    >>> with abort_on_error():
    ...     pass
    """
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, (SystemExit, KeyboardInterrupt, GeneratorExit)):
            raise
        comm = _resolve_comm(comm)
        sys.stderr.write(f"[rank {comm.Get_rank()}] aborting on an exception:\n")
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(errorcode)
        raise
