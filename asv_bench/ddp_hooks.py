"""DDP communication hooks side by side: DDP's allreduce, PowerSGD and pysketch's hooks.

One model and data set (a CNN of 283,786 parameters on scikit-learn's digits,
1,497 training and 300 test images), 2 gloo processes on the CPU started with
``torch.multiprocessing.spawn``, one PyTorch and one Numba thread per process,
every configuration from the same initial model and data order. Prints, per
configuration: the final training loss (mean of the last 20 steps), the test
accuracy, the payload bytes per worker and compressed step (sent + received,
as the papers count them), and the median ms per step of the best repeat (the
least disturbed on a shared machine), of the median repeat and their range,
and the best against the allreduce's best::

    python asv_bench/ddp_hooks.py                      # 300 steps, 3 repeats
    python asv_bench/ddp_hooks.py --steps 100 --repeats 1 --configs allreduce topk-r2
    python asv_bench/ddp_hooks.py --breakdown          # where a hook step's time goes

``--breakdown`` times, in one process with one thread, the two phases of the
step that the hook runs per bucket around its collective (median of 30 warm
calls at the model's d): the local phase (memory, momentum, top-k or sketch,
the status counts) and the server phase (decoding, FetchSGD's sketch momentum
and error, the read of the status, the commit).

Every hook starts compressing at step ``--start-iter`` (plain allreduce
before, as PowerSGD's ``start_powerSGD_iter``). The pysketch configurations
named ``-rN`` send as many bytes per step as PowerSGD at rank N. The
goals: a hook step no slower than 1.3x the allreduce's, and at equal bytes an
accuracy no worse than PowerSGD's.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powersgd  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "examples"))

from ddp_digits import cnn, digits  # noqa: E402  (the worked example's model and data)
from machine import cpu_description  # noqa: E402

from pysketch.compress.torch_ddp import fetchsgd_state, topk_state  # noqa: E402

WORLD, BATCH, LR = 2, 32, 0.01


def powersgd_bytes(net: torch.nn.Module, rank: int) -> int:
    """PowerSGD's payload per worker and step, one way: P and Q, and what it leaves dense."""
    values = 0
    for p in net.parameters():
        n, m = p.shape[0], p.numel() // p.shape[0]
        compress = p.dim() > 1 and (n + m) * rank * 2 < n * m  # min_compression_rate = 2
        values += (n + m) * rank if compress else p.numel()
    return 4 * values


#: FetchSGD at PowerSGD rank 2's bytes: one row (4,239 columns) and k = 3 % of d, the best
#: of the sweep in docs/performance.rst (k 0.03-10 %, 1 or 3 rows).
FETCH_K, FETCH_ROWS = 0.03, 1


def configs(
    d: int, net: torch.nn.Module, start: int, fetch_k: float = FETCH_K, fetch_rows: int = FETCH_ROWS
) -> dict[str, tuple]:
    """name -> (hook state builder, optimizer momentum); None: DDP's own allreduce."""
    out: dict[str, tuple] = {"allreduce": (None, 0.9)}
    for r in (1, 2, 3, 4):
        out[f"powersgd-r{r}"] = (
            lambda r=r: powersgd.PowerSGDState(
                None, matrix_approximation_rank=r, start_powerSGD_iter=start, random_seed=0
            ),
            0.9,
        )
    for r in (1, 2, 4):
        # Top-k: k (int32 index, float32 value) pairs up and as many down (W = 2).
        k_ratio = powersgd_bytes(net, r) / 8 / d
        out[f"topk-r{r}"] = (lambda k=k_ratio: topk_state(k_ratio=k, start_iter=start), 0.9)
    # Worker momentum inside the hook, masked (FetchSGD's local top-k): no optimizer momentum.
    k_ratio = powersgd_bytes(net, 2) / 8 / d
    out["topk-momentum-r2"] = (
        lambda: topk_state(k_ratio=k_ratio, rho=0.9, start_iter=start),
        0.0,
    )
    # FetchSGD: a float32 sketch up and down, as many bytes as PowerSGD at rank 2 ...
    cols = powersgd_bytes(net, 2) / 4 / fetch_rows / d
    out["fetchsgd-r2"] = (
        lambda: fetchsgd_state(k_ratio=fetch_k, rows=fetch_rows, cols_ratio=cols, start_iter=start),
        0.9,
    )
    # ... and the sketch FetchSGD needs here (5 x d/10, 33x the bytes), with the optimizer's
    # momentum or with momentum in sketch space (then none in the optimizer).
    out["fetchsgd-cols10%"] = (
        lambda: fetchsgd_state(k_ratio=0.01, rows=5, cols_ratio=0.1, start_iter=start),
        0.9,
    )
    out["fetchsgd-cols10%-rho"] = (
        lambda: fetchsgd_state(k_ratio=0.01, rows=5, cols_ratio=0.1, rho=0.9, start_iter=start),
        0.0,
    )
    return out


def train(rank: int, name: str, build, momentum: float, args, data) -> dict:
    (x, y), (x_test, y_test) = data
    torch.manual_seed(0)
    net = cnn()
    # One bucket: PowerSGD's hook starts its second allreduce from the first one's
    # callback, which on gloo with two buckets issued the collectives in different orders
    # on the two ranks (gloo aborted: "Received data size doesn't match expected size").
    ddp = DDP(net, bucket_cap_mb=args.bucket_cap_mb)
    d = sum(p.numel() for p in net.parameters())
    state = None
    if build is not None:
        state = build()
        if isinstance(state, powersgd.PowerSGDState):
            ddp.register_comm_hook(state, powersgd.powerSGD_hook)
        else:
            state.register(ddp)
    opt = torch.optim.SGD(ddp.parameters(), lr=LR, momentum=momentum)
    shard = torch.arange(rank, len(y), WORLD)  # each rank half of the training set
    gen = torch.Generator().manual_seed(0)
    losses, times = [], []
    for step in range(args.steps):
        if step % (len(shard) // BATCH) == 0:
            order = shard[torch.randperm(len(shard), generator=gen)]
        batch = order[(step % (len(shard) // BATCH)) * BATCH :][:BATCH]
        start = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(ddp(x[batch]), y[batch])
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    with torch.no_grad():
        accuracy = (net(x_test).argmax(dim=1) == y_test).float().mean().item()
    if state is None:
        sent = 4 * d
    elif isinstance(state, powersgd.PowerSGDState):
        sent = powersgd_bytes(net, state.matrix_approximation_rank)
    else:
        sent = state.comm.last_step.upload
    received = 4 * d if state is None or isinstance(state, powersgd.PowerSGDState) else 0
    if isinstance(state, powersgd.PowerSGDState):
        received = sent
    elif state is not None:
        received = state.comm.last_step.download
    timed = times[args.start_iter + 5 :]  # compressed steps, after the first calls compiled
    return {
        "loss": float(np.mean(losses[-20:])),
        "accuracy": accuracy,
        "bytes": sent + received,
        "ms": 1000 * float(np.median(timed)),
        "d": d,
    }


def breakdown(names: list[str], args, calls: int = 30) -> None:
    """Print the median ms of each hook configuration's local and server phase."""
    from pysketch.compress import LocalCommunicator
    from pysketch.compress._step import Step

    d, table = 283_786, table_of(args)
    g = np.random.default_rng(0).standard_normal(d).astype(np.float32) / 100
    out = np.empty(d, np.float32)
    print(f"{'configuration':<22} {'local phase':>12} {'server phase':>13}  (ms, d = {d:,})")
    for name in names:
        build = table[name][0]
        if build is None or not hasattr(build(), "make_algorithm"):
            continue  # DDP's allreduce and PowerSGD: no pysketch step
        algo, comm = build().make_algorithm(d), LocalCommunicator(1)
        algo._worker_ids, algo._workers = (0,), [algo._new_worker()]  # as the hook does
        local, server = [], []
        for _ in range(calls + 1):  # the first call compiles
            t0 = time.perf_counter()
            step = Step(algo, comm, [algo._input(g, "gradient")], 1.0, True, False, algo._workers)
            algo._local_phase(step)
            t1 = time.perf_counter()
            step.exchange()  # no communication in one process
            t2 = time.perf_counter()
            algo._server_phase(step, out)
            step.raise_if_failed()
            step.commit()
            comm.step()
            algo.steps += 1
            local.append(t1 - t0)
            server.append(time.perf_counter() - t2)
        print(
            f"{name:<22} {1000 * np.median(local[1:]):>12.2f} {1000 * np.median(server[1:]):>13.2f}"
        )


def table_of(args) -> dict[str, tuple]:
    """The configurations of the model the script trains, with the command line's FetchSGD."""
    return configs(283_786, cnn(), args.start_iter, args.fetchsgd_k, args.fetchsgd_rows)


def worker(rank: int, init: str, args, names: list[str], out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    data = digits()
    results: dict[str, list[dict]] = {n: [] for n in names}
    table = table_of(args)
    for _ in range(args.repeats):
        for name in names:  # interleaved: every repeat sees the machine's load alike
            build, momentum = table[name]
            results[name].append(train(rank, name, build, momentum, args, data))
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--start-iter", type=int, default=10)
    ap.add_argument("--bucket-cap-mb", type=float, default=25.0, help="25: one bucket")
    ap.add_argument("--configs", nargs="*", default=None, help="names (default: all)")
    ap.add_argument("--breakdown", action="store_true", help="time the hook steps' phases")
    ap.add_argument(
        "--fetchsgd-k", type=float, default=FETCH_K, help="fetchsgd-r2's k, a fraction of d"
    )
    ap.add_argument("--fetchsgd-rows", type=int, default=FETCH_ROWS, help="fetchsgd-r2's rows")
    args = ap.parse_args()
    names = args.configs or list(table_of(args))
    if args.breakdown:
        print(f"# {cpu_description()}, {os.environ['NUMBA_NUM_THREADS']} Numba thread")
        breakdown(names, args)
        return
    if "allreduce" not in names:
        names.insert(0, "allreduce")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "results.pt")
        mp.spawn(worker, args=(f"file://{tmp}/rdv", args, names, out), nprocs=WORLD)
        results = torch.load(out)
    print(
        f"# {cpu_description()}, {os.cpu_count()} cores, {platform.python_version()}, "
        f"torch {torch.__version__}; {WORLD} gloo processes, 1 torch + "
        f"{os.environ['NUMBA_NUM_THREADS']} Numba thread each; {args.steps} steps, batch "
        f"{BATCH} per rank, SGD lr {LR}, start_iter {args.start_iter}, bucket_cap_mb "
        f"{args.bucket_cap_mb:g}; fetchsgd-r2: k {args.fetchsgd_k:g} d, {args.fetchsgd_rows} "
        f"row(s); {args.repeats} repeat(s)"
    )
    print(
        f"{'configuration':<22} {'loss':>6} {'accuracy':>9} {'bytes/step':>11} "
        f"{'ms/step':>8} {'median':>7} {'(range)':>14} {'vs allreduce':>13}"
    )
    # Timings on a shared machine: the best repeat is the least disturbed one; the median
    # and the range say how much the others were.
    base = [r["ms"] for r in results["allreduce"]]
    for name in names:
        runs = results[name]
        ms = [r["ms"] for r in runs]
        ratios = [m / b for m, b in zip(ms, base, strict=True)]
        print(
            f"{name:<22} {runs[0]['loss']:>6.3f} {100 * runs[0]['accuracy']:>8.1f}% "
            f"{runs[0]['bytes']:>11,.0f} {min(ms):>8.1f} {statistics.median(ms):>7.1f} "
            f"{f'({min(ms):.1f}-{max(ms):.1f})':>14} "
            f"{min(ms) / min(base):>7.2f}x (median of ratios {statistics.median(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
