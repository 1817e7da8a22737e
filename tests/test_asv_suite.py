"""The asv suite's simulator benchmarks run (issue 20 item 19), at small sizes."""

from __future__ import annotations

import pytest

from asv_bench.benchmarks import simulate as bench


@pytest.mark.parametrize("algorithm", ["sgd", "memsgd", "fetchsgd", "sketchdl"])
def test_a_simulator_round_runs(algorithm):
    case = bench.SimulatorRound()
    case.setup(2**10, 4, algorithm)
    before = case.job.w.copy()
    case.time_round(2**10, 4, algorithm)
    case.time_gradients(2**10, 4, algorithm)
    assert case.t == 2 and (case.job.w != before).any()


def test_the_peak_memory_round_runs():
    bench.SimulatorMemory().peakmem_round(2**10, 8)
