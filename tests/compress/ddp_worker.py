"""The processes of the DDP hook tests: ``python -m tests.compress.ddp_worker OUT JOB [JOB ...]``.

A job is ``scenario`` or ``scenario:arg`` (a function below). Starts 2 gloo
processes on the CPU with ``torch.multiprocessing.spawn``, or is one of them
when torchrun started it (``RANK`` in the environment); they run the jobs in
order, and each rank writes ``{job: what the test checks}`` to ``OUT/rank{r}.pt``.

The model (:class:`Mixed`) is built to make DDP's buckets move: two layers of
272 parameters each, one float32 and one float64, and a forward order that is
the reverse of their registration. With a 0.0005 MB bucket cap, DDP's first
iteration has buckets ``[b.weight, b.bias]`` (float64) and ``[a.weight,
a.bias, inp.weight, inp.bias]``; its rebuild, in the order gradients become
ready, gives ``[a.bias, a.weight]`` (float32, 272 entries: the index and size
the float64 bucket had), ``[b.bias, b.weight]`` and ``[inp.bias,
inp.weight]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from pysketch.compress.torch_ddp import fetchsgd_state, sketch_hook, topk_state
from pysketch.kernels.parallel import num_threads

WORLD = int(os.environ.get("DDP_TEST_WORLD", "2"))  # 1 for NCCL on a single GPU
CAP_MB = 0.0005
# DDP's buckets of Mixed at CAP_MB: its first iteration's, and its rebuilt ones.
INITIAL_BUCKETS = [["b.weight", "b.bias"], ["a.weight", "a.bias", "inp.weight", "inp.bias"]]
REBUILT_BUCKETS = [["a.bias", "a.weight"], ["b.bias", "b.weight"], ["inp.bias", "inp.weight"]]
STEPS = 6  # per phase

# The hook configurations, with the optimizer each is meant for.
STATES = {
    # momentum in sketch space: SGD without momentum
    "fetchsgd": lambda: fetchsgd_state(
        k_ratio=0.1, rows=3, cols_ratio=0.5, rho=0.9, seed=3, start_iter=1
    ),
    # error-fed gradient: Adam
    "topk": lambda: topk_state(k_ratio=0.1, start_iter=1),
    # worker momentum, masked: SGD without momentum
    "topk-momentum": lambda: topk_state(k_ratio=0.1, rho=0.9, start_iter=1),
}


def optimizer(name: str, params):
    if name == "topk":
        return torch.optim.Adam(params, lr=0.01)
    return torch.optim.SGD(params, lr=0.1)


class Mixed(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(16, 16)  # registered first, used last
        self.b = torch.nn.Linear(16, 16).double()  # the same size, float64
        self.inp = torch.nn.Linear(10, 16)

    def forward(self, x):
        h = torch.tanh(self.inp(x.to(self.inp.weight.dtype)))
        h = torch.tanh(self.b(h.to(self.b.weight.dtype)))
        return self.a(h.to(self.a.weight.dtype))


def model(dtype=None, cap: float = CAP_MB) -> DDP:
    torch.manual_seed(0)  # the same initial model on every rank
    net = Mixed() if dtype is None else Mixed().to(dtype)
    return DDP(net, bucket_cap_mb=cap)


def batch(step: int, device: str | torch.device = "cpu"):
    gen = torch.Generator().manual_seed(1000 * dist.get_rank() + step)  # each rank its data
    x = torch.randn(32, 10, generator=gen)
    return x.to(device), ((x[:, :3].argmax(dim=1) + dist.get_rank()) % 16).to(device)


def train(ddp: DDP, opt, steps: int, start: int = 0, poison: int | None = None) -> list[float]:
    losses = []
    device = next(ddp.parameters()).device
    for step in range(start, start + steps):
        x, y = batch(step, device)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(ddp(x).float(), y)
        if step == poison and dist.get_rank() == 1:
            loss = loss * float("nan")
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def params(ddp: DDP) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in ddp.module.named_parameters()}


def recorder(ddp: DDP, log: list):
    """A hook around sketch_hook that logs each bucket's names, gradient and result."""
    names = {id(p): n for n, p in ddp.module.named_parameters()}

    def recording(state, bucket):
        entry = {
            "iter": state.iter,
            "names": [names[id(p)] for p in bucket.parameters()],
            "grad": bucket.buffer().detach().clone(),
        }
        log.append(entry)  # in bucket order (the results complete in any order)
        future = sketch_hook(state, bucket)

        def record(done):
            entry["out"] = done.value().detach().clone()
            return done.value()

        return future.then(record)

    return recording


# ================================================================ scenarios
def replay(out: dict, name: str) -> None:
    """Every bucket's gradient and result, for the test to replay in one process."""
    ddp, state, log = model(), STATES[name](), []
    state.register(ddp, recorder(ddp, log))
    out["losses"] = train(ddp, optimizer(name, ddp.parameters()), STEPS)
    out["log"], out["params"] = log, params(ddp)
    out["groups"] = [(list(g.names), g.dtype, g.algorithm.dtype.name) for g in state._groups]
    out["upload"] = state.comm.total.upload


def cuda(out: dict, name: str) -> None:
    """:func:`replay` with the model on a GPU and the hook on an NCCL process group."""
    torch.cuda.set_device(dist.get_rank() % torch.cuda.device_count())
    device = torch.device("cuda", torch.cuda.current_device())
    group = dist.new_group(backend="nccl")
    torch.manual_seed(0)
    ddp = DDP(Mixed().to(device), device_ids=[device], bucket_cap_mb=CAP_MB, process_group=group)
    state, log = STATES[name](), []
    state.register(ddp, recorder(ddp, log))
    out["losses"] = train(ddp, optimizer(name, ddp.parameters()), STEPS)
    out["log"] = [{**e, "grad": e["grad"].cpu(), "out": e["out"].cpu()} for e in log]
    out["params"] = {n: p.cpu() for n, p in params(ddp).items()}
    out["groups"] = [(list(g.names), g.dtype, g.algorithm.dtype.name) for g in state._groups]
    out["upload"] = state.comm.total.upload
    out["devices"] = sorted({g.algorithm.device for g in state._groups})


def equivalence(out: dict, _: str) -> None:
    """Top-k with k = d under Adam, and DDP's own allreduce under Adam."""
    trajectories = []
    for hooked in (False, True):
        ddp = model()
        if hooked:
            topk_state(k_ratio=1.0, start_iter=1).register(ddp)
        opt, path = torch.optim.Adam(ddp.parameters(), lr=0.01), []
        for step in range(STEPS):
            train(ddp, opt, 1, start=step)
            path.append(params(ddp))
        trajectories.append(path)
    out["plain"], out["hooked"] = trajectories


def resume_first(out: dict, name: str) -> None:
    """2N uninterrupted steps; then N steps and a checkpoint of this rank."""
    ddp, state = model(), STATES[name]()
    state.register(ddp)
    train(ddp, optimizer(name, ddp.parameters()), 2 * STEPS)
    out["uninterrupted"] = params(ddp)
    ddp, state = model(), STATES[name]()
    state.register(ddp)
    opt = optimizer(name, ddp.parameters())
    train(ddp, opt, STEPS)
    # The pickled state (as PowerSGD's) for one algorithm, state_dict() for the others.
    hook = state if name == "topk" else state.state_dict()
    checkpoint = {"model": ddp.module.state_dict(), "opt": opt.state_dict(), "hook": hook}
    torch.save(checkpoint, Path(out["dir"]) / f"ckpt-{name}-{dist.get_rank()}.pt")


def resume_second(out: dict, name: str) -> None:
    """A new process group, model, optimizer and hook state from the checkpoint; N steps."""
    path = Path(out["dir"]) / f"ckpt-{name}-{dist.get_rank()}.pt"
    ddp = model()
    if name == "topk":
        checkpoint = torch.load(path, weights_only=False)
        state = checkpoint["hook"]
    else:
        checkpoint = torch.load(path, weights_only=True)
        state = STATES[name]()
        state.load_state_dict(checkpoint["hook"])
    ddp.module.load_state_dict(checkpoint["model"])
    opt = optimizer(name, ddp.parameters())
    opt.load_state_dict(checkpoint["opt"])
    log: list = []
    state.register(ddp, recorder(ddp, log))
    train(ddp, opt, STEPS, start=STEPS)
    out["resumed"], out["log"] = params(ddp), log
    out["groups"] = [list(g.names) for g in state._groups]


def dtypes(out: dict, name: str) -> None:
    """A float16 and a bfloat16 model train with the hook (Adam)."""
    for dtype in (torch.float16, torch.bfloat16):
        ddp, state, log = model(dtype), STATES[name](), []
        state.register(ddp, recorder(ddp, log))
        opt = torch.optim.Adam(ddp.parameters(), lr=0.01, eps=1e-4)
        losses = train(ddp, opt, 3 * STEPS)
        out[str(dtype)] = {
            "losses": losses,
            "out dtypes": sorted({str(e["out"].dtype) for e in log}),
            "state dtypes": sorted({g.algorithm.dtype.name for g in state._groups}),
            "finite": all(torch.isfinite(p).all().item() for p in ddp.parameters()),
        }


def grad_scaler(out: dict, _: str) -> None:
    """float16 autocast with torch.amp.GradScaler: overflowing steps skipped on every rank."""
    ddp = model(torch.float32)
    state = fetchsgd_state(k_ratio=0.1, rows=3, cols_ratio=0.5, nonfinite="propagate")
    state.register(ddp)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24)  # overflows float16 at first
    scales, skipped = [], []
    for step in range(3 * STEPS):
        x, y = batch(step)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(ddp(x).float(), y)
        scaler.scale(loss).backward()
        skipped.append(not all(torch.isfinite(p.grad).all() for p in ddp.parameters()))
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
    out["scales"], out["skipped"] = scales, skipped
    out["finite"] = all(torch.isfinite(p).all().item() for p in ddp.parameters())
    out["steps"] = [g.algorithm.steps for g in state._groups]


def threads(out: dict, _: str) -> None:
    """The share of the cores this rank's kernels get once the hook met its group."""
    ddp = model()
    topk_state(k_ratio=0.1).register(ddp)
    train(ddp, torch.optim.Adam(ddp.parameters()), 2)
    out["threads"], out["cores"] = num_threads(), len(os.sched_getaffinity(0))


def determinism(out: dict, _: str) -> None:
    """A FetchSGD run large enough for the kernels to split work between threads."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 1024), torch.nn.Tanh(), torch.nn.Linear(1024, 16))
    ddp = DDP(net)
    state = fetchsgd_state(k_ratio=0.02, rows=3, cols_ratio=0.3, rho=0.9)
    state.register(ddp)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    for step in range(STEPS):
        x, _ = batch(step)
        x = torch.cat([x] * 7, dim=1)[:, :64]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ddp(x), x[:, :16].argmax(dim=1)).backward()
        opt.step()
    out["params"], out["torch threads"] = params(ddp), torch.get_num_threads()


def mismatch(out: dict, kind: str) -> None:
    """Hook states that differ across ranks: every rank must raise."""
    rank = dist.get_rank()
    ddp = model()
    if kind == "config":
        state = topk_state(k_ratio=0.1 if rank == 0 else 0.2)
    else:
        first = model()
        state = STATES["topk"]()
        state.register(first)
        train(first, torch.optim.SGD(first.parameters(), lr=0.1), 3)
        saved = state.state_dict()
        if kind == "iter" and rank == 1:
            saved["iter"] += 1
        if kind == "rank":  # each rank loads the other's
            gathered = [None] * WORLD
            dist.all_gather_object(gathered, saved)
            saved = gathered[1 - rank]
        state = STATES["topk"]()
        state.load_state_dict(saved)
    state.register(ddp)
    try:
        train(ddp, torch.optim.SGD(ddp.parameters(), lr=0.1), 2)
    except Exception as exc:
        out["error"] = (type(exc).__name__, str(exc))


def nonfinite(out: dict, policy: str) -> None:
    """Rank 1's gradient is NaN at step 3: what every rank sees, and the state after."""
    ddp = model()
    state = topk_state(k_ratio=0.1, rho=0.9, nonfinite=policy)
    state.register(ddp)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    train(ddp, opt, 3)
    before, traffic = state.state_dict(), state.comm.total
    x, y = batch(3)
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(ddp(x).float(), y)
    try:
        (loss * float("nan") if dist.get_rank() == 1 else loss).backward()
    except Exception as exc:
        out["error"] = (type(exc).__name__, str(exc))
    out["grads finite"] = [bool(torch.isfinite(p.grad).all()) for p in ddp.parameters()]
    out["before"], out["after"] = before["groups"], state.state_dict()["groups"]
    out["traffic"] = (traffic, state.comm.total)
    train(ddp, opt, 2, start=4)  # training goes on (the poisoned step was not applied)
    out["finite after"] = all(torch.isfinite(p).all().item() for p in ddp.parameters())


def failure(out: dict, _: str) -> None:
    """Rank 1's local phase of one group raises once at step 3: what every rank sees."""
    ddp = model()
    state = topk_state(k_ratio=0.1, rho=0.9)
    state.register(ddp)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    train(ddp, opt, 3)
    before, traffic = state.state_dict(), state.comm.total
    algo = state._groups[0].algorithm
    if dist.get_rank() == 1:
        local_phase = algo._local_phase

        def broken(step):
            algo._local_phase = local_phase  # once: the rank then sends zeros, marked failed
            raise OSError("the local phase broke")

        algo._local_phase = broken
    try:
        train(ddp, opt, 1, start=3)
    except Exception as exc:
        out["error"] = (type(exc).__name__, str(exc))
    out["before"], out["after"] = before["groups"], state.state_dict()["groups"]
    out["traffic"] = (traffic, state.comm.total)
    train(ddp, opt, 2, start=4)
    out["finite after"] = all(torch.isfinite(p).all().item() for p in ddp.parameters())


def communicator(out: dict, config: str) -> None:
    """TorchCommunicator without DDP: algorithm.step over the process group, then a NaN."""
    from pysketch.compress.torch_ddp import TorchCommunicator
    from tests.compress.scenarios import build, gradient, trajectory

    comm = TorchCommunicator()
    out["trajectory"], out["total"] = trajectory(build(config), comm), comm.total
    algo = build(config)
    g = gradient(dist.get_rank(), 0, np.zeros(algo.d, dtype=np.float32))
    if dist.get_rank() == 1:
        g[3] = np.nan
    try:
        algo.step([g], comm)
    except Exception as exc:
        out["error"] = (type(exc).__name__, str(exc))


SCENARIOS = {
    f.__name__: f
    for f in (
        replay,
        cuda,
        equivalence,
        resume_first,
        resume_second,
        dtypes,
        grad_scaler,
        threads,
        determinism,
        mismatch,
        nonfinite,
        failure,
        communicator,
    )
}


def run(rank: int, out_dir: str, jobs: list[str], init: str | None) -> None:
    if init is None:
        dist.init_process_group("gloo")  # torchrun's environment
    else:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    results: dict = {}
    try:
        for job in jobs:
            scenario, _, arg = job.partition(":")
            results[job] = {"dir": out_dir}
            SCENARIOS[scenario](results[job], arg)
    finally:
        torch.save(results, Path(out_dir) / f"rank{dist.get_rank()}.pt")
        dist.destroy_process_group()


if __name__ == "__main__":
    out_dir, jobs = sys.argv[1], sys.argv[2:]
    if "RANK" in os.environ:  # started by torchrun
        run(int(os.environ["RANK"]), out_dir, jobs, None)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(run, args=(out_dir, jobs, f"file://{tmp}/rendezvous"), nprocs=WORLD)
