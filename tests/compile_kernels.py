"""Compile every CUDA kernel of pysketch to PTX for sm_90, without a GPU.

Run as ``python -m tests.compile_kernels`` with NUMBA_ENABLE_CUDASIM unset:
the simulator runs kernels as Python, so it cannot catch code that Numba's
CUDA target rejects; NVVM can, and it needs no driver. Exits 77 when NVVM is
not installed. ``tests/test_cuda_compile.py`` runs it.
"""

from __future__ import annotations

import os
import sys

from numba import types as t

A = lambda dtype, ndim=1: t.Array(dtype, ndim, "C")  # noqa: E731
f32, f64, i32, i64, u32, u64, b1 = (
    t.float32,
    t.float64,
    t.int32,
    t.int64,
    t.uint32,
    t.uint64,
    t.boolean,
)
KEYS = A(u64, 2)


def signatures() -> dict[str, list[tuple]]:
    sigs: dict[str, list[tuple]] = {}
    for tab_dtype in (f32, f64):
        tab = A(tab_dtype, 2)
        for idx in (i32, i64):
            for val in (f32, f64, i64):
                sigs.setdefault("countsketch.cuda_accumulate", []).append(
                    (tab, i64, KEYS, A(idx), A(val), b1)
                )
                cm_args = (tab, i64, KEYS, A(idx), b1, A(val), i64, i64)
                sigs.setdefault("countmin.cuda_update", []).append(cm_args)
                sigs.setdefault("countmin.cuda_update_conservative", []).append(cm_args)
            sigs.setdefault("countsketch.cuda_estimate", []).append(
                (tab, i64, KEYS, A(idx), b1, i64, A(tab_dtype))
            )
            sigs.setdefault("countsketch.cuda_zero_buckets", []).append((tab, i64, KEYS, A(idx)))
            sigs.setdefault("countmin.cuda_query", []).append(
                (tab, i64, KEYS, A(idx), f64, b1, A(tab_dtype))
            )
        sigs.setdefault("reductions.cuda_row_sumsq", []).append((tab, A(f64)))
    for dtype in (f32, f64):
        sigs.setdefault("reductions.cuda_max_abs", []).append((A(dtype), A(f64)))
        sigs.setdefault("select.cuda_count_threshold", []).append((A(dtype), f64, A(i64)))
        sigs.setdefault("select.cuda_compact_threshold", []).append((A(dtype), f64, A(i64), A(i64)))
        sigs.setdefault("select.cuda_gather", []).append((A(dtype), A(i64), A(dtype)))
        sigs.setdefault("select.cuda_scatter_add", []).append((A(dtype), A(i64), A(dtype), i64))
        sigs.setdefault("select.cuda_set_at", []).append((A(dtype), A(i64), i64))
        sigs.setdefault("elementwise.cuda_fill", []).append((A(dtype), i64))
        sigs.setdefault("elementwise.cuda_copy", []).append((A(dtype), A(dtype)))
        sigs.setdefault("elementwise.cuda_axpy", []).append((A(dtype), f64, A(dtype)))
        sigs.setdefault("elementwise.cuda_scale", []).append((A(dtype), f64))
        sigs.setdefault("elementwise.cuda_scale_add", []).append((A(dtype), f64, A(dtype)))
        sigs.setdefault("elementwise.cuda_axpby_out", []).append(
            (A(dtype), A(dtype), f64, A(dtype))
        )
    for idx, upper in ((i32, i64), (i64, i64), (u64, u64)):
        sigs.setdefault("reductions.cuda_count_out_of_range", []).append((A(idx), upper, A(i64)))
    for val in (f32, f64, i64, u64, i32):
        sigs.setdefault("countmin.cuda_weight_stats", []).append((A(val), f64, b1, A(f64)))
        sigs.setdefault("reductions.cuda_count_unfit", []).append((A(val), f64, f64, A(i64)))
    for bits in (u32, u64):
        sigs.setdefault("select.cuda_histogram", []).append((A(bits), bits, u64, u64, u64, A(i64)))
        sigs.setdefault("select.cuda_histogram_ties", []).append(
            (A(bits), bits, u64, u64, u64, u64, u64, A(i64))
        )
        sigs.setdefault("select.cuda_compact_selected", []).append(
            (A(bits), bits, u64, u64, i64, A(i64), A(i64), A(u64))
        )
    # What the steps of pysketch.compress launch (factors in the arrays' dtype, float64 signs).
    for dtype in (f32, f64):
        sigs["elementwise.cuda_fill"].append((A(dtype), dtype))
        sigs["elementwise.cuda_axpy"].append((A(dtype), dtype, A(dtype)))
        sigs["elementwise.cuda_scale"].append((A(dtype), dtype))
        sigs["elementwise.cuda_axpby_out"].append((A(dtype), A(dtype), dtype, A(dtype)))
        sigs["select.cuda_set_at"].append((A(dtype), A(i64), dtype))
        sigs["reductions.cuda_count_unfit"].append((A(dtype), f64, f64, A(dtype)))
        for idx in (i32, i64):
            sigs["select.cuda_scatter_add"].append((A(dtype), A(idx), A(dtype), f64))
    sigs["elementwise.cuda_fill"].append((A(i32), i32))
    sigs["elementwise.cuda_copy"].append((A(i32), A(i64)))
    sigs["select.cuda_gather"].append((A(i64), A(i64), A(i64)))
    sigs["select.cuda_pad"] = [(A(u64), A(i64), i64)]
    sigs["select.cuda_bitonic_global"] = [(A(u64), A(i64), i64, i64)]
    sigs["select.cuda_bitonic_tile"] = [(A(u64), A(i64), i64, i64, i64)]
    return sigs


def main() -> int:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        print("unset NUMBA_ENABLE_CUDASIM: the simulator compiles nothing", file=sys.stderr)
        return 2
    import importlib

    from numba import cuda
    from numba.cuda.cudadrv import nvvm

    try:
        nvvm.NVVM()
    except Exception as exc:  # no CUDA toolkit on this machine
        print(f"NVVM not available: {exc}", file=sys.stderr)
        return 77

    # Without a driver, compiling a device function that calls another asks
    # the current device for its compute capability: answer for sm_90.
    import numba.cuda.api as cuda_api
    import numba.cuda.dispatcher as cuda_dispatcher

    class _Hopper:
        compute_capability = (9, 0)

    cuda_api.get_current_device = cuda_dispatcher.get_current_device = lambda: _Hopper()

    sigs = signatures()
    modules = ("countsketch", "countmin", "reductions", "select", "elementwise")
    kernels = {}
    for name in modules:
        module = importlib.import_module(f"pysketch.kernels.{name}")
        for attr in dir(module):
            if attr.startswith("cuda_"):
                kernels[f"{name}.{attr}"] = getattr(module, attr)
    missing = sorted(set(kernels) - set(sigs))
    if missing:
        print(f"kernels with no signature to compile: {missing}", file=sys.stderr)
        return 1
    count = 0
    for name, kernel in sorted(kernels.items()):
        for sig in sigs[name]:
            ptx, restype = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
            if ".entry" not in ptx or restype != t.none:
                print(f"{name}{sig}: no kernel entry in the PTX", file=sys.stderr)
                return 1
            count += 1
    print(f"compiled {count} signatures of {len(kernels)} CUDA kernels to PTX for sm_90")
    return 0


if __name__ == "__main__":
    sys.exit(main())
