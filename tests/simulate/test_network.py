"""The alpha-beta network model: hand-computed collectives, break-even, [network] runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pysketch.compress import LocalCommunicator, make_algorithm
from simulate import cli, config, network
from simulate.claims import network as network_claim
from simulate.runner import read_rows

RING = {"topology": "ring", "bandwidth": 8e9, "latency": 1e-5, "compute": 0.0}


def test_ring_allreduce_by_hand():
    # 4 workers, 1 MB, 1 GB/s: 2*3*(1e-5 + 8e6 / (4 * 8e9)) = 6 * 2.6e-4
    assert network.ring_allreduce_seconds(1e6, 4, 8e9, 1e-5) == pytest.approx(1.56e-3)
    assert network.network_seconds(RING, "allreduce", 1, 10, 1e7, 1e7, 4) == pytest.approx(1.56e-2)


def test_allgather_by_hand():
    # Each of 5 workers sends 1000 bytes: 4 * (1e-5 + 8000 / 8e9) = 4.4e-5.
    assert network.ring_allgather_seconds(1000, 5, 8e9, 1e-5) == pytest.approx(4.4e-5)
    # Top-k pairs: the simulator counts download = (W - 1) m per step.
    assert network.network_seconds(RING, "allgather", 1, 3, 3000, 12000, 5) == pytest.approx(
        3 * 4.4e-5
    )
    # Topology "allgather" gathers a summable payload of n bytes as it is.
    net = {**RING, "topology": "allgather"}
    assert network.network_seconds(net, "allreduce", 2, 1, 2000, 2000, 5) == pytest.approx(
        2 * 4.4e-5
    )


def test_parameter_server_by_hand():
    net = {
        "topology": "ps",
        "bandwidth": 1e6,
        "latency": 0.05,
        "up_bandwidth": 1e6,
        "down_bandwidth": 4e6,
        "server_bandwidth": None,
    }
    # 1000 bytes up at 1 Mbit/s (8 ms), 2000 down at 4 Mbit/s (4 ms), two latencies.
    assert network.network_seconds(net, "allreduce", 1, 1, 1000, 2000, 8) == pytest.approx(0.112)
    # A 16 Mbit/s server link shared by 8 clients: 8 * 8000 / 16e6 = 4 ms up, 8 ms down.
    net["server_bandwidth"] = 16e6
    assert network.network_seconds(net, "allreduce", 1, 1, 1000, 2000, 8) == pytest.approx(0.116)


def test_one_worker_communicates_nothing():
    assert network.network_seconds(RING, "allreduce", 1, 10, 1e6, 1e6, 1) == 0.0


@pytest.mark.parametrize(
    ("algo", "expected"),
    [
        ({"name": "sgd"}, ("allreduce", 1)),
        ({"name": "memsgd", "k": 4}, ("allgather", 1)),
        ({"name": "memsgd", "k": 4, "compressor": "randomk"}, ("allreduce", 1)),
        ({"name": "sketched_sgd", "k": 4, "rows": 3, "cols": 16}, ("allreduce", 1)),
        ({"name": "sketched_sgd", "k": 4, "rows": 3, "cols": 16, "p2": 2}, ("allreduce", 2)),
        ({"name": "fetchsgd", "k": 4, "rows": 3, "cols": 16}, ("allreduce", 1)),
        ({"name": "sketchdl", "rows": 3, "cols": 16}, ("allreduce", 1)),
    ],
)
def test_collectives_match_what_the_communicator_counts(algo, expected):
    """The collective and its count per step, as the communicator records them."""
    assert network.collectives(algo) == expected
    workers, d = 4, 64
    comm = LocalCommunicator(workers)
    kwargs = {k: v for k, v in algo.items() if k != "name"}
    step = make_algorithm(algo["name"], d=d, lr=0.1, seed=0, **kwargs)
    rng = np.random.default_rng(0)
    step.step([rng.standard_normal(d) for _ in range(workers)], comm)
    traffic = comm.last_step
    kind, rounds = expected
    assert traffic.rounds == rounds
    if kind == "allreduce":
        assert traffic.download == traffic.upload
    else:
        assert traffic.download == pytest.approx((workers - 1) * traffic.upload)


def test_break_even_solves_the_crossing():
    sgd, compressed = network.Cost(1.0, 8e9), network.Cost(2.0, 8e8)
    found = network.break_even(sgd, compressed)
    assert found.pays == "below"
    assert found.bandwidth == pytest.approx(7.2e9)
    assert sgd.seconds(found.bandwidth) == pytest.approx(compressed.seconds(found.bandwidth))
    assert compressed.seconds(1e9) < sgd.seconds(1e9)
    assert compressed.seconds(1e11) > sgd.seconds(1e11)


@pytest.mark.parametrize(
    ("compressed", "pays"),
    [
        (network.Cost(0.5, 8e8), "always"),  # fewer bits and less fixed time
        (network.Cost(2.0, 9e9), "never"),  # more of both
        (network.Cost(1.0, 8e9), "never"),  # the same
        (network.Cost(0.5, 9e9), "above"),  # more bits, less fixed time
    ],
)
def test_break_even_never_always_above(compressed, pays):
    found = network.break_even(network.Cost(1.0, 8e9), compressed)
    assert found.pays == pays
    assert (found.bandwidth is not None) == (pays == "above")


def test_cost_of_matches_network_seconds():
    net = {**RING, "compute": 0.01}
    algo = {"name": "sgd"}
    cost = network.Cost.of(net, algo, 20, 4e6, 4e6, 8)
    row = {"step": 20, "upload": 4e6, "download": 4e6}
    for bandwidth in (1e8, 8e9):
        direct = network.simulated_time({**net, "bandwidth": bandwidth}, algo, row, 8, 8)
        assert cost.seconds(bandwidth) == pytest.approx(direct)


# ------------------------------------------------------------------ configuration
def _raw(**network_keys):
    raw = config.load("network_time")
    raw["network"] = {**raw["network"], **network_keys}
    return raw


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"topology": "tree"}, "network.topology: 'tree' is not one of ring, allgather, ps"),
        ({"bandwidth": 0}, "network.bandwidth: must be > 0.0"),
        ({"latency": -1e-6}, "network.latency: must be >= 0.0"),
        ({"compute": "fast"}, 'network.compute: a number of seconds or "measured"'),
        ({"compute": -1.0}, "network.compute: must be >= 0.0"),
        ({"up_bandwidth": 1e6}, "network.up_bandwidth: only for topology = 'ps'"),
        ({"hops": 3}, "network.hops: unknown key"),
    ],
)
def test_bad_network_names_the_key(keys, message):
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(")):
        config.resolve(_raw(**keys))


def test_network_compute_and_bandwidth_are_required():
    raw = _raw()
    del raw["network"]["compute"]
    with pytest.raises(config.ConfigError, match="network.compute: missing"):
        config.resolve(raw)
    raw = _raw()
    del raw["network"]["bandwidth"]
    with pytest.raises(config.ConfigError, match="network.bandwidth: missing"):
        config.resolve(raw)


def test_ps_takes_asymmetric_links_and_measured_compute():
    (case,) = config.resolve(
        _raw(topology="ps", up_bandwidth=1e7, down_bandwidth=5e7, compute="measured")
    )
    net = case.config["network"]
    assert (net["up_bandwidth"], net["down_bandwidth"], net["compute"]) == (1e7, 5e7, "measured")


def test_no_network_table_no_time():
    raw = config.load("network_time")
    del raw["network"]
    (case,) = config.resolve(raw)
    assert case.config["network"] is None


# ------------------------------------------------------------------ runs
SMALL = ["steps=20", "eval_every=5", "model.hidden=[32]", "algorithms.k=20", "algorithms.cols=40"]


def _run(tmp_path, extra=(), name="network_time"):
    args = ["run", name, "-q", "--out", str(tmp_path)]
    for override in [*SMALL, *extra]:
        args += ["--set", override]
    assert cli.main(args) == 0
    return json.loads((tmp_path / name / "summary.json").read_text())


def test_run_times_every_row_and_the_target(tmp_path):
    summary = _run(tmp_path, ["target.value=0.5"])
    net = summary["cases"][0]["config"]["network"]
    d, workers = summary["cases"][0]["config"]["d"], 8
    for job in summary["jobs"]:
        rows = read_rows(tmp_path / "network_time" / "metrics" / f"{job['label']}.csv")
        algo = next(
            a for a in summary["cases"][0]["config"]["algorithms"] if a["label"] == job["label"]
        )
        kind, rounds = network.collectives(algo)
        for row in rows:
            per_step = network.network_seconds(
                net, kind, rounds, 1, row["upload"] / max(row["step"], 1), 0, workers
            )
            if kind == "allgather":
                per_step = network.network_seconds(
                    net, kind, rounds, 1, 0, row["download"] / max(row["step"], 1), workers
                )
            assert row["sim_time"] == pytest.approx(row["step"] * (net["compute"] + per_step))
        if job["steps_to_target"] is None:
            assert job["time_to_target"] is None
            continue
        hit = next(r for r in rows if r["step"] == job["steps_to_target"])
        assert job["time_to_target"] == pytest.approx(hit["sim_time"])
        assert job["sim_time"] == pytest.approx(rows[-1]["sim_time"])
        if algo["name"] == "sgd":  # by hand: one ring allreduce of d float32 a step
            step = 1e-3 + 2 * 7 * (5e-6 + 8 * 4 * d / (8 * 1e9))
            assert job["time_to_target"] == pytest.approx(job["steps_to_target"] * step)
    assert sum(job["time_to_target"] is not None for job in summary["jobs"]) >= 2
    assert (tmp_path / "network_time" / "loss_vs_time.png").exists()


def test_measured_compute_is_the_wall_time_per_simulated_worker(tmp_path):
    summary = _run(tmp_path, ['network.compute="measured"'])
    job = summary["jobs"][0]
    rows = read_rows(tmp_path / "network_time" / "metrics" / f"{job['label']}.csv")
    comm = network.network_seconds(
        {**summary["cases"][0]["config"]["network"]}, "allreduce", 1, 20, rows[-1]["upload"], 0, 8
    )
    assert rows[-1]["sim_time"] == pytest.approx(rows[-1]["wall"] / 8 + comm)


def test_resume_keeps_the_simulated_times(tmp_path):
    """Finished jobs come back from their checkpoint markers with their simulated times."""
    fresh = _run(tmp_path, ["checkpoint_every=5"])
    run_dir = tmp_path / "network_time"
    (run_dir / "summary.json").unlink()
    assert cli.main(["--resume", str(run_dir), "-q"]) == 0
    resumed = json.loads((run_dir / "summary.json").read_text())
    for a, b in zip(fresh["jobs"], resumed["jobs"], strict=True):
        assert b["sim_time"] is not None
        assert (a["sim_time"], a["time_to_target"]) == (b["sim_time"], b["time_to_target"])


def test_without_network_rows_have_no_time(tmp_path):
    raw = config.load("network_time")
    del raw["network"]
    path = tmp_path / "plain.toml"
    path.write_text(config.dumps(raw))
    args = ["run", str(path), "-q", "--out", str(tmp_path)]
    for override in SMALL:
        args += ["--set", override]
    assert cli.main(args) == 0
    summary = json.loads((tmp_path / "network_time" / "summary.json").read_text())
    assert all(job["sim_time"] is None for job in summary["jobs"])
    header = (tmp_path / "network_time" / "metrics" / "sgd.csv").read_text().splitlines()[0]
    assert "sim_time" not in header
    assert not (tmp_path / "network_time" / "loss_vs_time.png").exists()


# ------------------------------------------------------------------ the claim's verdict
def test_claim_verdicts():
    assert network_claim._verdict({"a": [], "b": []})[0] == "held"
    assert network_claim._verdict({"a": ["memsgd"], "b": []})[0] == "held partly"
    assert network_claim._verdict({"a": ["memsgd"], "b": ["fetchsgd"]})[0] == "failed"


def test_llm_compute_assumption():
    assert network_claim.llm_compute(7e9) == pytest.approx(
        6 * 7e9 * network_claim.TOKENS / (network_claim.PEAK_FLOPS * network_claim.MFU)
    )
