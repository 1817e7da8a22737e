"""Review debts of issue 10 (item 11): streams, device copies, one median network."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from pysketch import CountMinSketch, CountSketch, _cuda
from pysketch.kernels import countsketch as cs_kernels
from pysketch.kernels import reductions
from tests.conftest import on_device, to_host

pytestmark = pytest.mark.cuda


@pytest.fixture
def recorded(monkeypatch):
    """Every kernel launch's stream, with the caller's stream replaced by a sentinel one."""
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    caller = _cuda.cuda.stream()
    streams = []
    real_launch = _cuda.launch

    def launch(kernel, n, stream=0, **options):
        streams.append(stream)
        return real_launch(kernel, n, stream, **options)

    monkeypatch.setattr(_cuda, "stream_for", lambda obj: caller)
    monkeypatch.setattr(_cuda, "launch", launch)
    return caller, streams


def test_count_sketch_queries_run_on_the_callers_stream(recorded):
    caller, streams = recorded
    sketch = CountSketch(50, 3, 16, device="cuda")
    sketch.accumulate(on_device(np.arange(50.0), "cuda"))
    idx = on_device(np.array([3, 7]), "cuda")
    for query in (
        lambda: sketch.estimate(idx),
        lambda: sketch.desketch(idx),
        sketch.estimate,
        sketch.l2_estimate,
        lambda: sketch.heavy_hitters(k=2),
    ):
        streams.clear()
        query()
        assert streams and all(s is caller for s in streams), streams
    cms = CountMinSketch(3, 16, device="cuda").update(idx, 1.0)
    streams.clear()
    cms.estimate(idx)
    assert streams and all(s is caller for s in streams)


def test_the_empty_index_array_is_copied_once(monkeypatch):
    if not _cuda.available():
        pytest.skip("no CUDA device and the simulator is off")
    sketch = CountSketch(20, 3, 8, device="cuda")
    cms = CountMinSketch(3, 8, device="cuda")
    x = on_device(np.ones(20), "cuda")
    copies = []
    real = _cuda.to_device
    monkeypatch.setattr(
        _cuda, "to_device", lambda host, stream=0: copies.append(host) or real(host)
    )
    sketch.accumulate(x)
    sketch.estimate()
    sketch.desketch()
    cms.update_dense(x)
    assert not [c for c in copies if c.size == 0]


def test_one_median_network_for_both_backends():
    """The CPU kernel combines rows with reductions.combine_columns, the CUDA kernels with
    the lines reductions.combine_source generates; both match np.median and np.mean for
    every number of rows, and the kernels' module writes no network of its own."""
    rng = np.random.default_rng(0)
    for rows in range(1, reductions.MAX_ROWS + 1):
        per_row = rng.integers(-5, 5, (rows, 37)).astype(np.float64)
        names = [f"v{j}" for j in range(rows)]
        lines = reductions.combine_source(names, "out", exchange="ordered", mode="mode")
        loads = [f"    {v} = columns[{j}]" for j, v in enumerate(names)]
        body = [
            "def combine(columns, mode):",
            *loads,
            *["    " + x for x in lines],
            "    return out",
        ]
        generated = reductions.compile_source(
            "combine", body, {"ordered": reductions.ordered.py_func, "MEAN": reductions.MEAN}
        )
        for mode, reference in ((reductions.MEDIAN, np.median), (reductions.MEAN, np.mean)):
            out = np.empty(37)
            reductions.combine_columns(per_row.copy(), rows, mode, out)
            np.testing.assert_array_equal(out, reference(per_row, axis=0))
            by_column = [generated(per_row[:, i], mode) for i in range(37)]
            np.testing.assert_array_equal(by_column, out)
    source = inspect.getsource(cs_kernels)
    assert "median_network" not in source and "for sweep" not in source
    assert not hasattr(reductions, "median_inplace")


def test_estimates_agree_across_backends_for_even_and_odd_rows(rng):
    for rows in (1, 2, 4, 5):
        x = rng.integers(-20, 20, 200).astype(np.float32)
        cpu = CountSketch(200, rows, 16, seed=rows).accumulate(x)
        gpu = CountSketch(200, rows, 16, seed=rows, device="cuda")
        gpu.accumulate(on_device(x, "cuda"))
        np.testing.assert_array_equal(cpu.estimate(), to_host(gpu.estimate()))
        np.testing.assert_array_equal(cpu.desketch(), to_host(gpu.desketch()))
        assert cpu.l2_estimate() == gpu.l2_estimate()
