"""The simulator's step time: gradients of W workers plus one pysketch algorithm step.

Time per round should grow linearly in d and W; the simulator's own overhead
(outside the model's gradients, pysketch's calls and the collectives) should
stay small: ``time_round`` against ``time_gradients`` shows it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from simulate import config, models
from simulate.parallel import Layout, limit_threads
from simulate.runner import Job

from .common import sizes


def _job(d: int, workers: int, algorithm: str) -> Job:
    algo = {"name": algorithm}
    if algorithm in ("memsgd", "fetchsgd"):
        algo["k"] = max(1, d // 100)
    if algorithm in ("fetchsgd", "sketchdl"):
        algo["cols"] = max(1, d // 20)
    raw = {
        "steps": 10**6,
        "workers": workers,
        "model": {"kind": "quadratic", "d": d, "basis": "rotated", "noise": 0.1},
        "algorithms": [algo],
    }
    (case,) = config.resolve(raw)
    model = models.build(case.config["model"], workers, 0, "float32")
    job = Job(
        case, case.config["algorithms"][0], model, Path(tempfile.gettempdir()), Layout(mpi=False)
    )
    job._build()
    return job


def _round(job: Job, t: int) -> None:
    """One round as the runner takes it: the summed gradients where the job presums them."""
    job.w -= job._step(t, 0.1)


def _gradients(job: Job, t: int) -> None:
    """The round's gradients alone, at the weights each worker computes at."""
    workers = [int(i) for i in job.algorithm.participants(job.comm)]
    job._gradients(workers, t, 0.1, job.algorithm.worker_weights(job.w, job.comm))


class SimulatorRound:
    """One round (gradients + ``algo.step`` + ``w -= update``) on a rotated quadratic."""

    params = (sizes([2**14, 2**17], [2**20]), [8, 32], ["sgd", "memsgd", "fetchsgd", "sketchdl"])
    param_names = ["d", "workers", "algorithm"]
    timeout = 300

    def setup(self, d, workers, algorithm):
        limit_threads(1)
        self.job = _job(d, workers, algorithm)
        _round(self.job, 0)  # compile
        self.t = 1

    def time_round(self, d, workers, algorithm):
        _round(self.job, self.t)
        self.t += 1

    def time_gradients(self, d, workers, algorithm):
        _gradients(self.job, self.t)


class SimulatorMemory:
    """Peak memory of a FetchSGD round at large d (the workers' gradient buffer dominates)."""

    params = (sizes([2**20], [2**23]), [8, 64])
    param_names = ["d", "workers"]
    timeout = 600

    def peakmem_round(self, d, workers):
        limit_threads(1)
        job = _job(d, workers, "fetchsgd")
        _round(job, 0)
        np.asarray(job.w).sum()
