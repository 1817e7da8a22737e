"""Learning-rate schedules and mem-SGD's weighted iterate averaging.

- ``constant``: ``lr``.
- ``step``: ``lr * decay ** (number of milestones <= t)``.
- ``memsgd``: ``gamma / (lam * (t + tau))`` [SCJ18]_, with the iterate average
  weighted by ``(t + tau)^2``, kept online.

References
----------
.. [SCJ18] S. U. Stich, J.-B. Cordonnier, M. Jaggi, "Sparsified SGD with
   Memory", NeurIPS 2018.
"""

from __future__ import annotations

import bisect

import numpy as np


class Schedule:
    """The learning rate of round ``t`` (0-based) for a checked ``[schedule]`` table.

    Parameters
    ----------
    schedule : dict
        ``kind`` and its keys (``lr``; ``milestones``, ``decay``; ``gamma``,
        ``tau``, ``lam``, ``average``).
    lr : float, optional
        An algorithm's own base rate, replacing ``schedule["lr"]``
        (for ``memsgd`` it scales ``gamma``: ``gamma * lr``).

    Examples
    --------
    >>> s = Schedule({"kind": "step", "lr": 1.0, "milestones": [2], "decay": 0.5})
    >>> [s(t) for t in range(4)]
    [1.0, 1.0, 0.5, 0.5]
    """

    def __init__(self, schedule: dict, lr: float | None = None):
        self.kind = schedule["kind"]
        self.cfg = schedule
        self.base = lr if lr is not None else schedule.get("lr", 1.0)
        self.averaging = self.kind == "memsgd" and schedule["average"]

    def __call__(self, t: int) -> float:
        if self.kind == "constant":
            return self.base
        if self.kind == "step":
            passed = bisect.bisect_right(self.cfg["milestones"], t)
            return self.base * self.cfg["decay"] ** passed
        c = self.cfg
        return self.base * c["gamma"] / (c["lam"] * (t + c["tau"]))

    def average_weight(self, t: int) -> float:
        """``rho_t`` of ``w_avg = (1 - rho_t) w_avg + rho_t w_{t+1}`` (weights ``(t + tau)^2``).

        Examples
        --------
        >>> s = Schedule({"kind": "memsgd", "gamma": 2.0, "tau": 10.0, "lam": 0.1,
        ...               "average": True})
        >>> s.average_weight(0)
        1.0
        """
        tau = self.cfg["tau"]
        total = (1 + t) * (6 * tau**2 + t + 6 * tau * t + 2 * t**2)  # 6 sum_{s<=t} (s + tau)^2
        return 6 * (t + tau) ** 2 / total if total else 1.0

    def update_average(self, w_avg: np.ndarray, w: np.ndarray, t: int) -> None:
        """Fold ``w`` (the iterate after round ``t``) into ``w_avg`` in place."""
        rho = self.average_weight(t)
        w_avg *= 1.0 - rho
        w_avg += rho * w
