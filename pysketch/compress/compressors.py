"""Compressors: a vector in, a :mod:`~pysketch.compress.messages` message out, and back.

A compressor is stateless; error feedback and momentum live in the algorithms
(:mod:`pysketch.compress.algorithms`), which is the split of GRACE (Xu et al.
2021) between compressor and memory. ``compress`` runs on one worker;
``decompress`` turns the *combined* message of all workers (their sum, or the
concatenation of their pairs) into a dense vector: the sum of the workers'
decompressed vectors, for every compressor here but the Count Sketch decoded by
heavy hitters, whose decoding is not linear.

Every compressor works on the CPU (NumPy) and on the GPU alike (CuPy,
PyTorch or Numba device arrays: any CUDA array). Each refuses a vector of the
wrong length and a message of another kind with an error naming the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pysketch import _arrays, _cuda, _dense, selection
from pysketch.compress.messages import Dense, Message, SharedIndex, Sketch, Sparse, index_dtype
from pysketch.countsketch import CountSketch

__all__ = [
    "Compressor",
    "CountSketchCompressor",
    "Identity",
    "RandomK",
    "Threshold",
    "TopK",
]


def check_count(name: str, value: Any, d: int) -> int:
    """A number of coordinates in ``[1, d]``, or a TypeError/ValueError naming ``name``."""
    return _arrays.check_int(
        name, value, minimum=1, maximum=d, expected=f"an integer in [1, d={d}]"
    )


def _check_nonnegative(name: str, value: Any) -> float:
    value = _arrays.check_real(name, value)
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    return value


def step_seed(seed: int, step: int, *tags: int) -> int:
    """A seed for training step ``step`` of a run seeded ``seed``, the same on every worker.

    ``tags`` make the seeds of independent draws of one step differ.
    """
    return int(np.random.SeedSequence([seed, step, *tags]).generate_state(1, np.uint64)[0])


def _sparse(indices: Any, values: Any, d: int) -> Sparse:
    """Pairs with indices at the smallest dtype that holds ``d`` (what would travel)."""
    dtype = index_dtype(d)
    if np.dtype(indices.dtype) == dtype:
        return Sparse(indices, values)
    if _dense.on_cpu(indices):
        return Sparse(indices.astype(dtype), values)
    stream = _cuda.stream_for(indices)
    narrow = _dense.new(indices.shape[0], dtype, _arrays.CUDA, stream)
    _dense.copy(narrow, indices, stream)
    return Sparse(narrow, values)


class Compressor:
    """Base class of compressors of length-``d`` vectors.

    Parameters
    ----------
    d : int
        Length of the vectors.
    """

    #: The kind of message :meth:`compress` returns.
    message_type: type[Message] = Dense

    def __init__(self, d: int) -> None:
        self.d = _arrays.check_positive_int("d", d)

    @property
    def summable(self) -> bool:
        """Whether messages combine by a sum (allreduce) rather than an allgather."""
        return self.message_type.summable

    #: The kinds of (combined) message that :meth:`decompress` reads.
    decodes: tuple[type[Message], ...] = (Dense,)

    def compress(self, x: Any, *, step: int = 0) -> Message:
        """The message that carries (an approximation of) ``x`` at training step ``step``."""
        raise NotImplementedError

    def decompress(self, message: Message) -> Any:
        """The dense vector that a (combined) message stands for."""
        raise NotImplementedError

    def _vector(self, x: Any) -> _arrays.Input:
        """``x`` as a validated vector of length ``d`` on its own device."""
        inp = _arrays.as_input(x, "x", device=_arrays.device_of(x))
        if inp.size != self.d:
            raise ValueError(f"x must have shape ({self.d},), got {tuple(inp.array.shape)}")
        return inp

    def _message(self, message: Any) -> Message:
        """``message`` checked to be a kind :meth:`decompress` reads."""
        if not isinstance(message, self.decodes):
            names = " or ".join(t.__name__ for t in self.decodes)
            raise TypeError(
                f"message must be a {names} (what {type(self).__name__} sends), "
                f"got {type(message).__name__}"
            )
        return message

    def message_nbytes(self, dtype: Any) -> int | None:
        """Bytes of one message for values of ``dtype``; ``None`` when it depends on the data."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Identity(Compressor):
    """No compression: the dense vector itself (uncompressed SGD).

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.compress import Identity
    >>> c = Identity(3)
    >>> c.decompress(c.compress(np.array([1.0, 2.0, 3.0]))).tolist()
    [1.0, 2.0, 3.0]
    """

    message_type = Dense

    def compress(self, x: Any, *, step: int = 0) -> Dense:
        self._vector(x)
        return Dense(x)

    def decompress(self, message: Message) -> Any:
        values = self._message(message).values
        if tuple(values.shape) != (self.d,):
            raise ValueError(
                f"message.values must have shape ({self.d},), got {tuple(values.shape)}"
            )
        return values

    def message_nbytes(self, dtype: Any) -> int:
        return self.d * np.dtype(dtype).itemsize


class TopK(Compressor):
    """The ``k`` coordinates of largest magnitude, as (index, value) pairs.

    Parameters
    ----------
    d : int
    k : int
        In ``[1, d]``.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.compress import TopK
    >>> c = TopK(4, k=2)
    >>> msg = c.compress(np.array([0.5, -3.0, 1.0, 2.0]))
    >>> msg.indices.tolist(), msg.values.tolist(), msg.nbytes
    ([1, 3], [-3.0, 2.0], 24)
    >>> c.decompress(msg).tolist()
    [0.0, -3.0, 0.0, 2.0]
    """

    message_type = Sparse
    decodes = (Sparse, SharedIndex)

    def __init__(self, d: int, k: int) -> None:
        super().__init__(d)
        self.k = check_count("k", k, self.d)

    def compress(self, x: Any, *, step: int = 0) -> Sparse:
        self._vector(x)
        return _sparse(*selection.topk(x, self.k), self.d)

    def decompress(self, message: Message) -> Any:
        message = self._message(message)
        return selection.scatter(message.indices, message.values, self.d, check_finite=False)

    def message_nbytes(self, dtype: Any) -> int:
        return self.k * (np.dtype(dtype).itemsize + index_dtype(self.d).itemsize)


class RandomK(Compressor):
    """``k`` coordinates drawn from a seed that every worker shares at each step.

    The indices of step ``t`` depend on ``(seed, t)`` only, so all workers pick
    the same ones and only the values travel; their sum is an allreduce.

    Parameters
    ----------
    d : int
    k : int
        In ``[1, d]``.
    seed : int, default 0
        The run's seed; step ``t`` draws with a seed derived from ``(seed, t)``.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.compress import RandomK
    >>> c = RandomK(10, k=3, seed=1)
    >>> a, b = c.compress(np.arange(10.0), step=5), c.compress(np.ones(10), step=5)
    >>> bool((a.indices == b.indices).all()), a.nbytes
    (True, 24)
    """

    message_type = SharedIndex
    decodes = (SharedIndex, Sparse)

    def __init__(self, d: int, k: int, *, seed: int = 0) -> None:
        super().__init__(d)
        self.k = check_count("k", k, self.d)
        self.seed = _arrays.check_seed(seed)

    def indices(self, step: int, device: str = "cpu") -> Any:
        """The indices every worker uses at ``step``."""
        return selection.randomk(self.d, self.k, seed=step_seed(self.seed, step), device=device)

    def compress(self, x: Any, *, step: int = 0) -> SharedIndex:
        inp = self._vector(x)
        idx = self.indices(step, inp.device)
        return SharedIndex(idx, selection.gather(x, idx))

    def decompress(self, message: Message) -> Any:
        message = self._message(message)
        return selection.scatter(message.indices, message.values, self.d, check_finite=False)

    def message_nbytes(self, dtype: Any) -> int:
        return self.k * np.dtype(dtype).itemsize


class Threshold(Compressor):
    """Every coordinate with ``|x_i| >= tau``, as (index, value) pairs.

    Parameters
    ----------
    d : int
    tau : float
        Non-negative threshold.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.compress import Threshold
    >>> Threshold(4, tau=1.0).compress(np.array([0.5, -3.0, 1.0, 0.0])).indices.tolist()
    [1, 2]
    """

    message_type = Sparse
    decodes = (Sparse, SharedIndex)

    def __init__(self, d: int, tau: float) -> None:
        super().__init__(d)
        self.tau = _check_nonnegative("tau", tau)

    def compress(self, x: Any, *, step: int = 0) -> Sparse:
        self._vector(x)
        return _sparse(*selection.threshold(x, self.tau), self.d)

    def decompress(self, message: Message) -> Any:
        message = self._message(message)
        return selection.scatter(message.indices, message.values, self.d, check_finite=False)


class CountSketchCompressor(Compressor):
    """A Count Sketch of the vector; decoded by heavy hitters or by the mean desketch.

    Parameters
    ----------
    d : int
    rows, cols : int
        The sketch's size (``rows * cols`` values travel).
    seed : int, default 0
        Hash seed, the same on every worker.
    decode : {"topk", "threshold", "desketch"}, default "topk"
        ``"topk"``: the ``k`` heavy hitters (FetchSGD's ``unSketch(k)``);
        ``"threshold"``: every estimate above ``phi`` times the l2 estimate;
        ``"desketch"``: the linear mean desketch ``R^T S`` of sketch-DL.
    k : int, optional
        Needed by ``decode="topk"``.
    phi : float, optional
        Needed by ``decode="threshold"``.
    dtype : {float32, float64}, default float32
    hash : {"mix", "polynomial"}, default "mix"
    device : {"cpu", "cuda"}, default "cpu"

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.compress import CountSketchCompressor
    >>> x = np.zeros(1000, dtype=np.float32); x[[3, 500]] = [9.0, -7.0]
    >>> c = CountSketchCompressor(1000, rows=5, cols=64, k=2, seed=3)
    >>> msg = c.compress(x)
    >>> msg.nbytes, np.flatnonzero(c.decompress(msg)).tolist()
    (1280, [3, 500])
    """

    message_type = Sketch
    decodes = (Sketch,)
    _DECODERS = ("topk", "threshold", "desketch")

    def __init__(
        self,
        d: int,
        rows: int,
        cols: int,
        *,
        seed: int = 0,
        decode: str = "topk",
        k: int | None = None,
        phi: float | None = None,
        dtype: Any = np.float32,
        hash: str = "mix",
        device: str = "cpu",
    ) -> None:
        super().__init__(d)
        if decode not in self._DECODERS:
            raise ValueError(f"decode must be one of {self._DECODERS}, got {decode!r}")
        if decode == "topk":
            if k is None:
                raise ValueError("decode='topk' needs k")
            k = check_count("k", k, self.d)
        if decode == "threshold":
            if phi is None:
                raise ValueError("decode='threshold' needs phi")
            phi = _check_nonnegative("phi", phi)
        # Validates rows, cols, seed, dtype, hash and device before anything is kept.
        self._template = CountSketch(
            self.d, rows, cols, seed=seed, dtype=dtype, hash=hash, device=device
        )
        self.rows, self.cols, self.seed = int(rows), int(cols), int(seed)
        self.decode, self.k, self.phi = decode, k, phi
        self.dtype, self.hash, self.device = np.dtype(dtype), hash, device

    def new_sketch(self) -> CountSketch:
        """A zero sketch with this compressor's hashes and size."""
        return CountSketch(**self._template.params, device=self.device)

    def compress(self, x: Any, *, step: int = 0) -> Sketch:
        return Sketch(self.new_sketch().accumulate(x, check_finite=False))

    def decompress(self, message: Message) -> Any:
        sketch = self._message(message).sketch
        # A sketch with other hashes or sizes would decode to garbage.
        self._template.check_compatible(sketch, "message.sketch")
        if self.decode == "desketch":
            return sketch.desketch()
        if self.decode == "topk":
            idx, val = sketch.heavy_hitters(self.k)
        else:
            idx, val = sketch.heavy_hitters(threshold=self.phi)
        return selection.scatter(idx, val, self.d, check_finite=False)

    def message_nbytes(self, dtype: Any = None) -> int:
        return self.rows * self.cols * self.dtype.itemsize
