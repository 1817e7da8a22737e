"""How arrays reach MPI: the lazy mpi4py import, CUDA awareness, transfer paths.

Host arrays take the ``"host"`` path; device arrays go to MPI ``"direct"``
(CUDA-aware MPI) or ``"staged"`` through reusable page-locked host buffers.
Also the shape, dtype and contiguity of host and device arrays alike.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np

from pysketch import _cuda
from pysketch._base import TableSketch
from pysketch.distributed.accounting import ByteCounter

__all__ = ["ENV_CUDA_AWARE", "PATHS", "cuda_aware", "release_staging_buffers", "transfer_path"]

ENV_CUDA_AWARE = "PYSKETCH_CUDA_AWARE_MPI"
PATHS = ("host", "direct", "staged")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


# ================================================= mpi4py and communicators
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


# ===================================================== shapes and contiguity
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
