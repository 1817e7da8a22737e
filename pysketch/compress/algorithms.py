"""The distributed algorithms as step objects: W workers' vectors in, one update out.

Each algorithm keeps its server state (replicated on every process) and the
state of the workers held by this process, and turns the local workers'
gradients into the update that every worker applies, ``w -= update``::

    comm = LocalCommunicator(workers=8)            # or MPICommunicator(...)
    algo = FetchSGD(d, lr=0.1, k=1000, rows=5, cols=50_000)
    for t in range(steps):
        grads = [gradient(w, worker) for worker in comm.worker_ids]
        w -= algo.step(grads, comm)

The same object runs in one process, under ``mpiexec`` and inside a PyTorch
DDP hook; only the communicator changes. Sums over workers are divided by W,
so ``lr`` means what it means for minibatch SGD on the mean gradient.

=====================  ======================================================
:class:`SGD`           uncompressed minibatch SGD with (Nesterov) momentum
:class:`MemSGD`        top-k / random-k with error feedback [SCJ18]_
:class:`SketchedSGD`   worker momentum and error, Count Sketch, optional
                       second round of exact values [IRU19]_
:class:`FetchSGD`      momentum and error inside the sketch, on the server
                       [RPU20]_
:class:`SketchDL`      linear sketch of the model delta, mean desketch [SIL24]_
=====================  ======================================================

Every step validates its input (one vector per local worker, shape ``(d,)``,
on the algorithm's device, finite) and the agreement of every process's
parameters before changing any state: a bad call raises on every process and
leaves the algorithm as it was. :meth:`Algorithm.state_dict` and
:meth:`Algorithm.load_state_dict` checkpoint a run (each process saves its share).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from pysketch import _arrays, selection
from pysketch.compress._namespace import device_of, namespace, step_seed
from pysketch.compress.communicators import Communicator
from pysketch.compress.compressors import (
    Compressor,
    CountSketchCompressor,
    Identity,
    RandomK,
    TopK,
    check_count,
)
from pysketch.compress.messages import Dense, Sketch
from pysketch.countsketch import CountSketch
from pysketch.feedback import ErrorFeedback, Momentum

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "FetchSGD",
    "MemSGD",
    "SGD",
    "SketchDL",
    "SketchedSGD",
    "make_algorithm",
]


def _check_real(name: str, value: Any, low: float, high: float = math.inf) -> float:
    """A real number in ``[low, high)``, or a TypeError/ValueError naming ``name``."""
    value = _arrays.check_real(name, value)
    if not low <= value < high:
        raise ValueError(f"{name} must lie in [{low}, {high}), got {value}")
    return value


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _multiple(name: str, factor: float | None, k: int, d: int) -> int | None:
    """``factor * k`` coordinates (at most d), for Sketched-SGD's p1 and p2."""
    if factor is None:
        return None
    factor = _check_real(name, factor, 1.0)
    return min(d, int(round(factor * k)))


class Algorithm:
    """Base class: validation, agreement across processes, worker state, checkpoints.

    Parameters
    ----------
    d : int
        Number of parameters.
    lr : float
        Learning rate (a step may override it, for schedules).
    seed : int, default 0
        Seed of the hashes and of random-k, the same on every process.
    dtype : {float32, float64}, default float32
        Dtype of the state and of the update.
    device : {"cpu", "cuda"}, default "cpu"
        NumPy arrays on the CPU, CuPy arrays on the GPU.
    """

    name: ClassVar[str] = ""
    #: Whether workers keep state (then they cannot be summed before compressing).
    stateful_workers: ClassVar[bool] = False

    def __init__(
        self, d: int, *, lr: float, seed: int = 0, dtype: Any = np.float32, device: str = "cpu"
    ) -> None:
        self.d = _arrays.check_positive_int("d", d)
        self.lr = _check_real("lr", lr, 0.0)
        self.seed = _arrays.check_seed(seed)
        self.dtype = _arrays.check_float_dtype("dtype", dtype)
        self.device = _arrays.check_device(device)
        self.steps = 0
        #: Sum the local workers' vectors before compressing, where linearity makes it
        #: exact (stateless workers, linear compressor): one sketch per process, not per worker.
        self.presum = True
        self._worker_ids: tuple[int, ...] | None = None
        self._workers: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- params
    @property
    def params(self) -> dict[str, Any]:
        """The constructor's arguments: every process must pass the same."""
        names = ("d", "lr", "seed", "dtype", "device", *self._PARAMS)
        return {n: getattr(self, n) for n in names}

    _PARAMS: ClassVar[tuple[str, ...]] = ()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ step
    def step(self, vectors: Sequence[Any], comm: Communicator, *, lr: float | None = None) -> Any:
        """One training step: the local workers' vectors in, the update out.

        Parameters
        ----------
        vectors : list of arrays of shape (d,)
            One per worker of ``comm.worker_ids``, in that order: gradients
            (:class:`SketchDL`: model deltas). NumPy on the CPU, CuPy on the GPU.
        comm : Communicator
            Combines the workers' messages and counts the bytes; its step is
            closed before returning (``comm.last_step`` is this step's traffic).
        lr : float, optional
            This step's learning rate (default: ``self.lr``).

        Returns
        -------
        update : array of shape (d,)
            The same on every process; apply it as ``w -= update``.

        Raises
        ------
        ValueError, TypeError
            On every process, when any passes a bad vector, learning rate or
            different parameters; nothing is changed then.
        pysketch.errors.NonFiniteError
            (a ``ValueError``) when a vector holds NaN or Inf; a plain
            ``ValueError`` when a value would overflow the algorithm's dtype.
        """
        return self._run(vectors, comm, lr, summed=False)

    def step_summed(self, local_sum: Any, comm: Communicator, *, lr: float | None = None) -> Any:
        """:meth:`step`, given the sum of this process's workers' vectors instead of each.

        Only for algorithms whose workers keep no state (``stateful_workers``
        false: SGD, FetchSGD, sketch-DL without error feedback), where
        compressing the sum is exact by linearity. A simulator can then add
        the gradients up as it computes them and hold one vector, not W.

        Parameters
        ----------
        local_sum : array of shape (d,)
            The sum of the vectors of the workers ``comm.worker_ids``.
        comm, lr
            As in :meth:`step`; the bytes counted are still those of every worker.

        Examples
        --------
        >>> import numpy as np
        >>> from pysketch.compress import SGD, LocalCommunicator
        >>> SGD(2, lr=1.0).step_summed(np.array([4.0, 8.0]), LocalCommunicator(4)).tolist()
        [1.0, 2.0]
        """
        if self.stateful_workers:
            raise TypeError(
                f"{type(self).__name__} keeps state on each worker: pass every worker's "
                "vector to step()"
            )
        return self._run(local_sum, comm, lr, summed=True)

    def _run(self, vectors: Any, comm: Communicator, lr: float | None, *, summed: bool) -> Any:
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a pysketch Communicator, got {type(comm).__name__}")
        checked, error = None, None
        try:
            step_lr = self.lr if lr is None else _check_real("lr", lr, 0.0)
            if summed:
                checked = [self._check_vector(vectors, "local_sum")]
            else:
                checked = self._check_vectors(vectors, comm)
            self._check_layout(comm)
        except (TypeError, ValueError) as exc:
            error = exc
        fingerprint = {**self.params, "steps": self.steps, "step lr": lr, "type": self.name}
        comm.agree(f"{type(self).__name__}.step", fingerprint, error)
        if self._worker_ids is None:
            self._worker_ids = tuple(comm.worker_ids)
            self._workers = [self._new_worker() for _ in self._worker_ids]
        update = self._step(checked, comm, step_lr)
        comm.step()
        self.steps += 1
        return update

    def _check_vectors(self, vectors: Sequence[Any], comm: Communicator) -> list[Any]:
        if not isinstance(vectors, Sequence) or isinstance(vectors, (str, bytes)):
            raise TypeError(f"vectors must be a list of arrays, got {type(vectors).__name__}")
        if len(vectors) != comm.local_workers:
            raise ValueError(
                f"vectors must hold one array per local worker ({comm.local_workers}), "
                f"got {len(vectors)}"
            )
        return [self._check_vector(x, f"vectors[{w}]") for w, x in enumerate(vectors)]

    def _check_vector(self, x: Any, name: str) -> Any:
        try:
            xp = namespace(x)
        except TypeError as exc:
            raise TypeError(f"{name}: {exc}") from None
        if device_of(x) != self.device:
            raise ValueError(f"{name} is on {device_of(x)!r}, the algorithm on {self.device!r}")
        if x.shape != (self.d,):
            raise ValueError(f"{name} must have shape ({self.d},), got {tuple(x.shape)}")
        if np.dtype(x.dtype).kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        # NaN or Inf, and values that the cast to the algorithm's dtype would make inf.
        _arrays.check_finite(_arrays.as_input(x, name, device=self.device), name, into=self.dtype)
        return xp.asarray(x, dtype=self.dtype)

    def _check_layout(self, comm: Communicator) -> None:
        if self._worker_ids is not None and tuple(comm.worker_ids) != self._worker_ids:
            raise ValueError(
                f"comm holds workers {list(comm.worker_ids)} but this algorithm's state is for "
                f"workers {list(self._worker_ids)}"
            )

    def _local_sum(self, vectors: list[Any]) -> Any:
        total = vectors[0].copy()
        for x in vectors[1:]:
            total += x
        return total

    def _combine_linear(self, compressor: Compressor, vectors: list[Any], comm: Communicator):
        """Sum of W workers' messages; presummed where that is exact (or given summed)."""
        summed_input = len(vectors) < comm.local_workers
        if summed_input or (self.presum and not self.stateful_workers):
            return comm.combine_local_sum(compressor.compress(self._local_sum(vectors)))
        return comm.combine([compressor.compress(x) for x in vectors])

    def _step(self, vectors: list[Any], comm: Communicator, lr: float) -> Any:
        raise NotImplementedError

    def _new_worker(self, init: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """A worker's state (ErrorFeedback / Momentum objects), from ``init`` if given."""
        return {}

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """This process's share of the state: host arrays and plain scalars, no pickle.

        Keys: ``"algorithm"``, ``"steps"``, ``"worker_ids"`` and the
        algorithm's arrays (``"server.<name>"``, ``"workers.<name>"`` stacked
        over this process's workers).
        """
        state: dict[str, Any] = {"algorithm": self.name, "steps": self.steps}
        state["worker_ids"] = np.asarray(self._worker_ids or (), dtype=np.int64)
        for key, value in self._server_state().items():
            state[f"server.{key}"] = _to_host(value)
        if self._workers:
            for key in self._workers[0]:
                state[f"workers.{key}"] = np.stack([_worker_vector(w[key]) for w in self._workers])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; validates everything before changing anything."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        if state.get("algorithm") != self.name:
            raise ValueError(
                f"state['algorithm'] must be {self.name!r}, got {state.get('algorithm')!r}"
            )
        steps = state.get("steps")
        if isinstance(steps, np.ndarray):
            steps = steps.item()
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise ValueError(f"state['steps'] must be a non-negative integer, got {steps!r}")
        ids = tuple(int(i) for i in np.asarray(state.get("worker_ids", ()), dtype=np.int64))
        server = {}
        for key, current in self._server_state().items():
            server[key] = self._checked_array(state, f"server.{key}", _to_host(current).shape)
        workers: list[dict[str, Any]] = []
        if ids:
            template = self._new_worker()
            stacks = {
                key: self._checked_array(state, f"workers.{key}", (len(ids), self.d))
                for key in template
            }
            for w in range(len(ids)):
                workers.append({key: stacks[key][w] for key in template})
        self._load_server_state(server)
        self._worker_ids = ids or None
        self._workers = [self._new_worker(init=w) for w in workers]
        self.steps = int(steps)

    def _checked_array(self, state: dict[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in state:
            raise ValueError(f"state lacks {key!r}")
        arr = np.asarray(state[key])
        if arr.shape != tuple(shape):
            raise ValueError(f"state[{key!r}] must have shape {tuple(shape)}, got {arr.shape}")
        if arr.dtype.kind != "f" or not np.isfinite(arr).all():
            raise ValueError(f"state[{key!r}] must hold finite floats")
        return arr.astype(self.dtype)

    def _server_state(self) -> dict[str, Any]:
        return {}

    def _load_server_state(self, server: dict[str, np.ndarray]) -> None:
        pass


def namespace_of_device(device: str):
    """NumPy for ``"cpu"``, CuPy for ``"cuda"`` (the algorithms need CuPy on a GPU)."""
    if device == "cpu":
        return np
    try:
        import cupy
    except ImportError:
        raise RuntimeError("pysketch.compress on device='cuda' needs CuPy") from None
    return cupy


def _to_host(value: Any) -> np.ndarray:
    if isinstance(value, CountSketch):
        return value.table_to_host()
    return value if isinstance(value, np.ndarray) else value.get()


def _worker_vector(value: Any) -> np.ndarray:
    vec = value.memory if isinstance(value, ErrorFeedback) else value.buffer
    return _to_host(vec).copy()


def _dense_state(cls, algo: Algorithm, init: np.ndarray | None, **kwargs):
    state = cls(algo.d, dtype=algo.dtype, device=algo.device, **kwargs)
    if init is not None:
        state.load_state_dict({cls._STATE_KEY: init})
    return state


# =============================================================== baselines
class SGD(Algorithm):
    """Uncompressed minibatch SGD: an allreduce of ``d`` values, server momentum.

    ``u = rho u + mean_i g_i``; ``update = lr u`` (Nesterov: ``lr (g + rho u)``).

    Parameters
    ----------
    d, lr, seed, dtype, device
        See :class:`Algorithm`.
    rho : float, default 0.0
        Momentum in ``[0, 1)``.
    nesterov : bool, default False

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.compress import SGD, LocalCommunicator
    >>> comm = LocalCommunicator(workers=2)
    >>> algo = SGD(3, lr=0.5)
    >>> algo.step([np.array([1.0, 2, 3]), np.array([3.0, 2, 1])], comm).tolist()
    [1.0, 1.0, 1.0]
    >>> comm.last_step.upload    # d float32 values per worker
    12.0
    """

    name = "sgd"
    _PARAMS = ("rho", "nesterov")

    def __init__(
        self, d: int, *, lr: float, rho: float = 0.0, nesterov: bool = False, **kw
    ) -> None:
        super().__init__(d, lr=lr, **kw)
        self.rho = _check_real("rho", rho, 0.0, 1.0)
        self.nesterov = _arrays.check_bool("nesterov", nesterov)
        self._compressor = Identity(self.d)
        self._momentum = Momentum(
            self.d, rho=self.rho, nesterov=self.nesterov, dtype=self.dtype, device=self.device
        )

    def _step(self, vectors, comm, lr):
        total = self._combine_linear(self._compressor, vectors, comm)
        mean = self._compressor.decompress(total) / comm.world_size
        return lr * self._momentum.update(mean, check_finite=False)

    def _server_state(self):
        return {"momentum": self._momentum.buffer}

    def _load_server_state(self, server):
        self._momentum.load_state_dict({"buffer": server["momentum"]})


class MemSGD(Algorithm):
    """mem-SGD [SCJ18]_: top-k or random-k of an error-feedback memory on every worker.

    Worker ``i``: ``m_i += lr g_i``; sends ``comp(m_i)``; ``m_i -= comp(m_i)``.
    Update: the mean of the workers' sparse vectors. Top-k pairs are
    allgathered; random-k values (shared indices) are allreduced.

    With worker momentum ``rho > 0`` (the local top-k of FetchSGD's released
    code [RPU20]_): ``u_i = rho u_i + g_i`` and ``m_i += lr u_i``; after
    sending, ``u_i`` is zeroed at the coordinates sent (momentum masking), as
    ``m_i`` is, so a coordinate's momentum does not keep pushing an update
    that has already been applied.

    Parameters
    ----------
    d, lr, seed, dtype, device
        See :class:`Algorithm`.
    k : int
        Coordinates each worker sends, in ``[1, d]``.
    compressor : {"topk", "randomk"}, default "topk"
    memory : bool, default True
        ``False`` sends ``comp(lr g_i)`` (``comp(lr u_i)`` with momentum) and
        forgets the rest (the biased baseline that converges worse).
    rho : float, default 0.0
        Worker momentum in ``[0, 1)``, masked where a worker sent.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.compress import MemSGD, LocalCommunicator
    >>> comm = LocalCommunicator(workers=1)
    >>> algo = MemSGD(4, lr=1.0, k=1)
    >>> g = np.array([1.0, -3.0, 0.0, 2.0])
    >>> algo.step([g], comm).tolist(), algo.step([0 * g], comm).tolist()
    ([0.0, -3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0])
    """

    name = "memsgd"
    stateful_workers = True
    _PARAMS = ("k", "compressor", "memory", "rho")

    def __init__(
        self,
        d: int,
        *,
        lr: float,
        k: int,
        compressor: str = "topk",
        memory: bool = True,
        rho: float = 0.0,
        **kw,
    ) -> None:
        super().__init__(d, lr=lr, **kw)
        self.k = check_count("k", k, self.d)
        self.compressor = _check_choice("compressor", compressor, ("topk", "randomk"))
        self.memory = _arrays.check_bool("memory", memory)
        self.rho = _check_real("rho", rho, 0.0, 1.0)
        self._comp = (
            TopK(self.d, self.k)
            if compressor == "topk"
            else RandomK(self.d, self.k, seed=self.seed)
        )

    def _new_worker(self, init: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        worker = {}
        if self.memory:
            worker["memory"] = _dense_state(ErrorFeedback, self, init and init["memory"])
        if self.rho:
            worker["momentum"] = _dense_state(
                Momentum, self, init and init["momentum"], rho=self.rho
            )
        return worker

    def _step(self, vectors, comm, lr):
        return self._server_update(comm.combine(self._local_messages(vectors, lr)), comm, lr)

    def _local_messages(self, vectors, lr):
        """What this process's workers send (their state moves on); no communication."""
        messages = []
        for worker, g in zip(self._workers, vectors, strict=True):
            if self.rho:
                g = worker["momentum"].update(g, check_finite=False)
            if self.memory:
                ef = worker["memory"]
                ef.add(g, scale=lr, check_finite=False)
                msg = self._comp.compress(ef.memory, step=self.steps)
                ef.subtract_sparse(msg.indices, msg.values, check_finite=False)
            else:
                msg = self._comp.compress(lr * g, step=self.steps)
            if self.rho:
                worker["momentum"].zero_at(msg.indices)
            messages.append(msg)
        return messages

    def _server_update(self, combined, comm, lr):
        """The update, from the combination of every worker's messages."""
        return self._comp.decompress(combined) / self.dtype.type(comm.world_size)


# ================================================================ sketches
class _SketchAlgorithm(Algorithm):
    """Shared set-up of the Count Sketch algorithms."""

    def _make_compressor(self, rows: int, cols: int, hash: str, **decode) -> None:
        self.rows, self.cols, self.hash = rows, cols, hash
        self._sketcher = CountSketchCompressor(
            self.d,
            rows,
            cols,
            seed=self.seed,
            dtype=self.dtype,
            hash=hash,
            device=self.device,
            **decode,
        )
        self.rows, self.cols = self._sketcher.rows, self._sketcher.cols


class SketchedSGD(_SketchAlgorithm):
    """Sketched-SGD [IRU19]_: momentum and error on the workers, heavy hitters of the sketch sum.

    Worker ``i``: ``u_i = rho u_i + g_i``; ``v_i += u_i``; sends the sketch of
    ``v_i`` (or of its top ``p1 k`` coordinates). The server sums the
    sketches and takes the ``k`` heavy hitters; with ``p2``, it takes
    ``p2 k`` candidates ``H`` instead and a second round allreduces the exact
    ``v_i[H]``, of which the top ``k`` are applied. Every worker then zeroes
    ``v_i`` (and, with momentum stopping, ``u_i``) on the applied support.
    ``update = lr * sum / W``.

    Parameters
    ----------
    d, lr, seed, dtype, device
        See :class:`Algorithm`.
    k : int
        Coordinates updated per step.
    rows, cols : int
        Count Sketch size.
    rho : float, default 0.9
    p1 : float, optional
        Sketch only the top ``p1 * k`` coordinates of ``v_i`` (``p1 >= 1``).
    p2 : float, optional
        Second round over ``p2 * k`` candidates (``p2 >= 1``).
    momentum_stopping : bool, default True
    hash : {"mix", "polynomial"}, default "mix"

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.compress import SketchedSGD, LocalCommunicator
    >>> comm = LocalCommunicator(workers=2)
    >>> algo = SketchedSGD(1000, lr=1.0, k=1, rows=5, cols=64, rho=0.0, p2=4)
    >>> g = np.zeros(1000); g[7] = 4.0
    >>> update = algo.step([g, g], comm)
    >>> np.flatnonzero(update).tolist(), float(update[7])
    ([7], 4.0)
    """

    name = "sketched_sgd"
    stateful_workers = True
    _PARAMS = ("k", "rows", "cols", "rho", "p1", "p2", "momentum_stopping", "hash")

    def __init__(
        self,
        d: int,
        *,
        lr: float,
        k: int,
        rows: int,
        cols: int,
        rho: float = 0.9,
        p1: float | None = None,
        p2: float | None = None,
        momentum_stopping: bool = True,
        hash: str = "mix",
        **kw,
    ) -> None:
        super().__init__(d, lr=lr, **kw)
        self.k = check_count("k", k, self.d)
        self.rho = _check_real("rho", rho, 0.0, 1.0)
        self.p1, self.p2 = p1, p2
        self._n1 = _multiple("p1", p1, self.k, self.d)
        self._n2 = _multiple("p2", p2, self.k, self.d)
        self.momentum_stopping = _arrays.check_bool("momentum_stopping", momentum_stopping)
        self._make_compressor(rows, cols, hash, k=self._n2 or self.k)

    def _new_worker(self, init: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        return {
            "momentum": _dense_state(Momentum, self, init and init["momentum"], rho=self.rho),
            "error": _dense_state(ErrorFeedback, self, init and init["error"]),
        }

    def _step(self, vectors, comm, lr):
        sketches = []
        for worker, g in zip(self._workers, vectors, strict=True):
            u = worker["momentum"].update(g, check_finite=False)
            worker["error"].add(u, check_finite=False)
            v = worker["error"].memory
            if self._n1 is None:
                sketches.append(self._sketcher.compress(v))
            else:
                idx, val = selection.topk(v, self._n1, check_finite=False)
                sketches.append(Sketch(self._sketcher.new_sketch().accumulate_sparse(idx, val)))
        summed = comm.combine(sketches).sketch
        if self._n2 is None:
            idx, val = summed.heavy_hitters(self.k)
        else:
            candidates, _ = summed.heavy_hitters(self._n2)
            exact = comm.combine(
                [Dense(selection.gather(w["error"].memory, candidates)) for w in self._workers]
            ).values
            pos, val = selection.topk(exact, self.k, check_finite=False)
            idx = selection.gather(candidates, pos)
        for worker in self._workers:
            worker["error"].zero_at(idx)
            if self.momentum_stopping:
                worker["momentum"].zero_at(idx)
        scale = self.dtype.type(lr / comm.world_size)
        return selection.scatter(idx, val * scale, self.d, check_finite=False)


class FetchSGD(_SketchAlgorithm):
    """FetchSGD [RPU20]_: stateless workers, momentum and error accumulated in sketches.

    Workers send the sketch of their gradient. The server keeps
    ``S_u = rho S_u + mean_i S(g_i)`` and ``S_e += lr S_u``, and applies
    ``delta = unSketch(S_e, k)`` (the ``k`` largest estimates). Then, by
    ``error``:

    ``"subtract"`` (the paper)
        ``S_e -= S(delta)``.
    ``"zero"`` (the released code)
        every cell of ``S_e`` and ``S_u`` that the support of ``delta``
        hashes to is set to zero.

    Workers hold no state, so a process sums its workers' gradients and
    sketches once (exact by linearity; ``presum = False`` turns it off).

    Parameters
    ----------
    d, lr, seed, dtype, device
        See :class:`Algorithm`.
    k : int
        Coordinates updated per step.
    rows, cols : int
        Count Sketch size: ``rows * cols`` values per worker and step.
    rho : float, default 0.9
    error : {"subtract", "zero"}, default "zero"
    hash : {"mix", "polynomial"}, default "mix"

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.compress import FetchSGD, LocalCommunicator
    >>> comm = LocalCommunicator(workers=4)
    >>> algo = FetchSGD(10_000, lr=0.5, k=2, rows=5, cols=200, rho=0.0)
    >>> g = np.zeros(10_000, dtype=np.float32); g[[3, 42]] = [2.0, -4.0]
    >>> update = algo.step([g] * 4, comm)
    >>> np.flatnonzero(update).tolist(), update[[3, 42]].tolist()
    ([3, 42], [1.0, -2.0])
    >>> comm.last_step.upload    # one 5 x 200 float32 table per worker
    4000.0
    """

    name = "fetchsgd"
    _PARAMS = ("k", "rows", "cols", "rho", "error", "hash")

    def __init__(
        self,
        d: int,
        *,
        lr: float,
        k: int,
        rows: int,
        cols: int,
        rho: float = 0.9,
        error: str = "zero",
        hash: str = "mix",
        **kw,
    ) -> None:
        super().__init__(d, lr=lr, **kw)
        self.k = check_count("k", k, self.d)
        self.rho = _check_real("rho", rho, 0.0, 1.0)
        self.error = _check_choice("error", error, ("subtract", "zero"))
        self._make_compressor(rows, cols, hash, k=self.k)
        self._momentum = self._sketcher.new_sketch()
        self._error = self._sketcher.new_sketch()

    def _step(self, vectors, comm, lr):
        return self._server_update(self._combine_linear(self._sketcher, vectors, comm), comm, lr)

    def _local_messages(self, vectors, lr):
        """The one sketch this process sends: of its workers' sum (no communication)."""
        local = vectors[0] if len(vectors) == 1 else self._local_sum(vectors)
        return [self._sketcher.compress(local)]

    def _server_update(self, combined, comm, lr):
        """Momentum, error and the unsketched update, from the sum of every worker's sketch."""
        mean = combined.sketch
        mean.scale(1.0 / comm.world_size)
        self._momentum.scale(self.rho).add(mean)
        self._error._axpy(lr, self._momentum)  # in place: `momentum * lr` would copy the table
        idx, val = self._error.heavy_hitters(self.k)
        if self.error == "subtract":
            self._error.subtract(self._sketcher.new_sketch().accumulate_sparse(idx, val))
        else:
            self._error.zero_buckets(idx)
            self._momentum.zero_buckets(idx)
        return selection.scatter(idx, val, self.d, check_finite=False)

    def _server_state(self):
        return {"momentum": self._momentum, "error": self._error}

    def _load_server_state(self, server):
        xp = namespace_of_device(self.device)
        self._momentum.table[...] = xp.asarray(server["momentum"])
        self._error.table[...] = xp.asarray(server["error"])


class SketchDL(_SketchAlgorithm):
    """sketch-DL [SIL24]_: sketch the model delta, average, desketch linearly.

    Client ``i`` sends ``R(delta_i)``; the update is
    ``lr * R^T(mean_i R(delta_i))`` with the mean desketch ``R^T``
    (:meth:`~pysketch.CountSketch.desketch`): linear and unbiased, no top-k.
    With ``error_feedback`` the client sends ``p_i = delta_i + e_i`` and keeps
    ``e_i = p_i - R^T R p_i``. Local steps are the caller's: pass the deltas
    ``w - w_i`` (with one local step, just the gradients).

    With the same hashes every round, every update lies in the ``b``-dimensional
    row space of ``R^T R``; ``reseed=True`` draws fresh hashes each round (from
    ``seed`` and the step, the same on every worker), an independent sketch per
    round as in analyses that assume one.

    Parameters
    ----------
    d, lr, seed, dtype, device
        See :class:`Algorithm` (``lr`` is the global, server-side rate).
    rows, cols : int
        Count Sketch size, ``b = rows * cols``.
    error_feedback : bool, default False
    reseed : bool, default False
        New hashes every round.
    hash : {"mix", "polynomial"}, default "mix"

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.compress import SketchDL, LocalCommunicator
    >>> comm = LocalCommunicator(workers=2)
    >>> algo = SketchDL(3, lr=1.0, rows=4, cols=32, seed=2)
    >>> algo.step([np.array([1.0, 2, 3]), np.array([3.0, 2, 1])], comm).tolist()
    [2.0, 2.0, 2.0]
    """

    name = "sketchdl"
    _PARAMS = ("rows", "cols", "error_feedback", "reseed", "hash")

    def __init__(
        self,
        d: int,
        *,
        lr: float,
        rows: int,
        cols: int,
        error_feedback: bool = False,
        reseed: bool = False,
        hash: str = "mix",
        **kw,
    ) -> None:
        super().__init__(d, lr=lr, **kw)
        self.error_feedback = _arrays.check_bool("error_feedback", error_feedback)
        self.reseed = _arrays.check_bool("reseed", reseed)
        self.stateful_workers = self.error_feedback
        self._make_compressor(rows, cols, hash, decode="desketch")

    def _new_worker(self, init: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        if not self.error_feedback:
            return {}
        return {"error": _dense_state(ErrorFeedback, self, init and init["error"])}

    def _step(self, vectors, comm, lr):
        sketcher = self._sketcher
        if self.reseed:
            sketcher = CountSketchCompressor(
                self.d,
                self.rows,
                self.cols,
                seed=step_seed(self.seed, self.steps),
                decode="desketch",
                dtype=self.dtype,
                hash=self.hash,
                device=self.device,
            )
        if not self.error_feedback:
            total = self._combine_linear(sketcher, vectors, comm)
        else:
            messages = []
            for worker, delta in zip(self._workers, vectors, strict=True):
                ef = worker["error"]
                ef.add(delta, check_finite=False)
                msg = sketcher.compress(ef.memory)
                ef.add(msg.sketch.desketch(), scale=-1.0, check_finite=False)
                messages.append(msg)
            total = comm.combine(messages)
        return sketcher.decompress(total) * self.dtype.type(lr / comm.world_size)


ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (SGD, MemSGD, SketchedSGD, FetchSGD, SketchDL)
}


def make_algorithm(name: str, d: int, **params: Any) -> Algorithm:
    """The algorithm called ``name`` (a key of :data:`ALGORITHMS`), built with ``params``.

    Examples
    --------
    >>> from pysketch.compress import make_algorithm
    >>> algo = make_algorithm("memsgd", 100, lr=0.1, k=5)
    >>> type(algo).__name__, algo.k, algo.compressor, algo.memory
    ('MemSGD', 5, 'topk', True)
    """
    if name not in ALGORITHMS:
        raise ValueError(f"name must be one of {sorted(ALGORITHMS)}, got {name!r}")
    return ALGORITHMS[name](d, **params)
