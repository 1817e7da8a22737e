"""Cold start: CUDA stays unimported on the CPU path, lazy kernels bind on first use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pysketch import _cuda

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def assert_runs(*lines: str) -> None:
    """Run ``lines`` in a fresh interpreter (CUDA simulator off); fail with its stderr."""
    result = run_python("\n".join(lines))
    assert result.returncode == 0, result.stderr[-2000:]


def test_import_and_cpu_use_leave_numba_cuda_unimported():
    assert_runs(
        "import sys, numpy as np, pysketch",
        "assert 'numba.cuda' not in sys.modules, 'import'",
        "pysketch.randomk(100, 5, seed=1)",
        "s = pysketch.CountSketch(10, 2, 4).accumulate(np.ones(10, np.float32))",
        "s.estimate(); s.desketch(); s.heavy_hitters(2); s.l2_estimate(); s.estimate([1, 2])",
        "from pysketch.compress import LocalCommunicator, make_algorithm",
        "algo = make_algorithm('sketchdl', 10, lr=0.1, rows=2, cols=4)",
        "algo.step([np.ones(10, np.float32)] * 2, LocalCommunicator(2))",
        "assert 'numba.cuda' not in sys.modules, 'CPU use'",
        "from pysketch import _cuda",
        "assert not _cuda.cuda_imported()",
        "_cuda.available()",
        "assert _cuda.cuda_imported()",
    )


KERNEL_SOURCE = """
from pysketch._cuda import cuda


@cuda.jit
def double(x):
    i = cuda.grid(1)
    if i < x.shape[0]:
        x[i] *= 2
"""


def fresh_kernel_module() -> dict:
    """The globals of a module defining a kernel, as the kernel modules do."""
    namespace: dict = {"__name__": "lazy_kernel_example"}
    exec(compile(KERNEL_SOURCE, "<lazy_kernel_example>", "exec"), namespace)
    return namespace


def test_lazy_kernel_keeps_the_function_and_binds_the_module():
    namespace = fresh_kernel_module()
    kernel = namespace["double"]
    assert isinstance(kernel, _cuda.LazyKernel) and kernel.__name__ == "double"
    assert namespace["cuda"] is _cuda.cuda  # nothing bound yet
    assert kernel.py_func.__name__ == "double"  # reading it binds the module
    import numba.cuda

    assert namespace["cuda"] is numba.cuda
    assert namespace["double"] is kernel.dispatcher()


@pytest.mark.cuda
def test_lazy_kernel_launches():
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    kernel = fresh_kernel_module()["double"]
    x = _cuda.to_device(np.arange(5, dtype=np.float32))
    _cuda.launch(kernel, 5)(x)
    np.testing.assert_array_equal(_cuda.to_host(x), [0, 2, 4, 6, 8])


def test_lazy_module_stand_in_reads_through():
    assert repr(_cuda.cuda).startswith("<lazy numba.cuda")
    assert callable(_cuda.cuda.is_available)


# ------------------------------------------------- fewer compiled signatures


def _value_types(dispatcher, position: int) -> set[str]:
    return {str(sig[position].dtype) for sig in dispatcher.signatures}


def test_cpu_kernels_see_int64_indices_and_float_values_only():
    from pysketch import CountMinSketch, CountSketch, threshold
    from pysketch.kernels import countmin as cm_kernels
    from pysketch.kernels import countsketch as cs_kernels
    from pysketch.kernels import reductions

    cs = CountSketch(50, 3, 16)
    cs.accumulate(np.arange(50, dtype=np.int32))
    cs.accumulate_sparse(np.array([1, 2], dtype=np.int32), np.array([3, 4], dtype=np.int16))
    cs.accumulate_sparse(np.array([1, 2], dtype=np.uint64), np.array([3.0, 4.0]))
    cs.estimate(np.array([1, 2], dtype=np.uint32))
    cm = CountMinSketch(3, 16)
    cm.update(np.array([1, 2], dtype=np.int32), np.array([1, 2], dtype=np.int8))
    cm.update(np.array([1, 2], dtype=np.uint16), 3)
    cm.update_dense(np.arange(4, dtype=np.uint8))
    cm.estimate(np.array([1], dtype=np.int32))
    threshold(np.arange(5, dtype=np.int32), 2.0)

    # cpu_accumulate(table, buffers, spilled, family, keys, indices, values, ...)
    assert _value_types(cs_kernels.cpu_accumulate, 5) <= {"int64"}
    assert _value_types(cs_kernels.cpu_accumulate, 6) <= {"float32", "float64"}
    assert _value_types(cs_kernels.cpu_estimate, 3) <= {"int64"}
    assert _value_types(cm_kernels.cpu_update, 3) <= {"int64"}
    assert _value_types(cm_kernels.cpu_update, 5) <= {"float32", "float64"}
    assert _value_types(cm_kernels.cpu_query, 3) <= {"int64"}
    assert _value_types(reductions._count_out_of_range_tasks, 0) <= {"int64"}


def test_integer_inputs_give_the_same_sketch_as_floats():
    from pysketch import CountMinSketch, CountSketch

    x = np.arange(-20, 20)
    a = CountSketch(40, 3, 8, seed=3).accumulate(x.astype(np.int32))
    b = CountSketch(40, 3, 8, seed=3).accumulate(x.astype(np.float64))
    np.testing.assert_array_equal(a.table, b.table)
    c = CountMinSketch(3, 8).update(np.array([4, 5], np.uint8), np.array([2, 7], np.int64))
    d = CountMinSketch(3, 8).update(np.array([4, 5]), np.array([2.0, 7.0]))
    np.testing.assert_array_equal(c.table, d.table)


def test_out_of_range_unsigned_indices_are_still_refused():
    from pysketch import CountSketch

    sketch = CountSketch(10, 2, 4)
    with pytest.raises(IndexError, match="indices"):
        sketch.accumulate_sparse(np.array([2**63 + 1], dtype=np.uint64), [1.0])
    assert not sketch.table.any()


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_host_splitmix_matches_the_compiled_one(state):
    from pysketch import hashing

    host = hashing.splitmix64_host(state)
    compiled = _compiled_splitmix(np.uint64(state))
    assert (int(host[0]), int(host[1])) == (int(compiled[0]), int(compiled[1]))


def _compiled_splitmix(state):
    from numba import njit

    from pysketch import hashing

    global _SPLITMIX_JIT
    if _SPLITMIX_JIT is None:
        _SPLITMIX_JIT = njit(hashing.splitmix64.py_func)
    return _SPLITMIX_JIT(state)


_SPLITMIX_JIT = None


def test_hash_keys_and_randomk_compile_nothing():
    assert_runs(
        "import pysketch",
        "from pysketch import hashing",
        "hashing.hash_keys(5, 4, 'polynomial'); pysketch.randomk(1000, 10, seed=3)",
        "assert not hashing.splitmix64.signatures, hashing.splitmix64.signatures",
    )


def test_import_defers_numba_until_a_name_is_used():
    assert_runs(
        "import sys, pysketch",
        "assert 'numba' not in sys.modules, 'import pysketch loaded numba'",
        "assert pysketch.topk.__module__ == 'pysketch.selection'",
        "assert 'numba' in sys.modules",
    )


def test_lazy_names_are_the_public_api():
    import pysketch

    assert set(pysketch.__all__) == set(pysketch._ATTRIBUTES)
    for name in pysketch.__all__:
        assert getattr(pysketch, name) is not None
        assert name in dir(pysketch)
    for name in pysketch._SUBMODULES:
        assert getattr(pysketch, name).__name__ == f"pysketch.{name}"
    with pytest.raises(AttributeError, match="no attribute 'CountSketches'"):
        pysketch.CountSketches  # noqa: B018
