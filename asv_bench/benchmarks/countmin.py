"""Count-Min sketch: update (keys with weights), dense update, point estimates."""

from __future__ import annotations

from pysketch import CountMinSketch

from .common import (
    BACKENDS,
    DTYPES,
    SEED,
    gradient_like,
    require_backend,
    sparse_input,
    sync,
    to_backend,
)


class CountMin:
    """``CountMinSketch.update(indices, weights)`` of n keys, ``update_dense(|x|)`` of a
    length-n vector, and ``estimate`` of n keys."""

    params = [[10**4, 10**6], [1, 5], [2**16], DTYPES, [False, True], BACKENDS]
    param_names = ["n", "rows", "cols", "dtype", "conservative", "backend"]
    rounds = 1
    repeat = (1, 5, 10.0)
    timeout = 300

    def setup(self, n, rows, cols, dtype, conservative, backend):
        require_backend(backend)
        self.backend = backend
        self.cms = CountMinSketch(
            rows, cols, seed=SEED, dtype=dtype, conservative=conservative, device=backend
        )
        idx, w = sparse_input(10 * n, n, dtype)
        self.idx = to_backend(idx, backend)
        self.w = to_backend(abs(w), backend)
        self.dense = to_backend(abs(gradient_like(n, dtype)), backend)
        self.cms.update(self.idx, self.w)
        self.cms.update_dense(self.dense)
        self.cms.estimate(self.idx)
        sync(backend)

    def time_update(self, n, rows, cols, dtype, conservative, backend):
        self.cms.update(self.idx, self.w)
        sync(self.backend)

    def time_update_dense(self, n, rows, cols, dtype, conservative, backend):
        self.cms.update_dense(self.dense)
        sync(self.backend)

    def time_estimate(self, n, rows, cols, dtype, conservative, backend):
        self.cms.estimate(self.idx)
        sync(self.backend)
