"""Partial participation: which of the W workers (clients) take part in a round.

In federated learning only a few clients take part in each round (FedAvg
[MMR17]_ samples a fraction ``C`` of them; FetchSGD [RPU20]_ is designed for
that setting). An algorithm built with ``participation`` samples, at each of
its steps, a set of workers from the run's seed and the step number alone, so
every process draws the same set without talking to the others (the draw is
random-k's SplitMix64 stream, :func:`pysketch.randomk`, over worker ids).

``participation`` follows scikit-learn's convention for sizes
(``train_size``): a float in ``(0, 1]`` is a fraction of W (rounded, at least
one worker), an int ``>= 1`` a number of workers (at most W). ``1.0``, the
default, is every worker; the int ``1`` is a single worker.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from pysketch import _arrays, selection
from pysketch.compress.compressors import step_seed

__all__ = ["ChangedWeights", "check_participation", "participant_count", "sample_participants"]

# Makes the participants' seed of a step differ from random-k's seed of the same step.
_TAG = 0x50415254  # "PART"


def check_participation(participation: Any) -> float | int:
    """``participation`` checked: a float in ``(0, 1]`` or an int ``>= 1``.

    Raises
    ------
    TypeError, ValueError
        Naming ``participation`` and what it must be.
    """
    if isinstance(participation, (bool, np.bool_)) or not isinstance(participation, numbers.Real):
        raise TypeError(
            "participation must be a fraction of the workers in (0, 1] (float) or a number "
            f"of workers >= 1 (int), got {type(participation).__name__}"
        )
    if isinstance(participation, numbers.Integral):
        if participation < 1:
            raise ValueError(
                f"participation must be >= 1 as a number of workers, got {participation}"
            )
        return int(participation)
    value = float(participation)
    if not 0.0 < value <= 1.0:
        raise ValueError(
            f"participation must lie in (0, 1] as a fraction of the workers, got {participation}"
        )
    return value


def participant_count(participation: float | int, world_size: int) -> int:
    """How many of ``world_size`` workers take part in a round.

    Raises
    ------
    ValueError
        ``participation`` is a number of workers larger than ``world_size``.

    Examples
    --------
    >>> from pysketch.compress.participation import participant_count
    >>> participant_count(0.05, 1000), participant_count(0.001, 10), participant_count(3, 10)
    (50, 1, 3)
    """
    participation = check_participation(participation)
    world_size = _arrays.check_positive_int("world_size", world_size)
    if isinstance(participation, int):
        if participation > world_size:
            raise ValueError(
                f"participation must be at most the {world_size} workers, got {participation}"
            )
        return participation
    return max(1, round(participation * world_size))


def sample_participants(
    world_size: int, participation: float | int, *, seed: int, step: int
) -> np.ndarray:
    """The workers that take part in ``step`` of a run seeded ``seed``: sorted global ids.

    A function of its arguments only: every process, and a resumed run, draws
    the same. Uniform over the subsets of :func:`participant_count` workers;
    independent from step to step.

    Parameters
    ----------
    world_size : int
        W, the number of workers.
    participation : float or int
        A fraction of W in ``(0, 1]``, or a number of workers in ``[1, W]``.
    seed : int
        The run's seed.
    step : int
        The round (the algorithm's step count).

    Returns
    -------
    ids : int64 array
        Strictly increasing, in ``[0, world_size)``.

    Examples
    --------
    >>> from pysketch.compress import sample_participants
    >>> ids = sample_participants(100, 0.05, seed=0, step=7)
    >>> len(ids), bool((ids == sample_participants(100, 5, seed=0, step=7)).all())
    (5, True)
    >>> sample_participants(4, 1.0, seed=0, step=7).tolist()
    [0, 1, 2, 3]
    """
    count = participant_count(participation, world_size)
    step = _arrays.check_int("step", step, minimum=0)
    if count == world_size:
        return np.arange(world_size, dtype=np.int64)
    return selection.randomk(world_size, count, seed=step_seed(seed, step, _TAG))


class ChangedWeights:
    """Download as FetchSGD's released code counts it: the weights changed since a client
    last took part.

    A client that takes part in step ``t`` and last took part in step ``s``
    (never: it holds the initial weights, ``s = 0``) downloads the values of
    the coordinates that the updates of steps ``s .. t-1`` changed (values
    only, as that code counts them). Kept on every process alike: the step in
    which each coordinate last changed (``d`` int32) and the step in which
    each client last took part (``W`` int32).
    """

    def __init__(self, d: int, world_size: int) -> None:
        self.changed = np.full(d, -1, dtype=np.int32)
        self.joined = np.zeros(world_size, dtype=np.int32)

    def step(self, participants: np.ndarray, step: int, update: np.ndarray, itemsize: int):
        """Record step ``step``'s ``update``; return the participants' mean download in bytes."""
        counts = [np.count_nonzero(self.changed >= self.joined[i]) for i in participants]
        self.changed[update != 0] = step
        self.joined[participants] = step
        return float(np.mean(counts)) * itemsize

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"download.changed": self.changed.copy(), "download.joined": self.joined.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s arrays, checked (shapes, integers, steps) first."""
        arrays = {}
        for key, like in (("download.changed", self.changed), ("download.joined", self.joined)):
            value = np.asarray(state.get(key))
            if value.shape != like.shape or value.dtype.kind not in "iu" or (value < -1).any():
                raise ValueError(
                    f"state[{key!r}] must be {like.shape[0]} integer steps (>= -1), got "
                    f"dtype {value.dtype} and shape {value.shape}"
                )
            arrays[key] = value
        self.changed[...], self.joined[...] = arrays["download.changed"], arrays["download.joined"]
