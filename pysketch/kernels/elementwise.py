"""Element-wise CUDA kernels on 1-D device arrays (2-D tables go in flattened).

NumPy and CuPy arrays have operators; Numba device arrays (what buffers are
when CuPy is absent, and under the simulator) have none, so these kernels give
every device buffer the same fill / copy / axpy / momentum update.
"""

from __future__ import annotations

from pysketch._cuda import cuda, device_function


@cuda.jit
def cuda_fill(out, value):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, out.shape[0], step):
        out[i] = value


@cuda.jit
def cuda_copy(out, x):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, out.shape[0], step):
        out[i] = x[i]


@cuda.jit
def cuda_axpy(y, alpha, x):
    """``y += alpha * x`` (1-D)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, y.shape[0], step):
        y[i] += alpha * x[i]


@cuda.jit
def cuda_scale_add(u, rho, g):
    """``u = rho * u + g`` (1-D)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, u.shape[0], step):
        u[i] = rho * u[i] + g[i]


@cuda.jit
def cuda_axpby_out(out, x, beta, y):
    """``out = x + beta * y`` (1-D): the Nesterov direction ``g + rho * u``."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, out.shape[0], step):
        out[i] = x[i] + beta * y[i]


@cuda.jit
def cuda_scale(y, alpha):
    """``y *= alpha`` (1-D)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, y.shape[0], step):
        y[i] *= alpha


@device_function
def clip_factor(ratio):
    """What brings a vector whose norm is ``ratio`` times the limit to a norm at most the
    limit: ``1 / ratio`` above it, ``1`` at or below (and for a NaN ratio)."""
    return 1.0 / ratio if ratio > 1.0 else 1.0


@cuda.jit
def cuda_scale_clipped(y, ratios, at):
    """``y *= clip_factor(ratios[at])`` (1-D): a ratio computed on the device, never read."""
    factor = clip_factor(ratios[at])
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, y.shape[0], step):
        y[i] *= factor


@cuda.jit
def cuda_zero_where(out, mask):
    """``out[i] = 0`` where ``mask[i] != 0`` (1-D)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, out.shape[0], step):
        if mask[i] != 0:
            out[i] = 0
