"""The alpha-beta network model: hand-computed collectives, break-even, [network] runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pysketch.compress import LocalCommunicator, make_algorithm
from simulate import cli, config, network
from simulate.claims import network as network_claim
from simulate.runner import read_rows

from ..test_distributed import needs_mpi
from .conftest import TINY
from .test_cli import (
    _simulate,
    assert_same_metrics,
    kill_after_a_checkpoint,
    run_here_and_under_mpiexec,
)

RING = {"topology": "ring", "bandwidth": 8e9, "latency": 1e-5, "compute": 0.0}
RING_1G = {"topology": "ring", "bandwidth": 1e9, "latency": 5e-6, "compute": 1e-3}
PS_FEDERATED = {
    "topology": "ps",
    "bandwidth": 1e7,
    "up_bandwidth": 1e7,
    "down_bandwidth": 5e7,
    "server_bandwidth": 1e9,
    "latency": 0.05,
    "compute": 1e-3,
}


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


# ------------------------------------------------------------------ partial participation
# W = 1000 workers, 5 % a round: the collectives run among m = 50 participants.
FIFTY = {"participation": 0.05}


def test_ring_allreduce_among_the_participants_by_hand():
    # 1 MB among 50: 2 * 49 * (1e-5 + 8e6 / (50 * 8e9)) = 98 * 3e-5
    seconds = network.network_seconds(RING, "allreduce", 1, 10, 1e7, 1e7, 1000, **FIFTY)
    assert seconds == pytest.approx(10 * 2.94e-3)
    # A count of workers is the same as the fraction that gives it.
    count = network.network_seconds(RING, "allreduce", 1, 10, 1e7, 1e7, 1000, participation=50)
    assert count == seconds


def test_allgather_among_the_participants_by_hand():
    # Top-k pairs, 1000 bytes from each of 50: 49 * (1e-5 + 8000 / 8e9) = 49 * 1.1e-5;
    # the simulator counts upload = 1000 and download = 49 * 1000 a step per participant.
    seconds = network.network_seconds(RING, "allgather", 1, 3, 3000, 3 * 49_000, 1000, **FIFTY)
    assert seconds == pytest.approx(3 * 5.39e-4)
    # Topology "allgather" of a summable payload of 2000 bytes: 49 * (1e-5 + 2e-6), twice.
    net = {**RING, "topology": "allgather"}
    seconds = network.network_seconds(net, "allreduce", 2, 1, 4000, 4000, 1000, **FIFTY)
    assert seconds == pytest.approx(2 * 5.88e-4)


PS = {
    "topology": "ps",
    "bandwidth": 1e6,
    "latency": 0.05,
    "up_bandwidth": 1e6,
    "down_bandwidth": 4e6,
    "server_bandwidth": 16e6,
    "compute": 0.0,
}


def test_parameter_server_serves_the_participants_by_hand():
    # 50 clients share the 16 Mbit/s server link: up max(8 ms, 50 * 8000 / 16e6 = 25 ms),
    # down max(4 ms, 50 * 16000 / 16e6 = 50 ms), plus two latencies of 50 ms.
    assert network.network_seconds(PS, "allreduce", 1, 1, 1000, 2000, 1000, **FIFTY) == (
        pytest.approx(0.175)
    )
    # Every one of the 1000 clients: 0.5 s up and 1 s down.
    assert network.network_seconds(PS, "allreduce", 1, 1, 1000, 2000, 1000) == pytest.approx(1.6)
    # Without a server bottleneck only the clients' own links count, whatever m.
    free = {**PS, "server_bandwidth": None}
    assert network.network_seconds(free, "allreduce", 1, 1, 1000, 2000, 1000, **FIFTY) == (
        pytest.approx(0.112)
    )


def test_one_participant_talks_to_the_server_but_to_no_peer():
    one = {"participation": 1}
    assert network.network_seconds(RING, "allreduce", 1, 5, 1e6, 1e6, 1000, **one) == 0.0
    assert network.network_seconds(RING, "allgather", 1, 5, 1e3, 0.0, 1000, **one) == 0.0
    # The lone client still uploads 1000 bytes (8 ms) and downloads 2000 (4 ms).
    seconds = network.network_seconds(PS, "allreduce", 1, 5, 5000, 10_000, 1000, **one)
    assert seconds == pytest.approx(5 * 0.112)


@pytest.mark.parametrize(
    "args, today",
    [
        # network_seconds on main before participation was modelled (the values it returned).
        ((RING_1G, "allreduce", 1, 37, 3.7e6 * 1.3, 3.7e6 * 1.3, 1000), 0.44651304),
        ((RING_1G, "allgather", 1, 37, 123457.0, 123457.0 * 999, 1000), 1.171483344),
        (({**RING_1G, "topology": "allgather"}, "allreduce", 2, 37, 7.1e5, 7.1e5, 1000), 6.04395),
        ((PS_FEDERATED, "allreduce", 1, 37, 3.3e5, 2.9e5, 1000), 8.66),
        ((RING_1G, "allreduce", 1, 20, 2016800.0, 2016800.0, 8), 0.0296352),
    ],
)
def test_everyone_taking_part_gives_todays_times_exactly(args, today):
    workers = args[-1]
    assert network.network_seconds(*args) == today
    assert network.network_seconds(*args, participation=1.0) == today
    assert network.network_seconds(*args, participation=workers) == today


def test_everyone_taking_part_gives_todays_measured_compute_exactly():
    row = {"step": 37, "upload": 3.3e5, "download": 2.9e5, "wall": 2.7}
    net = {**PS_FEDERATED, "compute": "measured"}
    for participation in (1.0, 1000):
        seconds = network.simulated_time(
            net, {"name": "sgd"}, row, 1000, 500, participation=participation
        )
        assert seconds == 8.6654  # wall / 500 local workers + communication, as on main


@given(
    workers=st.integers(2, 5000),
    steps=st.integers(1, 1000),
    rounds=st.integers(1, 2),
    message=st.floats(1.0, 1e9),
    topology=st.sampled_from(["ring", "allgather", "ps"]),
    kind=st.sampled_from(["allreduce", "allgather"]),
)
def test_all_workers_by_fraction_or_count_are_the_default(
    workers, steps, rounds, message, topology, kind
):
    net = {**PS, "topology": topology}
    upload = steps * rounds * message
    download = upload if kind == "allreduce" else (workers - 1) * upload
    args = (net, kind, rounds, steps, upload, download, workers)
    default = network.network_seconds(*args)
    assert network.network_seconds(*args, participation=1.0) == default
    assert network.network_seconds(*args, participation=workers) == default


@given(workers=st.integers(3, 5000), fraction=st.floats(0.001, 0.999), message=st.floats(1, 1e9))
def test_fewer_participants_never_take_longer(workers, fraction, message):
    """A ring among fewer moves fewer hops; a shared server link carries fewer messages."""
    for net in (RING, PS):
        few = network.network_seconds(
            net, "allreduce", 1, 1, message, message, workers, participation=fraction
        )
        assert few <= network.network_seconds(net, "allreduce", 1, 1, message, message, workers)


def test_measured_compute_counts_the_participants_a_process_computes():
    row = {"step": 10, "upload": 0.0, "download": 0.0, "wall": 5.0}
    net = {**PS, "compute": "measured", "latency": 0.0}
    sgd = {"name": "sgd"}
    # One process of 1000 workers computes the 50 that take part one after another.
    assert network.simulated_time(net, sgd, row, 1000, 1000, **FIFTY) == pytest.approx(0.1)
    # One of two ranks (500 workers) computes 25 of them on average.
    assert network.simulated_time(net, sgd, row, 1000, 500, **FIFTY) == pytest.approx(0.2)
    # One participant a round: some process computes it while the others wait, so one.
    assert network.simulated_time(net, sgd, row, 1000, 500, participation=1) == 5.0


def test_cost_of_takes_the_participation():
    net = {**PS, "compute": 0.01}
    algo = {"name": "sgd"}
    cost = network.Cost.of(net, algo, 20, 2e4, 4e4, 1000, **FIFTY)
    row = {"step": 20, "upload": 2e4, "download": 4e4}
    links = ("bandwidth", "up_bandwidth", "down_bandwidth", "server_bandwidth")
    for bandwidth in (1e5, 1e7):
        scaled = {**net, **{k: net[k] * bandwidth / net["bandwidth"] for k in links}}
        direct = network.simulated_time(scaled, algo, row, 1000, 1000, **FIFTY)
        assert cost.seconds(bandwidth) == pytest.approx(direct)
    # The server's link carries 50 clients' messages, not 1000's.
    assert cost.seconds(1e5) < network.Cost.of(net, algo, 20, 2e4, 4e4, 1000).seconds(1e5)


@pytest.mark.parametrize(
    ("participation", "error", "match"),
    [
        (0, ValueError, "participation must be >= 1"),
        (1.5, ValueError, r"participation must lie in \(0, 1\]"),
        (1001, ValueError, "participation must be at most the 1000 workers"),
        ("all", TypeError, "participation must be a fraction"),
    ],
)
def test_bad_participation_names_the_argument(participation, error, match):
    for steps in (0, 10):  # also when nothing was moved yet
        with pytest.raises(error, match=match):
            network.network_seconds(
                RING, "allreduce", 1, steps, 1e6, 1e6, 1000, participation=participation
            )
    with pytest.raises(error, match=match):
        network.simulated_time(
            RING,
            {"name": "sgd"},
            {"step": 0, "upload": 0, "download": 0},
            1000,
            1000,
            participation=participation,
        )


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


@pytest.mark.parametrize(
    ("participation", "message"),
    [
        (0, "participation: must be >= 1"),
        (1.5, r"participation: a fraction of the workers must lie in \(0, 1\]"),
        (9, "participation: 9 workers cannot take part among 8"),
        ("half", "participation: expected an integer or a fraction of the workers"),
    ],
)
def test_bad_participation_with_a_network_names_the_key(participation, message):
    raw = _raw()
    raw["participation"] = participation
    with pytest.raises(config.ConfigError, match=message):
        config.resolve(raw)


@pytest.mark.parametrize(
    "download", [{"download": "changed"}, {"download": "topk", "download_k": 0.1}]
)
@pytest.mark.parametrize("topology", ["ring", "allgather"])
def test_changed_download_needs_a_parameter_server(topology, download):
    raw = {**_raw(topology=topology), **download, "participation": 0.5}
    kind = download["download"]
    with pytest.raises(config.ConfigError, match=f"download: '{kind}' .* not '{topology}'"):
        config.resolve(raw)
    raw = {**_raw(topology="ps"), **download, "participation": 0.5}
    (case,) = config.resolve(raw)
    assert (case.config["download"], case.config["network"]["topology"]) == (kind, "ps")


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


def _algo(summary, label):
    return next(a for a in summary["cases"][0]["config"]["algorithms"] if a["label"] == label)


def test_a_run_with_participation_times_the_participants(tmp_path):
    """2 of the 8 workers a round: a ring of 2; bytes per participant, as counted."""
    summary = _run(tmp_path, ["participation=0.25", "target.value=0.5"])
    d = summary["cases"][0]["config"]["d"]
    net = summary["cases"][0]["config"]["network"]
    for job in summary["jobs"]:
        rows = read_rows(tmp_path / "network_time" / "metrics" / f"{job['label']}.csv")
        algo = _algo(summary, job["label"])
        kind, rounds = network.collectives(algo)
        for row in rows:
            comm = network.network_seconds(
                net, kind, rounds, row["step"], row["upload"], row["download"], 2
            )
            assert row["sim_time"] == pytest.approx(row["step"] * net["compute"] + comm)
        if algo["name"] == "sgd":  # by hand: a ring allreduce of d float32 between 2 a step
            step = 1e-3 + 2 * 1 * (5e-6 + 8 * 4 * d / (2 * 1e9))
            assert rows[-1]["upload"] == 20 * 4 * d
            assert rows[-1]["sim_time"] == pytest.approx(20 * step)
            if job["steps_to_target"] is not None:
                assert job["time_to_target"] == pytest.approx(job["steps_to_target"] * step)


def test_a_federated_run_times_the_changed_download_on_the_server(tmp_path):
    """5 % of 40 clients on a parameter server; each returning client fetches what changed."""
    links = ['network.topology="ps"', "network.up_bandwidth=1e7", "network.server_bandwidth=4e7"]
    summary = _run(tmp_path, ["workers=40", "participation=0.05", 'download="changed"', *links])
    net = summary["cases"][0]["config"]["network"]
    for job in summary["jobs"]:
        rows = read_rows(tmp_path / "network_time" / "metrics" / f"{job['label']}.csv")
        kind, rounds = network.collectives(_algo(summary, job["label"]))
        last = rows[-1]
        calls = rounds * last["step"]
        up, down = last["upload"] / calls, last["download"] / calls
        # 2 clients: their own links are the bottleneck (the server's carries 2 messages).
        by_hand = 2 * 5e-6 + max(8 * up / 1e7, 16 * up / 4e7) + max(8 * down / 1e9, 16 * down / 4e7)
        assert last["sim_time"] == pytest.approx(last["step"] * net["compute"] + calls * by_hand)
        assert 0 < last["download"] <= calls * 4 * summary["cases"][0]["config"]["d"]


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


# A federated [network] on the tiny quadratic: 2 of its 4 workers a round, each returning
# client fetching the weights changed since its last round from the server.
FEDERATED_TINY = {
    **TINY,
    "participation": 2,
    "download": "changed",
    "target": {"metric": "suboptimality", "value": 0.002},
    "network": {
        "topology": "ps",
        "bandwidth": 1e7,
        "up_bandwidth": 1e6,
        "server_bandwidth": 1.5e6,
        "latency": 1e-3,
        "compute": 1e-3,
    },
}


def _same_times(a, b):
    """The same jobs with the same simulated times to the bit."""
    for x, y in zip(a["jobs"], b["jobs"], strict=True):
        assert x["sim_time"] is not None and x["label"] == y["label"]
        assert (x["steps_to_target"], x["time_to_target"], x["sim_time"]) == (
            y["steps_to_target"],
            y["time_to_target"],
            y["sim_time"],
        )


def test_kill_and_resume_continues_the_simulated_times(tmp_path):
    """SIGKILL mid-run, --resume: sim_time rows and time_to_target as if never stopped."""
    raw = {**FEDERATED_TINY, "algorithms": [{"name": "memsgd", "k": 16}]}
    toml = tmp_path / "fed.toml"
    toml.write_text(config.dumps(raw))
    args = ["run", str(toml), "-q", "--set", "steps=3000", "--set", "checkpoint_every=50"]
    args += ["--set", "eval_every=25"]
    full = _simulate([*args, "--out", str(tmp_path / "a")])
    marker = tmp_path / "b" / "tiny" / "checkpoints" / "memsgd.json"
    killed_at = kill_after_a_checkpoint([*args, "--out", str(tmp_path / "b")], marker)
    assert killed_at["result"] is None and not (tmp_path / "b" / "tiny" / "summary.json").exists()
    resumed = _simulate(["--resume", str(tmp_path / "b" / "tiny"), "-q"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert f"resumed memsgd from step {killed_at['step']} to 3000" in out
    assert full.communicate(timeout=300)[0] and full.returncode == 0
    a, b = tmp_path / "a" / "tiny", tmp_path / "b" / "tiny"
    assert_same_metrics(a, b, ["memsgd"], rel=0)  # sim_time included, to the bit
    first, second = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    _same_times(first, second)
    # The target was met after the kill: the resumed run's time continued from the checkpoint.
    assert first["jobs"][0]["steps_to_target"] > killed_at["step"]


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("topology", ["ps", "ring"])
def test_mpiexec_gives_the_in_process_simulated_times(tmp_path, topology):
    """2 ranks x 2 workers against one process: the same sim_time and time_to_target."""
    raw = {**FEDERATED_TINY, "steps": 120, "eval_every": 10}
    raw["target"] = {"metric": "suboptimality", "value": 0.02}
    if topology == "ring":  # a ring among the 2 that take part; the collective's download
        raw.update(download="collective", network={**RING, "bandwidth": 1e8})
    toml = tmp_path / "fed.toml"
    toml.write_text(config.dumps(raw))
    local, mpi = run_here_and_under_mpiexec(toml, tmp_path)
    assert_same_metrics(local, mpi, ["sgd", "memsgd", "fetchsgd"])
    first, second = (json.loads((r / "summary.json").read_text()) for r in (local, mpi))
    assert sum(job["time_to_target"] is not None for job in first["jobs"]) >= 2
    _same_times(first, second)


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
