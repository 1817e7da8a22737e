"""Framework round trips: a PyTorch tensor in gives PyTorch tensors out.

The kernels work on NumPy arrays (CPU) and CUDA arrays; inputs from other
frameworks reach them zero-copy through DLPack or ``__cuda_array_interface__``
(:mod:`pysketch._arrays`). This module hands results back in the caller's
framework, zero-copy as well: NumPy in, NumPy out; CuPy in, CuPy out (what the
CUDA path allocates); PyTorch in, PyTorch out (``torch.from_dlpack`` of the
result, or ``torch.as_tensor`` of a Numba device array). It also refuses what
DLPack cannot carry with a message that says what to do: tensors that require
grad, and bfloat16/float16.

The public helpers :func:`flatten` and :func:`unflatten` turn a list of
parameter tensors (a model's gradients) into one vector and back.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "flatten",
    "unflatten",
    "follows",
    "adopt",
    "check_no_grad",
    "check_tensor",
    "is_torch",
    "like",
]


def is_torch(obj: Any) -> bool:
    """Whether ``obj`` is a PyTorch tensor (without importing torch)."""
    return type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "requires_grad")


def check_no_grad(obj: Any, name: str) -> None:
    """Refuse a tensor that requires grad, naming ``name`` and the fix."""
    if is_torch(obj) and obj.requires_grad:
        raise TypeError(
            f"{name} is a tensor that requires grad; pysketch does not track gradients: "
            f"pass {name}.detach() (or call under torch.no_grad())"
        )


def check_tensor(obj: Any, name: str) -> None:
    """Refuse tensors the kernels cannot read zero-copy, naming ``name`` and the fix."""
    if not is_torch(obj):
        return
    check_no_grad(obj, name)
    dtype = str(obj.dtype).removeprefix("torch.")
    if dtype in ("bfloat16", "float16"):
        raise TypeError(
            f"{name} has dtype {dtype}, which the kernels do not take: convert it with "
            f"{name}.float() (float32) first"
        )


def like(result: Any, reference: Any) -> Any:
    """``result`` (an array, or a tuple of arrays) in ``reference``'s framework."""
    if isinstance(result, tuple):
        return tuple(like(item, reference) for item in result)
    is_array = isinstance(result, np.ndarray) or hasattr(result, "__cuda_array_interface__")
    if not is_torch(reference) or not is_array:
        return result
    import torch

    if hasattr(result, "__dlpack__"):
        return torch.from_dlpack(result)
    return torch.as_tensor(result, device=reference.device)  # a Numba device array (CAI)


_REFERENCE = "_framework_reference"  # attribute of a sketch: an empty tensor, or absent


def adopt(target: Any, source: Any) -> None:
    """Give ``target`` the framework ``source`` recorded, unless it has its own (sums, copies)."""
    if getattr(target, _REFERENCE, None) is None and getattr(source, _REFERENCE, None) is not None:
        setattr(target, _REFERENCE, getattr(source, _REFERENCE))


def follows(*names: str, record: bool = False) -> Callable:
    """Decorator: check the tensor arguments ``names``; return results like the first given.

    The first of ``names`` that the call passes (not ``None``) is the
    reference whose framework the results take. For a method, when none is
    given, the reference is the one the object recorded: ``record=True``
    makes a method (``accumulate``, ``update``) remember the framework and
    device of its input as an empty tensor, so that ``estimate()`` or
    ``heavy_hitters()`` of a sketch fed PyTorch tensors return tensors too.
    """

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            given = [bound.arguments[n] for n in names if bound.arguments.get(n) is not None]
            for name in names:
                check_tensor(bound.arguments.get(name), name)
            owner = bound.arguments.get("self")
            result = fn(*args, **kwargs)
            reference = given[0] if given else getattr(owner, _REFERENCE, None)
            if record and owner is not None:
                marker = reference.new_empty(0) if is_torch(reference) else None
                setattr(owner, _REFERENCE, marker)
                return result
            return like(result, reference)

        return wrapper

    return decorate


def flatten(arrays: Sequence[Any], *, skip_none: bool = True) -> Any:
    """One 1-D vector holding every array of ``arrays``, flattened, in order.

    For sketching a model's gradients without flattening them by hand:
    ``sketch.accumulate(flatten([p.grad for p in model.parameters()]))``. The
    result is in the arrays' framework (``torch.cat`` for tensors,
    ``cupy.concatenate`` for CuPy arrays, ``numpy.concatenate`` otherwise):
    one copy, as a contiguous vector is what a sketch reads. Tensors that
    require grad are refused, as by every pysketch function: gradients are
    data here, so pass ``p.detach()`` (a parameter's ``.grad`` never requires
    grad).

    Parameters
    ----------
    arrays : sequence of arrays or None
        Same framework, device and dtype; any shapes. ``None`` entries (the
        ``.grad`` of a frozen or unused parameter) are left out; at least
        one array is needed.
    skip_none : bool, default True
        ``False`` refuses ``None`` entries instead (``TypeError`` naming the
        first).

    Returns
    -------
    vector : 1-D array of length ``sum(a.size for a in arrays if a is not None)``

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch import flatten, unflatten
    >>> parts = [np.ones((2, 3), np.float32), None, np.arange(4, dtype=np.float32)]
    >>> flat = flatten(parts)
    >>> flat.shape
    (10,)
    >>> [None if a is None else a.shape for a in unflatten(flat, parts)]
    [(2, 3), None, (4,)]
    """
    from pysketch._arrays import check_bool  # not at import: it loads Numba

    skip_none = check_bool("skip_none", skip_none)
    given = list(arrays)
    for i, a in enumerate(given):
        if a is None and not skip_none:
            raise TypeError(
                f"arrays[{i}] is None (a parameter without a gradient?): leave it out, "
                "or pass skip_none=True"
            )
        check_no_grad(a, f"arrays[{i}]")
    arrays = [a for a in given if a is not None]
    if not arrays:
        raise ValueError("arrays must hold at least one array (None entries are left out)")
    first = arrays[0]
    if is_torch(first):
        import torch

        return torch.cat([a.reshape(-1) for a in arrays])
    module = type(first).__module__.split(".")[0]
    if module == "cupy":
        import cupy

        return cupy.concatenate([a.reshape(-1) for a in arrays])
    return np.concatenate([np.asarray(a).reshape(-1) for a in arrays])


def unflatten(vector: Any, like_arrays: Sequence[Any]) -> list[Any]:
    """Views of ``vector`` shaped like each of ``like_arrays``: the inverse of :func:`flatten`.

    Parameters
    ----------
    vector : 1-D array
        Of length ``sum(a.size for a in like_arrays)`` (a dense update
        recovered from a sketch, say).
    like_arrays : sequence of arrays or None
        Only their shapes are read; ``None`` entries (as :func:`flatten`
        leaves out) take no part of ``vector``.

    Returns
    -------
    list of arrays or None
        Views (no copies) of ``vector``, in its framework, and ``None``
        where ``like_arrays`` holds ``None``.

    Examples
    --------
    >>> import numpy as np
    >>> from pysketch import unflatten
    >>> a, b = unflatten(np.arange(5.0), [np.empty(3), np.empty((1, 2))])
    >>> a.tolist(), b.tolist()
    ([0.0, 1.0, 2.0], [[3.0, 4.0]])
    """
    shapes = [None if a is None else tuple(a.shape) for a in like_arrays]
    sizes = [0 if shape is None else int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    if tuple(vector.shape) != (sum(sizes),):
        raise ValueError(
            f"vector must have shape ({sum(sizes)},) to match like_arrays, "
            f"got {tuple(vector.shape)}"
        )
    views, start = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        views.append(None if shape is None else vector[start : start + size].reshape(shape))
        start += size
    return views
