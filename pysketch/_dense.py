"""Dense vector algebra on either device, on the stream the caller names.

NumPy arrays take NumPy's operators. CUDA arrays (Numba device arrays, and
CuPy or PyTorch arrays, which :mod:`pysketch._cuda` views zero-copy) take the
element-wise and selection kernels of :mod:`pysketch.kernels`, launched
through :mod:`pysketch._cuda` on ``stream``: never on CuPy's current stream or
the default one by accident, and without CuPy.

Both sides compute the same thing operation for operation: a factor given as
a NumPy scalar keeps its dtype and a Python number is float64, as the kernels
receive them, and the CPU code rounds where the kernels round, so a CPU run and
a simulated CUDA run give the same values (a real GPU may fuse a multiply and
an add into one rounding).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pysketch import _cuda
from pysketch._arrays import CPU
from pysketch.kernels import elementwise, reductions
from pysketch.kernels import select as sel

__all__ = [
    "axpby",
    "axpy",
    "copy",
    "count_unfit",
    "empty",
    "fill",
    "flat",
    "gather",
    "new",
    "on_cpu",
    "scale",
    "scale_clipped",
    "scatter_add",
    "set_at",
    "to_host",
    "zero_where",
    "zeros",
]


def on_cpu(array: Any) -> bool:
    """Whether ``array`` is a host (NumPy) array."""
    return isinstance(array, np.ndarray)


def _typed(value: float, like: Any):
    """``value`` in the dtype of ``like`` (what a kernel stores)."""
    return np.dtype(like.dtype).type(value)


def _scalar(value: Any):
    """A factor as a kernel receives it: NumPy scalars keep their dtype, Python numbers are
    float64, so NumPy computes in the precision of the kernel's arithmetic."""
    return value if isinstance(value, np.generic) else np.float64(value)


def empty(shape: Any, dtype: Any, device: str, stream: Any = 0) -> Any:
    """An uninitialised array on ``device``; on CUDA a Numba view bound to ``stream``."""
    if device == CPU:
        return np.empty(shape, dtype=dtype)
    return _cuda.bind(_cuda.empty(shape, dtype, stream), stream)


def new(shape: Any, dtype: Any, device: str, stream: Any = 0) -> Any:
    """An uninitialised array to hand back to a caller: NumPy, or on CUDA what
    :func:`pysketch._cuda.empty` gives (CuPy when installed)."""
    if device == CPU:
        return np.empty(shape, dtype=dtype)
    return _cuda.empty(shape, dtype, stream)


def zeros(shape: Any, dtype: Any, device: str, stream: Any = 0) -> Any:
    """A zeroed array on ``device`` (zeroed by ``stream`` on CUDA)."""
    out = empty(shape, dtype, device, stream)
    fill(flat(out), 0, stream)
    return out


def flat(array: Any) -> Any:
    """A 1-D view of a C-contiguous array (a table, say)."""
    return array.reshape(int(np.prod(array.shape, dtype=np.int64)))


def fill(out: Any, value: float, stream: Any = 0) -> None:
    """``out[:] = value`` (1-D)."""
    if on_cpu(out):
        out[...] = value
    else:
        _cuda.launch(elementwise.cuda_fill, out.shape[0], stream)(out, _typed(value, out))


def copy(out: Any, x: Any, stream: Any = 0) -> None:
    """``out[:] = x``, converted to ``out``'s dtype (1-D, same length)."""
    if on_cpu(out):
        np.copyto(out, x, casting="unsafe")
    else:
        _cuda.launch(elementwise.cuda_copy, out.shape[0], stream)(out, x)


def axpy(y: Any, alpha: float, x: Any, stream: Any = 0) -> None:
    """``y += alpha * x`` (1-D)."""
    alpha = _scalar(alpha)
    if on_cpu(y):
        y += alpha * x
    else:
        _cuda.launch(elementwise.cuda_axpy, y.shape[0], stream)(y, alpha, x)


def scale(y: Any, alpha: float, stream: Any = 0) -> None:
    """``y *= alpha`` (1-D)."""
    alpha = _scalar(alpha)
    if on_cpu(y):
        y *= alpha
    else:
        _cuda.launch(elementwise.cuda_scale, y.shape[0], stream)(y, alpha)


def scale_clipped(y: Any, ratios: Any, at: int, stream: Any = 0) -> None:
    """``y *= 1 / ratios[at]`` where ``ratios[at] > 1`` (a norm over its limit): gradient
    clipping with the norm's ratio left where it was computed (on CUDA: on the device)."""
    if on_cpu(y):
        y *= np.float64(elementwise.clip_factor(float(ratios[at])))
    else:
        _cuda.launch(elementwise.cuda_scale_clipped, y.shape[0], stream)(y, ratios, at)


def axpby(out: Any, x: Any, beta: float, y: Any, stream: Any = 0) -> None:
    """``out = x + beta * y`` (1-D); ``out`` may be ``x`` or ``y`` itself."""
    beta = _scalar(beta)
    if on_cpu(out):
        np.add(x, np.multiply(y, beta), out=out, casting="unsafe")
    else:
        _cuda.launch(elementwise.cuda_axpby_out, out.shape[0], stream)(out, x, beta, y)


def gather(out: Any, x: Any, indices: Any, stream: Any = 0) -> None:
    """``out = x[indices]`` (the library's own indices: not range-checked)."""
    if on_cpu(out):
        np.take(x, indices, out=out)
    elif out.shape[0]:
        _cuda.launch(sel.cuda_gather, out.shape[0], stream)(x, indices, out)


def scatter_add(out: Any, indices: Any, values: Any, sign: float = 1.0, stream: Any = 0) -> None:
    """``out[indices] += sign * values``; repeated indices add up (unchecked indices)."""
    sign = _scalar(sign)
    if on_cpu(out):
        sel.cpu_scatter_add(out, indices, values, sign)
    elif indices.shape[0]:
        _cuda.launch(sel.cuda_scatter_add, indices.shape[0], stream)(out, indices, values, sign)


def set_at(out: Any, indices: Any, value: float, stream: Any = 0) -> None:
    """``out[indices] = value`` (unchecked indices)."""
    if on_cpu(out):
        out[indices] = value
    elif indices.shape[0]:
        _cuda.launch(sel.cuda_set_at, indices.shape[0], stream)(out, indices, _typed(value, out))


def zero_where(out: Any, mask: Any, stream: Any = 0) -> None:
    """``out[mask != 0] = 0`` (1-D, same length)."""
    if on_cpu(out):
        out[mask != 0] = 0
    else:
        _cuda.launch(elementwise.cuda_zero_where, out.shape[0], stream)(out, mask)


def count_unfit(x: Any, factor: float, limit: float, counts: Any, stream: Any = 0) -> None:
    """``counts[0] +=`` the NaN/Inf count of ``x``, ``counts[1] +=`` how many
    ``factor * x`` exceed ``limit`` (:func:`pysketch.kernels.reductions.unfit`).

    On CUDA nothing is read back: ``counts`` (any real dtype) stays on the
    device, for one read at the end of a step.
    """
    if on_cpu(x):
        values = x if x.dtype.kind == "f" else x.astype(np.float64)
        nonfinite, overflow = reductions.cpu_count_unfit(values, float(factor), float(limit))
        counts[0] += nonfinite
        counts[1] += overflow
    elif x.shape[0]:
        _cuda.launch(reductions.cuda_count_unfit, x.shape[0], stream)(
            x, float(factor), float(limit), counts
        )


def to_host(array: Any, stream: Any = 0) -> np.ndarray:
    """``array`` on the host: itself on the CPU; on CUDA a copy, which waits for ``stream``."""
    return array if on_cpu(array) else _cuda.to_host(array, stream)
