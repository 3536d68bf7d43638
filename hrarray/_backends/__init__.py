"""The one place that knows array types: ``backend_of`` picks CPU or CUDA.

Nothing else in hrarray branches on the type of an array. CuPy and
``numba.cuda`` are imported only by the CUDA backend, and only when a device
array is first seen (the type is recognised by its module name and its
``__cuda_array_interface__`` / ``__dlpack_device__``, never by importing a
framework).
"""

from __future__ import annotations

import numpy as np

from hrarray._backends.cpu import CPU

__all__ = ["backend_of", "device_of", "get_backend"]

_DLPACK_CPU = 1
_DLPACK_CUDA = {2, 3, 13}  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged


def device_of(obj) -> str:
    """``"cpu"`` or ``"cuda"`` for one array-like object."""
    if isinstance(obj, np.ndarray):
        return "cpu"
    mod = type(obj).__module__ or ""
    if hasattr(obj, "__cuda_array_interface__") or mod.startswith(
        ("numba.cuda.simulator", "numba_cuda.numba.cuda.simulator")
    ):
        return "cuda"
    dev = getattr(obj, "__dlpack_device__", None)
    if dev is not None:
        try:
            kind = int(dev()[0])
        except Exception:
            kind = _DLPACK_CPU
        if kind in _DLPACK_CUDA:
            return "cuda"
    return "cpu"


def get_backend(name: str):
    if name == "cpu":
        return CPU
    if name == "cuda":
        from hrarray._backends.cuda import CUDA

        return CUDA
    raise ValueError(f"unknown device {name!r}: use 'cpu' or 'cuda'")


def backend_of(*named):
    """The backend shared by ``(argname, array)`` pairs; ``TypeError`` on a mix.

    ``None`` entries are skipped. Returns the backend object.
    """
    seen = None
    first = None
    for argname, arr in named:
        if arr is None:
            continue
        dev = device_of(arr)
        if seen is None:
            seen, first = dev, argname
        elif dev != seen:
            raise TypeError(
                f"{first} is on {seen} but {argname} is on {dev}; move them explicitly "
                "(RaggedArray.to_numpy() / to_cupy()); hrarray never copies between devices"
            )
    return get_backend(seen or "cpu")
