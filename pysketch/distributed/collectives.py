"""The collectives themselves: allreduce, allreduce_sketch and allgather_sparse."""

from __future__ import annotations

from typing import Any

import numpy as np

from pysketch import _cuda
from pysketch._base import TableSketch
from pysketch.distributed.accounting import (
    ByteCounter,
    ring_allgather_bytes,
    ring_allreduce_bytes,
)
from pysketch.distributed.agreement import _agree, _sketch_fingerprint
from pysketch.distributed.transfer import (
    _is_c_contiguous,
    _mpi,
    _resolve_comm,
    _shape_dtype,
    _staging_buffer,
    transfer_path,
)

__all__ = ["allgather_sparse", "allreduce", "allreduce_sketch"]

_OPS = ("sum", "max", "min", "prod")


# ================================================================ allreduce
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
        control += 2 * ring_allreduce_bytes(8, comm.Get_size())
    if counter is not None:
        wire = ring_allreduce_bytes(nbytes, comm.Get_size())
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
    weight of a ``CountMinSketch``, what its ``_summed_state`` hook returns) is
    summed as well. With ``check=True`` every rank's parameters (type, ``d``,
    ``rows``, ``cols``, ``seed``, ``hash``, ``dtype``, table shape) are
    compared first, as in :func:`check_compatible`.

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
    fp, error, scalar = None, None, None
    try:
        fp = _sketch_fingerprint(sketch)
        if out is not None:
            sketch.check_compatible(out, "out")
        # Host-side state beside the table (Count-Min's total weight) is summed too.
        scalar = sketch._summed_state()
    except Exception as exc:
        error = exc
    table = getattr(sketch, "table", None)
    out_table = table if out is None else getattr(out, "table", None)
    _, summed = _allreduce(
        "allreduce_sketch", table, comm, out_table, "sum", counter, path, check, fp, error, scalar
    )
    target = sketch if out is None else out
    if summed is not None:
        target._set_summed_state(summed)
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
        wire_sent, wire_received = ring_allgather_bytes(sizes, rank)
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
