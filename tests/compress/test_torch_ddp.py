"""The DDP hook: 2 gloo processes on the CPU train a small model through pysketch.

The processes run ``tests/compress/ddp_worker.py``; each fixture starts one
group of them for several scenarios, since starting PyTorch costs seconds.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed")

from pysketch.compress import LocalCommunicator  # noqa: E402
from pysketch.compress.torch_ddp import (  # noqa: E402
    HookState,
    TorchCommunicator,
    fetchsgd_state,
    sketch_hook,
    topk_state,
)
from pysketch.errors import NonFiniteError  # noqa: E402
from tests.compress.ddp_worker import (  # noqa: E402
    INITIAL_BUCKETS,
    REBUILT_BUCKETS,
    STATES,
    STEPS,
)
from tests.compress.scenarios import build, trajectory  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ALGORITHMS = sorted(STATES)
# A gathered, a random-k, two sketched (two rounds for Sketched-SGD) and a desketched one.
COMMUNICATOR_CONFIGS = ["memsgd-topk", "memsgd-randomk", "fetchsgd-zero", "sketched-p1-p2"]
COMMUNICATOR_CONFIGS += ["sketchdl-ef"]


def python(*args: str, **env: str | None) -> str:
    """Run ``python ARGS`` from the repository with ``env`` (``None`` unsets); its stdout."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    environ["NUMBA_NUM_THREADS"] = "1"  # small tests: one kernel thread (unless env says)
    for key, value in env.items():
        environ.pop(key, None)
        if value is not None:
            environ[key] = value
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return proc.stdout


def run_ddp(tmp: Path, jobs: list[str], *, torchrun: bool = False, **env: str | None):
    """Run the jobs in 2 processes (torch.multiprocessing.spawn, or torchrun)."""
    tmp.mkdir(parents=True, exist_ok=True)
    launcher = ["-m"]
    if torchrun:
        launcher += ["torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    python(*launcher, "tests.compress.ddp_worker", str(tmp), *jobs, **env)
    world = int(env.get("DDP_TEST_WORLD") or 2)
    return [torch.load(tmp / f"rank{rank}.pt", weights_only=False) for rank in range(world)]


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_same_state(a, b) -> None:
    """Equal hook state_dicts (or parts of them): the same values, tensors bit for bit."""
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_state(x, y)
    elif torch.is_tensor(a):
        assert torch.equal(a, b)
    else:
        assert a == b


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    jobs = [f"replay:{name}" for name in ALGORITHMS] + ["equivalence"]
    return run_ddp(tmp_path_factory.mktemp("trained"), jobs)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    first = run_ddp(tmp, [f"resume_first:{name}" for name in ALGORITHMS])
    second = run_ddp(tmp, [f"resume_second:{name}" for name in ALGORITHMS])
    return first, second


@pytest.fixture(scope="module")
def hardened(tmp_path_factory):
    jobs = ["dtypes:topk", "dtypes:fetchsgd", "grad_scaler", "nonfinite:raise"]
    jobs += ["nonfinite:propagate", "mismatch:config", "mismatch:iter", "mismatch:rank"]
    jobs += ["failure"]
    jobs += [f"communicator:{config}" for config in COMMUNICATOR_CONFIGS]
    return run_ddp(tmp_path_factory.mktemp("hardened"), jobs)


# ------------------------------------------------------------ the results
def _by_name(entries: list[dict], key: str, sizes: dict[str, int]) -> dict[str, torch.Tensor]:
    out = {}
    for entry in entries:
        at = 0
        for name in entry["names"]:
            out[name] = entry[key][at : at + sizes[name]]
            at += sizes[name]
    return out


def assert_replays(ranks: list[dict], name: str, **tolerance) -> None:
    """Per group of parameters, by name: the hook's results are the in-process algorithm's
    on the same gradients (bit for bit unless ``tolerance``), DDP's average before."""
    world = len(ranks)
    sizes = {n: p.numel() for n, p in ranks[0]["params"].items()}
    state, comm = STATES[name](), LocalCommunicator(world)
    groups = ranks[0]["groups"]
    algorithms = []
    for names, _, state_dtype in groups:
        algo = state.make_algorithm(sum(sizes[n] for n in names), dtype=state_dtype)
        algo.presum = False  # sum the ranks' sketches, as the allreduce does
        algorithms.append(algo)
    plain_bytes = 0
    for it in range(STEPS):
        logs = [[e for e in r["log"] if e["iter"] == it] for r in ranks]
        grads = [_by_name(log, "grad", sizes) for log in logs]
        outs = [_by_name(log, "out", sizes) for log in logs]
        if it == 0:  # start_iter = 1: DDP's own averaged gradient
            plain_bytes += sum(e["grad"].numel() * e["grad"].element_size() for e in logs[0])
            for n in sizes:
                average = sum(g[n] / world for g in grads)
                assert all(torch.equal(out[n], average) for out in outs), n
            continue
        for (names, _, _), algo in zip(groups, algorithms, strict=True):
            dtype = getattr(torch, algo.dtype.name)
            vectors = [torch.cat([g[n] for n in names]).to(dtype).numpy() for g in grads]
            expected = algo.step(vectors, comm)
            for out in outs:
                got = torch.cat([out[n] for n in names]).numpy()
                if tolerance:
                    np.testing.assert_allclose(got, expected, **tolerance)
                else:
                    np.testing.assert_array_equal(got, expected, err_msg=f"{it} {names}")
    assert ranks[0]["upload"] == plain_bytes + comm.total.upload


@pytest.mark.parametrize("name", ALGORITHMS)
def test_hook_results_equal_the_algorithm_in_one_process(trained, name):
    # In one process FetchSGD adds every worker's gradient into one table, in turn; the ranks'
    # allreduce adds whole tables: the same sums, their float32 additions in another order.
    tolerance = dict(rtol=1e-5, atol=1e-7) if name == "fetchsgd" else {}
    assert_replays([r[f"replay:{name}"] for r in trained], name, **tolerance)


@pytest.mark.cuda
@pytest.mark.skipif(
    os.environ.get("PYSKETCH_REAL_GPU") != "1" or not torch.cuda.is_available(),
    reason="needs a real GPU (PYSKETCH_REAL_GPU=1)",
)
def test_nccl_on_cuda_tensors(tmp_path):
    pytest.importorskip("cupy")
    world = min(2, torch.cuda.device_count())  # NCCL takes one GPU per rank
    runs = run_ddp(tmp_path, [f"cuda:{n}" for n in ALGORITHMS], DDP_TEST_WORLD=str(world))
    for name in ALGORITHMS:
        ranks = [r[f"cuda:{name}"] for r in runs]
        assert all(r["devices"] == ["cuda"] for r in ranks)
        # CUDA sums sketch cells with atomics, in no fixed order: equal up to rounding.
        assert_replays(ranks, name, rtol=1e-5, atol=1e-6)


def test_groups_follow_parameters_through_the_bucket_rebuild(trained):
    ranks = [r["replay:topk"] for r in trained]
    first = [e["names"] for e in ranks[0]["log"] if e["iter"] == 0]
    later = [e["names"] for e in ranks[0]["log"] if e["iter"] == 1]
    # DDP rebuilt its buckets after the first iteration: the float64 bucket's order changed,
    # and a float32 bucket of the same size (272) took its index.
    assert first == INITIAL_BUCKETS and later == REBUILT_BUCKETS
    assert ranks[0]["groups"] == [
        (REBUILT_BUCKETS[0], "float32", "float32"),
        (REBUILT_BUCKETS[1], "float64", "float64"),
        (REBUILT_BUCKETS[2], "float32", "float32"),
    ]


@pytest.mark.parametrize("name", ALGORITHMS)
def test_ranks_stay_in_sync_and_train(trained, name):
    ranks = [r[f"replay:{name}"] for r in trained]
    assert_same_tensors(ranks[0]["params"], ranks[1]["params"])
    for r in ranks:
        assert r["losses"][-1] < r["losses"][0]


def test_topk_with_k_equal_d_under_adam_is_plain_ddp(trained):
    for rank in trained:
        run = rank["equivalence"]
        for plain, hooked in zip(run["plain"], run["hooked"], strict=True):
            assert_same_tensors(plain, hooked)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_a_resumed_run_is_the_uninterrupted_one_bit_for_bit(resumed, name):
    first, second = resumed
    for before, after in zip(first, second, strict=True):
        assert_same_tensors(before[f"resume_first:{name}"]["uninterrupted"],
                            after[f"resume_second:{name}"]["resumed"])  # fmt: skip
        run = after[f"resume_second:{name}"]
        # The resumed run's first iteration had DDP's initial buckets, which are not the
        # groups (parameters reordered, two groups in one bucket): gathered by name.
        first_buckets = [e["names"] for e in run["log"] if e["iter"] == STEPS]
        assert first_buckets == INITIAL_BUCKETS and run["groups"] == REBUILT_BUCKETS
        assert all(names not in run["groups"] for names in first_buckets)


@pytest.mark.parametrize("name", ["topk", "fetchsgd"])
@pytest.mark.parametrize("dtype", ["torch.float16", "torch.bfloat16"])
def test_half_precision_models_train(hardened, name, dtype):
    for rank in hardened:
        run = rank[f"dtypes:{name}"][dtype]
        assert run["out dtypes"] == [dtype] and run["state dtypes"] == ["float32"]
        assert run["finite"]
        assert np.mean(run["losses"][-3:]) < np.mean(run["losses"][:3])


def test_grad_scaler_skips_the_same_steps_everywhere_and_the_state_with_them(hardened):
    runs = [rank["grad_scaler"] for rank in hardened]
    assert runs[0]["scales"] == runs[1]["scales"] and runs[0]["skipped"] == runs[1]["skipped"]
    skipped = runs[0]["skipped"]
    assert skipped[0] and not skipped[-1]  # 2**24 overflows float16 at first
    compressed_and_applied = sum(not s for s in skipped[1:])  # start_iter = 1
    for run in runs:
        assert run["finite"]
        assert run["steps"] == [compressed_and_applied] * len(run["steps"])


@pytest.mark.parametrize("policy", ["raise", "propagate"])
def test_nan_on_one_rank_reaches_every_rank_and_changes_nothing(hardened, policy):
    for rank in hardened:
        run = rank[f"nonfinite:{policy}"]
        if policy == "raise":
            kind, message = run["error"]
            assert kind == NonFiniteError.__name__ and "NaN or Inf on rank 1" in message
        else:
            assert "error" not in run
        assert not any(run["grads finite"])  # nothing half-applied: NaN everywhere
        assert_same_state(run["before"], run["after"])
        assert run["traffic"][0] == run["traffic"][1]  # the failed step is not counted
        assert run["finite after"]


def test_a_rank_that_cannot_compress_raises_its_error_and_every_other_rank_too(hardened):
    for rank, run in enumerate(r["failure"] for r in hardened):
        kind, message = run["error"]
        if rank == 1:
            assert (kind, message) == ("OSError", "the local phase broke")
        else:
            assert kind == "RuntimeError" and "could not run on rank(s) [1]" in message, message
        assert_same_state(run["before"], run["after"])
        assert run["traffic"][0] == run["traffic"][1]
        assert run["finite after"]


@pytest.mark.parametrize(
    "kind, match",
    [
        ("config", r"ranks disagree, rank 1 differs from rank 0 in k_ratio \(0.1 on rank 0"),
        ("iter", r"ranks disagree, rank 1 differs from rank 0 in iter \(3 on rank 0, 4 on"),
        ("rank", r"rank 0 holds the hook state of worker\(s\) \[1\]: each rank must load"),
    ],
)
def test_states_that_differ_across_ranks_raise_on_every_rank(hardened, kind, match):
    for rank in hardened:
        error, message = rank[f"mismatch:{kind}"]["error"]
        assert error == "ValueError" and re.search(match, message), message


@pytest.mark.parametrize("config", COMMUNICATOR_CONFIGS)
def test_torch_communicator_runs_the_algorithms_as_in_one_process(hardened, config):
    expected_comm = LocalCommunicator(2)
    expected = trajectory(build(config), expected_comm)
    for rank in hardened:
        run = rank[f"communicator:{config}"]
        np.testing.assert_allclose(run["trajectory"], expected, rtol=1e-5, atol=1e-5)
        assert run["total"] == expected_comm.total
        # A NaN on rank 1 is a NonFiniteError on every rank, as with MPICommunicator.
        kind, message = run["error"]
        assert kind == "NonFiniteError" and "rank 1" in message and "vectors[0]" in message


# ------------------------------------------------------------- threads
@pytest.mark.parametrize("torchrun", [False, True], ids=["spawn", "torchrun"])
def test_each_rank_gets_its_share_of_the_cores(tmp_path, torchrun):
    # No NUMBA_NUM_THREADS: mp.spawn sets no launcher variable, the hook counts the ranks
    # on this host; torchrun sets LOCAL_WORLD_SIZE, read when pysketch.distributed loads.
    for rank in run_ddp(tmp_path, ["threads"], torchrun=torchrun, NUMBA_NUM_THREADS=None):
        assert rank["threads"]["threads"] == max(1, rank["threads"]["cores"] // 2)


def test_the_run_is_the_same_at_one_and_two_kernel_threads(tmp_path):
    runs = [
        run_ddp(tmp_path / n, ["determinism"], NUMBA_NUM_THREADS=n)[0]["determinism"]
        for n in ("1", "2")
    ]
    assert_same_tensors(runs[0]["params"], runs[1]["params"])
    assert runs[0]["torch threads"] == runs[1]["torch threads"] == 1  # OMP_NUM_THREADS=1


def test_a_kernel_call_leaves_torchs_threads_alone():
    code = (
        "import torch, numpy as np, pysketch\n"
        "pysketch.CountSketch(10**5, 3, 64).accumulate(np.ones(10**5, np.float32))\n"
        "pysketch.topk(np.arange(10**5, dtype=np.float32), 3)\n"
        "print(torch.get_num_threads())\n"
    )
    assert python("-c", code, NUMBA_NUM_THREADS="2").split()[-1] == "1"  # OMP_NUM_THREADS=1


# ------------------------------------------------------ one process only
def test_hook_needs_an_initialised_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        TorchCommunicator()


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: fetchsgd_state(error="both"), ValueError, "error must be"),
        (lambda: fetchsgd_state(k_ratio=0.0), ValueError, r"k_ratio must lie in \(0, 1\]"),
        (lambda: fetchsgd_state(cols_ratio=2.0), ValueError, r"cols_ratio must lie in \(0, 1\]"),
        (lambda: topk_state(rho=1.0), ValueError, r"rho must lie in \[0.0, 1.0\)"),
        (lambda: topk_state(compressor="bottomk"), ValueError, "compressor must be"),
        (lambda: topk_state(start_iter=0), ValueError, "start_iter must be an integer >= 1"),
        (lambda: topk_state(nonfinite="ignore"), ValueError, "nonfinite must be one of"),
        (lambda: HookState("sgd"), ValueError, "algorithm must be one of"),
        (lambda: HookState("memsgd", rows=3), TypeError, r"memsgd takes .* not \['rows'\]"),
    ],
)
def test_states_validate_early(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_registering_needs_a_ddp_model_and_the_hook_a_registered_state():
    state = topk_state()
    with pytest.raises(TypeError, match="model must be a torch.nn.parallel.Distributed"):
        state.register(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="state must be a HookState"):
        sketch_hook(object(), None)
    with pytest.raises(RuntimeError, match=r"register the hook with state.register\(ddp_model\)"):
        sketch_hook(state, None)


def _saved_state():
    """A state_dict with one group, as a run would save it (built without processes)."""
    state = topk_state(k_ratio=0.5, rho=0.9)
    algo = state.make_algorithm(6)
    algo.step([np.arange(6, dtype=np.float32)], LocalCommunicator(1))
    return {
        "version": 1,
        "config": state.config,
        "iter": 4,
        "traffic": None,
        "groups": [
            {
                "params": ["w", "b"],
                "numels": [4, 2],
                "dtype": "float32",
                "algorithm": {
                    k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                    for k, v in algo.state_dict().items()
                },
            }
        ],
    }


def test_state_dict_round_trips_through_torch_save_with_weights_only(tmp_path):
    state = topk_state(k_ratio=0.5, rho=0.9)
    state.load_state_dict(_saved_state())
    torch.save(state.state_dict(), tmp_path / "hook.pt")
    again = topk_state(k_ratio=0.5, rho=0.9)
    again.load_state_dict(torch.load(tmp_path / "hook.pt", weights_only=True))
    assert again.iter == 4 and repr(again) == repr(state)
    a, b = state.state_dict()["groups"][0], again.state_dict()["groups"][0]
    assert torch.equal(a["algorithm"]["workers.momentum"], b["algorithm"]["workers.momentum"])
    unpickled = pickle.loads(pickle.dumps(state))  # torch.save(state) without a process group
    assert unpickled.iter == 4 and unpickled.group is None and unpickled.comm is None
    assert torch.equal(
        unpickled.state_dict()["groups"][0]["algorithm"]["workers.memory"],
        a["algorithm"]["workers.memory"],
    )


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda s: s.update(version=2), r"state\['version'\] must be 1"),
        (lambda s: s["config"].update(k_ratio=0.1), r"differs from this HookState's: k_ratio"),
        (lambda s: s["config"].update(algorithm="fetchsgd"), r"algorithm \('fetchsgd' in the"),
        (lambda s: s.update(iter=-1), r"state\['iter'\] must be a non-negative integer"),
        (lambda s: s["groups"][0].update(numels=[4, 3]), r"does not match this MemSGD: d=6 in the"),
        (lambda s: s["groups"][0].update(dtype="int8"), r"\['dtype'\] must be one of"),
        (lambda s: s["groups"].append(s["groups"][0]), "parameters in two groups"),
        (lambda s: s["groups"][0]["algorithm"]["workers.memory"].fill_(np.nan), "finite"),
        (lambda s: s.update(traffic={"step_count": 1}), "not a communicator state_dict"),
    ],
)
def test_a_bad_state_dict_is_refused_and_changes_nothing(change, match):
    state = topk_state(k_ratio=0.5, rho=0.9)
    state.load_state_dict(_saved_state())
    before = state.state_dict()
    bad = _saved_state()
    change(bad)
    with pytest.raises(ValueError, match=match):
        state.load_state_dict(bad)
    assert_same_state(state.state_dict(), before)


def test_the_worked_example_trains_checkpoints_and_resumes():
    first, resumed = python("docs/examples/ddp_digits.py", "40").splitlines()[-2:]
    assert first.startswith("step 40: ") and resumed.startswith("resumed, step 80: ")
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", resumed).group(1))
    assert accuracy > 80.0, resumed
    assert resumed.endswith("22,704 bytes sent per step instead of 1,135,144")  # k = 1% of d
