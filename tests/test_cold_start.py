"""Cold start: CUDA stays unimported on the CPU path, lazy kernels bind on first use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pysketch import _cuda

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_import_and_cpu_use_leave_numba_cuda_unimported():
    code = (
        "import sys, numpy as np, pysketch\n"
        "assert 'numba.cuda' not in sys.modules, 'import'\n"
        "pysketch.randomk(100, 5, seed=1)\n"
        "pysketch.CountSketch(10, 2, 4).accumulate(np.ones(10, np.float32)).estimate()\n"
        "assert 'numba.cuda' not in sys.modules, 'CPU use'\n"
        "from pysketch import _cuda\n"
        "assert not _cuda.cuda_imported()\n"
        "_cuda.available()\n"
        "assert _cuda.cuda_imported()\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]


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
