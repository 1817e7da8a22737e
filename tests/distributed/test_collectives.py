"""Collectives of pysketch.distributed, run on every rank under mpiexec.

Each rank builds its input from a rank-dependent seed and also builds every
other rank's, so it can check the collective against a serial computation.
Device arrays are tiny: they live in Numba's CUDA simulator.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.distributed.conftest import skip_unless_under_mpiexec

skip_unless_under_mpiexec()

from pysketch import CountSketch, _cuda  # noqa: E402
from pysketch import distributed as dist  # noqa: E402
from pysketch.distributed import transfer  # noqa: E402
from tests.conftest import on_device, to_host  # noqa: E402

pytestmark = pytest.mark.mpi

SIM = _cuda.SIMULATOR
needs_device = pytest.mark.skipif(not _cuda.available(), reason="no CUDA device nor simulator")


def multi_rank(comm) -> None:
    """Skip (on every rank alike) when there is only one rank."""
    if comm.Get_size() < 2:
        pytest.skip("needs at least 2 ranks")


def rank_vector(rank: int, n: int, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(1000 + rank)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(n).astype(dtype)
    return rng.integers(-100, 100, size=n).astype(dtype)


def serial_sum(size: int, n: int, dtype) -> np.ndarray:
    return np.sum([rank_vector(r, n, dtype).astype(np.float64) for r in range(size)], axis=0)


def tol(dtype) -> dict:
    return {"rtol": 1e-5, "atol": 1e-5} if np.dtype(dtype) == np.float32 else {"rtol": 1e-12}


def assert_usable(comm) -> None:
    """After an error the communicator still works (nobody is stuck in a collective)."""
    assert comm.allreduce(1) == comm.Get_size()


class HostCAI:
    """A fake device array: ``__cuda_array_interface__`` over host memory.

    A non-CUDA-aware MPI reads it as host memory, which makes the direct path
    testable without a GPU.
    """

    def __init__(self, host: np.ndarray) -> None:
        self.host = np.ascontiguousarray(host)

    @property
    def shape(self):
        return self.host.shape

    @property
    def dtype(self):
        return self.host.dtype

    @property
    def __cuda_array_interface__(self):
        return {
            "data": (self.host.ctypes.data, False),
            "shape": self.host.shape,
            "typestr": self.host.dtype.str,
            "strides": None,
            "version": 3,
            "stream": None,
        }


# ---------------------------------------------------------------- dense, host
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("in_place", [False, True])
def test_allreduce_dense_equals_serial_sum(comm, dtype, in_place):
    n = 257
    x = rank_vector(comm.Get_rank(), n, dtype)
    before = x.copy()
    out = x if in_place else None
    result = dist.allreduce(x, comm, out=out)
    expected = serial_sum(comm.Get_size(), n, dtype)
    np.testing.assert_allclose(result.astype(np.float64), expected, **tol(dtype))
    assert result.dtype == np.dtype(dtype)
    if in_place:
        assert result is x
    else:
        np.testing.assert_array_equal(x, before)


def test_allreduce_into_given_out_and_2d(comm):
    x = rank_vector(comm.Get_rank(), 12, np.float64).reshape(3, 4)
    out = np.empty((3, 4))
    assert dist.allreduce(x, comm, out=out) is out
    np.testing.assert_allclose(out.ravel(), serial_sum(comm.Get_size(), 12, np.float64))


@pytest.mark.parametrize("op,reduce", [("max", np.max), ("min", np.min)])
def test_allreduce_ops(comm, op, reduce):
    x = rank_vector(comm.Get_rank(), 33, np.float32)
    expected = reduce([rank_vector(r, 33, np.float32) for r in range(comm.Get_size())], axis=0)
    np.testing.assert_array_equal(dist.allreduce(x, comm, op=op), expected)


def test_comm_defaults_to_counter_comm_then_world(comm):
    counter = dist.ByteCounter(comm)
    x = np.ones(4, dtype=np.float32)
    np.testing.assert_array_equal(dist.allreduce(x, counter=counter), comm.Get_size() * x)
    np.testing.assert_array_equal(dist.allreduce(x), comm.Get_size() * x)


# ------------------------------------------------------------------ sketches
def rank_sketch(rank: int, device: str = "cpu", **params) -> CountSketch:
    params = {"d": 300, "rows": 3, "cols": 40, "seed": 11, **params}
    sketch = CountSketch(**params, device=device)
    x = rank_vector(rank, params["d"], np.float32)
    return sketch.accumulate(on_device(x, device))


def serial_sketch_table(size: int, **params) -> np.ndarray:
    return np.sum([rank_sketch(r, **params).table.astype(np.float64) for r in range(size)], axis=0)


@pytest.mark.parametrize("in_place", [True, False])
def test_allreduce_sketch_equals_serial_sum(comm, in_place):
    sketch = rank_sketch(comm.Get_rank())
    before = sketch.table.copy()
    out = None if in_place else CountSketch(d=300, rows=3, cols=40, seed=11)
    result = dist.allreduce_sketch(sketch, comm, out=out)
    assert result is (sketch if in_place else out)
    expected = serial_sketch_table(comm.Get_size())
    np.testing.assert_allclose(result.table, expected, **tol(np.float32))
    if not in_place:
        np.testing.assert_array_equal(sketch.table, before)


def test_allreduce_sketch_is_sketch_of_the_sum(comm):
    """Linearity: the reduced sketch estimates the summed vector's heavy coordinate."""
    d, size = 500, comm.Get_size()
    x = np.zeros(d, dtype=np.float32)
    x[7] = 100.0
    x[comm.Get_rank() + 20] = 1.0
    sketch = CountSketch(d=d, rows=5, cols=64, seed=3).accumulate(x)
    dist.allreduce_sketch(sketch, comm)
    assert abs(float(sketch.estimate([7])[0]) - 100.0 * size) < size + 1e-3


def test_allreduce_countmin_table_and_total_weight(comm):
    countmin = pytest.importorskip("pysketch.countmin")
    rank, size = comm.Get_rank(), comm.Get_size()

    def rank_cms(r):
        keys = np.arange(r, r + 10)
        return countmin.CountMinSketch(rows=3, cols=32, seed=5).update(keys, float(r + 1))

    cms = rank_cms(rank)
    dist.allreduce_sketch(cms, comm)
    expected = np.sum([rank_cms(r).table for r in range(size)], axis=0)
    np.testing.assert_allclose(cms.table, expected)
    assert cms.total_weight == pytest.approx(sum(10.0 * (r + 1) for r in range(size)))


def test_allreduce_countmin_out_of_place_sums_total_weight_into_out(comm):
    countmin = pytest.importorskip("pysketch.countmin")
    rank, size = comm.Get_rank(), comm.Get_size()
    cms = countmin.CountMinSketch(rows=3, cols=32, seed=5).update([rank], 2.0)
    out = countmin.CountMinSketch(rows=3, cols=32, seed=5)
    assert dist.allreduce_sketch(cms, comm, out=out) is out
    assert out.total_weight == 2.0 * size and cms.total_weight == 2.0
    np.testing.assert_allclose(out.table.sum(), 3 * 2.0 * size)


def test_check_compatible_returns_common_fingerprint(comm):
    fp = dist.check_compatible(rank_sketch(comm.Get_rank()), comm)
    assert (fp["type"], fp["d"], fp["rows"], fp["cols"]) == ("CountSketch", 300, 3, 40)
    assert fp["seed"] == 11
    assert fp["dtype"] == "float32" and fp["hash"] == "mix"


# ----------------------------------------------------------- device arrays
def _skip_direct_without_cuda_aware_mpi(comm, path):
    """The simulator's device arrays are host memory; a real GPU's are not, and an MPI
    library that is not CUDA-aware crashes on them (segfault) instead of raising."""
    if path == "direct" and not SIM and not dist.cuda_aware(comm):
        pytest.skip("path='direct' with real device memory needs a CUDA-aware MPI")


@needs_device
@pytest.mark.parametrize("path", ["staged", "direct"])
@pytest.mark.parametrize("in_place", [False, True])
def test_allreduce_device_arrays(comm, path, in_place):
    _skip_direct_without_cuda_aware_mpi(comm, path)
    n = 9
    x = on_device(rank_vector(comm.Get_rank(), n, np.float64), "cuda")
    counter = dist.ByteCounter(comm)
    result = dist.allreduce(x, comm, out=x if in_place else None, path=path, counter=counter)
    assert _cuda.is_cuda_array(result)
    assert (result is x) == in_place
    np.testing.assert_allclose(to_host(result), serial_sum(comm.Get_size(), n, np.float64))
    assert counter.records[-1].path == path


@needs_device
def test_staged_is_the_default_and_env_var_forces_direct(comm, monkeypatch):
    x = on_device(np.ones(5, dtype=np.float32), "cuda")
    monkeypatch.delenv(dist.ENV_CUDA_AWARE, raising=False)
    really_cuda_aware = dist.cuda_aware(comm)
    if not really_cuda_aware:  # the PyPI MPI wheels are not CUDA-aware
        assert dist.transfer_path(x, comm) == "staged"
    monkeypatch.setenv(dist.ENV_CUDA_AWARE, "1")
    assert dist.cuda_aware(comm) is True
    assert dist.transfer_path(x, comm) == "direct"
    if SIM or really_cuda_aware:  # else MPI would crash on real device memory
        counter = dist.ByteCounter(comm)
        dist.allreduce(x, comm, out=x, counter=counter)
        assert counter.records[-1].path == "direct"
        np.testing.assert_array_equal(to_host(x), np.full(5, comm.Get_size(), np.float32))
    monkeypatch.setenv(dist.ENV_CUDA_AWARE, "0")
    assert dist.transfer_path(x, comm) == "staged"
    assert dist.transfer_path(np.ones(2), comm) == "host"


@pytest.mark.parametrize("in_place", [False, True])
def test_direct_path_with_fake_cai_array(comm, in_place):
    """mpi4py takes ``__cuda_array_interface__`` objects: the direct path hands them over."""
    x = HostCAI(rank_vector(comm.Get_rank(), 6, np.float32))
    out = x if in_place else HostCAI(np.zeros(6, np.float32))
    counter = dist.ByteCounter(comm)
    result = dist.allreduce(x, comm, out=out, path="direct", counter=counter)
    assert result is out
    expected = serial_sum(comm.Get_size(), 6, np.float32)
    np.testing.assert_allclose(out.host, expected, **tol(np.float32))
    assert counter.records[-1].path == "direct"


@pytest.mark.skipif(not SIM, reason="a host pointer is not device memory on a real GPU")
def test_staged_path_with_fake_cai_array(comm):
    x = HostCAI(rank_vector(comm.Get_rank(), 6, np.float64))
    out = HostCAI(np.zeros(6))
    dist.allreduce(x, comm, out=out, path="staged")
    np.testing.assert_allclose(out.host, serial_sum(comm.Get_size(), 6, np.float64))


@needs_device
@pytest.mark.parametrize("path", ["staged", "direct"])
def test_allreduce_device_sketch(comm, path):
    _skip_direct_without_cuda_aware_mpi(comm, path)
    params = {"d": 40, "rows": 2, "cols": 8, "seed": 4}
    sketch = rank_sketch(comm.Get_rank(), device="cuda", **params)
    counter = dist.ByteCounter(comm)
    dist.allreduce_sketch(sketch, comm, path=path, counter=counter)
    assert sketch.device == "cuda"
    expected = serial_sketch_table(comm.Get_size(), **params)
    np.testing.assert_allclose(sketch.table_to_host(), expected, **tol(np.float32))
    assert counter.records[-1].path == path
    assert counter.records[-1].payload_sent == sketch.nbytes


def test_staging_buffers_are_reused(comm):
    first = transfer._staging_buffer("test", (10,), np.float32)
    second = transfer._staging_buffer("test", (3, 2), np.float64)
    assert first.base is second.base or np.shares_memory(first, second)
    dist.release_staging_buffers()
    third = transfer._staging_buffer("test", (10,), np.float32)
    assert not np.shares_memory(first, third)
    dist.release_staging_buffers()


# ---------------------------------------------------------- sparse allgather
def rank_message(rank: int, idx_dtype=np.int64, val_dtype=np.float32):
    m = 2 * rank  # rank 0 sends an empty message
    rng = np.random.default_rng(2000 + rank)
    return (
        rng.integers(0, 10_000, size=m).astype(idx_dtype),
        rng.standard_normal(m).astype(val_dtype),
    )


@pytest.mark.parametrize("idx_dtype,val_dtype", [(np.int64, np.float32), (np.int32, np.float64)])
def test_allgather_sparse_different_lengths(comm, idx_dtype, val_dtype):
    size = comm.Get_size()
    idx, val = rank_message(comm.Get_rank(), idx_dtype, val_dtype)
    got_idx, got_val, counts = dist.allgather_sparse(idx, val, comm)
    messages = [rank_message(r, idx_dtype, val_dtype) for r in range(size)]
    np.testing.assert_array_equal(got_idx, np.concatenate([m[0] for m in messages]))
    np.testing.assert_array_equal(got_val, np.concatenate([m[1] for m in messages]))
    assert got_idx.dtype == np.dtype(idx_dtype) and got_val.dtype == np.dtype(val_dtype)
    assert counts.tolist() == [2 * r for r in range(size)]


def test_allgather_sparse_as_lists(comm):
    idx, val = rank_message(comm.Get_rank())
    idx_list, val_list, counts = dist.allgather_sparse(idx, val, comm, concatenate=False)
    assert len(idx_list) == len(val_list) == comm.Get_size()
    for r, (i, v) in enumerate(zip(idx_list, val_list, strict=True)):
        np.testing.assert_array_equal(i, rank_message(r)[0])
        np.testing.assert_array_equal(v, rank_message(r)[1])
        assert len(i) == counts[r]


def test_allgather_sparse_all_empty(comm):
    idx, val, counts = dist.allgather_sparse(np.empty(0, np.int64), np.empty(0, np.float32), comm)
    assert idx.size == val.size == 0 and counts.tolist() == [0] * comm.Get_size()


@needs_device
@pytest.mark.parametrize("path", ["staged", "direct"])
def test_allgather_sparse_device(comm, path):
    _skip_direct_without_cuda_aware_mpi(comm, path)
    idx, val = rank_message(comm.Get_rank())
    counter = dist.ByteCounter(comm)
    got_idx, got_val, _ = dist.allgather_sparse(
        on_device(idx, "cuda"), on_device(val, "cuda"), comm, path=path, counter=counter
    )
    assert _cuda.is_cuda_array(got_idx) and _cuda.is_cuda_array(got_val)
    messages = [rank_message(r) for r in range(comm.Get_size())]
    np.testing.assert_array_equal(to_host(got_idx), np.concatenate([m[0] for m in messages]))
    np.testing.assert_array_equal(to_host(got_val), np.concatenate([m[1] for m in messages]))
    assert counter.records[-1].path == path


# -------------------------------------------------------------- byte counts
def test_byte_counter_allreduce_formulas(comm):
    size, n = comm.Get_size(), 1000
    counter = dist.ByteCounter(comm)
    dist.allreduce(np.ones(n, dtype=np.float32), comm, counter=counter)
    dist.allreduce(np.ones(n, dtype=np.float64), comm, counter=counter)
    r32, r64 = counter.records
    assert (r32.op, r32.path, r32.world_size, r32.step) == ("allreduce", "host", size, 0)
    assert r32.payload_sent == r32.payload_received == 4 * n
    assert r64.payload_sent == r64.payload_received == 8 * n
    assert r32.wire_sent == r32.wire_received == 2 * (size - 1) * 4 * n // size
    assert r64.wire_sent == r64.wire_received == 2 * (size - 1) * 8 * n // size
    assert (r32.control > 0) == (size > 1)  # the fingerprint check
    step = counter.step()
    assert step.calls == 2 and step.payload_sent == 12 * n
    assert counter.last_step == step and counter.current.calls == 0
    dist.allreduce(np.ones(n, dtype=np.float32), comm, counter=counter, check=False)
    assert counter.records[-1].control == 0 and counter.records[-1].step == 1
    assert counter.total.payload_sent == 16 * n and counter.total.calls == 3
    assert counter.total == counter.last_step + counter.current
    counter.step()
    assert counter.last_step.payload == 8 * n
    assert len(counter.steps) == 2


def test_byte_counter_sketch_is_table_bytes(comm):
    counter = dist.ByteCounter(comm)
    sketch = rank_sketch(comm.Get_rank())
    dist.allreduce_sketch(sketch, comm, counter=counter)
    (rec,) = counter.records
    assert rec.op == "allreduce_sketch"
    assert rec.payload_sent == rec.payload_received == 3 * 40 * 4 == sketch.nbytes
    assert rec.wire_sent == 2 * (comm.Get_size() - 1) * sketch.nbytes // comm.Get_size()


def test_byte_counter_allgather_formulas(comm):
    size, rank = comm.Get_size(), comm.Get_rank()
    counter = dist.ByteCounter(comm)
    idx, val = rank_message(rank)  # int64 + float32: 12 bytes an entry, 2r entries
    dist.allgather_sparse(idx, val, comm, counter=counter)
    (rec,) = counter.records
    sizes = [12 * 2 * r for r in range(size)]
    assert rec.payload_sent == sizes[rank]
    assert rec.payload_received == sum(sizes) - sizes[rank]
    assert rec.wire_received == sum(sizes) - sizes[rank]
    assert rec.wire_sent == (sum(sizes) - sizes[(rank + 1) % size] if size > 1 else 0)
    # Equal messages of m bytes: (W - 1) * m each way.
    counter.reset()
    dist.allgather_sparse(np.arange(5), np.ones(5, np.float64), comm, counter=counter)
    assert counter.records[0].wire_sent == counter.records[0].wire_received == (size - 1) * 5 * 16


# ---------------------------------------------- mismatches raise on all ranks
@pytest.mark.parametrize(
    "field,value",
    [("seed", 12), ("cols", 41), ("dtype", np.float64), ("hash", "polynomial"), ("d", 301)],
)
def test_mismatched_sketches_raise_on_every_rank(comm, field, value):
    multi_rank(comm)
    params = {"d": 300, "rows": 3, "cols": 40, "seed": 11}
    if comm.Get_rank() == 1:
        params[field] = value
    sketch = CountSketch(**params)
    with pytest.raises(ValueError, match=rf"rank 1 differs from rank 0 in .*{field}"):
        dist.check_compatible(sketch, comm)
    with pytest.raises(ValueError, match=rf"rank 1 differs from rank 0 in .*{field}"):
        dist.allreduce_sketch(sketch, comm)
    assert_usable(comm)


def test_sketch_type_mismatch_raises_on_every_rank(comm):
    multi_rank(comm)
    countmin = pytest.importorskip("pysketch.countmin")
    if comm.Get_rank() == comm.Get_size() - 1:
        sketch = countmin.CountMinSketch(rows=3, cols=40, seed=11, dtype=np.float32)
    else:
        sketch = CountSketch(d=300, rows=3, cols=40, seed=11)
    with pytest.raises(ValueError, match=r"type"):
        dist.allreduce_sketch(sketch, comm)
    assert_usable(comm)


def test_not_a_sketch_on_one_rank_raises_on_every_rank(comm):
    multi_rank(comm)
    last = comm.Get_size() - 1
    sketch = np.zeros((3, 40), np.float32) if comm.Get_rank() == last else rank_sketch(0)
    with pytest.raises(ValueError, match=rf"failed on rank {last} .*must be a pysketch sketch"):
        dist.allreduce_sketch(sketch, comm)
    assert_usable(comm)


def test_incompatible_out_raises_on_every_rank(comm):
    multi_rank(comm)
    sketch = rank_sketch(comm.Get_rank())
    out = CountSketch(d=300, rows=3, cols=40, seed=99 if comm.Get_rank() == 0 else 11)
    with pytest.raises(ValueError, match=r"failed on rank 0 .*out is not compatible"):
        dist.allreduce_sketch(sketch, comm, out=out)
    assert_usable(comm)


@pytest.mark.parametrize(
    "bad",
    [
        {"n": 11},  # a different length
        {"dtype": np.float64},  # a different dtype
        {"op": "max"},  # a different op
    ],
)
def test_mismatched_dense_arrays_raise_on_every_rank(comm, bad):
    multi_rank(comm)
    args = {"n": 10, "dtype": np.float32, "op": "sum"}
    if comm.Get_rank() == 1:
        args.update(bad)
    x = np.ones(args["n"], dtype=args["dtype"])
    field = {"n": "shape", "dtype": "dtype", "op": "op"}[next(iter(bad))]
    with pytest.raises(ValueError, match=rf"rank 1 differs from rank 0 in {field}"):
        dist.allreduce(x, comm, op=args["op"])
    assert_usable(comm)


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.ones(10, dtype=np.complex64), "complex64"),
        (np.ones(10, dtype=np.float16), "float16"),
        (np.array(["a"] * 10), "<U1"),
    ],
)
def test_wrong_dtype_on_one_rank_raises_on_every_rank(comm, bad, match):
    multi_rank(comm)
    last = comm.Get_size() - 1
    x = bad if comm.Get_rank() == last else np.ones(10, np.float32)
    with pytest.raises(ValueError, match=rf"failed on rank {last} .*{match}"):
        dist.allreduce(x, comm)
    assert_usable(comm)


def test_bad_out_or_op_on_every_rank(comm):
    with pytest.raises(ValueError, match="out must have shape"):
        dist.allreduce(np.ones(4, np.float32), comm, out=np.empty(5, np.float32))
    with pytest.raises(ValueError, match="op must be one of"):
        dist.allreduce(np.ones(4, np.float32), comm, op="avg")
    with pytest.raises(ValueError, match="path must be"):
        dist.allreduce(np.ones(4, np.float32), comm, path="teleport")
    assert_usable(comm)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"values": np.ones(2, np.float64)}, "values dtype"),  # differs from other ranks
        ({"indices": np.ones(2, np.int32)}, "indices dtype"),
    ],
)
def test_allgather_sparse_dtype_mismatch_raises_on_every_rank(comm, bad, match):
    multi_rank(comm)
    msg = {"indices": np.arange(2, dtype=np.int64), "values": np.ones(2, np.float32)}
    if comm.Get_rank() == 1:
        msg.update(bad)
    with pytest.raises(ValueError, match=rf"rank 1 differs from rank 0 in {match}"):
        dist.allgather_sparse(msg["indices"], msg["values"], comm)
    assert_usable(comm)


@pytest.mark.parametrize(
    "indices,values,match",
    [
        (np.arange(3), np.ones(2, np.float32), "same length"),
        (np.ones(2, np.float64), np.ones(2, np.float32), "indices must hold integers"),
        (np.ones((2, 1), np.int64), np.ones(2, np.float32), "1-dimensional"),
    ],
)
def test_allgather_sparse_bad_message_on_one_rank_raises_on_every_rank(
    comm, indices, values, match
):
    multi_rank(comm)
    if comm.Get_rank() != 0:
        indices, values = np.arange(2), np.ones(2, np.float32)
    with pytest.raises(ValueError, match=rf"failed on rank 0 .*{match}"):
        dist.allgather_sparse(indices, values, comm)
    assert_usable(comm)


# --------------------------------------------------------------------- seeds
def test_broadcast_seed_from_root(comm):
    rank, size = comm.Get_rank(), comm.Get_size()
    assert dist.broadcast_seed(1234 if rank == 0 else rank, comm) == 1234
    root = size - 1
    assert dist.broadcast_seed(77 if rank == root else None, comm, root=root) == 77


def test_broadcast_fresh_seed_is_the_same_everywhere(comm):
    seed = dist.broadcast_seed(None, comm)
    assert len(set(comm.allgather(seed))) == 1
    sketch = CountSketch(d=100, rows=2, cols=10, seed=seed)
    dist.check_compatible(sketch, comm)


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, "7"])
def test_broadcast_bad_seed_raises_on_every_rank(comm, bad):
    seed = bad if comm.Get_rank() == 0 else 5
    with pytest.raises(ValueError, match=r"root \(rank 0\) has a bad seed"):
        dist.broadcast_seed(seed, comm)
    assert_usable(comm)


# ------------------------------------------------------------- cuda_aware
def test_cuda_aware_env_override(comm, monkeypatch):
    monkeypatch.setenv(dist.ENV_CUDA_AWARE, "1")
    assert dist.cuda_aware(comm) is True
    monkeypatch.setenv(dist.ENV_CUDA_AWARE, "0")
    assert dist.cuda_aware(comm) is False
    monkeypatch.setenv(dist.ENV_CUDA_AWARE, "maybe")
    with pytest.raises(ValueError, match=dist.ENV_CUDA_AWARE):
        dist.cuda_aware(comm)
    monkeypatch.delenv(dist.ENV_CUDA_AWARE)
    assert isinstance(dist.cuda_aware(comm), bool)


def test_memory_alloc_kinds_parsing():
    assert transfer._has_cuda_kind("system,mpi,cuda:device,cuda:managed")
    assert transfer._has_cuda_kind("cuda")
    assert not transfer._has_cuda_kind("system,mpi,rocm:device")
    assert not transfer._has_cuda_kind("")
    assert not transfer._has_cuda_kind(None)
