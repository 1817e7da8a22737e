"""A NumPy simulator of distributed training with pysketch's compressed communication.

``python -m simulate`` compares SGD, mem-SGD, Sketched-SGD, FetchSGD and
sketch-DL (from :mod:`pysketch.compress`, not re-implemented here) on quadratics,
logistic regression and a small MLP with W simulated workers, in one process or
under ``mpirun``, and writes per-step metrics, a summary and plots under
``runs/<name>/``. See :mod:`simulate.cli` and the documentation's simulator guide.
"""

__version__ = "0.1.0"
