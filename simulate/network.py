"""Simulated wall time on a network: the alpha-beta model of each algorithm's collectives.

A message of ``n`` bytes over a link of ``B`` bits/s with latency ``alpha``
takes ``alpha + 8 n / B`` seconds (Hockney's model). The collectives are timed
by the standard formulas (Thakur, Rabenseifner & Gropp 2005; Patarasuk & Yuan
2009 for the ring), for the ``m`` workers that take part in a round:

ring allreduce of ``n`` bytes
    ``2 (m - 1) (alpha + 8 n / (m B))`` (reduce-scatter, then allgather).
allgather of ``s`` bytes from each worker
    ``(m - 1) (alpha + 8 s / B)`` (ring).
parameter server
    the worker uploads ``u`` bytes and downloads ``v``:
    ``2 alpha + 8 u / B_up + 8 v / B_down``; with a server link ``B_s``, the
    server's ``m`` messages share it: ``max(8 u / B_up, 8 m u / B_s)`` up, the
    same down.

Partial participation: ``m`` is the number of the ``W`` workers that take part
in each round, :func:`pysketch.compress.participation.participant_count` of the
run's ``participation`` (the count :func:`pysketch.compress.sample_participants`
draws; ``m = W`` by default). Only they communicate: a ring or an allgather
among the ``m``, or ``m`` clients on the parameter server. A collective among
one participant moves nothing (ring, allgather); a parameter server still
serves a lone participant, and a run of one worker (``W = 1``) needs no network.

The bytes are those the simulator counts per worker that takes part (the
``upload`` and ``download`` columns, from
:class:`pysketch.compress.Communicator`, which averages over the participants):
for an allreduce ``upload = download = n``; for an allgather ``upload = s``
(the mean message) and ``download = (m - 1) s``. With ``download = "changed"``
the download is instead what a returning client fetches from the server (the
weights changed since its last round, FetchSGD's accounting), which only the
parameter server times; the simulator's configuration refuses it with a ring or
an allgather. Which collective an algorithm calls, and how many per step, is
:func:`collectives`. Since every term is linear in the bytes and the steps, the
time at an evaluation row is a function of that row alone
(:func:`simulated_time`), and a resumed run gets the same times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pysketch.compress.participation import participant_count

__all__ = [
    "BreakEven",
    "Cost",
    "bits",
    "break_even",
    "collectives",
    "compute_seconds",
    "describe",
    "network_seconds",
    "ps_seconds",
    "ring_allgather_seconds",
    "ring_allreduce_seconds",
    "simulated_time",
    "time_to_target",
]

TOPOLOGIES = ("ring", "allgather", "ps")


# ---------------------------------------------------------------- one collective
def ring_allreduce_seconds(nbytes: float, workers: int, bandwidth: float, latency: float) -> float:
    """Ring allreduce of ``nbytes``: ``2 (W - 1) (alpha + 8 n / (W B))`` seconds.

    Examples
    --------
    >>> round(ring_allreduce_seconds(1e6, 4, 8e9, 1e-5), 9)  # 6 (1e-5 + 2.5e-4)
    0.00156
    """
    return 2 * (workers - 1) * (latency + 8.0 * nbytes / (workers * bandwidth))


def ring_allgather_seconds(
    nbytes_each: float, workers: int, bandwidth: float, latency: float
) -> float:
    """Ring allgather of ``nbytes_each`` from every worker: ``(W - 1) (alpha + 8 m / B)``."""
    return (workers - 1) * (latency + 8.0 * nbytes_each / bandwidth)


def ps_seconds(
    up: float,
    down: float,
    workers: int,
    up_bandwidth: float,
    down_bandwidth: float,
    latency: float,
    server_bandwidth: float | None = None,
) -> float:
    """Parameter server: ``u`` bytes up, ``v`` down, each of ``workers`` clients on its own link.

    ``2 alpha + max(8 u / B_up, 8 m u / B_s) + max(8 v / B_down, 8 m v / B_s)``
    for ``m = workers``, the clients served in a round (without
    ``server_bandwidth`` the server's link is not the bottleneck).
    """
    server = math.inf if server_bandwidth is None else server_bandwidth
    up_s = max(8.0 * up / up_bandwidth, 8.0 * workers * up / server)
    down_s = max(8.0 * down / down_bandwidth, 8.0 * workers * down / server)
    return 2 * latency + up_s + down_s


# ---------------------------------------------------------------- an algorithm's steps
def collectives(algo: Mapping) -> tuple[str, int]:
    """The collective an ``[[algorithms]]`` entry calls each step, and how many times.

    ``("allreduce", r)``: summable payloads (dense, random-k, Count Sketches),
    ``Communicator.combine_local_sum`` / ``_sum_packed``; ``("allgather", 1)``:
    mem-SGD's top-k pairs, ``Communicator._gather_packed``. Sketched-SGD with
    ``p2`` makes a second allreduce (the candidates' exact values).
    """
    name = algo["name"]
    if name == "memsgd" and algo.get("compressor", "topk") == "topk":
        return "allgather", 1
    if name == "sketched_sgd" and algo.get("p2") is not None:
        return "allreduce", 2
    return "allreduce", 1


def _bandwidths(net: Mapping) -> tuple[float, float, float | None]:
    up = net.get("up_bandwidth") or net["bandwidth"]
    down = net.get("down_bandwidth") or net["bandwidth"]
    return up, down, net.get("server_bandwidth")


def network_seconds(
    net: Mapping,
    kind: str,
    rounds: int,
    steps: int,
    upload: float,
    download: float,
    workers: int,
    *,
    participation: float | int = 1.0,
) -> float:
    """Seconds spent communicating in ``steps`` steps that moved ``upload``/``download`` bytes.

    Each round only the ``m`` workers that take part communicate
    (:func:`~pysketch.compress.participation.participant_count` of
    ``participation`` and ``W``): the collectives run among them, or ``m``
    clients share the parameter server's link.

    Parameters
    ----------
    net : mapping
        A checked ``[network]`` table.
    kind : {"allreduce", "allgather"}
        The algorithm's collective (:func:`collectives`), ``rounds`` of them a step.
    rounds, steps : int
    upload, download : float
        Bytes per worker that takes part, over the ``steps`` steps, as the
        simulator counts them. With a ring or an allgather the download must
        be the collective's (``download = "collective"``).
    workers : int
        ``W``, the run's workers.
    participation : float or int, default 1.0
        The workers that take part in a round: a fraction of ``W`` in
        ``(0, 1]`` or a number of them, as the run's ``participation``.

    Returns
    -------
    float

    Raises
    ------
    TypeError, ValueError
        ``participation`` is not a fraction in ``(0, 1]`` or a number of workers in ``[1, W]``.

    Examples
    --------
    >>> net = {"topology": "ring", "bandwidth": 8e9, "latency": 1e-5}
    >>> round(network_seconds(net, "allreduce", 1, 1, 1e6, 1e6, 4), 9)  # one allreduce of 1 MB
    0.00156
    >>> round(network_seconds(net, "allreduce", 1, 1, 1e6, 1e6, 40, participation=0.1), 9)
    0.00156
    """
    calls = rounds * steps
    taking = participant_count(participation, workers)
    if workers == 1 or calls == 0:
        return 0.0
    alpha, topology = net["latency"], net["topology"]
    if topology == "ps":
        up, down, server = _bandwidths(net)
        # The per-call bytes are the mean; every term is linear in them, so totals suffice.
        return calls * ps_seconds(upload / calls, download / calls, taking, up, down, alpha, server)
    if taking == 1:  # a collective among one participant: no peer to send to
        return 0.0
    bandwidth = net["bandwidth"]
    if topology == "ring" and kind == "allreduce":
        return calls * ring_allreduce_seconds(upload / calls, taking, bandwidth, alpha)
    # An allgather: of the summable payload itself, or of each participant's pairs.
    each = upload if kind == "allreduce" else download / (taking - 1)
    return calls * ring_allgather_seconds(each / calls, taking, bandwidth, alpha)


def compute_seconds(net: Mapping, row: Mapping, sequential: float) -> float:
    """The workers' computing time up to ``row``: ``compute`` a step, or measured.

    ``"measured"``: the run's own wall time at the row divided by ``sequential``,
    the workers a process computes one after another in a round (they run side
    by side in the modelled system).
    """
    if net["compute"] == "measured":
        return (row.get("wall") or 0.0) / sequential
    return row["step"] * net["compute"]


def simulated_time(
    net: Mapping,
    algo: Mapping,
    row: Mapping,
    workers: int,
    local_workers: int,
    *,
    participation: float | int = 1.0,
) -> float:
    """Simulated wall time at a metrics ``row`` (``step``, ``upload``, ``download``, ``wall``).

    Compute plus communication: steps do not overlap them (as in synchronous
    data-parallel SGD without bucketing). Only the ``m`` workers that take part
    in a round compute and communicate (:func:`network_seconds`); with
    ``compute = "measured"`` a process computed ``m local_workers / W`` of them
    in a round on average (at least one; its ``local_workers`` when all take part).

    Parameters
    ----------
    net : mapping
        A checked ``[network]`` table.
    algo : mapping
        The ``[[algorithms]]`` entry (:func:`collectives`).
    row : mapping
        ``step``, cumulative ``upload`` and ``download`` per worker that takes part, ``wall``.
    workers, local_workers : int
        ``W``, and the workers this process simulates.
    participation : float or int, default 1.0
        The run's ``participation``.

    Examples
    --------
    A server link of 10 Mbit/s, 1,000 clients, 1 kB up and down a round each:

    >>> net = {"topology": "ps", "bandwidth": 1e6, "latency": 0.0, "compute": 0.01,
    ...        "server_bandwidth": 1e7}
    >>> row = {"step": 10, "upload": 1e4, "download": 1e4, "wall": 3.0}
    >>> round(simulated_time(net, {"name": "sgd"}, row, 1000, 1000), 6)  # all take part
    16.1
    >>> round(simulated_time(net, {"name": "sgd"}, row, 1000, 1000, participation=0.05), 6)
    0.9
    """
    kind, rounds = collectives(algo)
    comm = network_seconds(
        net,
        kind,
        rounds,
        row["step"],
        row["upload"] or 0.0,
        row["download"] or 0.0,
        workers,
        participation=participation,
    )
    sequential = max(1.0, participant_count(participation, workers) * local_workers / workers)
    return compute_seconds(net, row, sequential) + comm


def time_to_target(rows: Sequence[Mapping], steps_to_target: int | None) -> float | None:
    """The simulated time of the row at ``steps_to_target`` (``None`` if not reached)."""
    if steps_to_target is None:
        return None
    return next((r.get("sim_time") for r in rows if r["step"] == steps_to_target), None)


def describe(net: Mapping) -> str:
    """The network in words, for axis labels and notes: ``"ring, 10 Gbit/s, 5 us, ..."``."""
    parts = [net["topology"]]
    if net["topology"] == "ps":
        up, down, server = _bandwidths(net)
        parts.append(f"up {bits(up)}, down {bits(down)}")
        if server is not None:
            parts.append(f"server {bits(server)}")
    else:
        parts.append(bits(net["bandwidth"]))
    parts.append(f"latency {net['latency'] * 1e6:g} us")
    compute = net["compute"]
    parts.append(
        "compute measured" if compute == "measured" else f"compute {compute * 1e3:g} ms/step"
    )
    return ", ".join(parts)


def bits(rate: float) -> str:
    """A bandwidth for people: ``"10 Gbit/s"``."""
    for unit, scale in (("Tbit/s", 1e12), ("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.3g} {unit}"
    return f"{rate:.3g} bit/s"


# ---------------------------------------------------------------- break-even bandwidth
@dataclass(frozen=True)
class Cost:
    """A time to target as a function of the bandwidth: ``fixed + bits / B`` seconds.

    ``B`` scales every bandwidth of the network by the same factor (for a
    parameter server, the up, down and server links keep their ratios).
    """

    fixed: float
    bits: float

    def seconds(self, bandwidth: float) -> float:
        """The time at bandwidth ``bandwidth`` (bits/s)."""
        return self.fixed + self.bits / bandwidth

    @classmethod
    def of(
        cls,
        net: Mapping,
        algo: Mapping,
        steps: int,
        upload: float,
        download: float,
        workers: int,
        *,
        participation: float | int = 1.0,
    ) -> Cost:
        """The cost of ``steps`` steps moving ``upload``/``download`` bytes, on ``net``.

        ``net["compute"]`` must be a number of seconds per step; ``participation``
        as in :func:`network_seconds`.
        """
        kind, rounds = collectives(algo)
        scaled = {**net}
        for key in ("bandwidth", "up_bandwidth", "down_bandwidth", "server_bandwidth"):
            if net.get(key) is not None:
                scaled[key] = net[key] / net["bandwidth"]  # B = 1 bit/s: seconds = bits
        no_latency = {**scaled, "latency": 0.0}
        args = (kind, rounds, steps, upload, download, workers)
        moved = network_seconds(no_latency, *args, participation=participation)
        total = network_seconds(scaled, *args, participation=participation)
        return cls(steps * net["compute"] + (total - moved), moved)


@dataclass(frozen=True)
class BreakEven:
    """Where a compressed algorithm's time to target crosses uncompressed SGD's.

    Attributes
    ----------
    pays : {"below", "above", "always", "never"}
        Compression is faster below (or above) ``bandwidth``, at every bandwidth, or at none.
    bandwidth : float or None
        The crossing in bits/s (``None`` for ``"always"`` and ``"never"``).
    """

    pays: str
    bandwidth: float | None = None

    def __str__(self) -> str:
        if self.bandwidth is None:
            return self.pays
        return f"{self.pays} {bits(self.bandwidth)}"


def break_even(baseline: Cost, compressed: Cost) -> BreakEven:
    """Solve ``baseline.seconds(B) == compressed.seconds(B)`` for ``B``.

    With ``dF`` the compressed run's extra fixed time (latency and compute of
    its steps) and ``dX`` the bits it saves, compression is faster when
    ``dF < dX / B``: below ``B* = dX / dF`` when both are positive.

    Examples
    --------
    >>> str(break_even(Cost(1.0, 8e9), Cost(2.0, 8e8)))  # saves 7.2e9 bits, costs 1 s more
    'below 7.2 Gbit/s'
    >>> break_even(Cost(1.0, 8e9), Cost(0.5, 8e8)).pays
    'always'
    """
    extra = compressed.fixed - baseline.fixed
    saved = baseline.bits - compressed.bits
    if saved > 0 and extra > 0:
        return BreakEven("below", saved / extra)
    if saved < 0 and extra < 0:
        return BreakEven("above", saved / extra)
    if (saved > 0 and extra <= 0) or (saved == 0 and extra < 0):
        return BreakEven("always")
    return BreakEven("never")
