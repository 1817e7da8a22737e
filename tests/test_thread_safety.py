"""Python threads and Numba's threading layers (issue 10, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest

from pysketch import CountMinSketch, CountSketch, topk
from pysketch.kernels import parallel

ROOT = Path(__file__).resolve().parents[1]

_CONCURRENT = textwrap.dedent(
    """
    import sys, threading
    sys.path.insert(0, {root!r})
    import numba, numpy as np
    from pysketch import CountMinSketch, CountSketch, threshold, topk
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    keys = np.arange(100_000)
    errors, barrier = [], threading.Barrier(3)

    def work():
        try:
            sketch, cms = CountSketch(100_000, 5, 2048), CountMinSketch(4, 512)
            barrier.wait()  # all threads launch parallel kernels at the same moment
            for _ in range(20):
                sketch.accumulate(x)
                cms.update(keys, np.abs(x))
                topk(x, 10), threshold(x, 2.0), sketch.estimate()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    from numba.np.ufunc import parallel as layer
    print(layer._is_initialized)  # pysketch never starts a threading layer
    """
)


@pytest.mark.parametrize("layer", ["workqueue", "default"])
def test_python_threads_may_call_kernels_concurrently(layer):
    """Under workqueue, concurrent launches used to abort the process (SIGABRT)."""
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer, NUMBA_NUM_THREADS="2")
    result = subprocess.run(
        [sys.executable, "-c", _CONCURRENT.format(root=str(ROOT))],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.split()[-1] == "False"


def _rows_of(out, bad):
    return out.shape[0]


@parallel.task_kernel(tasks=_rows_of)
def _fill_rows(out, bad, first, last):
    for t in range(first, last):
        if t == bad:
            raise ValueError("bad task")
        out[t] = t


@pytest.mark.parametrize("threads", [1, 2])
def test_task_kernels_cover_every_task_once(threads):
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        out = np.full(7, -1)
        _fill_rows(out, -1)
        np.testing.assert_array_equal(out, np.arange(7))
    finally:
        numba.set_num_threads(previous)


@pytest.mark.parametrize("bad", [0, 6])  # in the calling thread's range, in a worker's
def test_task_kernel_errors_reach_the_caller(bad):
    with pytest.raises(ValueError, match="bad task"):
        _fill_rows(np.zeros(7, dtype=np.int64), bad)


def test_results_under_concurrency_equal_sequential_ones():
    import threading

    x = np.random.default_rng(1).standard_normal(50_000)
    expected = CountSketch(50_000, 3, 512).accumulate(x).table
    out = [None] * 4

    def work(i):
        out[i] = (CountSketch(50_000, 3, 512).accumulate(x).table, topk(x, 5)[0])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for table, top in out:
        np.testing.assert_array_equal(table, expected)
        np.testing.assert_array_equal(top, topk(x, 5)[0])
    assert CountMinSketch(2, 4).update([1], 1.0).total_weight == 1.0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_task_kernels_work_in_a_forked_child():
    """The child has none of the parent's pool threads: it must start its own."""
    import multiprocessing

    x = np.random.default_rng(2).standard_normal(300_000)
    expected = CountSketch(300_000, 3, 512).accumulate(x).table  # the parent's pool runs
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        table = pool.apply(_sketch_in_child, (x,))
    np.testing.assert_array_equal(table, expected)


def _sketch_in_child(x):
    return CountSketch(x.shape[0], 3, 512).accumulate(x).table
