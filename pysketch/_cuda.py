"""The one gateway to the CUDA toolchain.

Every CUDA call of pysketch goes through this module: kernel modules import
``cuda`` from here to define their kernels, and the dispatch code calls the
helpers below to wrap, allocate, copy and synchronise device arrays. numba-cuda
is in maintenance mode upstream, so keeping the target behind one small module
lets it be swapped without touching the kernels' callers.

Set ``NUMBA_ENABLE_CUDASIM=1`` before numba is imported to run the CUDA kernels
in Numba's simulator on the CPU (that is how CI tests them).

``numba.cuda`` itself is imported lazily, on the first use of anything CUDA
(launching or inspecting a kernel, a device array, :func:`available`): ``cuda``
here is a stand-in whose ``jit`` decorator records the kernel without
importing the target, so ``import pysketch`` costs nothing for CUDA on
machines without a GPU. When one kernel of a module is first used, every
kernel of that module is bound to ``numba.cuda`` and the module's ``cuda``
global is replaced by the real module, so kernel bodies (``cuda.grid``,
``cuda.atomic.add``), the simulator's module swap and ``compile_ptx`` of a
kernel's ``py_func`` see exactly what eager ``@numba.cuda.jit`` would give.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

__all__ = [
    "cuda",
    "LazyKernel",
    "cuda_imported",
    "SIMULATOR",
    "THREADS_PER_BLOCK",
    "is_cuda_array",
    "as_cuda_array",
    "stream_for",
    "launch",
    "empty",
    "zeros",
    "to_device",
    "to_host",
    "synchronize",
    "available",
    "device_function",
    "pinned_empty",
    "copy_to_host_into",
    "copy_to_device_from",
    "synchronize_for",
    "byte_extent",
    "upload",
    "bind",
    "Calls",
    "counting",
]

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"
# The simulator runs one Python thread per CUDA thread: keep blocks small there.
THREADS_PER_BLOCK = 32 if SIMULATOR else 256
_MAX_BLOCKS = 8 if SIMULATOR else 65535
_DLPACK_CUDA = 2
_DLPACK_CUDA_MANAGED = 13


def _numba_cuda():
    """The real ``numba.cuda`` module, imported on first need."""
    # numba-cuda (0.30, in maintenance mode upstream: NVIDIA/numba-cuda#907 won't be
    # fixed) registers an overload of ``np.row_stack`` when it first compiles a
    # kernel; NumPy 2.5 removed that alias of ``np.vstack``, so without it every
    # kernel launch on a real GPU raises AttributeError. Restore the alias first.
    if not hasattr(np, "row_stack"):
        setattr(np, "row_stack", np.vstack)  # noqa: B010 (ruff NPY201 flags the attribute)
    from numba import cuda as real

    if SIMULATOR:
        _serialise_simulator_races()
    return real


_SIMULATOR_PATCHED: list[bool] = []


def _serialise_simulator_races() -> None:
    """Close two races of Numba's simulator, which runs each CUDA thread as a Python thread.

    * ``cuda.shared.array`` looks its line up in a dict and inserts a new array when
      absent: two threads of a block reaching that line together may get two arrays.
    * A device function swaps its module's ``numba.cuda`` for the fake module on
      entry and back on exit; a thread still running another device function of that
      module then sees the real one (NVIDIA/numba-cuda#690).

    Under a lock, the first allocation wins, and a module's swap is counted: undone
    by the last thread to leave. Only ever applied under ``NUMBA_ENABLE_CUDASIM=1``.
    """
    if _SIMULATOR_PATCHED:
        return
    import contextlib
    import sys
    import threading

    from numba.core import types
    from numba.cuda.simulator import kernel as sim_kernel
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    lock = threading.RLock()
    allocate = kernelapi.FakeCUDAShared.array

    def shared_array(self, shape, dtype):
        if shape == 0:  # dynamic shared memory: one buffer, no table
            return allocate(self, shape, dtype)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)  # one array per line of the caller, as the original
        line = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            array = self._allocations.get(line)
            if array is None:
                array = self._allocations[line] = np.empty(shape, dtype)
        return array

    swapped: dict[int, list] = {}  # id(globals) -> [threads inside, originals]

    @contextlib.contextmanager
    def swapped_cuda_module(fn, fake_cuda_module):
        from numba import cuda as real_cuda

        globs = fn.__globals__
        with lock:
            entry = swapped.get(id(globs))
            if entry is None:
                originals = {k: v for k, v in globs.items() if v is real_cuda}
                globs.update(dict.fromkeys(originals, fake_cuda_module))
                entry = swapped[id(globs)] = [0, originals]
            entry[0] += 1
        try:
            yield
        finally:
            with lock:
                entry[0] -= 1
                if entry[0] == 0:
                    globs.update(entry[1])
                    del swapped[id(globs)]

    kernelapi.FakeCUDAShared.array = shared_array
    sim_kernel.swapped_cuda_module = swapped_cuda_module
    _SIMULATOR_PATCHED.append(True)


def cuda_imported() -> bool:
    """Whether ``numba.cuda`` has been imported in this process (by pysketch or anyone)."""
    import sys

    return "numba.cuda" in sys.modules


class _LazyCudaModule:
    """Stands for ``numba.cuda`` until something needs it.

    ``cuda.jit`` (with or without options) returns a :class:`LazyKernel`;
    any other attribute imports ``numba.cuda`` and is read from it.
    """

    def jit(self, fn=None, **options):
        if fn is None:
            return lambda f: LazyKernel(f, options)
        return LazyKernel(fn, options)

    def __getattr__(self, name: str):
        return getattr(_numba_cuda(), name)

    def __repr__(self) -> str:
        return "<lazy numba.cuda (pysketch._cuda)>"


cuda = _LazyCudaModule()


class LazyKernel:
    """A ``@cuda.jit`` function whose ``numba.cuda`` dispatcher is made on first use.

    Launching (``kernel[blocks, threads, stream](...)``), calling, or reading
    any attribute (``py_func``, ``compile``, ...) binds it: see the module notes.
    """

    def __init__(self, fn, options: dict) -> None:
        functools.update_wrapper(self, fn)
        self._fn, self._options, self._dispatcher = fn, options, None

    def dispatcher(self):
        """The real ``numba.cuda`` dispatcher (made, and the module bound, on first call)."""
        if self._dispatcher is None:
            self._dispatcher = _numba_cuda().jit(**self._options)(self._fn)
            _bind_module(self._fn.__globals__)
        return self._dispatcher

    @property
    def py_func(self):
        self.dispatcher()
        return self._fn

    def __getitem__(self, config):
        return self.dispatcher()[config]

    def __call__(self, *args, **kwargs):
        return self.dispatcher()(*args, **kwargs)

    def __getattr__(self, name: str):
        if name in ("_fn", "_options", "_dispatcher"):  # before __init__ (copy, pickle)
            raise AttributeError(name)
        return getattr(self.dispatcher(), name)

    def __repr__(self) -> str:
        return f"<LazyKernel {self._fn.__module__}.{self._fn.__qualname__}>"


def _bind_module(globs: dict) -> None:
    """Point a kernel module's ``cuda`` at ``numba.cuda`` and its lazy kernels at dispatchers."""
    real = _numba_cuda()
    for key, value in list(globs.items()):
        if value is cuda:
            globs[key] = real
        elif isinstance(value, LazyKernel):
            globs[key] = value.dispatcher()


def device_function(fn):
    """Compile ``fn`` once for both targets: CPU kernels and CUDA kernels call it.

    It becomes an inlined ``@numba.njit`` function, which Numba's CUDA target
    also compiles when a kernel calls it. Under the simulator, CUDA kernels are
    plain Python handing it simulated device arrays that compiled code cannot
    type, so a call from Python runs the original function instead (with
    wrap-around integer overflow, as in compiled code).
    """
    compiled = njit(inline="always")(fn)
    if SIMULATOR:
        compiled.__class__ = _simulated_dispatcher(type(compiled))
    return compiled


_SIMULATED_DISPATCHERS: dict[type, type] = {}


def _simulated_dispatcher(base: type) -> type:
    if base not in _SIMULATED_DISPATCHERS:

        def __call__(self, *args):
            with np.errstate(over="ignore"):
                return self.py_func(*args)

        _SIMULATED_DISPATCHERS[base] = type("SimulatedDispatcher", (base,), {"__call__": __call__})
    return _SIMULATED_DISPATCHERS[base]


def available() -> bool:
    """True when a CUDA device (or the simulator) can run kernels."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install reads as "no GPU"
        return False


def _cupy():
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def is_cuda_array(obj: Any) -> bool:
    """Whether ``obj`` is an array in CUDA device memory (Numba, CAI or DLPack)."""
    if hasattr(obj, "__cuda_array_interface__") or hasattr(obj, "__cuda_ndarray__"):
        return True
    dl_device = getattr(obj, "__dlpack_device__", None)
    if dl_device is None:
        return False
    try:
        return dl_device()[0] in (_DLPACK_CUDA, _DLPACK_CUDA_MANAGED)
    except Exception:
        return False


def as_cuda_array(obj: Any):
    """Zero-copy view of a CUDA array as something Numba kernels accept."""
    if hasattr(obj, "__cuda_ndarray__"):  # already a Numba device array
        return obj
    if not hasattr(obj, "__cuda_array_interface__"):
        cupy = _cupy()
        if cupy is None:
            raise TypeError(
                "a DLPack CUDA array without __cuda_array_interface__ needs CuPy "
                "to be viewed zero-copy; install pysketch[cuda12] or [cuda13]"
            )
        obj = cupy.from_dlpack(obj)
    return cuda.as_cuda_array(obj, sync=False)


def stream_for(obj: Any):
    """The stream the caller's array lives on, so kernels queue behind its producer.

    CuPy arrays run on CuPy's current stream; other CAI producers (PyTorch, JAX,
    Numba device arrays) name their stream in the interface (v3); the default
    stream otherwise. Under the simulator, streams exist as objects only: a
    simulated array's own ``stream`` (the one it was allocated or bound to).
    """
    if SIMULATOR:
        return getattr(obj, "stream", 0)
    cupy = _cupy()
    if cupy is not None and isinstance(obj, cupy.ndarray):
        return cuda.external_stream(cupy.cuda.get_current_stream().ptr)
    ptr = getattr(obj, "__cuda_array_interface__", {}).get("stream")
    if ptr is None or ptr == 1:
        return cuda.default_stream()
    if ptr == 2:
        return cuda.per_thread_default_stream()
    return cuda.external_stream(ptr)


# ------------------------------------------------------------------ counting
@dataclass
class Calls:
    """What pysketch asked of the CUDA device while :func:`counting` was active.

    Attributes
    ----------
    launches : int
        Kernel launches.
    allocations : int
        Device allocations (:func:`empty`, :func:`zeros`, :func:`to_device`).
    to_device, to_host : int
        Host-to-device and device-to-host copies.
    synchronizations : int
        Waits of the host for the device (every device-to-host copy waits).
    streams : list of (str, stream)
        The call kind and the stream of every call above, in order.
    """

    launches: int = 0
    allocations: int = 0
    to_device: int = 0
    to_host: int = 0
    synchronizations: int = 0
    streams: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def round_trips(self) -> int:
        """Host round trips: the times the host waited for the device."""
        return self.synchronizations


_ACTIVE: list[Calls] = []


@contextlib.contextmanager
def counting() -> Iterator[Calls]:
    """Count every launch, allocation, copy and synchronisation made through this module.

    Every CUDA call of pysketch goes through here, so the count is complete;
    the round-trip budget test of the algorithms' steps reads it.

    Examples
    --------
    >>> from pysketch import _cuda
    >>> with _cuda.counting() as calls:
    ...     pass
    >>> calls.launches, calls.round_trips
    (0, 0)
    """
    calls = Calls()
    _ACTIVE.append(calls)
    try:
        yield calls
    finally:
        _ACTIVE.remove(calls)


def _count(kind: str, stream: Any, n: int = 1) -> None:
    for calls in _ACTIVE:
        setattr(calls, kind, getattr(calls, kind) + n)
        calls.streams.append((kind, stream))


# ------------------------------------------------------------ launch, memory
def _kernel_argument(arg: Any) -> Any:
    """A CAI array (CuPy, PyTorch) as a Numba view that does not synchronise.

    Numba wraps such arguments itself at launch with ``sync=True``, which waits
    for the producer's stream on the host at every launch; the kernels already
    run on the caller's stream, so that wait is never needed.
    """
    if hasattr(arg, "__cuda_array_interface__") and not hasattr(arg, "__cuda_ndarray__"):
        return cuda.as_cuda_array(arg, sync=False)
    return arg


def launch(kernel, n: int, stream=0, *, max_blocks: int | None = None):
    """``kernel`` configured for a grid-stride loop over ``n`` items on ``stream``.

    ``max_blocks`` caps the grid below the usual limit, for kernels whose blocks
    each pay a fixed cost (zeroing and flushing a shared-memory histogram): fewer
    blocks that loop over more items each.
    """
    cap = _MAX_BLOCKS if max_blocks is None else min(_MAX_BLOCKS, max_blocks)
    blocks = max(1, min(cap, -(-n // THREADS_PER_BLOCK)))
    configured = kernel[blocks, THREADS_PER_BLOCK, stream]

    def run(*args):
        _count("launches", stream)
        return configured(*map(_kernel_argument, args))

    return run


def _in_cupy_stream(stream):
    """A context that makes ``stream`` CuPy's current stream (CuPy allocates and copies there)."""
    cupy = _cupy()
    if not stream:
        return cupy.cuda.Stream.null
    return cupy.cuda.ExternalStream(_stream_pointer(stream))


def _stream_pointer(stream) -> int:
    handle = stream.handle
    return int(getattr(handle, "value", handle) or 0)


def _use_cupy() -> bool:
    return not SIMULATOR and _cupy() is not None


def empty(shape, dtype, stream=0):
    """An uninitialised device array on ``stream``: CuPy when installed, Numba otherwise."""
    _count("allocations", stream)
    if _use_cupy():
        with _in_cupy_stream(stream):
            return _cupy().empty(shape, dtype=dtype)
    return cuda.device_array(shape, dtype=dtype, stream=stream)


def zeros(shape, dtype, stream=0):
    """A zeroed device array, zeroed on the device by ``stream`` (no host buffer is copied)."""
    if _use_cupy():
        _count("allocations", stream)
        _count("launches", stream)  # CuPy's memset
        with _in_cupy_stream(stream):
            return _cupy().zeros(shape, dtype=dtype)
    from pysketch.kernels import elementwise

    out = empty(shape, dtype, stream)
    flat = out.reshape(int(np.prod(shape, dtype=np.int64)))
    launch(elementwise.cuda_fill, flat.shape[0], stream)(flat, 0)
    return out


def to_device(host: np.ndarray, stream=0):
    """Copy a host array to a new device array on ``stream`` (CuPy when installed, else Numba)."""
    _count("allocations", stream)
    _count("to_device", stream)
    if _use_cupy():
        with _in_cupy_stream(stream):
            return _cupy().asarray(host)
    return cuda.to_device(np.ascontiguousarray(host), stream=stream)


def upload(host: np.ndarray, device_array: Any, stream=0) -> None:
    """Copy ``host`` into the existing ``device_array`` (same shape) on ``stream``; no wait.

    The copy is queued on ``stream``; a pageable ``host`` is staged by the
    driver before this returns, so the caller may reuse it at once.
    """
    _count("to_device", stream)
    if host.size:
        _copyable(device_array).copy_to_device(np.ascontiguousarray(host), stream=stream)


def bind(device_array: Any, stream) -> Any:
    """The Numba view of ``device_array`` whose stream is ``stream`` (no copy, no allocation).

    Buffers bound to the caller's stream make :func:`stream_for` name that
    stream, so a query that derives its stream from its input queues there.
    """
    return as_cuda_array(device_array).bind(stream)


def to_host(arr, stream=None) -> np.ndarray:
    """Copy a device array (any CAI/DLPack producer) to a new host array; waits.

    The copy is queued on ``stream`` (by default the array's, :func:`stream_for`),
    behind the kernels that produced it, and the host waits for it.
    """
    stream = stream_for(arr) if stream is None else stream
    _count("to_host", stream)
    _count("synchronizations", stream)
    if hasattr(arr, "copy_to_host"):
        host = arr.copy_to_host(stream=stream)
    else:
        host = as_cuda_array(arr).copy_to_host(stream=stream)
    _wait(stream)
    return host


def byte_extent(arr: Any) -> tuple[int, int]:
    """The ``[first, past-the-end)`` byte addresses that a device array's elements span."""
    if SIMULATOR and hasattr(arr, "_ary"):  # simulated device memory is a host array
        iface = arr._ary.__array_interface__
    else:
        iface = arr.__cuda_array_interface__
    start = iface["data"][0]
    shape = tuple(iface["shape"])
    itemsize = np.dtype(iface["typestr"]).itemsize
    if 0 in shape:
        return start, start
    strides = iface.get("strides") or tuple(
        itemsize * int(np.prod(shape[i + 1 :], dtype=np.int64)) for i in range(len(shape))
    )
    low = sum(min(0, (n - 1) * s) for n, s in zip(shape, strides, strict=True))
    high = sum(max(0, (n - 1) * s) for n, s in zip(shape, strides, strict=True))
    return start + low, start + high + itemsize


def synchronize(stream=0) -> None:
    """Wait for ``stream`` (or the whole device) to finish queued work."""
    _count("synchronizations", stream)
    _wait(stream)


def _wait(stream) -> None:
    if stream:
        stream.synchronize()
    else:
        cuda.synchronize()


def synchronize_for(obj: Any) -> None:
    """Wait for the stream that produces ``obj`` (before handing it to MPI, say)."""
    synchronize(stream_for(obj))


def pinned_empty(nbytes: int) -> np.ndarray:
    """A page-locked host buffer of ``nbytes`` bytes (uint8), for staging copies."""
    return cuda.pinned_array(max(int(nbytes), 1), dtype=np.uint8)


def _copyable(obj: Any):
    """``obj`` as something with ``copy_to_host``/``copy_to_device(ary, stream)``."""
    if hasattr(obj, "copy_to_host") and hasattr(obj, "copy_to_device"):
        return obj
    if SIMULATOR:  # simulated device memory is host memory: view it in place
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        cai = obj.__cuda_array_interface__
        dtype, shape = np.dtype(cai["typestr"]), tuple(cai["shape"])
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        raw = np.ctypeslib.as_array(
            (np.ctypeslib.ctypes.c_byte * nbytes).from_address(cai["data"][0])
        )
        return FakeCUDAArray(raw.view(dtype).reshape(shape))
    return as_cuda_array(obj)


def copy_to_host_into(device_array: Any, host: np.ndarray) -> None:
    """Copy ``device_array`` into the existing host array ``host`` (same shape); waits."""
    stream = stream_for(device_array)
    _count("to_host", stream)
    if host.size:
        _copyable(device_array).copy_to_host(host, stream=stream)
    synchronize(stream)


def copy_to_device_from(host: np.ndarray, device_array: Any) -> None:
    """Copy the host array ``host`` into the existing ``device_array`` (same shape); waits."""
    stream = stream_for(device_array)
    upload(host, device_array, stream)
    synchronize(stream)
