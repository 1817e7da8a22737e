"""Every CUDA kernel compiles for a real GPU (sm_90 through NVVM and ptxas), not only in the
simulator, within its resources, and keeps its atomics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compile_kernels import GENERATED_ROWS

ROOT = Path(__file__).resolve().parent.parent

# Registers per thread that ptxas may allocate (sm_90, 256 threads a block): a kernel
# past its cap has grown (and lost occupancy); raise a cap only knowing why. At 64 a
# block of 256 threads still leaves four blocks (1024 threads) resident per SM.
REGISTER_CAPS = {
    "countmin.cuda_conservative_raise": 40,
    "countmin.cuda_conservative_targets": 40,
    "countmin.cuda_query": 40,
    "countmin.cuda_sum_by_key": 32,
    "countmin.cuda_update": 40,
    "countmin.cuda_weight_stats": 64,
    "countsketch.cuda_accumulate": 48,
    "countsketch.cuda_zero_buckets": 40,
    "countsketch.estimate_kernel(1)": 40,
    "countsketch.estimate_kernel(2)": 40,
    "countsketch.estimate_kernel(5)": 48,
    "countsketch.estimate_kernel(17)": 72,
    # Every row's value in a register: 64 rows of float64 need 128 on their own.
    "countsketch.estimate_kernel(64)": 232,
    "countsketch.l2_kernel(1)": 40,
    "countsketch.l2_kernel(2)": 40,
    "countsketch.l2_kernel(5)": 40,
    "countsketch.l2_kernel(17)": 80,
    "countsketch.l2_kernel(64)": 192,
    "elementwise.cuda_axpby_out": 32,
    "elementwise.cuda_axpy": 32,
    "elementwise.cuda_copy": 32,
    "elementwise.cuda_fill": 32,
    "elementwise.cuda_scale": 32,
    "elementwise.cuda_scale_add": 32,
    "elementwise.cuda_scale_clipped": 32,
    "elementwise.cuda_zero_where": 32,
    "reductions.cuda_count_out_of_range": 40,
    "reductions.cuda_count_unfit": 48,
    "reductions.cuda_max_abs": 32,
    "select.cuda_gather": 32,
    "select.cuda_radix_pass": 56,
    "select.cuda_scatter_add": 40,
    "select.cuda_select_count": 48,
    "select.cuda_select_write": 64,
    "select.cuda_set_at": 32,
    "select.cuda_sort_pass": 64,
}

# The atomics each kernel must keep: (kind, at least). The minimum is the number of
# atomic calls of that kind in the kernel's source and the device functions it calls
# (the compiler may duplicate an atomic, never drop one), so replacing any of them by a
# plain `+=`, which loses updates, fails here. A float atomic.max is a CAS loop.
FLOAT_ADD, TICKET_AND_COUNTS = r"atom\.global\.add\.f(32|64)", r"atom\.global\.add\.u64"
REQUIRED_ATOMICS = {
    "countsketch.cuda_accumulate": [(FLOAT_ADD, 1), (TICKET_AND_COUNTS, 3)],
    "countmin.cuda_update": [(FLOAT_ADD, 1)],
    "countmin.cuda_sum_by_key": [(r"atom\.global\.cas\.b64", 1), (r"atom\.global\.add\.f64", 1)],
    "countmin.cuda_conservative_raise": [(r"atom\.global\.cas\.b(32|64)", 1)],
    "countmin.cuda_weight_stats": [(TICKET_AND_COUNTS, 1)],
    "select.cuda_scatter_add": [(FLOAT_ADD, 1)],
    # shared histogram (3 loops), candidates' slots in a round; candidate count,
    # histogram flush, non-finite count, ticket
    "select.cuda_radix_pass": [
        (r"atom\.shared\.add\.u32", 3),
        (r"atom\.shared\.add\.u64", 1),
        (TICKET_AND_COUNTS, 4),
    ],
    "select.cuda_select_count": [(TICKET_AND_COUNTS, 2)],  # non-finite count, ticket
    "select.cuda_select_write": [(TICKET_AND_COUNTS, 2)],  # the sort's digit counts, ticket
    "select.cuda_sort_pass": [(r"atom\.shared\.add\.u64", 1), (TICKET_AND_COUNTS, 2)],
    # Counts into an int64 status, or into a step's float payload (pysketch.compress).
    "reductions.cuda_count_unfit": [(r"atom\.global\.add\.(u64|f32|f64)", 2)],
    "reductions.cuda_count_out_of_range": [(TICKET_AND_COUNTS, 1)],
    "reductions.cuda_max_abs": [(r"atom\.global\.cas\.b64", 1)],
    **{f"countsketch.l2_kernel({rows})": [(TICKET_AND_COUNTS, 1)] for rows in GENERATED_ROWS},
}


@pytest.fixture(scope="module")
def resources(tmp_path_factory):
    """ptxas's report of every signature of every kernel (one subprocess, no simulator)."""
    report = tmp_path_factory.mktemp("ptxas") / "kernels.json"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    result = subprocess.run(
        [sys.executable, "-m", "tests.compile_kernels", "--json", str(report)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if result.returncode == 77:
        pytest.skip(result.stderr.strip())
    assert result.returncode == 0, result.stderr[-4000:]
    assert "CUDA kernels for sm_90" in result.stdout
    return json.loads(report.read_text())


@pytest.mark.cuda
def test_every_kernel_compiles_without_local_memory(resources):
    """No stack frame, no spill, no local loads or stores: every value in registers or
    shared memory (numba-cuda zero-fills a cuda.local.array at every thread's entry)."""
    bad = [
        r
        for r in resources
        if r["stack"] or r["spill_stores"] or r["spill_loads"] or r["local_accesses"]
    ]
    assert not bad, json.dumps(bad, indent=1)


@pytest.mark.cuda
def test_every_kernel_stays_within_its_register_cap(resources):
    kernels = {r["kernel"] for r in resources}
    assert kernels == set(REGISTER_CAPS), "state a register cap for every kernel"
    over = [
        (r["kernel"], r["signature"], r["registers"], REGISTER_CAPS[r["kernel"]])
        for r in resources
        if r["registers"] > REGISTER_CAPS[r["kernel"]]
    ]
    assert not over, over


@pytest.mark.cuda
def test_accumulating_kernels_keep_their_atomics(resources):
    assert set(REQUIRED_ATOMICS) <= {r["kernel"] for r in resources}
    missing = []
    for r in resources:
        for kind, least in REQUIRED_ATOMICS.get(r["kernel"], []):
            found = sum(n for op, n in r["atomics"].items() if re.fullmatch(kind, op))
            if found < least:
                missing.append((r["kernel"], r["signature"], kind, found, least))
    assert not missing, missing
