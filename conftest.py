"""Session-wide test set-up, loaded before any test module or doctest imports numba.

CUDA kernels run in Numba's simulator unless PYSKETCH_REAL_GPU=1 (on a GPU
machine): NUMBA_ENABLE_CUDASIM must be set before numba is first imported.
"""

import os
import sys

if os.environ.get("PYSKETCH_REAL_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    # The simulator runs a Python thread per CUDA thread and polls them at every
    # syncthreads: a short switch interval brings a block's threads to the barrier
    # sooner (the simulated CUDA tests of top-k ran 3.6x faster than with the 5 ms default).
    sys.setswitchinterval(2e-4)

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
