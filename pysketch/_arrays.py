"""Device dispatch and input validation shared by every primitive.

An input is either on the host (NumPy arrays, array-likes, and CPU tensors of
PyTorch or JAX reached zero-copy through DLPack) or in CUDA device memory (CuPy
arrays, and anything exposing ``__cuda_array_interface__`` or a CUDA
``__dlpack__``, reached zero-copy through :mod:`pysketch._cuda`).
Validation runs before any state changes, so bad input leaves objects intact.
"""

from __future__ import annotations

import math
import numbers
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


def _is_integer(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    expected: str | None = None,
) -> int:
    """``value`` as a Python ``int`` in ``[minimum, maximum]``, or raise naming ``name``.

    Python and NumPy integers are accepted; bools, floats and anything else
    raise ``TypeError``, values out of range ``ValueError``. ``expected``
    phrases the requirement in both messages (``"an integer in [0, 10]"`` by
    default).
    """
    if expected is None:
        expected = "an integer" + _bounds_text(minimum, maximum)
    if not _is_integer(value):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {expected}, got {value}")
    return value


def _bounds_text(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    return "" if maximum is None else f" <= {maximum}"


def check_positive_int(name: str, value: Any, *, maximum: int | None = None) -> int:
    expected = "a positive integer" + ("" if maximum is None else f" (at most {maximum})")
    return check_int(name, value, minimum=1, maximum=maximum, expected=expected)


SEED_BOUND = 2**64


def check_seed(value: Any, name: str = "seed") -> int:
    """A hash or random-k seed: an integer in ``[0, 2**64)``."""
    return check_int(
        name, value, minimum=0, maximum=SEED_BOUND - 1, expected="an integer in [0, 2**64)"
    )


def check_real(name: str, value: Any, *, finite: bool = True) -> float:
    """``value`` as a Python ``float``, or raise naming ``name``.

    Accepts Python and NumPy reals (integers included); refuses bools, complex
    numbers (whose imaginary part would be dropped) and strings with
    ``TypeError``. An integer too large for a float, and with ``finite`` a NaN
    or an infinity, raise ``ValueError``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        result = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be finite, got an integer too large for a float") from None
    if finite and not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {result}")
    return result


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a Python ``bool``; anything but a bool raises ``TypeError``.

    A string such as ``"no"`` is truthy, so it is refused rather than guessed at.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def check_float_dtype(name: str, dtype: Any) -> np.dtype:
    # np.dtype(None) is float64: an explicit None is refused rather than guessed at.
    if dtype is None:
        raise TypeError(f"{name} must be float32 or float64, got None")
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
