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
:class:`TrueTopK`      dense upload, top-k of the server's momentum and error
                       (FetchSGD's released code) [RPU20]_
:class:`MemSGD`        top-k / random-k with error feedback [SCJ18]_
:class:`SketchedSGD`   worker momentum and error, Count Sketch, optional
                       second round of exact values [IRU19]_
:class:`FetchSGD`      momentum and error inside the sketch, on the server
                       [RPU20]_
:class:`SketchDL`      linear sketch of the model delta, mean desketch [SIL24]_
=====================  ======================================================

Every step validates its input (one vector per local worker, shape ``(d,)``,
on the algorithm's device) and the agreement of every process's parameters
before doing anything; it then computes into scratch and counts, on the
device, NaN and Inf values and overflows of the dtype, in its input, in the
workers' and the server's new state and in the update. The counts travel with
the step's collective, so a bad value on one process raises the same error on
every process, and a failed step leaves the algorithm (and the communicator's
byte counts) as they were. :meth:`Algorithm.state_dict` and
:meth:`Algorithm.load_state_dict` checkpoint a run (each process saves its
share). On a GPU the step is preallocated and waits for the device once, to
read those counts (see :mod:`pysketch.compress._step`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from pysketch import _arrays, _cuda, _dense, _frameworks, selection
from pysketch._arrays import CPU, Input
from pysketch.compress import _step
from pysketch.compress.communicators import Communicator, _Participants
from pysketch.compress.compressors import (
    CountSketchCompressor,
    RandomK,
    check_count,
    step_seed,
)
from pysketch.compress.messages import index_dtype
from pysketch.compress.participation import (
    ChangedWeights,
    check_participation,
    sample_participants,
)
from pysketch.kernels import reductions
from pysketch.kernels.countsketch import L2_THRESHOLD

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "FetchSGD",
    "MemSGD",
    "SGD",
    "SketchDL",
    "SketchedSGD",
    "TrueTopK",
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


def _check_positive(name: str, value: Any) -> float:
    """A finite real number above 0, or a TypeError/ValueError naming ``name``."""
    value = _check_real(name, value, 0.0)
    if value == 0.0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _check_lr_placement(value: Any) -> str:
    """Where the learning rate goes: ``"state"`` (into the error or memory, as the papers
    write it) or ``"update"`` (onto the update, as FetchSGD's released code does)."""
    return _check_choice("lr_placement", value, ("state", "update"))


def _multiple(name: str, factor: float | None, k: int, d: int) -> int | None:
    """``factor * k`` coordinates (at most d), for Sketched-SGD's p1 and p2."""
    if factor is None:
        return None
    factor = _check_real(name, factor, 1.0)
    return min(d, int(round(factor * k)))


def _plain(value: Any) -> Any:
    """A parameter as a plain JSON value (dtypes by name)."""
    if isinstance(value, np.dtype):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _in_framework_of(owner: Any, view: Any, reference: Any) -> Any:
    """The new update in the caller's framework: NumPy, CuPy or PyTorch as ``reference``,
    and for other CUDA arrays (Numba's) the Numba ``view``."""
    if _dense.on_cpu(owner) or _frameworks.is_torch(reference):
        return _frameworks.like(owner, reference)
    return owner if type(reference).__module__.split(".")[0] == "cupy" else view


def _host_copy(array: Any) -> np.ndarray:
    return array.copy() if _dense.on_cpu(array) else _cuda.to_host(array)


class Algorithm:
    """Base class: validation, agreement across processes, state, checkpoints.

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
        NumPy arrays on the CPU; on the GPU any CUDA array (CuPy, PyTorch,
        Numba device arrays).
    participation : float or int, default 1.0
        The workers that take part in each step: a fraction of W in
        ``(0, 1]`` or a number of workers (see
        :mod:`pysketch.compress.participation`). Each step draws them from
        ``seed`` and the step number, the same on every process
        (:meth:`participants`), takes their vectors only and averages over
        them; the others' state stays as it was (mem-SGD's memory and
        Sketched-SGD's error go stale), and the bytes counted are those of
        the participants.
    download : {"collective", "changed"}, default "collective"
        How a worker's download is counted: what the step's collectives
        deliver to it, or, as FetchSGD's released code counts it, the values
        of the weights that changed since it last took part
        (:class:`~pysketch.compress.participation.ChangedWeights`; on CUDA
        that reads the update back, one more wait for the device).
        ``"topk"``: each worker keeps a replica of the weights and, in the
        rounds it takes part in, downloads only the ``download_k`` largest
        entries of the difference (FetchSGD's released code's
        ``do_topk_down``): it trains on its replica (:meth:`worker_weights`)
        and downloads ``download_k`` (index, value) pairs.
    download_k : int, optional
        The entries a worker downloads, with ``download="topk"``.
    """

    name: ClassVar[str] = ""
    #: Whether workers keep state (then they cannot be summed before compressing).
    stateful_workers: ClassVar[bool] = False

    def __init__(
        self,
        d: int,
        *,
        lr: float,
        seed: int = 0,
        dtype: Any = np.float32,
        device: str = "cpu",
        participation: float | int = 1.0,
        download: str = "collective",
        download_k: int | None = None,
    ) -> None:
        self.d = _arrays.check_positive_int("d", d)
        self.lr = _check_real("lr", lr, 0.0)
        self.seed = _arrays.check_seed(seed)
        self.dtype = _arrays.check_float_dtype("dtype", dtype)
        self.device = _arrays.check_device(device)
        self.participation = check_participation(participation)
        self.download = _check_choice("download", download, ("collective", "changed", "topk"))
        self.download_k = download_k
        if download == "topk":
            self.download_k = check_count("download_k", download_k, self.d)
        elif download_k is not None:
            raise ValueError(f"download_k is for download='topk', not {download!r}")
        self._changed: ChangedWeights | None = None
        #: download="topk": the weights each local worker holds, and the step they were pulled.
        self._replicas: list[Any] | None = None
        self._pulled: tuple[int, list[Any]] | None = None
        self.steps = 0
        #: Sum the local workers' vectors before compressing, where linearity makes it
        #: exact (stateless workers, linear compressor): one sketch per process, not per worker.
        self.presum = True
        self._worker_ids: tuple[int, ...] | None = None
        self._workers: list[dict[str, Any]] = []
        self._server: dict[str, Any] = {}
        self._workspace = _step.Workspace(self.device)

    # ---------------------------------------------------------------- params
    @property
    def params(self) -> dict[str, Any]:
        """The constructor's arguments: every process must pass the same."""
        names = ("d", "lr", "seed", "dtype", "device", "participation", "download", "download_k")
        names += self._PARAMS
        return {n: getattr(self, n) for n in names}

    _PARAMS: ClassVar[tuple[str, ...]] = ()
    # What a checkpoint must match: all but the learning rate (schedules change it) and
    # the device (a run may resume on another).
    _FREE_PARAMS: ClassVar[tuple[str, ...]] = ("lr", "device")

    def _recorded_params(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self.params.items() if k not in self._FREE_PARAMS}

    def __repr__(self) -> str:
        """``d``, ``lr`` and the parameters that differ from their defaults (as
        scikit-learn prints estimators)."""
        defaults = {}
        for cls in reversed(type(self).__mro__):
            if "__init__" in vars(cls):
                for p in inspect.signature(cls.__init__).parameters.values():
                    if p.default is not inspect.Parameter.empty:
                        defaults[p.name] = p.default
        shown = {
            k: v
            for k, v in self.params.items()
            if k in ("d", "lr") or k not in defaults or not _same_default(v, defaults[k])
        }
        args = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ step
    def participants(self, comm: Communicator) -> np.ndarray:
        """The global ids of ``comm``'s local workers that take part in the next step.

        :meth:`step` takes their vectors, in this order (every local worker's
        with the default ``participation=1.0``). See
        :func:`~pysketch.compress.sample_participants`.

        Examples
        --------
        >>> import numpy as np
        >>> from pysketch.compress import SGD, LocalCommunicator
        >>> algo, comm = SGD(2, lr=1.0, participation=2), LocalCommunicator(workers=10)
        >>> ids = algo.participants(comm)
        >>> update = algo.step([np.full(2, float(i)) for i in ids], comm)
        >>> bool(update[0] == ids.mean()), comm.last_step.upload   # 2 workers' 2 float32
        (True, 8.0)
        """
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a pysketch Communicator, got {type(comm).__name__}")
        active = self._active(comm)
        return active.ids if isinstance(active, _Participants) else np.asarray(comm.worker_ids)

    def worker_weights(self, w: Any, comm: Communicator) -> list[Any]:
        """The weights each worker of :meth:`participants` trains on in the next step.

        ``w`` itself for each, unless ``download="topk"``: then each keeps a
        replica of the weights, and downloads the ``download_k`` entries of
        ``w - replica`` of largest magnitude into it, as FetchSGD's released
        code does (``do_topk_down``): a client that took part long ago trains
        on weights that lag the server's. The first call gives every local
        worker a replica of ``w`` (call it first with the initial weights).
        Calling it again before :meth:`step` returns the same replicas.

        Parameters
        ----------
        w : array of shape (d,)
            The current weights, on the algorithm's device.
        comm : Communicator

        Returns
        -------
        list of arrays of shape (d,)
            One per participant, in :meth:`participants`' order; the
            replicas themselves (read them, do not write them).

        Examples
        --------
        >>> import numpy as np
        >>> from pysketch.compress import SGD, LocalCommunicator
        >>> algo = SGD(3, lr=1.0, download="topk", download_k=1)
        >>> comm = LocalCommunicator(workers=1)
        >>> w = np.zeros(3, dtype=np.float32)
        >>> algo.worker_weights(w, comm)[0].tolist()
        [0.0, 0.0, 0.0]
        >>> w = w - algo.step([np.array([1.0, -3.0, 2.0], np.float32)], comm)
        >>> algo.worker_weights(w, comm)[0].tolist(), comm.last_step.download
        ([0.0, 3.0, 0.0], 8.0)
        """
        ids = self.participants(comm)
        if self.download != "topk":
            return [w] * len(ids)
        if self._pulled is not None and self._pulled[0] == self.steps:
            return list(self._pulled[1])
        w = self._input(w, "w").array
        stream = _cuda.stream_for(w) if self.device != CPU else 0
        if self._replicas is None:
            self._replicas = []
            for _ in comm.worker_ids:
                replica = _dense.empty(self.d, self.dtype, self.device, stream)
                _dense.copy(replica, w, stream)
                self._replicas.append(replica)
        elif len(self._replicas) != len(comm.worker_ids):
            raise ValueError(
                f"comm holds {len(comm.worker_ids)} workers, the replicas are of "
                f"{len(self._replicas)}"
            )
        behind = _dense.empty(self.d, self.dtype, self.device, stream)
        pulled = []
        for i in ids:
            replica = self._replicas[int(i) - comm.worker_ids[0]]
            _dense.axpby(behind, w, -1.0, replica, stream)  # w - replica
            idx, val = selection.topk(behind, self.download_k, sorted=False, check_finite=False)
            _dense.scatter_add(replica, idx, val, 1, stream)
            pulled.append(replica)
        self._pulled = (self.steps, pulled)
        return list(pulled)

    @property
    def _everyone(self) -> bool:
        """Whether every worker takes part (the float 1.0; the int 1 is one worker)."""
        return isinstance(self.participation, float) and self.participation == 1.0

    def _active(self, comm: Communicator) -> Communicator:
        """``comm``, or the view of the workers that take part in this step."""
        if self._everyone:
            return comm
        ids = sample_participants(
            comm.world_size, self.participation, seed=self.seed, step=self.steps
        )
        return comm if len(ids) == comm.world_size else _Participants(comm, ids)

    def step(
        self,
        vectors: Sequence[Any],
        comm: Communicator,
        *,
        lr: float | None = None,
        out: Any = None,
        check_finite: bool = True,
        weights: Sequence[float] | None = None,
    ) -> Any:
        """One training step: the local workers' vectors in, the update out.

        Parameters
        ----------
        vectors : list of arrays of shape (d,)
            One per worker of :meth:`participants` (``comm.worker_ids``
            unless ``participation`` is set), in that order: gradients
            (:class:`SketchDL`: model deltas). NumPy arrays on the CPU; on the
            GPU any CUDA array (CuPy, PyTorch, Numba device arrays).
        comm : Communicator
            Combines the workers' messages and counts the bytes; its step is
            closed before returning (``comm.last_step`` is this step's traffic).
        lr : float, optional
            This step's learning rate (default: ``self.lr``).
        out : array of shape (d,), optional
            Receives the update: the algorithm's dtype and device (a NumPy
            array on the CPU, any CUDA array on the GPU). Nothing is allocated
            then. By default the update is a new array. When the step raises
            after the agreement, ``out`` holds no update (its values are
            unspecified).
        check_finite : bool, default True
            Count NaN and Inf values, and values that overflow the dtype,
            in the input, the new state and the update, and raise (on every
            process) without changing anything when there are any. On a GPU
            that costs the step's only wait for the device: the counts are
            read once, at the end. The new state is computed into scratch
            (a second copy of what the step changes: this process's workers'
            memories, the server's state), kept from step to step. ``False``
            skips the counts and updates the state in place (no scratch): the
            step never waits for the device (it can be captured in a CUDA
            graph), and the caller vouches that nothing overflows.
        weights : list of float, optional
            One positive weight per vector, such as each worker's batch size:
            each vector is multiplied by its weight before anything else (the
            workers' state then holds weighted vectors), and sums over the
            workers are divided by the total weight of every worker that takes
            part (gathered with the step's agreement) instead of W. This is
            the averaging of FetchSGD's released code [RPU20]_, where a
            client's gradient counts as much as its batch. By default every
            worker weighs 1.

        Returns
        -------
        update : array of shape (d,)
            The same on every process; apply it as ``w -= update``. ``out``
            when given; otherwise in the framework of ``vectors[0]``.

        Raises
        ------
        ValueError, TypeError
            On every process, when any passes a bad vector, learning rate or
            different parameters; nothing is changed then.
        pysketch.errors.NonFiniteError
            (a ``ValueError``), on every process, when a vector holds NaN or
            Inf; a plain ``ValueError`` when a value would overflow the
            algorithm's dtype (``lr`` times a vector, the state, the sum over
            the workers, the update). Nothing is changed then either, and the
            step's traffic is not counted.
        """
        return self._run(vectors, comm, lr, out, check_finite, weights, summed=False)

    def step_summed(
        self,
        local_sum: Any,
        comm: Communicator,
        *,
        lr: float | None = None,
        out: Any = None,
        check_finite: bool = True,
        weight: float | None = None,
    ) -> Any:
        """:meth:`step`, given the sum of this process's workers' vectors instead of each.

        Only for algorithms whose workers keep no state (``stateful_workers``
        false: SGD, FetchSGD, sketch-DL without error feedback), where
        compressing the sum is exact by linearity. A simulator can then add
        the gradients up as it computes them and hold one vector, not W.

        Parameters
        ----------
        local_sum : array of shape (d,)
            The sum of the vectors of the workers :meth:`participants` (zeros
            when none of this process's takes part).
        comm, lr, out, check_finite
            As in :meth:`step`; the bytes counted are still those of every
            worker (that takes part).
        weight : float, optional
            With weighted averaging (:meth:`step`'s ``weights``): the sum of
            the weights of this process's workers that take part, when
            ``local_sum`` is the sum of each one's vector times its weight.

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
        return self._run(local_sum, comm, lr, out, check_finite, weight, summed=True)

    def _run(self, vectors, comm, lr, out, check_finite, weights, *, summed: bool) -> Any:
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a pysketch Communicator, got {type(comm).__name__}")
        inputs, error = None, None
        try:
            step_lr = self.lr if lr is None else _check_real("lr", lr, 0.0)
            checked = _arrays.check_bool("check_finite", check_finite)
            active = self._active(comm)
            if summed:  # checked even when no local worker takes part, then dropped
                inputs = [self._input(vectors, "local_sum")][: active.local_workers]
            else:
                inputs = self._inputs(vectors, active)
            self._check_layout(comm)
            self._check_out(out)
            local_weight = _local_weight(weights, len(inputs), summed)
        except (TypeError, ValueError) as exc:
            error, local_weight = exc, None
        fingerprint = {
            **self.params,
            "type": self.name,
            "steps": self.steps,
            "step lr": lr,
            "check_finite": check_finite if isinstance(check_finite, bool) else None,
            "world size": comm.world_size,
            "layout": list(comm.layout),
            "weighted": weights is not None,
            "local weight": local_weight,
        }
        prints = comm.agree(
            f"{type(self).__name__}.step", fingerprint, error, ignore=("local weight",)
        )
        stream = inputs[0].stream if inputs else 0
        fresh = self._worker_ids is None
        workers = [self._new_worker(stream) for _ in comm.worker_ids] if fresh else self._workers
        taking = workers
        if active is not comm:  # the state of the workers that take part; the rest stays
            taking = [workers[i - comm.worker_ids.start] for i in active.ids]
        step = _step.Step(self, active, inputs, step_lr, checked, summed, taking)
        if weights is not None:
            step.total_weight = math.fsum(p["local weight"] for p in prints)
            if not summed:
                step.weigh_inputs(weights)
        if out is None:
            owner = _dense.new(self.d, self.dtype, self.device, stream)
            update = owner if self.device == CPU else _cuda.bind(owner, stream)
            reference = vectors if summed else (vectors[0] if len(vectors) else None)
            result = _in_framework_of(owner, update, reference)
        else:
            result = out
            update = out if self.device == CPU else _cuda.bind(out, stream)
        try:
            with np.errstate(all="ignore"):  # overflows are counted and raised below
                self._step(step, update)
            step.raise_if_failed()
        except BaseException:
            comm._forget_step()
            raise
        step.commit()
        if self.download == "changed":
            self._count_changed(comm, active, update)
        elif self.download == "topk":  # download_k (index, value) pairs per participant
            pair = self.dtype.itemsize + np.dtype(index_dtype(self.d)).itemsize
            comm._count_download(float(self.download_k * pair))
        if fresh:
            self._worker_ids, self._workers = tuple(comm.worker_ids), workers
        comm.step()
        self.steps += 1
        return result

    def _count_changed(self, comm: Communicator, active: Communicator, update: Any) -> None:
        if self._changed is None:
            self._changed = ChangedWeights(self.d, comm.world_size)
        everyone = active.everyone if active is not comm else np.arange(comm.world_size)
        host = update if self.device == CPU else _cuda.to_host(update)
        nbytes = self._changed.step(everyone, self.steps, host, self.dtype.itemsize)
        comm._count_download(nbytes)

    def _inputs(self, vectors: Sequence[Any], comm: Communicator) -> list[Input]:
        if not isinstance(vectors, Sequence) or isinstance(vectors, (str, bytes)):
            raise TypeError(f"vectors must be a list of arrays, got {type(vectors).__name__}")
        if len(vectors) != comm.local_workers:
            which = " that takes part (participants())" if isinstance(comm, _Participants) else ""
            raise ValueError(
                f"vectors must hold one array per local worker{which} ({comm.local_workers}), "
                f"got {len(vectors)}"
            )
        return [self._input(x, f"vectors[{w}]") for w, x in enumerate(vectors)]

    def _input(self, x: Any, name: str) -> Input:
        """``x`` as a kernel input: an array of shape ``(d,)`` on the algorithm's device."""
        if not (isinstance(x, np.ndarray) or _cuda.is_cuda_array(x) or hasattr(x, "__dlpack__")):
            raise TypeError(
                f"{name} must be an array (NumPy, or CuPy, PyTorch or any CUDA array), "
                f"got {type(x).__module__}.{type(x).__name__}"
            )
        _frameworks.check_tensor(x, name)
        device = _arrays.device_of(x)
        if device != self.device:
            raise ValueError(f"{name} is on {device!r}, the algorithm on {self.device!r}")
        if tuple(x.shape) != (self.d,):
            raise ValueError(f"{name} must have shape ({self.d},), got {tuple(x.shape)}")
        return _arrays.kernel_values(_arrays.as_input(x, name, device=device))

    def _check_out(self, out: Any) -> None:
        if out is None:
            return
        if self.device == CPU:
            if not isinstance(out, np.ndarray):
                raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
            if not out.flags.writeable or not out.flags.c_contiguous:
                raise ValueError("out must be a writable, C-contiguous array")
        elif not _cuda.is_cuda_array(out):
            raise TypeError(f"out must be a CUDA array, got {type(out).__name__}")
        elif not _cuda.as_cuda_array(out).is_c_contiguous():
            raise ValueError("out must be C-contiguous")
        if tuple(out.shape) != (self.d,) or np.dtype(out.dtype) != self.dtype:
            raise ValueError(
                f"out must have shape ({self.d},) and dtype {self.dtype}, "
                f"got {tuple(out.shape)} and {np.dtype(out.dtype)}"
            )

    def _check_layout(self, comm: Communicator) -> None:
        if self._worker_ids is not None and tuple(comm.worker_ids) != self._worker_ids:
            raise ValueError(
                f"comm holds workers {list(comm.worker_ids)} but this algorithm's state is for "
                f"workers {list(self._worker_ids)}"
            )

    def _step(self, step: _step.Step, out: Any) -> None:
        """Write the update into ``out``; new state only through ``step.target``.

        The local phase, the step's one collective, then the server phase. The
        DDP hook runs the three apart, so that the collective runs while
        backward goes on.
        """
        self._local_phase(step)
        step.exchange()
        self._server_phase(step, out)

    def _local_phase(self, step: _step.Step) -> None:
        """Fill the step's payload (:meth:`Step.wire` or :meth:`Step.pairs`) and count this
        process's workers into its status: no communication."""
        raise NotImplementedError

    def _server_phase(self, step: _step.Step, out: Any) -> None:
        """The update into ``out``, and the server's new state, from the collective's result
        (``step.payload`` summed over every worker, or ``step.gathered``)."""
        raise NotImplementedError

    def _scalar(self, value: float):
        """``value`` in the algorithm's dtype: factors as the kernels compute with them."""
        return self.dtype.type(value)

    def _sum_inputs(self, step: _step.Step, total: Any) -> None:
        """``total`` = the sum of this process's inputs (zero when it has none)."""
        if not step.inputs:
            _dense.fill(total, 0, step.stream)
            return
        _dense.copy(total, step.inputs[0].array, step.stream)
        for inp in step.inputs[1:]:
            _dense.axpy(total, self._scalar(1), inp.array, step.stream)

    # ----------------------------------------------------------------- state
    def _worker_keys(self) -> tuple[str, ...]:
        """Names of the vectors each worker keeps."""
        return ()

    def _new_worker(self, stream: Any = 0) -> dict[str, Any]:
        """A worker's zero state."""
        return {
            key: _dense.zeros(self.d, self.dtype, self.device, stream)
            for key in self._worker_keys()
        }

    def _new_server(self, **shapes: tuple[int, ...]) -> None:
        """Zero server state of these shapes (replicated on every process)."""
        self._server = {
            key: _dense.zeros(shape, self.dtype, self.device) for key, shape in shapes.items()
        }

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """This process's share of the state: host arrays and plain values, no pickle.

        Keys: ``"algorithm"``, ``"steps"``, ``"params"`` (the parameters a
        resumed run must share: a dict of plain values), ``"worker_ids"`` and
        the algorithm's arrays (``"server.<name>"``, ``"workers.<name>"``
        stacked over this process's workers).
        """
        state: dict[str, Any] = {
            "algorithm": self.name,
            "steps": self.steps,
            "params": self._recorded_params(),
            "worker_ids": np.asarray(self._worker_ids or (), dtype=np.int64),
        }
        for key, value in self._server.items():
            state[f"server.{key}"] = _host_copy(value)
        if self._workers:
            for key in self._worker_keys():
                state[f"workers.{key}"] = np.stack([_host_copy(w[key]) for w in self._workers])
        if self._changed is not None:
            state.update(self._changed.state_dict())
        if self._replicas is not None:
            state["download.replicas"] = np.stack([_host_copy(r) for r in self._replicas])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output.

        Everything is validated before anything changes, so a refused state
        leaves the algorithm as it was.

        Raises
        ------
        TypeError
            ``state`` is not a dict.
        ValueError
            Naming the entry: another algorithm, a step count or worker ids
            that are not non-negative integers (ids unique), parameters that
            differ from this algorithm's (a state saved with ``seed=0`` does
            not load into ``seed=1``), an array of the wrong shape or holding
            NaN or Inf.
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        if state.get("algorithm") != self.name:
            raise ValueError(
                f"state['algorithm'] must be {self.name!r}, got {state.get('algorithm')!r}"
            )
        steps = _state_int(state.get("steps"), "state['steps']")
        self._check_params(state)
        ids = _worker_ids(state.get("worker_ids", ()))
        server = {
            key: self._checked_array(state, f"server.{key}", tuple(current.shape))
            for key, current in self._server.items()
        }
        stacks = {}
        for key in self._worker_keys():
            if ids or f"workers.{key}" in state:
                stacks[key] = self._checked_array(state, f"workers.{key}", (len(ids), self.d))
        changed = None
        if self.download == "changed" and (steps or "download.changed" in state):
            if "download.joined" not in state:
                raise ValueError("state lacks 'download.joined' (download='changed')")
            changed = ChangedWeights(self.d, np.asarray(state["download.joined"]).size)
            changed.load_state_dict(state)
        replicas = None
        if self.download == "topk" and "download.replicas" in state:
            count = np.asarray(state["download.replicas"]).shape[:1]
            replicas = self._checked_array(state, "download.replicas", (*count, self.d))
            if ids and len(replicas) != len(ids):
                raise ValueError(
                    f"state['download.replicas'] must hold {len(ids)} replicas (one per "
                    f"worker id), got {len(replicas)}"
                )
        # Everything is valid: assign.
        for key, host in server.items():
            _load_into(self._server[key], host)
        workers = []
        for w in range(len(ids)):
            worker = self._new_worker()
            for key, stack in stacks.items():
                _load_into(worker[key], stack[w])
            workers.append(worker)
        self._worker_ids = ids or None
        self._workers = workers
        self._changed = changed
        self._pulled = None
        self._replicas = None
        if replicas is not None:
            self._replicas = [_dense.zeros(self.d, self.dtype, self.device) for _ in replicas]
            for target, host in zip(self._replicas, replicas, strict=True):
                _load_into(target, host)
        self.steps = steps

    def _check_params(self, state: dict[str, Any]) -> None:
        """Refuse a state saved with other parameters, naming them (absent: saved before
        parameters were recorded, accepted)."""
        if "params" not in state:
            return
        saved = state["params"]
        if not isinstance(saved, dict):
            raise ValueError(f"state['params'] must be a dict, got {type(saved).__name__}")
        mine = self._recorded_params()
        diffs = [
            f"{key}={saved.get(key)!r} in the state, {value!r} here"
            for key, value in mine.items()
            if not _same(key, saved.get(key), value)
        ]
        if diffs:
            raise ValueError(
                f"state['params'] does not match this {type(self).__name__}: {'; '.join(diffs)}"
            )

    def _checked_array(self, state: dict[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in state:
            raise ValueError(f"state lacks {key!r}")
        arr = state[key]
        if _cuda.is_cuda_array(arr):
            arr = _cuda.to_host(arr)
        arr = np.asarray(arr)
        if arr.shape != tuple(shape):
            raise ValueError(f"state[{key!r}] must have shape {tuple(shape)}, got {arr.shape}")
        if arr.dtype.kind != "f" or not np.isfinite(arr).all():
            raise ValueError(f"state[{key!r}] must hold finite floats")
        with np.errstate(over="ignore"):
            converted = arr.astype(self.dtype)
        if not np.isfinite(converted).all():
            raise ValueError(f"state[{key!r}] holds values that overflow {self.dtype}")
        return converted


# Parameters added after states were first saved, with the value such a state had.
_ADDED = {
    "participation": 1.0,
    "download": "collective",
    "download_k": None,
    "lr_placement": "state",
    "momentum_masking": None,
    "clip_norm": None,
    "zeroing": "cells",
    "server_rho": 0.0,
}


def _same(key: str, saved: Any, value: Any) -> bool:
    """Whether the saved parameter ``key`` is ``value`` (its type too, for those in
    ``_ADDED``: the int 1 is one worker, the float 1.0 everyone)."""
    saved = _plain(saved)
    if key not in _ADDED:
        return saved == value
    saved = _ADDED[key] if saved is None else saved
    return saved == value and type(saved) is type(value)


def _local_weight(weights: Any, local: int, summed: bool) -> float:
    """The total of this process's workers' weights (0 when none): ``weights`` checked."""
    if weights is None:
        return 0.0
    if summed:
        return _check_real("weight", weights, 0.0) if local else 0.0
    if isinstance(weights, (str, bytes)) or not isinstance(weights, (Sequence, np.ndarray)):
        raise TypeError(f"weights must be a list of numbers, got {type(weights).__name__}")
    if len(weights) != local:
        raise ValueError(f"weights must hold one number per vector ({local}), got {len(weights)}")
    for w, value in enumerate(weights):
        _check_positive(f"weights[{w}]", value)
    return math.fsum(float(v) for v in weights)


def _same_default(value: Any, default: Any) -> bool:
    """Whether a parameter's ``value`` is its ``default`` (of the same type: 1 is not 1.0)."""
    if isinstance(default, type) or isinstance(value, np.dtype):  # dtype=np.float32
        return np.dtype(value) == np.dtype(default)
    return type(value) is type(default) and value == default


def _state_int(value: Any, name: str) -> int:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _worker_ids(value: Any) -> tuple[int, ...]:
    """Worker ids from a state: integers (not floats), non-negative, unique."""
    ids = np.asarray(value)
    if ids.size == 0:
        return ()
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(
            f"state['worker_ids'] must be a 1-D array of integers, got dtype {ids.dtype} "
            f"and shape {ids.shape}"
        )
    if (ids < 0).any() or len(np.unique(ids)) != len(ids):
        raise ValueError(
            f"state['worker_ids'] must be unique non-negative integers, got {ids.tolist()}"
        )
    return tuple(int(i) for i in ids)


def _load_into(target: Any, host: np.ndarray) -> None:
    if _dense.on_cpu(target):
        target[...] = host
    else:
        _cuda.upload(np.ascontiguousarray(host), target, _cuda.stream_for(target))


# =============================================================== baselines
def _momentum_and_error(algo, step, mean: Any) -> tuple[Any, Any, bool]:
    """The server's new momentum ``u = rho u + mean`` and what the update is chosen from:
    ``e + lr u`` (``lr_placement="state"``), ``e + u`` (``"update"``), or ``u`` itself
    (``error="none"``); and whether ``lr`` goes onto the update. ``mean`` and the server's
    ``"momentum"`` and ``"error"`` of any shape (FetchSGD's tables, true top-k's vectors)."""
    s, flat, server = step.stream, _dense.flat, algo._server
    u = step.target(server, "momentum", "momentum'")
    _dense.axpby(flat(u), flat(mean), algo._scalar(algo.rho), flat(server["momentum"]), s)
    lr_after = algo.lr_placement == "update" or algo.error == "none"
    if algo.error == "none":
        return u, u, lr_after
    e = step.target(server, "error", "error'")
    factor = algo._scalar(1.0 if lr_after else step.lr)
    _dense.axpby(flat(e), flat(server["error"]), factor, flat(u), s)
    return u, e, lr_after


class _DenseUpload(Algorithm):
    """Workers that send their whole vector: the allreduce of ``d`` values."""

    def _local_phase(self, step):
        local_sum = step.wire(self.d, zero=False)  # the local sum overwrites it
        for w, inp in enumerate(step.inputs):
            step.count_input(w, inp.array)
        self._sum_inputs(step, local_sum)


class SGD(_DenseUpload):
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
        self._new_server(momentum=(self.d,))

    def _server_phase(self, step, out):
        mean, rho, s = step.payload, self._scalar(self.rho), step.stream
        _dense.scale(mean, self._scalar(1 / step.total), s)
        u = step.target(self._server, "momentum", "momentum'")
        _dense.axpby(u, mean, rho, self._server["momentum"], s)  # u = rho u + mean
        if self.nesterov:
            _dense.axpby(out, mean, rho, u, s)  # mean + rho u
        else:
            _dense.copy(out, u, s)
        _dense.scale(out, self._scalar(step.lr), s)
        step.count_server(u)
        step.count_server(out)


class TrueTopK(_DenseUpload):
    """True top-k [RPU20]_: workers send their whole gradient, the server keeps dense
    momentum and error and applies their top ``k``.

    The "true top-k" mode of FetchSGD's released code, the exact top-k that
    FetchSGD's sketches approximate: ``u = rho u + mean_i g_i``,
    ``e += lr u`` and ``delta = top_k(e)``; ``e`` is zeroed where ``delta``
    is not (error feedback: what was applied leaves the error exactly) and,
    with momentum masking (the code's default), so is ``u``. Upload is
    uncompressed (``d`` values, like :class:`SGD`); the update has ``k``
    non-zeros.

    Parameters
    ----------
    d, lr, seed, dtype, device
        See :class:`Algorithm`.
    k : int
        Coordinates updated per step.
    rho : float, default 0.9
        Server momentum in ``[0, 1)``.
    error : {"zero", "none"}, default "zero"
        ``"none"`` keeps no error: ``delta = top_k(lr u)``.
    lr_placement : {"state", "update"}, default "state"
        ``"update"``: ``e += u`` and ``update = lr delta``, as the code does.
    momentum_masking : bool, default True

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.compress import TrueTopK, LocalCommunicator
    >>> comm = LocalCommunicator(workers=2)
    >>> algo = TrueTopK(4, lr=1.0, k=1, rho=0.0)
    >>> g = np.array([1.0, -3.0, 0.0, 2.0])
    >>> algo.step([g, g], comm).tolist(), algo.step([0 * g, 0 * g], comm).tolist()
    ([0.0, -3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0])
    """

    name = "true_topk"
    _PARAMS = ("k", "rho", "error", "lr_placement", "momentum_masking")

    def __init__(
        self,
        d: int,
        *,
        lr: float,
        k: int,
        rho: float = 0.9,
        error: str = "zero",
        lr_placement: str = "state",
        momentum_masking: bool = True,
        **kw,
    ) -> None:
        super().__init__(d, lr=lr, **kw)
        self.k = check_count("k", k, self.d)
        self.rho = _check_real("rho", rho, 0.0, 1.0)
        self.error = _check_choice("error", error, ("zero", "none"))
        self.lr_placement = _check_lr_placement(lr_placement)
        self.momentum_masking = _arrays.check_bool("momentum_masking", momentum_masking)
        shapes = {"momentum": (self.d,)}
        if self.error != "none":
            shapes["error"] = (self.d,)
        self._new_server(**shapes)

    def _server_phase(self, step, out):
        mean, s = step.payload, step.stream
        _dense.scale(mean, self._scalar(1 / step.total), s)
        u, accumulated, lr_after = _momentum_and_error(self, step, mean)
        idx, val = step.topk(accumulated, self.k)
        if self.error != "none":
            _dense.set_at(accumulated, idx, 0, s)
        if self.momentum_masking:
            _dense.set_at(u, idx, 0, s)
        if lr_after:
            _dense.scale(val, self._scalar(step.lr), s)
        step.count_server(u)
        step.count_server(accumulated)
        step.count_server(val)
        _dense.fill(out, 0, s)
        _dense.scatter_add(out, idx, val, 1, s)


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

    Two more options follow that code: ``lr_placement="update"`` keeps the
    learning rate out of the memory (``m_i += u_i``) and applies it to the
    update, and ``server_rho`` adds the server's "virtual" momentum on the
    mean of what the workers sent, ``v = server_rho v + mean_i comp(m_i)``,
    ``update = v`` (times ``lr`` with ``"update"``), which is not masked.

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
    lr_placement : {"state", "update"}, default "state"
        ``lr`` inside the memory (the paper) or on the update (the code).
    server_rho : float, default 0.0
        Server ("virtual") momentum in ``[0, 1)``.

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
    _PARAMS = ("k", "compressor", "memory", "rho", "lr_placement", "server_rho")

    def __init__(
        self,
        d: int,
        *,
        lr: float,
        k: int,
        compressor: str = "topk",
        memory: bool = True,
        rho: float = 0.0,
        lr_placement: str = "state",
        server_rho: float = 0.0,
        **kw,
    ) -> None:
        super().__init__(d, lr=lr, **kw)
        self.k = check_count("k", k, self.d)
        self.compressor = _check_choice("compressor", compressor, ("topk", "randomk"))
        self.memory = _arrays.check_bool("memory", memory)
        self.rho = _check_real("rho", rho, 0.0, 1.0)
        self.lr_placement = _check_lr_placement(lr_placement)
        self.server_rho = _check_real("server_rho", server_rho, 0.0, 1.0)
        self._random = RandomK(self.d, self.k, seed=self.seed)
        if self.server_rho:
            self._new_server(momentum=(self.d,))

    def _worker_keys(self):
        return ("memory",) * self.memory + ("momentum",) * (self.rho > 0)

    def _to_send(self, step, w: int, g: Any) -> tuple[Any, Any]:
        """Worker ``w``'s vector to compress (its new memory ``m + lr u``, or ``lr u``) and
        its new momentum ``u = rho u + g`` (``None`` without momentum: ``u`` is ``g``)."""
        in_state = self.lr_placement == "state"
        s, lr = step.stream, self._scalar(step.lr if in_state else 1.0)
        step.count_input(w, g, step.lr if in_state else 1.0)
        worker, momentum = step.workers[w], None
        if self.rho:
            momentum = step.target(worker, "momentum", ("momentum'", w))
            _dense.axpby(momentum, g, self._scalar(self.rho), worker["momentum"], s)
            step.count_state(w, momentum)
            g = momentum
        if not self.memory:
            if not in_state:  # the learning rate goes onto the update: send u itself
                return g, momentum
            scaled = step.buffer("scaled", self.d)
            _dense.copy(scaled, g, s)
            _dense.scale(scaled, lr, s)
            if self.rho:  # lr u may overflow where lr g does not
                step.count_state(w, scaled)
            return scaled, momentum
        memory = step.target(worker, "memory", ("memory'", w))
        _dense.axpby(memory, worker["memory"], lr, g, s)
        step.count_state(w, memory)
        return memory, momentum

    def _mask(self, step, sent: tuple[Any, Any], idx: Any) -> None:
        """Zero a worker's memory where it sent (``m - comp(m)`` is exactly 0 there) and its
        momentum (momentum masking)."""
        vector, momentum = sent
        if self.memory:
            _dense.set_at(vector, idx, 0, step.stream)
        if momentum is not None:
            _dense.set_at(momentum, idx, 0, step.stream)

    def _local_phase(self, step):
        if self.compressor == "topk":
            self._topk_local(step)
        else:
            self._randomk_local(step)

    def _server_phase(self, step, out):
        if self.compressor == "topk":
            idx, val = step.gathered
        else:
            idx, val = step.indices, step.payload
        s = step.stream
        _dense.scale(val, self._scalar(1 / step.total), s)
        _dense.fill(out, 0, s)
        _dense.scatter_add(out, idx, val, 1, s)
        if self.server_rho:  # v = server_rho v + mean; update = v
            v = step.target(self._server, "momentum", "momentum'")
            _dense.axpby(v, out, self._scalar(self.server_rho), self._server["momentum"], s)
            _dense.copy(out, v, s)
            step.count_server(v)
        if self.lr_placement == "update":
            _dense.scale(out, self._scalar(step.lr), s)
        step.count_server(out)

    def _topk_local(self, step):
        """Every worker's top-k pairs, for the allgather (the status after this process's)."""
        k, local, s = self.k, len(step.inputs), step.stream
        send_idx, send_val = step.pairs([k] * local, index_dtype(self.d))
        for w, inp in enumerate(step.inputs):
            sent = self._to_send(step, w, inp.array)
            idx, val = step.topk(sent[0], k)
            _dense.copy(send_idx[w * k : (w + 1) * k], idx, s)
            _dense.copy(send_val[w * k : (w + 1) * k], val, s)
            self._mask(step, sent, idx)

    def _randomk_local(self, step):
        """The values at the step's shared random indices, summed over this process's
        workers, for the allreduce."""
        k, s = self.k, step.stream
        host = self._random.indices(self.steps)
        idx = host
        if step.device != CPU:
            idx = step.buffer("random indices", k, np.int64)
            _cuda.upload(host, idx, s)
        step.indices = idx
        total = step.wire(k, zero=False)  # the first worker's values overwrite it
        for w, inp in enumerate(step.inputs):
            sent = self._to_send(step, w, inp.array)
            if w == 0:
                _dense.gather(total, sent[0], idx, s)
            else:
                picked = step.buffer("picked", k)
                _dense.gather(picked, sent[0], idx, s)
                _dense.axpy(total, self._scalar(1), picked, s)
            self._mask(step, sent, idx)


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
        #: The hashes every step's sketches share (views of buffers: nothing is built per step).
        self._hashes = self._sketcher._template

    def _sketch_of(self, table: Any):
        """``table`` (flat or ``(rows, cols)``) as a sketch with this algorithm's hashes."""
        return self._hashes._sharing_keys(table.reshape(self.rows, self.cols))

    def _sketch_wire(self, step):
        """The zeroed sketch that this process sums into and the allreduce then sums."""
        return self._sketch_of(step.wire(self.rows * self.cols))

    def _accumulate(self, step, sketch, x: Any) -> None:
        sketch._accumulate(sketch._no_indices, step.input(x), dense=True)

    def _sketch_inputs(self, step, sketch) -> None:
        """Add the inputs' sketch: of their sum (``presum``, exact by linearity) or of each."""
        for w, inp in enumerate(step.inputs):
            step.count_input(w, inp.array)
        if self.presum and len(step.inputs) > 1:
            total = step.buffer("local sum", self.d)
            self._sum_inputs(step, total)
            self._accumulate(step, sketch, total)
        else:
            for inp in step.inputs:
                self._accumulate(step, sketch, inp.array)


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

    def _worker_keys(self):
        return ("momentum", "error")

    def _step(self, step, out):
        # One _step, not two phases: the server phase zeroes the workers' new state, and
        # with p2 a second collective follows the first.
        s = step.stream
        sketch = self._sketch_wire(step)
        errors, momenta = [], []
        for w, inp in enumerate(step.inputs):
            step.count_input(w, inp.array)
            worker = step.workers[w]
            u = step.target(worker, "momentum", ("momentum'", w))
            v = step.target(worker, "error", ("error'", w))
            _dense.axpby(u, inp.array, self._scalar(self.rho), worker["momentum"], s)
            _dense.axpby(v, worker["error"], self._scalar(1), u, s)  # v += u
            step.count_state(w, u)
            step.count_state(w, v)
            if self._n1 is None:
                self._accumulate(step, sketch, v)
            else:
                idx, val = step.topk(v, self._n1)
                sketch._accumulate(idx, step.input(val), dense=False)
            errors.append(v)
            momenta.append(u)
        step.exchange()
        if self._n2 is None:
            idx, val = step.heavy_hitters(sketch, self.k)
        else:
            idx, val = self._second_round(step, sketch, errors)
        for v, u in zip(errors, momenta, strict=True):
            _dense.set_at(v, idx, 0, s)
            if self.momentum_stopping:
                _dense.set_at(u, idx, 0, s)
        _dense.scale(val, self._scalar(step.lr / step.total), s)
        step.count_server(val)
        _dense.fill(out, 0, s)
        _dense.scatter_add(out, idx, val, 1, s)

    def _second_round(self, step, sketch, errors):
        """The ``p2 k`` candidates' exact values, summed over workers; their top ``k``."""
        s, n2 = step.stream, self._n2
        candidates, _ = step.heavy_hitters(sketch, n2)
        exact = step.buffer("exact", n2)
        picked = step.buffer("picked", n2)
        if not errors:  # no local worker takes part
            _dense.fill(exact, 0, s)
        for w, v in enumerate(errors):
            _dense.gather(exact if w == 0 else picked, v, candidates, s)
            if w:
                _dense.axpy(exact, self._scalar(1), picked, s)
        step.comm._sum_packed(step.owner("exact"), n2 * self.dtype.itemsize)
        pos, val = step.topk(exact, self.k)
        idx = step.buffer("indices", self.k, np.int64)
        _dense.gather(idx, candidates, pos, s)
        return idx, val


class FetchSGD(_SketchAlgorithm):
    """FetchSGD [RPU20]_: stateless workers, momentum and error accumulated in sketches.

    Workers send the sketch of their gradient. The server keeps
    ``S_u = rho S_u + mean_i S(g_i)`` and ``S_e += lr S_u``, and applies
    ``delta = unSketch(S_e, k)`` (the ``k`` largest estimates). Then, by
    ``error``:

    ``"subtract"`` (the paper's pseudo-code)
        ``S_e -= S(delta)``.
    ``"zero"`` (the released code)
        every cell of ``S_e`` that the support of ``delta`` hashes to is set
        to zero.
    ``"none"``
        no error is kept: ``delta = unSketch(lr S_u, k)``, and what is not
        applied is dropped (the released code's ``error_type="none"``).

    The options below follow the released code (CommEfficient,
    ``fed_aggregator.py`` and ``fed_worker.py``) where it differs from the
    paper's pseudo-code; each default is the paper's, except ``error``:

    - ``lr_placement="update"``: ``S_e += S_u`` and ``update = lr delta``,
      as the code applies the learning rate after unSketch; the paper's
      ``"state"`` folds ``lr`` into ``S_e``. They agree at a constant rate;
      under a schedule, ``S_e`` then holds gradients of past rates unscaled.
    - ``momentum_masking``: the code zeroes ``S_u`` at the cells of the
      chosen coordinates whatever the error variant, so that momentum stops
      pushing what was applied; the default does so except with
      ``error="subtract"``.
    - ``clip_norm``: the code scales each worker's sketch down to this l2
      norm, estimated from the sketch (:meth:`~pysketch.CountSketch.l2_estimate`),
      before it is sent (so a process sketches each of its workers apart).

    Weight decay "added before sketching", as in the code, is the caller's
    ``g + wd * w``; the code's averaging weighted by batch size is
    :meth:`step`'s ``weights``.

    - ``zeroing="nonzero"``: the code zeroes (``error="zero"`` and momentum
      masking) the cells where the sketch of ``delta`` is non-zero; the
      default ``"cells"`` zeroes every cell that a chosen coordinate hashes
      to. They differ only where chosen values cancel in a cell exactly, or
      a chosen estimate is exactly 0 (its cells then keep what other
      coordinates put there). ``"nonzero"`` costs the sketch of ``delta``
      each step.

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
    error : {"subtract", "zero", "none"}, default "zero"
    lr_placement : {"state", "update"}, default "state"
    momentum_masking : bool, optional
        Zero the momentum sketch at the chosen coordinates' cells (default:
        unless ``error="subtract"``).
    clip_norm : float, optional
        Clip each worker's sketch to this estimated l2 norm.
    zeroing : {"cells", "nonzero"}, default "cells"
        Which cells forget what was applied.
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
    _PARAMS = (
        "k",
        "rows",
        "cols",
        "rho",
        "error",
        "lr_placement",
        "momentum_masking",
        "clip_norm",
        "zeroing",
        "hash",
    )

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
        lr_placement: str = "state",
        momentum_masking: bool | None = None,
        clip_norm: float | None = None,
        zeroing: str = "cells",
        hash: str = "mix",
        **kw,
    ) -> None:
        super().__init__(d, lr=lr, **kw)
        self.k = check_count("k", k, self.d)
        self.rho = _check_real("rho", rho, 0.0, 1.0)
        self.error = _check_choice("error", error, ("subtract", "zero", "none"))
        self.zeroing = _check_choice("zeroing", zeroing, ("cells", "nonzero"))
        self.lr_placement = _check_lr_placement(lr_placement)
        self.momentum_masking = momentum_masking
        if momentum_masking is not None:
            self.momentum_masking = _arrays.check_bool("momentum_masking", momentum_masking)
        self._masking = error != "subtract" if momentum_masking is None else momentum_masking
        self.clip_norm = None if clip_norm is None else _check_positive("clip_norm", clip_norm)
        self._make_compressor(rows, cols, hash, k=self.k)
        shapes = {"momentum": (self.rows, self.cols)}
        if self.error != "none":
            shapes["error"] = (self.rows, self.cols)
        self._new_server(**shapes)

    def _local_phase(self, step):
        wire = self._sketch_wire(step)
        if self.clip_norm is None:
            self._sketch_inputs(step, wire)
            return
        mine = self._sketch_of(step.buffer("worker sketch", self.rows * self.cols))
        for w, inp in enumerate(step.inputs):
            step.count_input(w, inp.array)
            _dense.fill(_dense.flat(mine.table), 0, step.stream)
            self._accumulate(step, mine, inp.array)
            self._clip(step, mine)
            _dense.axpy(
                _dense.flat(wire.table), self._scalar(1), _dense.flat(mine.table), step.stream
            )

    def _clip(self, step, sketch) -> None:
        """Scale ``sketch`` down to ``clip_norm`` when its l2 estimate exceeds it."""
        phi, s = 1.0 / self.clip_norm, step.stream
        if step.device == CPU:
            ratios = np.array([phi * sketch.l2_estimate()])
            at = 0
        else:
            sizes = sketch._l2_sizes()
            scratch = (
                step.buffer("l2", sizes[0], np.float64),
                step.buffer("l2 tickets", 1, np.int64),
            )
            ratios, at = sketch._l2_device(phi, scratch), L2_THRESHOLD
        _dense.scale_clipped(_dense.flat(sketch.table), ratios, at, s)

    def _server_phase(self, step, out):
        s, flat = step.stream, _dense.flat
        _dense.scale(step.payload, self._scalar(1 / step.total), s)
        # S_u = rho S_u + mean; S_e += lr S_u (the paper) or S_e += S_u (the code)
        u, e, lr_after = _momentum_and_error(self, step, step.payload)
        accumulated = self._sketch_of(e)
        idx, val = step.heavy_hitters(accumulated, self.k)
        if self.error == "subtract":  # S_e -= S(delta): the sketch of -delta added in
            negated = step.buffer("negated", self.k)
            _dense.copy(negated, val, s)
            _dense.scale(negated, self._scalar(-1), s)
            accumulated._accumulate(idx, step.input(negated), dense=False)
        zeroed = [accumulated] if self.error == "zero" else []
        zeroed += [self._sketch_of(u)] if self._masking else []
        if zeroed and self.zeroing == "nonzero":  # where the sketch of delta is not 0
            applied = self._sketch_of(step.buffer("applied", self.rows * self.cols))
            _dense.fill(flat(applied.table), 0, s)
            applied._accumulate(idx, step.input(val), dense=False)
            for sketch in zeroed:
                _dense.zero_where(flat(sketch.table), flat(applied.table), s)
        else:
            for sketch in zeroed:
                sketch._zero_buckets(idx, s)
        if lr_after:
            _dense.scale(val, self._scalar(step.lr), s)
        step.count_server(u)
        if self.error != "none":
            step.count_server(accumulated.table)
        step.count_server(val)  # an inf estimate's buckets may have been zeroed above
        _dense.fill(out, 0, s)
        _dense.scatter_add(out, idx, val, 1, s)


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
        if self.reseed:  # hashes of its own, rewritten each round (no sketch built per round)
            self._hashes = self._hashes.copy()

    def _worker_keys(self):
        return ("error",) if self.error_feedback else ()

    def _local_phase(self, step):
        if self.reseed:
            self._hashes._reseed(step_seed(self.seed, self.steps), step.stream)
        total = self._sketch_wire(step)
        if not self.error_feedback:
            self._sketch_inputs(step, total)
        else:
            self._send_with_feedback(step, total)

    def _server_phase(self, step, out):
        s = step.stream
        self._sketch_of(step.payload)._unsketch(None, reductions.MEAN, out, s)
        _dense.scale(out, self._scalar(step.lr / step.total), s)
        step.count_server(out)

    def _send_with_feedback(self, step, total) -> None:
        """Each worker sends ``R(p)`` of ``p = delta + e`` and keeps ``e = p - R^T R p``."""
        s = step.stream
        mine = self._sketch_of(step.buffer("worker sketch", self.rows * self.cols))
        desketched = step.buffer("desketched", self.d)
        for w, inp in enumerate(step.inputs):
            step.count_input(w, inp.array)
            worker = step.workers[w]
            e = step.target(worker, "error", ("error'", w))
            _dense.axpby(e, worker["error"], self._scalar(1), inp.array, s)  # p = e + delta
            _dense.fill(_dense.flat(mine.table), 0, s)
            self._accumulate(step, mine, e)
            _dense.axpy(_dense.flat(total.table), self._scalar(1), _dense.flat(mine.table), s)
            mine._unsketch(None, reductions.MEAN, desketched, s)
            _dense.axpy(e, self._scalar(-1), desketched, s)
            step.count_state(w, e)


ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (SGD, TrueTopK, MemSGD, SketchedSGD, FetchSGD, SketchDL)
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
