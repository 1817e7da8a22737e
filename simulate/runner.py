"""The training loop: W workers' gradients, one pysketch algorithm step, metrics, checkpoints.

For each case of the config (one per sweep point) the model is built once; each
``[[algorithms]]`` entry is then a *job*: a fresh communicator and algorithm from
:mod:`pysketch.compress`, run for ``steps`` rounds. In a round every local worker
computes its stochastic gradient (or, with ``local_steps = K > 1``, runs ``K``
local SGD steps and hands over its pseudo-gradient ``(w - w_i) / local_lr``);
``algo.step`` returns the update that every rank applies. Rank 0 evaluates every
``eval_every`` rounds, appends a CSV row and checks for a blow-up (``[divergence]``):
a loss that is not finite or exceeds ``loss_ratio`` times its start, or a test
accuracy at chance after the warm-up. A blown-up job stops, marked diverged.

"Steps to target" is the first evaluated step that meets the ``[target]``: it is
resolved to ``eval_every`` (the target was met within the ``eval_every`` steps
before it), never interpolated.
"""

from __future__ import annotations

import csv
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pysketch.errors import NonFiniteError

from . import checkpoint, config, models, network
from .schedules import Schedule

COLUMNS = [
    "step",
    "loss",
    "test_loss",
    "test_accuracy",
    "suboptimality",
    "grad_norm",
    "lr",
    "upload",
    "download",
    "wire_sent",
    "wire_received",
    "wall",
]
HIGHER_IS_BETTER = {"test_accuracy"}
NETWORK_COLUMN = "sim_time"  # with [network]: simulated seconds (simulate/network.py)


class Diverged(RuntimeError):
    """The job blew up (see ``[divergence]``); the message says how."""


@dataclass
class JobResult:
    """What the summary and the table report about one job (one algorithm of one case)."""

    label: str
    case: str
    algorithm: str
    status: str = "done"
    steps: int = 0
    final: dict = field(default_factory=dict)
    steps_to_target: int | None = None
    upload: float = 0.0
    download: float = 0.0
    wire_sent: float = 0.0
    wire_received: float = 0.0
    compression: float | None = None
    wall: float = 0.0
    message: str = ""
    case_values: dict = field(default_factory=dict)
    expect: str | None = None
    outcome: str | None = None
    time_to_target: float | None = None  # simulated seconds, with [network]
    sim_time: float | None = None

    @property
    def as_expected(self) -> bool | None:
        """Whether the outcome is the one ``[expect]`` states (``None``: none stated)."""
        return None if self.expect is None else self.outcome == self.expect


OUTCOMES = {"reach": "reached", "miss": "missed", "diverge": "diverged"}


def outcome(status: str, steps_to_target: int | None, target: dict | None) -> str | None:
    """``"diverge"``, ``"reach"`` or ``"miss"`` (``None`` without a target and no blow-up)."""
    if status == "diverged":
        return "diverge"
    if not target:
        return None
    return "miss" if steps_to_target is None else "reach"


def job_stem(label: str) -> str:
    """A file-name-safe version of a job label."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_") or "job"


def algorithm_kwargs(algo: dict) -> dict:
    """The parameters of an ``[[algorithms]]`` entry that pysketch's constructor takes."""
    return {k: algo[k] for k in config.ALGORITHMS[algo["name"]] if algo.get(k) is not None}


def target_threshold(target: dict | None, first: dict | None) -> float | None:
    """The value the target's metric must reach: ``value``, times its step-0 value if relative.

    ``None`` without a target, or when a relative target's start is unknown.
    """
    if not target:
        return None
    if not target["relative"]:
        return target["value"]
    start = (first or {}).get(target["metric"])
    return None if start is None else target["value"] * start


def reached(row: dict, target: dict | None, threshold: float | None) -> bool:
    """Whether a metrics row meets the config's ``[target]`` (its ``threshold``)."""
    if not target or threshold is None:
        return False
    value = row.get(target["metric"])
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if target["metric"] in HIGHER_IS_BETTER:
        return value >= threshold
    return value <= threshold


def blow_up(row: dict, first: dict, cfg: dict, chance: float | None) -> str | None:
    """Why the metrics ``row`` shows a blow-up under ``cfg["divergence"]``, or ``None``.

    The loss (``f - f*`` where known, since a loss with a linear term may be
    negative) that is not finite or above ``loss_ratio`` times its value at step
    0; or, after ``warmup`` steps, a test accuracy within ``chance_margin`` of
    ``chance`` (always predicting the most frequent class).
    """
    rule = cfg["divergence"]
    metric = "suboptimality" if first.get("suboptimality") is not None else "loss"
    name = "f - f*" if metric == "suboptimality" else "loss"
    value, start = row.get(metric), first.get(metric)
    if value is None or not np.isfinite(value):
        return f"the {name} is {value} after {row['step']} steps"
    if start is not None and start > 0 and value > rule["loss_ratio"] * start:
        return (
            f"the {name} is {value:.4g} after {row['step']} steps, above {rule['loss_ratio']:g}x "
            f"its start {start:.4g}"
        )
    accuracy = row.get("test_accuracy")
    if chance is not None and accuracy is not None and row["step"] > rule["warmup"]:
        if accuracy <= chance + rule["chance_margin"]:
            return (
                f"the test accuracy is {accuracy:.3f} after {row['step']} steps, at chance "
                f"({chance:.3f}, the most frequent class; warm-up {rule['warmup']} steps)"
            )
    return None


def _fmt(value: Any) -> str:
    return "" if value is None else repr(float(value)) if isinstance(value, float) else str(value)


def read_rows(path: Path, upto: int | None = None) -> list[dict]:
    """The metrics rows of a job's CSV (up to step ``upto``; torn last lines dropped)."""
    rows = []
    try:
        with open(path, newline="") as f:
            for raw in csv.DictReader(f):
                if None in raw.values() or None in raw:
                    break  # a line cut short by a kill
                row = {k: (float(v) if v != "" else None) for k, v in raw.items()}
                row["step"] = int(row["step"])
                if upto is not None and row["step"] > upto:
                    break
                rows.append(row)
    except FileNotFoundError:
        pass
    return rows


class Job:
    """One algorithm trained on one case's model; :meth:`run` returns a :class:`JobResult`.

    Parameters
    ----------
    case : config.Case
        The checked case.
    algo : dict
        Its ``[[algorithms]]`` entry.
    model : models.Model
        The case's model (shared by its jobs).
    run_dir : Path
        The run's folder.
    layout : parallel.Layout
        Ranks and MPI communicator.
    progress : callable, optional
        ``progress(job, total, initial)`` returning a tqdm-like bar (or ``None``).
    """

    def __init__(self, case, algo, model, run_dir: Path, layout, progress=None):
        self.case, self.algo, self.model, self.layout = case, algo, model, layout
        self.cfg = case.config
        self.label = config.job_label(case.label, algo["label"])
        self.stem = job_stem(self.label)
        self.run_dir = run_dir
        self.csv_path = run_dir / "metrics" / f"{self.stem}.csv"
        self.ckpt_dir = run_dir / "checkpoints"
        self.progress = progress
        self.schedule = Schedule(self.cfg["schedule"], algo["lr"])
        self.rows: list[dict] = []
        # What run(resume=True) did: "skipped" (finished before), "resumed" or "started".
        self.resumed: str | None = None
        self.resumed_from = 0
        self.chance: float | None = None  # the model's chance accuracy, set by run()
        self.columns = COLUMNS + ([NETWORK_COLUMN] if self.cfg.get("network") else [])

    # ------------------------------------------------------------ set-up
    def _build(self):
        from pysketch.compress import make_algorithm

        cfg = self.cfg
        self.comm = self.layout.communicator(cfg["workers"])
        self.algorithm = make_algorithm(
            self.algo["name"],
            d=self.model.d,
            lr=self.schedule(0),
            seed=cfg["seed"],
            dtype=np.dtype(cfg["dtype"]).type,
            participation=cfg["participation"],
            download=cfg["download"],
            download_k=cfg["download_k"],
            **algorithm_kwargs(self.algo),
        )
        self.w = self.model.init()
        self.w_avg = self.w.copy() if self.schedule.averaging else None
        workers = len(self.comm.worker_ids)
        # Only the workers that take part in a step compute: buffers for those, at most.
        taking = min(workers, config.resolve_size(cfg["participation"], self.comm.world_size))
        # Linearity: the gradients of stateless workers are summed here as they are
        # computed, in worker order (the sum pysketch would form, bit for bit), and
        # handed over with step_summed: O(d) memory instead of O(W d).
        # Weighted averaging takes each worker's vector and weight (its training samples).
        self.weights = None
        if cfg["weighting"] == "samples":
            self.weights = np.array([len(s) for s in self.model.shards], dtype=np.float64)
        self.presum = (
            cfg["presum"]
            and workers > 1
            and self.algo["local_steps"] == 1
            and not self.algorithm.stateful_workers
            and self.weights is None
            and cfg["download"] != "topk"  # then each worker computes at its own weights
        )
        rows = 2 if self.presum else taking
        self.buffer = np.empty((rows, self.model.d), dtype=self.w.dtype)

    def _result(self, status="done", message="") -> JobResult:
        last = self.rows[-1] if self.rows else {}
        steps = last.get("step", 0)
        target = self.cfg["target"]
        threshold = target_threshold(target, self.rows[0] if self.rows else None)
        hit = next((r["step"] for r in self.rows if reached(r, target, threshold)), None)
        moved = (last.get("upload") or 0.0) + (last.get("download") or 0.0)
        sgd = 2.0 * steps * self.model.d * np.dtype(self.cfg["dtype"]).itemsize
        return JobResult(
            label=self.label,
            case=self.case.label,
            algorithm=self.algo["label"],
            status=status,
            steps=steps,
            final={k: v for k, v in last.items() if k in COLUMNS[1:6]},
            steps_to_target=hit,
            upload=last.get("upload") or 0.0,
            download=last.get("download") or 0.0,
            wire_sent=last.get("wire_sent") or 0.0,
            wire_received=last.get("wire_received") or 0.0,
            compression=sgd / moved if moved else None,
            wall=last.get("wall") or 0.0,
            message=message,
            case_values=self.case.values,
            expect=self.algo.get("expect"),
            outcome=outcome(status, hit, target),
            time_to_target=network.time_to_target(self.rows, hit),
            sim_time=last.get(NETWORK_COLUMN),
        )

    # ------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        state = {"w": self.w, "algo": self.algorithm.state_dict(), "comm": self.comm.state_dict()}
        if self.w_avg is not None:
            state["w_avg"] = self.w_avg
        return state

    def _checkpoint(self, step: int, wall: float, done: JobResult | None = None) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        scalars = {}
        if done is None:
            _, scalars = checkpoint.save(
                self.ckpt_dir, self.stem, self.layout.rank, step, self._state()
            )
        gathered = self.layout.gather(scalars)
        self.layout.barrier()  # every rank's file is on disk before the marker names it
        if self.layout.is_root:
            marker = {
                "step": step,
                "wall": wall,
                "ranks": self.layout.ranks,
                "workers": self.cfg["workers"],
                "scalars": gathered,
                "result": None if done is None else asdict(done),
            }
            checkpoint.commit(self.ckpt_dir, self.stem, marker)
        self.layout.barrier()

    def _restore(self) -> tuple[int, float] | JobResult | None:
        marker, error = None, None
        if self.layout.is_root:
            try:
                marker = checkpoint.load_marker(
                    self.ckpt_dir, self.stem, steps=self.cfg["steps"], result_type=JobResult
                )
            except checkpoint.CheckpointError as exc:
                error = exc
        self.layout.raise_together(error)  # every rank raises rank 0's error, none waits
        marker = self.layout.bcast(marker)
        if marker is None:
            return None
        if marker["result"] is not None:
            return JobResult(**marker["result"])
        if marker["ranks"] != self.layout.ranks or marker["workers"] != self.cfg["workers"]:
            raise config.ConfigError(
                f"--resume: {self.label} was checkpointed with {marker['ranks']} rank(s) and "
                f"{marker['workers']} workers; resume it with the same layout"
            )
        error = None
        try:
            self._load_state(marker)
        except checkpoint.CheckpointError as exc:
            error = exc
        self.layout.raise_together(error)
        return marker["step"], marker["wall"]

    def _load_state(self, marker: dict) -> None:
        """This rank's checkpoint into ``w``, ``w_avg``, the algorithm and the communicator."""
        like = {"w": self.w} if self.w_avg is None else {"w": self.w, "w_avg": self.w_avg}
        # No array of the state is larger than the workers' stacked vectors or a server array.
        fresh, _ = checkpoint.split_state(self.algorithm.state_dict())
        largest = len(self.comm.worker_ids) * self.w.nbytes
        state = checkpoint.load(
            self.ckpt_dir,
            self.stem,
            self.layout.rank,
            marker,
            like=like,
            max_bytes=max([largest, *(a.nbytes for a in fresh.values())]),
            counters=("algo/steps", "comm/step_count"),
        )
        try:
            self.algorithm.load_state_dict(state.get("algo", {}))
            self.comm.load_state_dict(state.get("comm", {}))
        except (TypeError, ValueError) as exc:
            path = self.ckpt_dir / f"{self.stem}.r{self.layout.rank}.s{marker['step']}.npz"
            raise checkpoint.CheckpointError(f"{path}: {exc}") from None
        self.w[...] = state["w"]
        if self.w_avg is not None:
            self.w_avg[...] = state["w_avg"]

    # ------------------------------------------------------------ the loop
    def _step(self, t: int, lr: float) -> np.ndarray:
        """The algorithm's update for round ``t``, from the local workers that take part."""
        workers = [int(i) for i in self.algorithm.participants(self.comm)]
        # The weights each worker computes at: w, or its replica (download = "topk").
        points = self.algorithm.worker_weights(self.w, self.comm)
        vectors = self._gradients(workers, t, lr, points)
        decay = self.algo["weight_decay"]
        if self.presum:
            if decay:  # each worker's gradient + decay w, summed
                vectors += (decay * len(workers)) * self.w
            return self.algorithm.step_summed(vectors, self.comm, lr=lr)
        if decay:
            for v, point in zip(vectors, points, strict=True):
                v += decay * point
        weights = None if self.weights is None else [self.weights[i] for i in workers]
        return self.algorithm.step(vectors, self.comm, lr=lr, weights=weights)

    def _gradients(
        self, workers: list[int], t: int, lr: float, points: list[np.ndarray]
    ) -> list[np.ndarray] | np.ndarray:
        """The vectors of ``workers`` (the local ones that take part) computed at ``points``
        (their weights), or their sum when ``self.presum`` (all at ``self.w``)."""
        steps = self.algo["local_steps"]
        if self.presum:
            self.buffer[0].fill(0)  # the sum of no worker, when none here takes part
            return self.model.sum_worker_gradients(
                self.w, workers, t, self.buffer[0], self.buffer[1]
            )
        if steps == 1 and all(p is self.w for p in points):
            self.model.worker_gradients(self.w, workers, t, self.buffer)
            return list(self.buffer[: len(workers)])
        if steps == 1:
            for row, (worker, point) in enumerate(zip(workers, points, strict=True)):
                self.model.worker_gradient(point, worker, t, 0, out=self.buffer[row])
            return list(self.buffer[: len(workers)])
        local_lr = self.algo["local_lr"] or lr
        for row, (worker, point) in enumerate(zip(workers, points, strict=True)):
            local = self.buffer[row]
            local[...] = point
            for s in range(steps):
                local -= local_lr * self.model.worker_gradient(local, worker, t, s)
            np.subtract(point, local, out=local)
            local /= local_lr
        return list(self.buffer[: len(workers)])

    def _evaluate(self, step: int, lr: float, wall: float) -> dict | None:
        row = None
        if self.layout.is_root:
            w = self.w_avg if self.w_avg is not None else self.w
            traffic = self.comm.total
            with np.errstate(over="ignore", invalid="ignore"):  # diverging runs report inf/nan
                row = {"step": step, **self.model.metrics(w), "lr": lr}
            row.update(
                upload=float(traffic.upload),
                download=float(traffic.download),
                wire_sent=float(traffic.wire_sent),
                wire_received=float(traffic.wire_received),
                wall=wall,
            )
            if self.cfg.get("network"):
                row[NETWORK_COLUMN] = network.simulated_time(
                    self.cfg["network"],
                    self.algo,
                    row,
                    self.cfg["workers"],
                    len(self.comm.worker_ids),
                    participation=self.cfg["participation"],
                )
            with open(self.csv_path, "a", newline="") as f:
                csv.writer(f).writerow([_fmt(row.get(c)) for c in self.columns])
        why = None
        if row is not None:
            self.rows.append(row)
            why = blow_up(row, self.rows[0], self.cfg, self.chance)
        why = self.layout.bcast(why)
        if why is not None:
            raise Diverged(f"{self.label}: {why}; stopped ([divergence]). Files so far are kept.")
        return row

    def run(self, resume: bool = False) -> JobResult:
        """Train, or with ``resume`` continue from the last checkpoint; see the class doc."""
        self._build()
        self.chance = self.model.chance_accuracy()
        root = self.layout.is_root
        start, wall0 = 0, 0.0
        restored = self._restore() if resume else None
        if resume:
            finished = isinstance(restored, JobResult)
            self.resumed = "started" if restored is None else "skipped" if finished else "resumed"
        if isinstance(restored, JobResult):
            return restored
        if root:
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        if restored is not None:
            start, wall0 = restored
            self.resumed_from = start
            if root:
                self.rows = read_rows(self.csv_path, upto=start)
                with open(self.csv_path, "w", newline="") as f:
                    csv.writer(f).writerow(self.columns)
                    for row in self.rows:
                        csv.writer(f).writerow([_fmt(row.get(c)) for c in self.columns])
        else:
            if root:
                with open(self.csv_path, "w", newline="") as f:
                    csv.writer(f).writerow(self.columns)
            self._evaluate(0, self.schedule(0), 0.0)
        cfg = self.cfg
        steps, every, ckpt = cfg["steps"], cfg["eval_every"], cfg["checkpoint_every"]
        bar = self.progress(self, steps, start) if (self.progress and root) else None
        began = time.perf_counter() - wall0
        status, message = "done", ""
        try:
            for t in range(start, steps):
                lr = self.schedule(t)
                try:
                    update = self._step(t, lr)
                except NonFiniteError as exc:  # raised on every rank alike
                    raise Diverged(
                        f"{self.label}: NaN or Inf gradients at step {t + 1}; stopped. Files so "
                        "far are kept."
                    ) from exc
                self.w -= update
                if self.w_avg is not None:
                    self.schedule.update_average(self.w_avg, self.w, t)
                done = t + 1
                if done % every == 0 or done == steps:
                    row = self._evaluate(done, lr, time.perf_counter() - began)
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['loss']:.4g}", up=_bytes(row["upload"]))
                if ckpt and done % ckpt == 0 and done < steps:
                    self._checkpoint(done, time.perf_counter() - began)
                if bar is not None:
                    bar.update(1)
        except Diverged as exc:
            status, message = "diverged", str(exc)
        finally:
            if bar is not None:
                bar.close()
        result = self._result(status, message)
        self._checkpoint(result.steps, result.wall, done=result)  # --resume skips this job
        return result


def _bytes(n: float | None) -> str:
    """A byte count for people: ``1.5 MB``."""
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000.0
    return f"{n:.3g} TB"  # pragma: no cover


def run_cases(cases, run_dir: Path, layout, progress=None, resume=False, log=print) -> list:
    """Run every job of every case; returns the :class:`JobResult` list (on every rank).

    Parameters
    ----------
    cases : list of config.Case
        From :func:`simulate.config.resolve`.
    run_dir : Path
        The run's folder (created by the caller).
    layout : parallel.Layout
        Ranks and MPI communicator.
    progress : callable, optional
        Progress-bar factory (rank 0).
    resume : bool
        Continue from checkpoints; finished jobs are not run again.
    log : callable
        Where rank 0's messages go.
    """
    results = []
    for case in cases:
        cfg = case.config
        layout.workers(cfg["workers"])  # raises if the ranks cannot share them
        model = models.build(cfg["model"], cfg["workers"], cfg["seed"], cfg["dtype"])
        for algo in cfg["algorithms"]:
            job = Job(case, algo, model, run_dir, layout, progress)
            result = job.run(resume=resume)
            if layout.is_root and resume:
                log(_resume_line(job, result))
            if result.status != "done" and layout.is_root:
                log(result.message)
            results.append(result)
    return results


def _resume_line(job: Job, result: JobResult) -> str:
    """What ``--resume`` did with a job: skipped it (finished before), resumed or started it."""
    if job.resumed == "skipped":
        return (
            f"resume: skipped {job.label} (finished before: {result.status} at step {result.steps})"
        )
    if job.resumed == "resumed":
        return f"resume: resumed {job.label} from step {job.resumed_from} to {result.steps}"
    return f"resume: started {job.label} from step 0 (no checkpoint) to {result.steps}"
