"""Exceptions of pysketch that callers may want to tell apart from other bad input."""

from __future__ import annotations

__all__ = ["NonFiniteError"]


class NonFiniteError(ValueError):
    """An input holds NaN or Inf (a diverging run, typically).

    Every pysketch check of finiteness raises it: sketches, selections,
    feedback buffers and the algorithms' steps.

    A subclass of ``ValueError``, so code that catches bad input in general
    still catches it.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch.compress import LocalCommunicator, SGD
    >>> from pysketch.errors import NonFiniteError
    >>> try:
    ...     SGD(2, lr=0.1).step([np.array([1.0, np.nan])], LocalCommunicator(1))
    ... except NonFiniteError as exc:
    ...     print(exc)
    vectors[0] holds 1 NaN or Inf value(s); pysketch refuses non-finite input
    """
