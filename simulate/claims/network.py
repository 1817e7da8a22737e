"""When does compression pay? Time to accuracy on a network, against uncompressed SGD.

One run (``network_mlp``: the shipped MLP, ``d = 96,010``, 8 workers, every
algorithm) measures each algorithm's steps to 95 % test accuracy and the bytes
it moved until then. The alpha-beta model of :mod:`simulate.network` turns
them into a time to target on a network, ``steps x compute + communication``,
and solves for the bandwidth at which a compressed algorithm's time equals
SGD's (:func:`simulate.network.break_even`).

Two models are timed. The MLP itself, with the compute time of a step measured
in the run (SGD's wall time a step over the 8 workers the process simulated one
after another). And LLM-sized models of ``d`` parameters (:data:`LLM_SIZES`),
under two stated assumptions: the steps to target and each algorithm's bytes
per parameter carry over from the MLP (the compression sizes scale with ``d``),
and a step's compute takes ``6 d tokens / (peak x MFU)`` (:data:`TOKENS`,
:data:`PEAK_FLOPS`, :data:`MFU`). Neither is measured at that size: the page
says so.

The claim checked (Agarwal et al., MLSys 2022): at data-centre bandwidth
compression does not pay. It *held* if at 100 Gbit/s no compressed algorithm
reaches the target sooner than SGD for any model timed, *held partly* if some do
for some models, *failed* if one does for every model.
"""

from __future__ import annotations

from pathlib import Path

from pysketch.compress.participation import participant_count

from .. import network
from ..runner import reached, target_threshold
from . import Claim, Finding, Run
from ._analysis import human_bytes

CONFIG = "network_mlp"
#: Data-centre rings at these bandwidths (bits/s) and latency (s).
RING_BANDWIDTHS = (1e9, 10e9, 100e9)
RING_LATENCY = 5e-6
#: A federated client: parameter server, asymmetric uplink and downlink, WAN latency.
FEDERATED = {"up_bandwidth": 10e6, "down_bandwidth": 50e6, "latency": 0.05}
#: LLM-sized models: parameters, and the compute of a step (assumed, not measured).
LLM_SIZES = (1e9, 7e9)
TOKENS = 8 * 2048  # tokens per worker per step
PEAK_FLOPS = 989e12  # an H100's dense BF16 peak
MFU = 0.4


def ring(bandwidth: float, compute: float) -> dict:
    """A ring network table (as ``[network]`` resolves it)."""
    return {"topology": "ring", "bandwidth": bandwidth, "latency": RING_LATENCY, "compute": compute}


def federated(compute: float) -> dict:
    """The federated parameter-server table (``bandwidth`` is the uplink's, for scaling)."""
    return {
        "topology": "ps",
        "bandwidth": FEDERATED["up_bandwidth"],
        "server_bandwidth": None,
        "compute": compute,
        **FEDERATED,
    }


def llm_compute(d: float) -> float:
    """Seconds of a step's compute for a model of ``d`` parameters (the stated assumption)."""
    return 6.0 * d * TOKENS / (PEAK_FLOPS * MFU)


def _at_target(run: Run, result) -> dict | None:
    """The job's first row that meets the config's target (``None``: never)."""
    target = run.cases[0].config["target"]
    rows = run.rows[result.label]
    threshold = target_threshold(target, rows[0] if rows else None)
    return next((r for r in rows if reached(r, target, threshold)), None)


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return "never"
    return f"{value:.3g} s" if value < 100 else f"{value / 60:.3g} min"


def _verdict(faster: dict[str, list[str]]) -> tuple[str, str]:
    """``faster``: model -> the compressed algorithms that beat SGD at 100 Gbit/s."""
    winners = {m: algos for m, algos in faster.items() if algos}
    listing = "; ".join(f"{m}: {', '.join(a)}" for m, a in winners.items())
    if not winners:
        return "held", (
            "at 100 Gbit/s no compressed algorithm reaches the target sooner than SGD, "
            f"for any of the {len(faster)} models timed."
        )
    if len(winners) == len(faster):
        return (
            "failed",
            f"at 100 Gbit/s compression reaches the target sooner for every model ({listing}).",
        )
    return "held partly", (
        f"at 100 Gbit/s compression pays for {len(winners)} of {len(faster)} models ({listing}); "
        "for the others SGD is fastest."
    )


def analyse(runs: dict[str, Run], out: Path) -> Finding:
    """Break-even bandwidths and times to target (see the module doc)."""
    run = runs[CONFIG]
    cfg = run.cases[0].config
    workers, d, participation = cfg["workers"], cfg["d"], cfg["participation"]
    taking = participant_count(participation, workers)  # compute and communicate a round
    sgd = next(r for r in run.results if r.algorithm == "sgd")
    compute = sgd.wall / max(sgd.steps, 1) / taking
    models = [(f"MLP, d = {d:,}", 1.0, compute)]
    models += [(f"LLM, d = {D:.0e}", D / d, llm_compute(D)) for D in LLM_SIZES]
    algos = {a["label"]: a for a in cfg["algorithms"]}
    sgd_row = _at_target(run, sgd)
    headers = [
        "model",
        "algorithm",
        "steps to target",
        "bytes/step/worker (up + down)",
        "pays (ring)",
    ]
    headers += [f"ring {network.bits(b)}" for b in RING_BANDWIDTHS]
    headers += ["federated 10/50 Mbit/s"]
    rows, faster = [], {}
    for name, scale, step_compute in models:
        faster[name] = []

        def cost(row, label, net, scale=scale):
            return network.Cost.of(
                net,
                algos[label],
                row["step"],
                scale * (row["upload"] or 0.0),
                scale * (row["download"] or 0.0),
                workers,
                participation=participation,
            )

        for result in run.results:
            row = _at_target(run, result)
            steps = "missed" if row is None else str(row["step"])
            per_step = "-"
            if row is not None and row["step"]:
                per_step = human_bytes(scale * (row["upload"] + row["download"]) / row["step"])
            line = [name, result.algorithm, steps, per_step]
            if row is None or sgd_row is None:
                line += ["never" if row is None else "-"]
                line += ["never"] * (len(RING_BANDWIDTHS) + 1)
                rows.append(line)
                continue
            base = cost(sgd_row, sgd.algorithm, ring(1.0, step_compute))
            mine = cost(row, result.algorithm, ring(1.0, step_compute))
            line += ["-" if result is sgd else str(network.break_even(base, mine))]
            line += [_fmt_seconds(mine.seconds(b)) for b in RING_BANDWIDTHS]
            line += [
                _fmt_seconds(
                    cost(row, result.algorithm, federated(step_compute)).seconds(
                        FEDERATED["up_bandwidth"]
                    )
                )
            ]
            rows.append(line)
            if result is not sgd and mine.seconds(100e9) < base.seconds(100e9):
                faster[name].append(result.algorithm)
    verdict, reason = _verdict(faster)
    who, clients = f"its {workers} workers", "every client"
    if taking < workers:
        who = f"the {taking} of its {workers:,} workers that took part in a step"
        clients = f"{taking} of the {workers:,} clients a round"
    notes = (
        f"Compute a step: MLP {compute * 1e3:.3g} ms, measured (SGD's wall time a step in this "
        f"run over {who}, which the process simulated one after another; the "
        "compressors' own compute is not counted, which favours compression). LLM sizes: "
        f"6 d x {TOKENS:,} tokens / ({PEAK_FLOPS:.3g} FLOP/s x MFU {MFU}) = "
        + ", ".join(f"{llm_compute(D):.3g} s at d = {D:.0e}" for D in LLM_SIZES)
        + ": an assumption, not measured. The LLM rows assume that the steps to target and "
        "the bytes per parameter (compression ratio) measured on the MLP carry over to that d; "
        "nothing here tests that. Rings: latency "
        f"{RING_LATENCY * 1e6:g} us. Federated: parameter server, each client's uplink "
        f"{network.bits(FEDERATED['up_bandwidth'])} and downlink "
        f"{network.bits(FEDERATED['down_bandwidth'])}, latency {FEDERATED['latency'] * 1e3:g} ms, "
        f"server link unconstrained, {clients} taking part. 'pays (ring)': the bandwidths "
        "at which the algorithm reaches the target sooner than SGD on the ring (solved from "
        "the alpha-beta model: below the break-even bandwidth when it saves bytes but costs "
        "latency or steps; 'always' or 'never' when the times do not cross). Steps to target "
        f"are resolved to eval_every = {cfg['eval_every']} steps."
    )
    return Finding(verdict, reason, headers, rows, notes=notes)


CLAIM = Claim(
    name="network",
    title="When does compression pay?",
    cite="[AWC22]_",
    statement=(
        "gradient compression often does not pay at data-centre bandwidths: uncompressed "
        "SGD reaches a given accuracy as soon or sooner in wall-clock time."
    ),
    configs=[CONFIG],
    analyse=analyse,
    setup=(
        "The shipped MLP (one hidden layer of 1,280, ``d = 96,010``) on digits, 8 workers, "
        "every algorithm at the default config's sizes, run to 95 % test accuracy; "
        "each algorithm's steps and bytes to the target are timed on the alpha-beta model "
        "of :doc:`../simulator` (Network model): ring allreduce for summed payloads, ring "
        "allgather for top-k pairs, a parameter server for the federated client."
    ),
)
