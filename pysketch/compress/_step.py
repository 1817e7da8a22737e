"""What every algorithm's step shares: kept buffers, scratch, and one status read.

A step of :mod:`pysketch.compress.algorithms`, on either device:

1. the host validates the call (types, shapes, devices) and the processes
   agree on it (:meth:`Communicator.agree`), as before any change;
2. the new state is computed into *scratch* buffers, never into the state, and
   every value that could go wrong is counted on the device, in a small
   *status* array: per worker, the NaN/Inf values of its input and those that
   overflow the dtype (once multiplied by the learning rate where the
   algorithm multiplies them), and the non-finite values of its new state;
   then the non-finite values of the server's new state and of the update;
3. the status travels inside the payload of the step's collective (extra
   elements of the allreduce, or extra entries of the allgather), so every
   process learns every process's counts with no collective of its own;
4. the status is read once, the step's only wait for the device: if anything
   is wrong, every process raises the same error, the scratch is dropped and
   the communicator forgets the step's traffic; otherwise the scratch is
   committed by swapping buffers (no copy).

Step 2 has two phases around the collective: the *local phase* fills the
payload (:meth:`Step.wire` for an allreduce, :meth:`Step.pairs` for an
allgather) and counts this process's workers, with no communication; the
*server phase* computes the update from what the collective returned. A
step runs them in turn (:meth:`Step.exchange` between); the DDP hook starts
the collective asynchronously between them (:meth:`Step.collective`).

With ``check_finite=False`` there is no status, no read and no scratch: the
state is updated in place and the step never waits for the device, so it can
be captured in a CUDA graph. Every buffer is allocated on the first step
(on the input's stream) and reused by every later one, top-k's workspace
included; nothing is allocated by a later step but the update when no
``out`` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pysketch import _arrays, _cuda, _dense, selection
from pysketch._arrays import CPU
from pysketch.errors import NonFiniteError
from pysketch.kernels import reductions

#: Status counts per worker: NaN/Inf and overflowing values of its input, then of its state.
WORKER_SLOTS = 4
#: Status counts of the server: NaN/Inf and overflowing values of its state and the update.
SERVER_SLOTS = 2


def status_size(world_size: int) -> int:
    """Entries of a step's status: every worker's counts, then the server's."""
    return WORKER_SLOTS * world_size + SERVER_SLOTS


class Workspace:
    """Buffers that an algorithm allocates on its first step and reuses on every later one.

    On CUDA a buffer is used as a Numba view bound to the step's stream; the
    allocation itself (CuPy when installed) is what goes to a communicator,
    whose collectives may want DLPack (``torch.distributed``).
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self._arrays: dict[Any, Any] = {}
        self._owners: dict[Any, Any] = {}
        self._streams: dict[Any, Any] = {}
        self._topk: dict[tuple, selection.TopkWorkspace] = {}
        #: The status entries' positions in an allgather, on the host and on the device.
        self.positions: tuple[np.ndarray, Any] | None = None

    def get(self, name: Any, shape: tuple[int, ...], dtype: Any, stream: Any) -> Any:
        """The buffer ``name``: allocated when missing or of another shape or dtype."""
        array = self._arrays.get(name)
        if array is None or tuple(array.shape) != shape or array.dtype != np.dtype(dtype):
            array = self._owners[name] = _dense.new(shape, dtype, self.device, stream)
        elif self.device != CPU and self._streams.get(name) is stream:
            return array
        if self.device != CPU:
            array = _cuda.bind(array, stream)  # a view: queries that follow it use the stream
        self._arrays[name], self._streams[name] = array, stream
        return array

    def topk(self, d: int, k: int, dtype: Any, stream: Any) -> selection.TopkWorkspace:
        """The device top-k's scratch and results for ``(d, k, dtype)``, kept across steps."""
        key = (int(d), int(k), np.dtype(dtype))
        if key not in self._topk:
            self._topk[key] = selection.TopkWorkspace(d, k, dtype, sorted=False, stream=stream)
        return self._topk[key]

    def owner(self, name: Any) -> Any:
        """The allocation behind buffer ``name`` (itself on the CPU)."""
        return self._owners.get(name, self._arrays[name])

    def exchange(self, name: Any, array: Any) -> Any:
        """Put ``array`` in place of buffer ``name``; return what was there."""
        old = self._arrays[name]
        self._arrays[name], self._owners[name] = array, array
        return old


class Step:
    """One call of :meth:`Algorithm.step`: its inputs, targets, status and commit.

    Parameters
    ----------
    algo : Algorithm
    comm : Communicator
    inputs : list of pysketch._arrays.Input
        The validated vectors of this process's workers (one, summed, for
        ``step_summed``).
    lr : float
        This step's learning rate.
    checked : bool
        Whether the step counts what goes wrong and computes into scratch.
    summed : bool
        Whether ``inputs`` is the local sum (its name in errors is ``local_sum``).
    workers : list of dict
        This process's workers' state (arrays by name).
    """

    def __init__(self, algo, comm, inputs, lr, checked, summed, workers) -> None:
        self.algo, self.comm, self.inputs, self.lr = algo, comm, inputs, lr
        self.checked, self.summed, self.workers = checked, summed, workers
        self.stream = inputs[0].stream if inputs else 0  # none: no local worker takes part
        self.device, self.dtype = algo.device, algo.dtype
        self.limit = _arrays.fit_limit(self.dtype)
        self.first = comm.worker_ids[0] if len(comm.worker_ids) else 0
        self.status: Any = None  # every worker's counts and the server's, read at the end
        self.counts: np.ndarray | None = None  # the status on the host, once read
        self._local: Any = None  # where this process's workers count, until the collective
        self._input_factor = 1.0
        self._swaps: list[tuple[dict, str, Any]] = []
        self._gather: tuple[list[int], int] | None = None  # the pairs' lengths and status
        #: The sum over every worker of what :meth:`wire` returned, once the collective ran.
        self.payload: Any = None
        #: Every worker's pairs, in worker order, once the collective ran (:meth:`pairs`).
        self.gathered: tuple[Any, Any] | None = None
        #: The indices the local phase chose for every worker (random-k's shared ones).
        self.indices: Any = None
        #: The sum of the weights of every worker that takes part (``step(weights=...)``),
        #: or ``None``: each worker weighs 1.
        self.total_weight: float | None = None

    @property
    def total(self) -> float:
        """What divides the collective's sum over the workers into their mean: ``W``, or
        the workers' total weight."""
        return self.comm.world_size if self.total_weight is None else self.total_weight

    def weigh_inputs(self, weights: Sequence[float]) -> None:
        """Replace each input by ``weights[w]`` times it, in a kept buffer: FetchSGD's released
        code multiplies a client's gradient by its batch size before anything else."""
        weighed = []
        for w, (inp, weight) in enumerate(zip(self.inputs, weights, strict=True)):
            scaled = self.buffer(("weighted", w), self.algo.d)
            _dense.copy(scaled, inp.array, self.stream)
            _dense.scale(scaled, float(weight), self.stream)
            weighed.append(self.input(scaled))
        self.inputs = weighed

    # ------------------------------------------------------------- buffers
    def buffer(self, name: Any, shape: int | tuple[int, ...], dtype: Any = None) -> Any:
        """A kept buffer of this algorithm (not zeroed)."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        dtype = self.dtype if dtype is None else dtype
        return self.algo._workspace.get(name, shape, dtype, self.stream)

    def owner(self, name: Any) -> Any:
        """What to hand a communicator for buffer ``name`` (see :class:`Workspace`)."""
        return self.algo._workspace.owner(name)

    def target(self, holder: dict[str, Any], key: str, name: Any) -> Any:
        """Where the new value of ``holder[key]`` goes: scratch when checked, else itself."""
        if not self.checked:
            return holder[key]
        scratch = self.buffer(name, holder[key].shape, holder[key].dtype)
        self._swaps.append((holder, key, name))
        return scratch

    def on_stream(self, array: Any) -> Any:
        """``array`` as a view on this step's stream, for calls that take the stream from it."""
        return array if self.device == CPU else _cuda.bind(array, self.stream)

    def topk(self, x: Any, k: int) -> tuple[Any, Any]:
        """The ``k`` entries of ``x`` of largest magnitude in index order, on this step's
        stream: on CUDA no allocation after the first step and no wait.

        ``x`` is the step's own (its counts cover NaN and Inf): not checked.
        """
        if self.device == CPU:
            return selection.topk(x, k, sorted=False, check_finite=False)
        workspace = self.algo._workspace.topk(x.shape[0], k, x.dtype, self.stream)
        return selection._topk_device(
            x, x, k, ordered=False, stream=self.stream, workspace=workspace
        )

    def heavy_hitters(self, sketch: Any, k: int) -> tuple[Any, Any]:
        """``sketch.heavy_hitters(k)``, estimating into a kept buffer."""
        estimates = self.buffer("estimates", self.algo.d)
        sketch._unsketch(None, reductions.MEDIAN, estimates, self.stream)
        return self.topk(estimates, k)

    def input(self, array: Any) -> _arrays.Input:
        """``array`` as a kernel input on this step's stream."""
        return _arrays.Input(array, self.device, self.stream)

    # ------------------------------------------------------------- the wire
    def wire(self, n: int, *, zero: bool = True) -> Any:
        """The payload (``n`` values, zeroed unless ``zero`` is false) of the step's
        allreduce, followed by the (zeroed) status."""
        extra = status_size(self.comm.world_size) if self.checked else 0
        packed = self.buffer("wire", n + extra)
        zero = zero or not self.inputs  # nothing of this process's would overwrite it
        if zero or extra:
            _dense.fill(packed if zero else packed[n:], 0, self.stream)
        self._nbytes = n * self.dtype.itemsize
        if self.checked:
            self.status = packed[n:]
            per = WORKER_SLOTS
            self._local = self.status[per * self.first : per * (self.first + len(self.inputs))]
        self.payload = packed[:n]
        return self.payload

    def pairs(self, lengths: list[int], index_dtype: Any) -> tuple[Any, Any]:
        """Buffers for this process's workers' (index, value) pairs, ``lengths[w]`` for
        local worker ``w`` in worker order: the payload of the step's allgather, in which
        this process's status travels after its pairs."""
        n, s = sum(lengths), self.stream
        extra = WORKER_SLOTS * len(self.inputs) if self.checked else 0
        send_idx = self.buffer("send indices", n + extra, index_dtype)
        send_val = self.buffer("send values", n + extra)
        if self.checked:
            _dense.fill(send_idx[n:], 0, s)
            _dense.fill(send_val[n:], 0, s)
            self._local = send_val[n:]
        self._gather = (list(lengths), extra)
        return send_idx[:n], send_val[:n]

    def collective(self, *, async_op: bool = False) -> Any:
        """Run the collective that the local phase filled: the allreduce of :meth:`wire`,
        or the allgather of :meth:`pairs`; pass what it returns to :meth:`received`.

        With ``async_op`` (a communicator that starts collectives, as
        :class:`~pysketch.compress.torch_ddp.TorchCommunicator`), start it and
        return its future, whose value is what to pass.
        """
        comm = self.comm
        if self._gather is None:
            args: tuple = (self.owner("wire"), self._nbytes)
            return comm._start_sum_packed(*args) if async_op else comm._sum_packed(*args)
        lengths, extra = self._gather
        args = (self.owner("send indices"), self.owner("send values"), lengths, extra)
        return comm._start_gather_packed(*args) if async_op else comm._gather_packed(*args)

    def received(self, result: Any) -> None:
        """Take the collective's result: the gathered pairs and, among them, the status."""
        if self._gather is None:
            return
        idx, val, positions = result
        if self.checked:
            self._gathered_status(val, self._positions_on_device(positions))
        self.gathered = (idx, val)

    def exchange(self) -> None:
        """The step's collective, run now: :meth:`collective`, then :meth:`received`."""
        self.received(self.collective())

    def _positions_on_device(self, positions: list[int]) -> Any:
        """The status entries' positions in the gathered pairs, uploaded once per layout."""
        host = np.asarray(positions, dtype=np.int64)
        if self.device == CPU:
            return host
        workspace = self.algo._workspace
        kept = workspace.positions
        if kept is None or not np.array_equal(kept[0], host):
            device = self.buffer("status positions", host.shape[0], np.int64)
            _cuda.upload(host, device, self.stream)
            workspace.positions = kept = (host, device)
        return kept[1]

    def _gathered_status(self, values: Any, positions: Any) -> None:
        """The status from the gathered ``values`` at ``positions`` (which are then zeroed)."""
        self.status = self.buffer("status", status_size(self.comm.world_size))
        n = WORKER_SLOTS * self.comm.world_size
        _dense.fill(self.status[n:], 0, self.stream)
        _dense.gather(self.status[:n], values, positions, self.stream)
        _dense.set_at(values, positions, 0, self.stream)

    # ------------------------------------------------------------- status
    def count_input(self, worker: int, x: Any, factor: float = 1.0) -> None:
        """Count NaN/Inf in local worker ``worker``'s input, and values that overflow the
        dtype once multiplied by ``factor``."""
        if self.checked:
            self._input_factor = factor
            slots = self._local[WORKER_SLOTS * worker : WORKER_SLOTS * worker + 2]
            _dense.count_unfit(x, factor, self.limit, slots, self.stream)

    def count_state(self, worker: int, x: Any) -> None:
        """Count non-finite values in local worker ``worker``'s new state or message."""
        if self.checked:
            slots = self._local[WORKER_SLOTS * worker + 2 : WORKER_SLOTS * (worker + 1)]
            _dense.count_unfit(_dense.flat(x), 1.0, self.limit, slots, self.stream)

    def count_server(self, x: Any) -> None:
        """Count non-finite values in the server's new state or the update."""
        if self.checked:
            slots = self.status[WORKER_SLOTS * self.comm.world_size :]
            _dense.count_unfit(_dense.flat(x), 1.0, self.limit, slots, self.stream)

    # ------------------------------------------------------------- the end
    def mark_failed(self) -> None:
        """Mark this process's workers as failed (NaN counts): every process then raises, and
        this one can raise its own error instead (a local phase that could not run)."""
        _dense.fill(self._local, np.nan, self.stream)

    def failure(self) -> ValueError | RuntimeError | None:
        """Read the status (the step's one wait for the device): the error that every
        process raises, or ``None`` when nothing failed (or nothing was checked)."""
        if not self.checked:
            return None
        self.counts = np.asarray(_dense.to_host(self.status, self.stream), dtype=np.float64)
        return self._error(self.counts) if self.counts.any() else None

    def raise_if_failed(self) -> None:
        """Raise :meth:`failure`'s error, if any."""
        error = self.failure()
        if error is not None:
            raise error

    def failed_ranks(self) -> list[int]:
        """The processes with a worker whose counts are not all zero (after :meth:`failure`)."""
        world = self.comm.world_size
        per_worker = self.counts[: WORKER_SLOTS * world].reshape(world, WORKER_SLOTS)
        return self._ranks_of(per_worker.any(axis=1))

    def commit(self) -> None:
        """Swap every scratch buffer into the state it replaces (no copy)."""
        workspace = self.algo._workspace
        for holder, key, name in self._swaps:
            holder[key] = workspace.exchange(name, holder[key])

    def _rank_of(self, g: int) -> int:
        """The process that holds global worker ``g``."""
        return int(np.searchsorted(np.cumsum((0, *self.comm.layout)), g, side="right")) - 1

    def _ranks_of(self, workers: np.ndarray) -> list[int]:
        """The processes that hold the workers where ``workers`` (one flag each) is true."""
        return sorted({self._rank_of(g) for g in np.flatnonzero(workers)})

    def _error(self, counts: np.ndarray) -> ValueError | RuntimeError:
        world = self.comm.world_size
        per_worker = counts[: WORKER_SLOTS * world].reshape(world, WORKER_SLOTS)
        server = counts[WORKER_SLOTS * world :]
        starts = np.cumsum((0, *self.comm.layout))

        def where(g: int) -> tuple[str, str]:
            """The rank prefix and the name of global worker ``g``'s input."""
            rank = self._rank_of(g)
            name = "local_sum" if self.summed else f"vectors[{g - starts[rank]}]"
            return (f"rank {rank}: " if self.comm.ranks > 1 else ""), name

        failed = self._ranks_of(np.isnan(per_worker).any(axis=1))
        if failed:
            return RuntimeError(
                f"the step could not run on rank(s) {failed} (the error is raised there); "
                "nothing was applied"
            )
        problems, error_type = [], ValueError
        for g, (nonfinite, overflow, _, _) in enumerate(per_worker):
            if nonfinite:
                error_type = NonFiniteError
            err = _arrays.unfit_error(
                "".join(where(g)), int(nonfinite), int(overflow), self.dtype, self._input_factor
            )
            if err is not None:
                problems.append(str(err))
        if not problems:
            for g, (_, _, bad, over) in enumerate(per_worker):
                if bad or over:
                    prefix, name = where(g)
                    problems.append(
                        f"{prefix}the worker of {name} would keep {int(bad + over)} non-finite "
                        f"value(s) in its state: it overflows {self.dtype} at lr={self.lr:g}"
                    )
        if not problems and server.any():
            problems.append(
                f"the update or the server's state would hold {int(server.sum())} non-finite "
                f"value(s): the sum over the {world} workers, or lr={self.lr:g} times it, "
                f"overflows {self.dtype}"
            )
        return error_type("; ".join(problems))
