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
# Kernels generated per number of sketch rows are compiled for these (1 to MAX_ROWS).
GENERATED_ROWS = (1, 2, 5, 16, 64)


def resolve_kernel(name: str):
    """The kernel called ``name``: ``module.attribute``, or ``module.factory(rows)``."""
    import importlib

    module_name, attr = name.split(".", 1)
    module = importlib.import_module(f"pysketch.kernels.{module_name}")
    if "(" not in attr:
        return getattr(module, attr)
    factory, rows = attr.rstrip(")").split("(")
    return getattr(module, factory)(int(rows))


def signatures() -> dict[str, list[tuple]]:
    sigs: dict[str, list[tuple]] = {}
    for tab_dtype in (f32, f64):
        tab = A(tab_dtype, 2)
        for idx, upper in ((i32, i64), (i64, i64)):
            for val in (f32, f64, i64):
                sigs.setdefault("countsketch.cuda_accumulate", []).append(
                    (tab, i64, KEYS, A(idx), A(val), b1, b1, b1, f64, upper, A(i64))
                )
                cm_args = (tab, i64, KEYS, A(idx), b1, A(val), i64, i64)
                sigs.setdefault("countmin.cuda_update", []).append(cm_args)
                sigs.setdefault("countmin.cuda_sum_by_key", []).append(
                    (A(idx), A(val), i64, i64, b1, A(i64), A(f64))
                )
            for weights in (A(f64), A(tab_dtype)):  # a key's sum, or one dense weight
                sigs.setdefault("countmin.cuda_conservative_targets", []).append(
                    (tab, i64, KEYS, A(i64), weights, b1, b1, A(f64))
                )
            for rows in GENERATED_ROWS:
                sigs.setdefault(f"countsketch.estimate_kernel({rows})", []).append(
                    (tab, i64, KEYS, A(idx), b1, i64, A(tab_dtype))
                )
            sigs.setdefault("countsketch.cuda_zero_buckets", []).append((tab, i64, KEYS, A(idx)))
            sigs.setdefault("countmin.cuda_query", []).append(
                (tab, i64, KEYS, A(idx), f64, b1, A(tab_dtype))
            )
        sigs.setdefault("countmin.cuda_conservative_raise", []).append(
            (tab, i64, KEYS, A(i64), b1, A(f64))
        )
        for rows in GENERATED_ROWS:
            sigs.setdefault(f"countsketch.l2_kernel({rows})", []).append((tab, A(i64), A(f64)))
    for dtype in (f32, f64):
        sigs.setdefault("reductions.cuda_max_abs", []).append((A(dtype), A(f64)))
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
        for idx, upper in ((i64, i64), (u64, u64)):
            sigs.setdefault("countmin.cuda_weight_stats", []).append(
                (i64, A(idx), upper, b1, A(val), f64, b1, b1, A(i64), A(f64, 2))
            )
        sigs.setdefault("reductions.cuda_count_unfit", []).append((A(val), f64, f64, A(i64)))
    state, tiles, counts = A(i64), A(i64, 2), A(i64, 2)
    for bits, values in ((u32, f32), (u64, f64), (u64, i64)):
        sigs.setdefault("select.cuda_radix_pass", []).append(
            (A(bits), bits, u64, i64, i64, i64, b1, b1, b1, state, A(i64), A(u64, 2), A(i64))
        )
        sigs.setdefault("select.cuda_select_count", []).append(
            (A(bits), bits, u64, u64, b1, b1, u64, state, tiles, A(i64))
        )
        sigs.setdefault("select.cuda_select_write", []).append(
            (A(bits), bits, u64, u64, b1, state, tiles, A(values), A(i64), A(values), A(u64),
             counts, b1)
        )  # fmt: skip
        sigs.setdefault("select.cuda_sort_pass", []).append(
            (A(u64), A(i64), A(u64), A(i64), counts, counts, i64, b1, A(values), A(values), state)
        )
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
    kernels = {name: resolve_kernel(name) for name in sigs}
    for name in modules:
        module = importlib.import_module(f"pysketch.kernels.{name}")
        for attr in dir(module):
            if attr.startswith("cuda_"):
                kernels.setdefault(f"{name}.{attr}", getattr(module, attr))
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
