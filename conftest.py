"""Session-wide test set-up, loaded before any test module or doctest imports numba.

CUDA kernels run in Numba's simulator unless PYSKETCH_REAL_GPU=1 (on a GPU
machine): NUMBA_ENABLE_CUDASIM must be set before numba is first imported.
"""

import os

if os.environ.get("PYSKETCH_REAL_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
