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
from pysketch.errors import NonFiniteError
from pysketch.kernels import elementwise, reductions

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
        if (
            not array.dtype.isnative
        ):  # the kernels read native byte order only: convert, as NumPy would
            array = array.astype(array.dtype.newbyteorder("="))
        if kind == "index" and array.size == 0 and not hasattr(obj, "dtype"):
            array = array.astype(np.int64)  # [] is float64 to NumPy; as an index list it is empty
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


# The largest float64 magnitude that converts to a finite value of each float dtype:
# above it, float32 rounds to inf (half an ulp beyond its largest value ties to even, up).
_FIT_LIMITS = {
    np.dtype(np.float32): float(np.nextafter(2.0**128 - 2.0**103, 0.0)),
    np.dtype(np.float64): float(np.finfo(np.float64).max),
}


def fit_limit(dtype: Any) -> float:
    """The largest magnitude (a float64) that ``dtype`` (float32 or float64) stores finitely."""
    return _FIT_LIMITS[np.dtype(dtype)]


def check_finite(inp: Input, name: str, *, into: Any = None, scale: float = 1.0) -> None:
    """Raise unless every ``scale * x`` is finite in dtype ``into`` (float64 by default).

    That refuses NaN and Inf, and finite values that would be stored as inf
    once converted (``1e39`` into a float32 table): the rule for every value
    that enters a sketch or a buffer. One pass, no allocation on the host.
    """
    into = np.dtype(np.float64 if into is None else into)
    if not _may_be_unfit(inp, into, scale):
        return
    if inp.device == CPU:
        nonfinite, overflow = reductions.cpu_count_unfit(inp.array, scale, fit_limit(into))
        raise_unfit(name, nonfinite, overflow, into, scale)
        return
    status = new_status(inp.stream)
    count_unfit(inp, status, into=into, scale=scale)
    raise_status(_cuda.to_host(status, inp.stream), values=name, into=into, scale=scale)


def _may_be_unfit(inp: Input, into: np.dtype, scale: float) -> bool:
    """False for integers, which are finite, and in range unless scaled by a huge factor."""
    return np.dtype(inp.array.dtype).kind == "f" or abs(scale) * 2.0**64 > fit_limit(into)


def new_status(stream: Any = 0) -> Any:
    """A zeroed device status array (int64, ``reductions.STATUS_SLOTS``) for kernels to
    count bad input into."""
    return _cuda.zeros(reductions.STATUS_SLOTS, np.int64, stream=stream)


def count_unfit(inp: Input, status: Any, *, into: Any = None, scale: float = 1.0) -> None:
    """Queue (one launch on ``inp``'s stream, nothing read back) the count of the CUDA
    ``inp``'s values whose ``scale * x`` is not finite in ``into`` into ``status``."""
    into = np.dtype(np.float64 if into is None else into)
    if inp.size and _may_be_unfit(inp, into, scale):
        _cuda.launch(reductions.cuda_count_unfit, inp.size, inp.stream)(
            inp.array, scale, fit_limit(into), status
        )


def count_out_of_range(inp: Input, status: Any, upper: int) -> None:
    """Queue the count of the CUDA ``inp``'s indices outside ``[0, upper)`` into ``status``."""
    if inp.size:
        _cuda.launch(reductions.cuda_count_out_of_range, inp.size, inp.stream)(
            inp.array, index_bound(inp, upper), status
        )


def index_bound(inp: Input, upper: int) -> Any:
    """``upper`` typed like the indices: uint64 against int64 would compare in float64 and
    misjudge indices above 2**53."""
    return np.uint64(upper) if np.dtype(inp.array.dtype).kind == "u" else np.int64(upper)


def raise_status(
    counts: np.ndarray,
    *,
    values: str | None = None,
    into: Any = None,
    scale: float = 1.0,
    indices: str | None = None,
    upper: int = 0,
) -> None:
    """The error a status array read back from the device records, if any: the indices'
    (named ``indices``, bound ``upper``) first, then the values' (named ``values``)."""
    if indices is not None:
        raise_out_of_range(indices, int(counts[reductions.STATUS_OUT_OF_RANGE]), upper)
    if values is not None:
        nonfinite, overflow = (
            counts[reductions.STATUS_NONFINITE],
            counts[reductions.STATUS_OVERFLOW],
        )
        into = np.dtype(np.float64 if into is None else into)
        raise_unfit(values, int(nonfinite), int(overflow), into, scale)


def raise_unfit(name: str, nonfinite: int, overflow: int, into: Any, scale: float = 1.0) -> None:
    """The error for values that are not finite, or overflow ``into``; nothing when both are 0."""
    error = unfit_error(name, nonfinite, overflow, into, scale)
    if error is not None:
        raise error


def unfit_error(
    name: str, nonfinite: int, overflow: int, into: Any, scale: float = 1.0
) -> ValueError | None:
    """What :func:`raise_unfit` raises (NaN/Inf first), or ``None`` when both counts are 0."""
    if nonfinite:
        return NonFiniteError(
            f"{name} holds {nonfinite} NaN or Inf value(s); pysketch refuses non-finite input"
        )
    if overflow:
        scaled = "" if scale == 1.0 else f" once multiplied by {scale:g}"
        return ValueError(
            f"{name} holds {overflow} value(s) that overflow {np.dtype(into)}{scaled} "
            f"(largest finite value {np.finfo(into).max:.7g}); pysketch refuses values "
            "that would be stored as inf"
        )
    return None


def check_index_range(inp: Input, name: str, upper: int) -> None:
    """Raise unless every index lies in ``[0, upper)``."""
    if inp.device == CPU:
        bad = reductions.cpu_count_out_of_range(inp.array, index_bound(inp, upper))
        raise_out_of_range(name, bad, upper)
        return
    status = new_status(inp.stream)
    count_out_of_range(inp, status, upper)
    raise_status(_cuda.to_host(status, inp.stream), indices=name, upper=upper)


def raise_out_of_range(name: str, count: int, upper: int) -> None:
    """The error for ``count`` indices outside ``[0, upper)``; nothing when it is 0."""
    if count:
        raise IndexError(f"{name} must lie in [0, {upper}): {count} value(s) outside that range")


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


def may_overlap(a: Any, b: Any) -> bool:
    """Whether two arrays on the same device may share memory (bounds only, so conservative)."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(np.may_share_memory(a, b))
    if _cuda.is_cuda_array(a) and _cuda.is_cuda_array(b):
        a_low, a_high = _cuda.byte_extent(a)
        b_low, b_high = _cuda.byte_extent(b)
        return a_low < b_high and b_low < a_high
    return False


def detached(inp: Input, *targets: Any) -> Input:
    """``inp``, or a copy of it when it may overlap one of ``targets``.

    ``targets`` are arrays the caller is about to write; reading an input while
    it is being overwritten (``scatter(i, v, out=v)``, a view of a sketch's
    own table) would give wrong results, so such an input is copied first.
    """
    if not any(may_overlap(inp.array, target) for target in targets):
        return inp
    if inp.device == CPU:
        return Input(np.array(inp.array, copy=True), CPU)
    copy = _cuda.empty(inp.size, inp.array.dtype, stream=inp.stream)
    _cuda.launch(elementwise.cuda_copy, inp.size, inp.stream)(copy, inp.array)
    return Input(copy, inp.device, inp.stream)
