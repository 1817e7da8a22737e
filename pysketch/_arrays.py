"""Device dispatch and input validation shared by every primitive.

An input is either on the host (NumPy arrays, array-likes, and CPU tensors of
PyTorch or JAX reached zero-copy through DLPack) or in CUDA device memory (CuPy
arrays, and anything exposing ``__cuda_array_interface__`` or a CUDA
``__dlpack__``, reached zero-copy through :mod:`pysketch._cuda`).
Validation runs before any state changes, so bad input leaves objects intact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pysketch import _cuda
from pysketch.kernels import reductions

CPU, CUDA = "cpu", "cuda"
DEVICES = (CPU, CUDA)
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class Input:
    """A validated input: the kernel-ready array, its device and its stream."""

    array: Any
    device: str
    stream: Any = 0

    @property
    def size(self) -> int:
        return int(self.array.shape[0]) if self.array.ndim else 1


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == CUDA and not _cuda.available():
        raise RuntimeError(
            "device='cuda' needs a CUDA GPU "
            "(or NUMBA_ENABLE_CUDASIM=1 set before numba is imported)"
        )
    return device


def check_positive_int(name: str, value: Any, *, maximum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return int(value)


def check_float_dtype(name: str, dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from exc
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def device_of(obj: Any) -> str:
    return CUDA if _cuda.is_cuda_array(obj) else CPU


def as_input(
    obj: Any,
    name: str,
    *,
    device: str,
    kind: str = "float",
    ndim: int = 1,
) -> Input:
    """Coerce ``obj`` to a kernel-ready array on ``device``, or raise naming ``name``.

    ``kind`` is ``"float"`` (real numbers: floats, or integers that the kernels
    convert) or ``"index"`` (integers). Zero-copy wherever the producer allows.
    """
    if _cuda.is_cuda_array(obj):
        if device != CUDA:
            raise ValueError(
                f"{name} is a CUDA array but this object lives on the CPU; pass a "
                "host array or build it with device='cuda'"
            )
        array = _cuda.as_cuda_array(obj)
        stream = _cuda.stream_for(obj)
    else:
        if device != CPU:
            raise ValueError(
                f"{name} is a host array but this object lives on the GPU (device='cuda'); "
                "pass a CuPy/CUDA array"
            )
        array = np.from_dlpack(obj) if _is_host_dlpack(obj) else np.asarray(obj)
        stream = 0
    _check_dtype(name, np.dtype(array.dtype), kind)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {tuple(array.shape)}")
    if device == CPU and kind == "index" and array.dtype != np.int64:
        array = array.astype(np.int64)  # one kernel signature per index argument
    return Input(array, device, stream)


def _is_host_dlpack(obj: Any) -> bool:
    return not isinstance(obj, np.ndarray) and hasattr(obj, "__dlpack__")


def _check_dtype(name: str, dt: np.dtype, kind: str) -> None:
    if kind == "index":
        if dt.kind not in "iu":
            raise TypeError(f"{name} must hold integers, got dtype {dt}")
    elif dt.kind not in "fiu" or dt.itemsize > 8 or dt == np.float16:
        raise TypeError(f"{name} must hold real numbers (float32, float64 or integers), got {dt}")


def check_finite(inp: Input, name: str) -> None:
    """Raise when a float input holds NaN or Inf (one pass, no allocation on the host)."""
    if np.dtype(inp.array.dtype).kind != "f":
        return
    if inp.device == CPU:
        bad = reductions.cpu_count_nonfinite(inp.array)
    else:
        count = _cuda.zeros(1, np.int64, stream=inp.stream)
        _cuda.launch(reductions.cuda_count_nonfinite, inp.size, inp.stream)(inp.array, count)
        bad = int(_cuda.to_host(count)[0])
    if bad:
        raise ValueError(
            f"{name} holds {bad} NaN or Inf value(s); pysketch refuses non-finite input"
        )


def check_index_range(inp: Input, name: str, upper: int) -> None:
    """Raise unless every index lies in ``[0, upper)``."""
    if inp.device == CPU:
        bad = reductions.cpu_count_out_of_range(inp.array, upper)
    else:
        count = _cuda.zeros(1, np.int64, stream=inp.stream)
        _cuda.launch(reductions.cuda_count_out_of_range, inp.size, inp.stream)(
            inp.array, upper, count
        )
        bad = int(_cuda.to_host(count)[0])
    if bad:
        raise IndexError(f"{name} must lie in [0, {upper}): {bad} value(s) outside that range")


def check_same_length(a: Input, a_name: str, b: Input, b_name: str) -> None:
    if a.size != b.size:
        raise ValueError(
            f"{a_name} and {b_name} must have the same length, got {a.size} and {b.size}"
        )


def kernel_values(inp: Input) -> Input:
    """``inp`` with integer values converted to float64 on the host.

    The CPU kernels are compiled for float32 and float64 values only, so an
    integer input costs one conversion instead of a compilation of its own
    (several seconds on first use). Device inputs pass through unchanged.
    """
    if inp.device != CPU or np.dtype(inp.array.dtype).kind == "f":
        return inp
    return Input(np.asarray(inp.array, dtype=np.float64), inp.device, inp.stream)
