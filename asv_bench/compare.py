#!/usr/bin/env python
"""Side-by-side comparison of pysketch with its baselines, in one command.

    python asv_bench/compare.py                 # headline sizes: d=1e7, rows 5, cols 5e5, k 5e4
    python asv_bench/compare.py --quick         # d=1e6 (peak memory at d=1e7)
    python asv_bench/compare.py --device cuda   # GPU: CuPy inputs, csvec on torch CUDA
    python asv_bench/compare.py --target avx2   # Numba code for AVX2 (no AVX-512) CPUs

For every operation it prints the pysketch time, the baseline's time, the ratio
pysketch / baseline (below 1: pysketch is faster), the target and whether it is met.
Timing: one warm-up call (JIT compilation, caches), then the median of ``--repeats``
calls timed with ``time.perf_counter`` (GPU work synchronised before the clock stops).
Progress (what is being timed, and the seconds so far) goes to stderr as it runs.
Peak memory: one fresh subprocess per case; the peak RSS (``ru_maxrss``) minus the
resident size after imports and JIT warm-up, i.e. what the input, the table and
every temporary of the operation cost.

Baselines (asv_bench/baselines.py): csvec-style PyTorch sketch (the FetchSGD
reference's approach), a NumPy reference with pysketch's hashes, and the plain
scatter-add floor with precomputed buckets (np.bincount per row; Numba loop).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# The repository root, so that a source checkout runs without installing pysketch
# (an installed pysketch still wins: the root goes last).
sys.path.append(os.path.dirname(HERE))

sys.path.insert(0, os.path.join(HERE, "benchmarks"))

from machine import (  # noqa: E402
    add_target_argument,
    cpu_description,
    gpu_description,
    require_gpu,
    target_in,
    use_target,
)

if __name__ == "__main__":
    use_target(target_in(sys.argv))  # before baselines imports Numba

import baselines as B  # noqa: E402


# ---------------------------------------------------------------- timing
class Timer:
    """Median time of ``repeats`` calls after a warm-up; says on stderr what it times."""

    def __init__(self, repeats: int, device: str):
        self.repeats, self.device = repeats, device
        self.started = time.perf_counter()

    def sync(self):
        if self.device == "cuda":
            import cupy

            cupy.cuda.runtime.deviceSynchronize()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.synchronize()
            except ImportError:
                pass

    def __call__(self, label: str, fn) -> float:
        elapsed = time.perf_counter() - self.started
        print(f"  [{elapsed:5.0f} s] timing {label}", file=sys.stderr, flush=True)
        fn()  # warm-up: JIT, caches, allocator
        self.sync()
        times = []
        for _ in range(self.repeats):
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)


def fmt_time(t):
    if t is None:
        return "n/a"
    return f"{t * 1e3:9.2f} ms" if t < 10 else f"{t:9.2f} s "


def fmt_bytes(b):
    return "n/a" if b is None else f"{b / 2**20:8.1f} MiB"


# ---------------------------------------------------------------- peak memory
_PEAK_CODE = r"""
import json, resource, sys
sys.path.insert(0, {here!r})
sys.path.insert(0, {here!r} + "/benchmarks")
import common  # the pysketch import fallback
import numpy as np
impl, d, rows, cols = {impl!r}, {d}, {rows}, {cols}

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB

def reset_peak():
    try:  # Linux >= 4.0: reset VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False

if impl == "pysketch":
    from pysketch import CountSketch
    CountSketch(1000, rows, 16).accumulate(np.ones(1000, np.float32))   # JIT / cache load
    def run(x):
        s = CountSketch(x.size, rows, cols, seed=1).accumulate(x)
        return s.table.nbytes
elif impl == "pysketch_nocheck":
    from pysketch import CountSketch
    CountSketch(1000, rows, 16).accumulate(np.ones(1000, np.float32), check_finite=False)
    def run(x):
        s = CountSketch(x.size, rows, cols, seed=1).accumulate(x, check_finite=False)
        return s.table.nbytes
elif impl == "csvec":
    import torch, baselines
    baselines.CSVecBaseline(1000, 16, rows).accumulateVec(torch.ones(1000))
    def run(x):
        s = baselines.CSVecBaseline(x.size, cols, rows)
        s.accumulateVec(torch.from_numpy(x))
        return s.table.numel() * s.table.element_size()
elif impl == "numpy_ref":
    import baselines
    baselines.NumPyReference(1000, rows, 16).accumulate(np.ones(1000, np.float32))
    def run(x):
        s = baselines.NumPyReference(x.size, rows, cols, seed=1).accumulate(x)
        return s.table.nbytes

run(np.ones(4096, np.float32))  # every kernel on this path loaded
reset = reset_peak()
base = status("VmRSS")
x = np.random.default_rng(0).standard_normal(d, dtype=np.float32)
after_input = status("VmHWM")
table_bytes = run(x)
peak = status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(base=base, input=x.nbytes, table=table_bytes,
                      after_input=after_input, peak=peak, reset=reset)))
"""


def peak_memory(impl, d, rows, cols):
    code = _PEAK_CODE.format(here=HERE, impl=impl, d=d, rows=rows, cols=cols)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=1800
    )
    if out.returncode != 0:
        print(f"  [peak memory {impl} d={d} failed]\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["used"] = r["peak"] - r["base"]
    return r


# ---------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="d=1e6, cols 5e4, k 5e3; peak memory at d=1e7"
    )
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    add_target_argument(ap)
    ap.add_argument("--d", type=int)
    ap.add_argument("--rows", type=int, default=5)
    ap.add_argument("--cols", type=int)
    ap.add_argument("--k", type=int)
    ap.add_argument(
        "--peak-d", type=int, help="d of the peak-memory runs (default 1e8; 1e7 with --quick)"
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-peakmem", action="store_true")
    ap.add_argument(
        "--no-csvec-peakmem", action="store_true", help="skip csvec's peak memory (~12*r*d bytes)"
    )
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)

    d = args.d or (10**6 if args.quick else 10**7)
    cols = args.cols or (50_000 if args.quick else 500_000)
    k = args.k or (5_000 if args.quick else 50_000)
    rows = args.rows
    peak_d = args.peak_d or (10**7 if args.quick else 10**8)
    dev = args.device

    import numba

    from pysketch import CountMinSketch, CountSketch, hashing, randomk, topk

    try:
        import torch
    except ImportError:
        torch = None

    xp = np
    if dev == "cuda":
        xp = require_gpu("compare.py --device cuda")
    timer = Timer(args.repeats, dev)
    torch_dev = dev if (torch is not None and (dev == "cpu" or torch.cuda.is_available())) else None

    print(f"# pysketch vs baselines: d={d:.0e} rows={rows} cols={cols} k={k} device={dev}")
    print(
        f"# {cpu_description()}, {os.cpu_count()} cores, numba threads "
        f"{numba.get_num_threads()}, numpy {np.__version__}, numba {numba.__version__}, "
        f"torch {getattr(torch, '__version__', 'absent')} threads "
        f"{torch.get_num_threads() if torch else '-'}; median of {args.repeats} after 1 warm-up"
    )
    if dev == "cuda":
        print(f"# GPU: {gpu_description()}")

    rng = np.random.default_rng(2024)
    x_host = rng.standard_normal(d, dtype=np.float32)
    heavy = rng.choice(d, size=min(k, d // 10), replace=False)
    x_host[heavy] *= 50
    x = xp.asarray(x_host)
    n_sparse = d // 100
    sp_idx_h = rng.integers(0, d, size=n_sparse, dtype=np.int64)
    sp_val_h = rng.standard_normal(n_sparse).astype(np.float32)
    sp_idx, sp_val = xp.asarray(sp_idx_h), xp.asarray(sp_val_h)

    results = []  # (op, pysketch_label, t_ps, baseline_label, t_base, target_ratio_max)

    def row(op, t_ps, base, t_base, target=None):
        ratio = None if (t_ps is None or t_base is None) else t_ps / t_base
        met = None if (target is None or ratio is None) else ratio <= target
        results.append(
            dict(
                op=op,
                pysketch=t_ps,
                baseline=base,
                baseline_time=t_base,
                ratio=ratio,
                target=target,
                met=met,
            )
        )
        tgt = "-" if target is None else f"<= {target:g}"
        print(
            f"  {op:<28} {fmt_time(t_ps)}  vs {base:<34} {fmt_time(t_base)}  ratio "
            f"{'n/a' if ratio is None else f'{ratio:7.3f}'}  target {tgt:<8} "
            f"{'-' if met is None else ('yes' if met else 'NO')}",
            flush=True,
        )

    # ---------------- pysketch
    cs = CountSketch(d, rows, cols, seed=1, device=dev)
    t_acc = timer("pysketch accumulate", lambda: cs.accumulate(x))
    t_acc_nc = timer("pysketch accumulate nocheck", lambda: cs.accumulate(x, check_finite=False))
    t_sparse = timer("pysketch accumulate_sparse", lambda: cs.accumulate_sparse(sp_idx, sp_val))
    t_est = timer("pysketch estimate", lambda: cs.estimate())
    t_hh = timer("pysketch heavy_hitters", lambda: cs.heavy_hitters(k=k))
    est = cs.estimate()
    t_topk = timer("pysketch topk", lambda: topk(est, k))
    t_topk_nc = timer("pysketch topk nocheck", lambda: topk(est, k, check_finite=False))
    t_rk = timer("pysketch randomk", lambda: randomk(d, k, seed=3, device=dev))

    # ---------------- csvec (torch)
    t_cv_acc = t_cv_est = t_cv_hh = None
    if torch_dev:
        cv = B.CSVecBaseline(d, cols, rows, device=torch_dev)
        vec = torch.from_numpy(x_host).to(torch_dev)
        t_cv_acc = timer("csvec accumulateVec", lambda: cv.accumulateVec(vec))
        t_cv_est = timer("csvec estimate_all", lambda: cv.estimate_all())
        t_cv_hh = timer("csvec unSketch", lambda: cv.unSketch(k))
        del cv, vec

    # ---------------- NumPy reference and plain scatter-add (host only)
    t_np_acc = t_np_sparse = t_np_est = t_np_hh = t_sc_bin = t_sc_nb = None
    if dev == "cpu":
        ref = B.NumPyReference(d, rows, cols, seed=1)
        t_np_acc = timer("NumPy ref accumulate", lambda: ref.accumulate(x_host))
        t_np_sparse = timer(
            "NumPy ref accumulate_sparse", lambda: ref.accumulate_sparse(sp_idx_h, sp_val_h)
        )
        t_np_est = timer("NumPy ref estimate", lambda: ref.estimate())
        t_np_hh = timer("NumPy ref heavy_hitters", lambda: ref.heavy_hitters(k))
        del ref
        buckets, signs = B.precomputed_hashes(d, rows, cols, seed=1)
        t_sc_bin = timer(
            "scatter-add bincount",
            lambda: B.ScatterAddBincount(buckets, signs, cols).accumulate(x_host),
        )
        sc = B.ScatterAddNumba(buckets, signs, cols)
        t_sc_nb = timer("scatter-add numba loop", lambda: sc.accumulate(x_host))
        del buckets, signs, sc

    # ---------------- top-k baselines on the estimate vector
    a_est = xp.abs(est)
    t_argp = timer("argpartition", lambda: xp.argpartition(xp.abs(est), d - k)[d - k :])

    def argp_sorted():
        a = xp.abs(est)
        part = xp.argpartition(a, d - k)[d - k :]
        return part[xp.argsort(-a[part])]

    t_argp_s = timer("argpartition + sort", argp_sorted)
    t_torch_topk = None
    if torch_dev:
        est_t = torch.as_tensor(est, device=torch_dev) if dev == "cuda" else torch.from_numpy(est)
        t_torch_topk = timer("torch.topk", lambda: est_t.abs().topk(k, sorted=True))
    del a_est

    t_np_choice = timer(
        "numpy choice", lambda: np.sort(np.random.default_rng(3).choice(d, size=k, replace=False))
    )

    # ---------------- Count-Min
    cm_keys_h = rng.integers(0, 10 * d, size=d, dtype=np.int64)
    cm_w_h = np.abs(x_host)
    cm_keys, cm_w = xp.asarray(cm_keys_h), xp.asarray(cm_w_h)
    cm = CountMinSketch(rows, cols, seed=1, dtype=np.float32, device=dev)
    t_cm_up = timer("count-min update", lambda: cm.update(cm_keys, cm_w))
    t_cm_est = timer("count-min estimate", lambda: cm.estimate(cm_keys))
    t_cmref_up = t_cmref_est = None  # the NumPy reference runs on the CPU only
    if dev == "cpu":
        fam, keys = hashing.family_code("mix"), hashing.hash_keys(1, rows, "mix")
        table = np.zeros((rows, cols), np.float32)

        def cm_ref_update():
            for j in range(rows):
                b, _ = hashing.bucket_sign_batch(fam, keys, j, cm_keys_h, cols)
                table[j] += np.bincount(b, weights=cm_w_h, minlength=cols).astype(np.float32)

        def cm_ref_estimate():
            out = np.full(d, np.inf, np.float32)
            for j in range(rows):
                b, _ = hashing.bucket_sign_batch(fam, keys, j, cm_keys_h, cols)
                np.minimum(out, table[j, b], out=out)
            return out

        t_cmref_up = timer("NumPy ref count-min update", cm_ref_update)
        t_cmref_est = timer("NumPy ref count-min estimate", cm_ref_estimate)

    print()
    row("accumulate dense", t_acc, "csvec accumulateVec (torch)", t_cv_acc, 0.25)
    row("accumulate dense", t_acc, "scatter-add, np.bincount/row", t_sc_bin, 3.0)
    row("accumulate dense", t_acc, "scatter-add, numba loop", t_sc_nb, 3.0)
    row("accumulate dense", t_acc, "NumPy ref (same hashes)", t_np_acc)
    row("accumulate dense nocheck", t_acc_nc, "csvec accumulateVec (torch)", t_cv_acc, 0.25)
    row("accumulate dense nocheck", t_acc_nc, "scatter-add, numba loop", t_sc_nb, 3.0)
    row("accumulate sparse n=d/100", t_sparse, "NumPy ref (same hashes)", t_np_sparse)
    row("estimate all d", t_est, "csvec _findAllValues", t_cv_est)
    row("estimate all d", t_est, "NumPy ref (same hashes)", t_np_est)
    row("unsketch (est-all + top-k)", t_hh, "csvec unSketch (torch.topk)", t_cv_hh, 0.2)
    row("unsketch (est-all + top-k)", t_hh, "NumPy ref + argpartition", t_np_hh)
    row("top-k of d", t_topk, f"{xp.__name__}.argpartition", t_argp, 1.0)
    row("top-k of d nocheck", t_topk_nc, f"{xp.__name__}.argpartition", t_argp, 1.0)
    row("top-k of d", t_topk, f"{xp.__name__}.argpartition + sort k", t_argp_s)
    row("top-k of d", t_topk, "torch.topk", t_torch_topk, 1.0 if dev == "cuda" else None)
    row("random-k", t_rk, "numpy choice(replace=False)+sort", t_np_choice)
    row("count-min update n=d", t_cm_up, "NumPy ref (hashes + bincount)", t_cmref_up)
    row("count-min estimate n=d", t_cm_est, "NumPy ref (hashes + min)", t_cmref_est)

    if dev == "cuda":
        print(
            f"\n# absolute GPU targets of issue 16 (set for one H100/H200 at d=1e7, rows 5, "
            f"cols 5e5, k 5e4; this run: d={d:.0e} rows={rows} cols={cols} k={k})"
        )
        for op, seconds, limit in (
            ("accumulate dense", t_acc, 0.6e-3),
            ("estimate all d", t_est, 0.4e-3),
            ("top-k of d", t_topk, 0.15e-3),
            ("unsketch (est-all + top-k)", t_hh, 0.6e-3),
            ("count-min update n=d", t_cm_up, 1e-3),
        ):
            met = seconds <= limit
            results.append(dict(op=f"{op} (absolute)", pysketch=seconds, limit=limit, met=met))
            print(
                f"  {op:<28} {fmt_time(seconds)}  target <= {fmt_time(limit)}  "
                f"{'yes' if met else 'NO'}",
                flush=True,
            )

    if not args.no_peakmem and dev == "cpu":
        print("\n# peak memory (fresh subprocess per case; peak RSS - RSS after imports)")
        for impl, dd in [
            ("pysketch", peak_d),
            ("pysketch_nocheck", peak_d),
            ("numpy_ref", peak_d),
            ("pysketch", d),
            ("csvec", d),
        ]:
            if impl == "csvec" and (args.no_csvec_peakmem or torch is None):
                continue
            print(f"  peak memory of {impl} at d={dd:.0e}...", file=sys.stderr, flush=True)
            r = peak_memory(impl, dd, rows, cols)
            if r is None:
                continue
            need = r["input"] + r["table"]
            ratio = r["used"] / need
            target = 1.2 if impl.startswith("pysketch") else None
            met = None if target is None else ratio <= target
            results.append(
                dict(
                    op=f"peak memory {impl} d={dd:.0e}",
                    used=r["used"],
                    input_plus_table=need,
                    ratio=ratio,
                    target=target,
                    met=met,
                )
            )
            tgt = "-" if target is None else f"<= {target:g}"
            print(
                f"  peak mem {impl:<17} d={dd:.0e}  used {fmt_bytes(r['used'])}  input+table "
                f"{fmt_bytes(need)}  ratio {ratio:6.3f}  target {tgt:<8} "
                f"{'-' if met is None else ('yes' if met else 'NO')}",
                flush=True,
            )

    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(d=d, rows=rows, cols=cols, k=k, device=dev, rows_=results), f, indent=1)


if __name__ == "__main__":
    main()
