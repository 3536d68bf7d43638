"""The one place that knows array types: ``backend_of`` picks CPU or CUDA.

Nothing else in hrarray branches on the type of an array. CuPy and
``numba.cuda`` are imported only by the CUDA backend, and only when a device
array is first seen (the type is recognised by its module name and its
``__cuda_array_interface__`` / ``__dlpack_device__``, never by importing a
framework).
"""

from __future__ import annotations

import numpy as np

from hrarray._backends._detach import detach
from hrarray._backends.cpu import CPU

__all__ = ["backend_of", "check_same_gpu", "device_of", "get_backend", "gpu_of"]

_DLPACK_CPU = 1
_DLPACK_GPU = 2  # kDLCUDA: the memory of one GPU
_DLPACK_CUDA = {_DLPACK_GPU, 3, 13}  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged


def device_of(obj) -> str:
    """``"cpu"`` or ``"cuda"`` for one array-like object."""
    if isinstance(obj, np.ndarray):
        return "cpu"
    obj = detach(obj)
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


def gpu_of(obj) -> int | None:
    """The ordinal of the GPU whose memory holds ``obj``, where the object names
    it (``__dlpack_device__``: CuPy, PyTorch, JAX); ``None`` otherwise.

    ``None`` also for pinned host and managed memory, which every GPU reaches,
    and for producers that name no device (numba device arrays, objects with
    only ``__cuda_array_interface__``): those are not checked.
    """
    dev = getattr(obj, "__dlpack_device__", None)
    if dev is None:
        return None
    try:
        kind, ordinal = dev()
        if int(kind) != _DLPACK_GPU:
            return None
        return int(ordinal)
    except Exception:
        return None


def check_same_gpu(*named) -> None:
    """``TypeError`` when two of the ``(argname, array)`` pairs live on different
    GPUs. A kernel launched on one GPU cannot read the other's memory: without
    this check it stops with an illegal-address error, which leaves the CUDA
    context unusable for the rest of the process."""
    first = None
    for argname, arr in named:
        if arr is None:
            continue
        g = gpu_of(arr)
        if g is None:
            continue
        if first is None:
            first = (argname, g)
        elif g != first[1]:
            raise TypeError(
                f"{first[0]} is on cuda:{first[1]} but {argname} is on cuda:{g}; hrarray never "
                "copies between GPUs (move one of them explicitly, e.g. cupy.asarray under "
                "cupy.cuda.Device(k), or tensor.to('cuda:k'))"
            )


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
    if seen == "cuda":
        check_same_gpu(*named)
    return get_backend(seen or "cpu")
