"""pysketch.compress: one training step of each algorithm with W in-process workers,
and the bytes each worker uploads and downloads per step."""

from __future__ import annotations

import numpy as np

from .common import SEED

ALGORITHMS = {
    "sgd": dict(rho=0.9),
    "memsgd": dict(k_ratio=0.005),
    "sketched_sgd": dict(k_ratio=0.005, rows=5, cols_ratio=0.05),
    "fetchsgd": dict(k_ratio=0.005, rows=5, cols_ratio=0.05),
    "sketchdl": dict(rows=5, cols_ratio=0.05),
}


def _build(name, d):
    from pysketch.compress import make_algorithm

    params = dict(ALGORITHMS[name])
    if "k_ratio" in params:
        params["k"] = max(1, int(params.pop("k_ratio") * d))
    if "cols_ratio" in params:
        params["cols"] = max(1, int(params.pop("cols_ratio") * d))
    return make_algorithm(name, d, lr=0.1, seed=SEED, **params)


class Step:
    """``algorithm.step(grads, LocalCommunicator(W))``: compress, combine, decode."""

    params = [sorted(ALGORITHMS), [10**5, 10**6], [8]]
    param_names = ["algorithm", "d", "workers"]
    rounds = 1
    repeat = (1, 5, 10.0)

    def setup(self, algorithm, d, workers):
        from pysketch.compress import LocalCommunicator

        rng = np.random.default_rng(SEED)
        self.grads = [rng.standard_normal(d, dtype=np.float32) for _ in range(workers)]
        self.comm = LocalCommunicator(workers)
        self.algo = _build(algorithm, d)
        self.algo.step(self.grads, self.comm)  # compile and allocate outside the timing

    def time_step(self, algorithm, d, workers):
        self.algo.step(self.grads, self.comm)

    def track_upload_bytes(self, algorithm, d, workers):
        return self.comm.last_step.upload

    track_upload_bytes.unit = "bytes"

    def track_download_bytes(self, algorithm, d, workers):
        return self.comm.last_step.download

    track_download_bytes.unit = "bytes"
