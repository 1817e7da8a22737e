"""Compile every CUDA kernel of pysketch for sm_90 and measure its resources, without a GPU.

Run as ``python -m tests.compile_kernels [--json PATH]`` with NUMBA_ENABLE_CUDASIM
unset: the simulator runs kernels as Python, so it cannot catch code that Numba's
CUDA target rejects; NVVM can, and it needs no driver. Every signature's PTX then
goes through ``ptxas -v -arch=sm_90`` (the CUDA toolkit's assembler, run in
parallel), which reports what a real GPU would allocate: registers per thread,
the stack frame (local memory), spill stores and loads, static shared memory. The
atomic instructions of the PTX (``atom.*``, ``red.*``) are counted by kind.
``--json`` writes one record per signature; ``tests/test_cuda_compile.py`` holds
the limits. Exits 77 when NVVM or ptxas is not installed.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

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
# Kernels generated per number of sketch rows: every signature for FULL_ROWS, the
# float32 one for the others (1, even, suggest_rows(0.01) = 17, MAX_ROWS).
FULL_ROWS = 5
GENERATED_ROWS = (1, 2, FULL_ROWS, 17, 64)


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
                if rows == FULL_ROWS or (tab_dtype, idx) == (f32, i64):
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
            if rows == FULL_ROWS or tab_dtype == f32:
                sigs.setdefault(f"countsketch.l2_kernel({rows})", []).append(
                    (tab, A(i64), f64, A(f64))
                )
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
        sigs.setdefault("elementwise.cuda_scale_clipped", []).append((A(dtype), A(f64), i64))
        sigs.setdefault("elementwise.cuda_zero_where", []).append((A(dtype), A(dtype)))
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
            (A(bits), A(values), bits, u64, A(f64), b1, b1, u64, state, tiles, A(i64))
        )
        sigs.setdefault("select.cuda_select_write", []).append(
            (A(bits), A(values), bits, u64, A(f64), b1, state, tiles, A(i64), A(values),
             A(u64), counts, b1)
        )  # fmt: skip
        sigs.setdefault("select.cuda_sort_pass", []).append(
            (A(u64), A(i64), A(u64), A(i64), counts, counts, i64, b1, A(values), A(values), state)
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
    return {name: list(dict.fromkeys(signature)) for name, signature in sigs.items()}


_PTXAS = {
    "registers": re.compile(r"Used (\d+) registers"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
    "shared": re.compile(r"(\d+) bytes smem"),
}
# An atomic instruction, guard predicate allowed: its kind (atom.global.add.f32, ...).
_ATOMIC = re.compile(r"^\s*(?:@!?%p\d+\s+)?((?:atom|red)\.[\w.]+)", re.MULTILINE)
_LOCAL = re.compile(r"^\s*(?:@!?%p\d+\s+)?(?:ld|st)\.local", re.MULTILINE)


def compile_share(share: list[tuple[str, tuple]]) -> list[dict]:
    """``{"kernel", "signature", "ptx"}`` of each ``(kernel name, signature)`` (raises on
    a failure)."""
    from numba import cuda

    records = []
    for name, sig in share:
        ptx, restype = cuda.compile_ptx(resolve_kernel(name).py_func, sig, cc=(9, 0))
        if ".entry" not in ptx or restype != t.none:
            raise RuntimeError(f"{name}{sig}: no kernel entry in the PTX")
        records.append({"kernel": name, "signature": str(sig), "ptx": ptx})
    return records


def compile_all(sigs: dict[str, list[tuple]], jobs: int) -> list[dict]:
    """Every signature compiled, in ``jobs`` forked processes (Numba compiles under a lock).

    The kernels generated for many rows compile slowest: dealt out first, round robin.
    """
    work = [(name, sig) for name in sorted(sigs) for sig in sigs[name]]
    work.sort(key=lambda item: -int(item[0].partition("(")[2].rstrip(")") or 0))
    shares = [work[i::jobs] for i in range(jobs)]
    if jobs == 1:
        return compile_share(work)
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return [record for part in pool.map(compile_share, shares) for record in part]


def assemble(record: dict, folder: str, number: int) -> dict:
    """ptxas -v of one record's PTX: its resources, its atomics and local accesses."""
    path = os.path.join(folder, f"{number}.ptx")
    with open(path, "w") as handle:
        handle.write(record["ptx"])
    run = subprocess.run(
        ["ptxas", "-v", "-arch=sm_90", path, "-o", os.devnull],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"ptxas failed on {record['kernel']}: {run.stderr[-2000:]}")
    result = {"kernel": record["kernel"], "signature": record["signature"]}
    for field, pattern in _PTXAS.items():
        match = pattern.search(run.stderr)
        result[field] = int(match.group(1)) if match else 0
    result["atomics"] = dict(collections.Counter(_ATOMIC.findall(record["ptx"])))
    result["local_accesses"] = len(_LOCAL.findall(record["ptx"]))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write one record per signature to this file")
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1),
        help="processes compiling, and ptxas runs at a time",
    )
    args = parser.parse_args(argv)
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        print("unset NUMBA_ENABLE_CUDASIM: the simulator compiles nothing", file=sys.stderr)
        return 2
    if shutil.which("ptxas") is None:
        print("ptxas not found on PATH (the CUDA toolkit's assembler)", file=sys.stderr)
        return 77
    import importlib

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
    defined = set()
    for module_name in ("countsketch", "countmin", "reductions", "select", "elementwise"):
        module = importlib.import_module(f"pysketch.kernels.{module_name}")
        defined |= {f"{module_name}.{a}" for a in dir(module) if a.startswith("cuda_")}
    missing = sorted(defined - set(sigs))
    if missing:
        print(f"kernels with no signature to compile: {missing}", file=sys.stderr)
        return 1
    records = compile_all(sigs, max(1, args.jobs))
    with tempfile.TemporaryDirectory() as folder:
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = list(
                pool.map(assemble, records, [folder] * len(records), range(len(records)))
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    worst: dict[str, dict] = {}
    for r in results:
        w = worst.setdefault(r["kernel"], dict.fromkeys(_PTXAS, 0) | {"signatures": 0})
        w["signatures"] += 1
        for field in _PTXAS:
            w[field] = max(w[field], r[field])
    print(f"{'kernel':<36} sigs  regs  stack  spill st/ld  smem")
    for name, w in sorted(worst.items()):
        print(
            f"{name:<36} {w['signatures']:>4}  {w['registers']:>4}  {w['stack']:>5}  "
            f"{w['spill_stores']:>5}/{w['spill_loads']:<5}  {w['shared']:>5}"
        )
    print(f"compiled {len(results)} signatures of {len(worst)} CUDA kernels for sm_90")
    return 0


if __name__ == "__main__":
    sys.exit(main())
