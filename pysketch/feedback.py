"""Error-feedback memory and momentum buffers that any algorithm can reuse.

Both hold one dense length-``d`` vector on the CPU (NumPy) or the GPU (a device
array; updated by small CUDA kernels, since Numba device arrays have no
operators). Every method validates its input (device, shape, dtype, NaN/Inf)
before touching the state, so a bad call raises and leaves the state as it was.
``state_dict()`` / ``load_state_dict()`` exchange host NumPy arrays, so a long
run can be checkpointed and resumed on either device.

mem-SGD (Stich et al. 2018) with top-k::

    ef.add(g, scale=eta)                         # m += eta * g
    idx, val = ef.compress(lambda m: topk(m, k)) # send (idx, val); m[idx] -= val

Sketched-SGD momentum stopping (Ivkin et al. 2019)::

    mom.update(g)           # u = rho * u + g
    ef.add(mom.buffer)      # v += u
    ...                     # after the server picks the support H of the update
    mom.zero_at(H); ef.zero_at(H)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pysketch import _arrays, _cuda, _dense
from pysketch._arrays import CPU, Input

__all__ = ["ErrorFeedback", "Momentum"]


class _DenseState:
    """A length-``d`` vector on one device, with the validated in-place updates."""

    _STATE_KEY = "vector"

    def __init__(self, d: int, *, dtype: Any = np.float32, device: str = "cpu") -> None:
        self._d = _arrays.check_positive_int("d", d)
        self._dtype = _arrays.check_float_dtype("dtype", dtype)
        self._device = _arrays.check_device(device)
        if device == CPU:
            self._vec = np.zeros(self._d, dtype=self._dtype)
        else:
            self._vec = _cuda.zeros(self._d, self._dtype)

    def _stream(self) -> Any:
        """The stream of calls without an input: the buffer's producer's (CuPy's current)."""
        return 0 if self._device == CPU else _cuda.stream_for(self._vec)

    # ------------------------------------------------------------ properties
    @property
    def d(self) -> int:
        """Length of the vector."""
        return self._d

    @property
    def dtype(self) -> np.dtype:
        """float32 or float64."""
        return self._dtype

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"cuda"``."""
        return self._device

    # ------------------------------------------------------------ validation
    def _dense(self, x: Any, name: str, check_finite: bool, scale: float = 1.0) -> Input:
        inp = _arrays.as_input(x, name, device=self._device)
        if inp.size != self._d:
            raise ValueError(f"{name} must have shape ({self._d},), got {tuple(inp.array.shape)}")
        if check_finite:
            _arrays.check_finite(inp, name, into=self._dtype, scale=scale)
        return _arrays.detached(inp, self._vec)

    def _indices(self, indices: Any) -> Input:
        ind = _arrays.as_input(indices, "indices", device=self._device, kind="index")
        _arrays.check_index_range(ind, "indices", self._d)
        return _arrays.detached(ind, self._vec)

    # ------------------------------------------------------------ updates
    def _axpy(self, alpha: float, inp: Input) -> None:
        _dense.axpy(self._vec, alpha, inp.array, inp.stream)

    def _scatter_sub(self, ind: Input, val: Input) -> None:
        _dense.scatter_add(self._vec, ind.array, val.array, -1.0, val.stream)

    def zero_at(self, indices: Any) -> None:
        """Set the entries at ``indices`` to zero (error reset / momentum stopping).

        Parameters
        ----------
        indices : integer array on this object's device
            Each in ``[0, d)``; repeats are harmless.
        """
        ind = self._indices(indices)
        _dense.set_at(self._vec, ind.array, 0, ind.stream)

    def reset(self) -> None:
        """Set the whole vector to zero."""
        _dense.fill(self._vec, 0, self._stream())

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, np.ndarray]:
        """A host copy of the state: ``{key: NumPy array of shape (d,)}``."""
        host = self._vec.copy() if self._device == CPU else _cuda.to_host(self._vec, self._stream())
        return {self._STATE_KEY: host}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` output (a host array of shape ``(d,)``).

        Raises, leaving the state unchanged, on a missing key, a wrong shape, a
        non-real dtype, NaN/Inf, or values that overflow the buffer's dtype.
        """
        if not isinstance(state, dict) or self._STATE_KEY not in state:
            raise KeyError(f"state must be a dict with key {self._STATE_KEY!r}")
        name = f"state[{self._STATE_KEY!r}]"
        value = state[self._STATE_KEY]
        if _cuda.is_cuda_array(value):
            value = _cuda.to_host(value)
        inp = _arrays.as_input(value, name, device=CPU)
        if inp.size != self._d:
            raise ValueError(f"{name} must have shape ({self._d},), got {tuple(inp.array.shape)}")
        _arrays.check_finite(inp, name, into=self._dtype)
        host = np.ascontiguousarray(inp.array, dtype=self._dtype)
        if self._device == CPU:
            self._vec[...] = host
        else:
            _cuda.upload(host, self._vec, self._stream())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(d={self._d}, dtype={self._dtype.name}, device={self._device!r})"
        )


class ErrorFeedback(_DenseState):
    """Error-feedback memory ``m``: what a compressor has not sent yet.

    Parameters
    ----------
    d : int
        Length of the vector.
    dtype : {float32, float64}, default float32
    device : {"cpu", "cuda"}, default "cpu"

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.feedback import ErrorFeedback
    >>> from pysketch import topk
    >>> ef = ErrorFeedback(4)
    >>> ef.add(np.array([1.0, -4.0, 0.5, 2.0]), scale=0.5)
    >>> idx, val = ef.compress(lambda m: topk(m, 1))
    >>> idx, val
    (array([1]), array([-2.], dtype=float32))
    >>> ef.memory
    array([0.5 , 0.  , 0.25, 1.  ], dtype=float32)
    """

    _STATE_KEY = "memory"

    @property
    def memory(self):
        """The memory vector itself (not a copy), on the object's device."""
        return self._vec

    def add(self, x: Any, scale: float = 1.0, *, check_finite: bool = True) -> None:
        """``m += scale * x``.

        Parameters
        ----------
        x : real array, shape (d,), on this object's device
        scale : float, default 1.0
            E.g. the learning rate.
        check_finite : bool, default True
            Raise on NaN or Inf in ``x``, and where ``scale * x`` would overflow
            the buffer's dtype.
        """
        scale = _arrays.check_real("scale", scale)
        inp = self._dense(x, "x", check_finite, scale)
        self._axpy(scale, inp)

    def subtract_sparse(self, indices: Any, values: Any, *, check_finite: bool = True) -> None:
        """``m[indices] -= values`` (what mem-SGD does after sending); repeats add up.

        Parameters
        ----------
        indices : integer array, shape (n,), each in ``[0, d)``
        values : real array, shape (n,)
            Both on this object's device.
        check_finite : bool, default True
            Raise on NaN or Inf in ``values``, and on values that would
            overflow the buffer's dtype.
        """
        ind = self._indices(indices)
        val = _arrays.as_input(values, "values", device=self._device)
        _arrays.check_same_length(ind, "indices", val, "values")
        if check_finite:
            _arrays.check_finite(val, "values", into=self._dtype)
        self._scatter_sub(ind, _arrays.detached(val, self._vec))

    def compress(self, compressor: Callable[[Any], tuple[Any, Any]]) -> tuple[Any, Any]:
        """Run ``compressor(memory) -> (indices, values)``, subtract what it sends, return it.

        Parameters
        ----------
        compressor : callable
            E.g. ``lambda m: topk(m, k)``, or for random-k
            ``lambda m: (idx, gather(m, idx))``.

        Returns
        -------
        indices, values
            The compressor's output, to be communicated.
        """
        if not callable(compressor):
            raise TypeError(f"compressor must be callable, got {type(compressor).__name__}")
        indices, values = compressor(self._vec)
        self.subtract_sparse(indices, values)
        return indices, values


class Momentum(_DenseState):
    """Heavy-ball momentum buffer ``u = rho * u + g``.

    Parameters
    ----------
    d : int
        Length of the vector.
    rho : float
        Momentum factor in ``[0, 1)``.
    dtype : {float32, float64}, default float32
    device : {"cpu", "cuda"}, default "cpu"
    nesterov : bool, default False
        :meth:`update` returns ``g + rho * u`` instead of ``u``.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.feedback import Momentum
    >>> mom = Momentum(3, rho=0.5, dtype=np.float64)
    >>> mom.update(np.array([1.0, 2.0, 0.0]))
    array([1., 2., 0.])
    >>> mom.update(np.array([1.0, 0.0, 4.0]))
    array([1.5, 1. , 4. ])
    >>> mom.zero_at(np.array([1]))
    >>> mom.buffer
    array([1.5, 0. , 4. ])
    """

    _STATE_KEY = "buffer"

    def __init__(
        self,
        d: int,
        *,
        rho: float,
        dtype: Any = np.float32,
        device: str = "cpu",
        nesterov: bool = False,
    ) -> None:
        rho = _arrays.check_real("rho", rho)
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"rho must lie in [0, 1), got {rho}")
        nesterov = _arrays.check_bool("nesterov", nesterov)
        super().__init__(d, dtype=dtype, device=device)
        self._rho = rho
        self._nesterov = nesterov

    @property
    def rho(self) -> float:
        return self._rho

    @property
    def nesterov(self) -> bool:
        return self._nesterov

    @property
    def buffer(self):
        """The momentum vector itself (not a copy), on the object's device."""
        return self._vec

    def update(self, g: Any, *, check_finite: bool = True) -> Any:
        """``u = rho * u + g``; returns the step direction.

        Parameters
        ----------
        g : real array, shape (d,), on this object's device
        check_finite : bool, default True
            Raise on NaN or Inf in ``g``, and on values that would overflow
            the buffer's dtype.

        Returns
        -------
        direction : array, shape (d,)
            :attr:`buffer` itself, or with ``nesterov`` a new array ``g + rho * u``.
        """
        inp = self._dense(g, "g", check_finite)
        _dense.axpby(self._vec, inp.array, self._rho, self._vec, inp.stream)
        if not self._nesterov:
            return self._vec
        out = np.empty(self._d, self._dtype) if self._device == CPU else None
        if out is None:
            out = _cuda.empty(self._d, self._dtype, stream=inp.stream)
        _dense.axpby(out, inp.array, self._rho, self._vec, inp.stream)
        return out

    def __repr__(self) -> str:
        return (
            f"Momentum(d={self._d}, rho={self._rho}, dtype={self._dtype.name}, "
            f"device={self._device!r}, nesterov={self._nesterov})"
        )
