"""Run the CUDA backend's host path through the public API without a GPU.

The simulator replaces numba-cuda's device arrays, contexts and launches with its own, so
host code that only runs on a GPU (the fast launch's keys, light launch views, scratch
buffers keyed by context, column slices, shared-memory fitting) is never executed by the
test suite; a defect there (29991b1 keyed caches by numba's unhashable ``Context``) breaks
every launch on a GPU and passes every simulator test. Here the real numba-cuda runs with
the driver stood in for: device arrays of made-up memory, a real ``driver.Context`` object
as the current context (the stand-in of ``launch_check.py`` for compiling), and launches
that compile each kernel (NVVM + nvJitLink, as ``ptx_check.py``) instead of running it.
Results are not computed; what is checked is that every call reaches its kernels.

Usage::

    python tests/host_path_check.py

Exit status: 0 every call ran, 1 a failure (listed), 3 no libNVVM here.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import sys
import traceback

if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
    sys.exit("host_path_check: run without NUMBA_ENABLE_CUDASIM")

_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("launch_check",
                                               os.path.join(_HERE, "launch_check.py"))
L = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(L)  # the compile stand-ins of launch_check and ptx_check
P, K, B = L.P, L.K, L.B

import numba.cuda.cudadrv.devices as _devices  # noqa: E402
import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402
from numba.cuda.cudadrv import driver  # noqa: E402
from numba.cuda.cudadrv.devicearray import DeviceNDArray  # noqa: E402

import hrarray as hr  # noqa: E402

_NEXT = [0x7E00_0000_0000]  # the next made-up allocation


class _Memory:
    """Device memory at a made-up address, as numba's device arrays use it."""

    def __init__(self, ptr=None, size=0):
        if ptr is None:
            ptr = _NEXT[0]
            _NEXT[0] += 1 << 32
        self.ptr, self.size, self.owner = ptr, size, self
        self.device_ctypes_pointer = ctypes.c_void_p(ptr)

    def view(self, start, stop=None):
        return _Memory(self.ptr + start, (self.size if stop is None else stop) - start)


def _device_array(shape, dtype=np.float64, strides=None, order="C", stream=0):
    a = np.empty(shape, dtype)  # its strides
    return DeviceNDArray(a.shape, a.strides, a.dtype, stream=stream,
                         gpu_data=_Memory(size=a.nbytes))


_mirror: dict = {}  # made-up address -> the host array "copied" there


def _to_device(a, stream=0):
    a = np.ascontiguousarray(a)
    mem = _Memory(size=a.nbytes)
    _mirror[mem.ptr] = a
    return DeviceNDArray(a.shape, a.strides, a.dtype, stream=stream, gpu_data=mem)


def _validate(self, offsets, limit, argname, what="values"):
    # Validation reads its verdict and the offsets' ends back from the device: here from
    # the host copy (nothing ran). Every later call on a validated array must need no
    # other host read (the CUDA backend keeps the ends), which _fetch checks below.
    o = _mirror[offsets.__cuda_array_interface__["data"][0]]
    return int(o[0]), int(o[-1])


def _fetch(v, stream):
    raise RuntimeError("a host read (synchronisation) where validated arrays need none")


# numba-cuda's own Context class (hashing and equality as on a GPU), never initialised
_CTX = driver.Context.__new__(driver.Context)
_CTX.device, _CTX.handle = L._ctx.device, 1
cuda.current_context = lambda *a, **k: _CTX
cuda.device_array = _device_array
cuda.to_device = _to_device
B.CudaBackend.validate = _validate
B._fetch = _fetch
_devices._runtime.ensure_context = contextlib.nullcontext  # no driver to make current

_reached: list = []


def _launch(fn, grid, block, stream, args):
    # the fast launch's key and lookup, as launch() makes them on a GPU
    key = K._fast_key(fn, args)
    if key is not None:
        K._fast_entries.get(key)
    gy = grid[1] if isinstance(grid, tuple) else 1
    if gy > K.MAX_GRID_Y:
        raise RuntimeError(f"{fn.py_func.__name__}: gridDim.y {gy} > {K.MAX_GRID_Y}")
    _reached.append(fn.py_func.__name__)
    P._compile(fn, args, P._current[0])


K.launch = _launch
B.launch = _launch


def _interface(a):
    """A bare ``__cuda_array_interface__`` producer (CuPy, PyTorch, JAX are such to
    hrarray): its arrays become the backend's light launch views."""
    a = np.ascontiguousarray(a)
    mem = _Memory(size=a.nbytes)
    _mirror[mem.ptr] = a
    obj = L._CudaArray(a, mem.ptr)
    obj.shape, obj.ndim, obj.dtype = a.shape, a.ndim, a.dtype  # kept as it is, not wrapped
    return obj


def _ragged(values, *offsets):
    x = hr.RaggedArray(_to_device(values), _to_device(np.asarray(offsets[0])))
    for o in offsets[1:]:
        x = hr.RaggedArray(x, _to_device(np.asarray(o)))
    return x


def main() -> int:
    try:
        cuda.compile_ptx(lambda x: None, (P.numba.float32[:],), cc=P.CC)
    except Exception as e:  # no libNVVM on this machine
        print(f"host_path_check: cannot compile here ({type(e).__name__}: {e})")
        return 3
    offs = np.array([0, 10, 10, 40])
    v1 = np.zeros(40, np.float32)
    v2 = np.zeros((40, 3), np.float32)
    x2 = _ragged(v2, offs)
    calls = {
        "sum 1-D": lambda: hr.sum(_ragged(v1, offs)),
        "argmax 2-D": lambda: hr.argmax(_ragged(v2, offs)),
        "mean levels=1 of depth 2": lambda: hr.mean(_ragged(v1, offs, [0, 2, 3])),
        "max levels=2": lambda: hr.max(_ragged(v1, offs, [0, 2, 3]), levels=2),
        "softmax": lambda: hr.softmax(_ragged(v2, offs)),
        "cumsum": lambda: hr.cumsum(_ragged(v1, offs)),
        "broadcast": lambda: hr.broadcast(_to_device(np.zeros(3)), _ragged(v1, offs)),
        # scores on the same offsets array: no structure check to read back
        "attention_pool": lambda: hr.attention_pool(x2, hr.RaggedArray(_to_device(v1),
                                                                       x2.offsets)),
        "a Reducer of six float64s": lambda: hr.reduce(_ragged(v1.astype(np.float64), offs),
                                                       P.tuple_reducer(6)),
    }
    calls["sum 2-D, interface values"] = lambda: hr.sum(
        hr.RaggedArray(_interface(v2), _interface(offs)))
    failed = []
    for name, call in calls.items():
        P._current[0] = name
        try:
            call()
        except Exception:
            failed.append((name, traceback.format_exc()))
    # rows wider than gridDim.y allows, at a lowered limit: column slices (of numba
    # arrays and of light launch views)
    K.MAX_GRID_Y = 1
    wide = np.zeros((40, 600))
    for name, call in (("sum, column slices", lambda: hr.sum(_ragged(wide, offs))),
                       ("cumsum, column slices", lambda: hr.cumsum(_ragged(wide, offs))),
                       ("max, column slices of interface values", lambda: hr.max(
                           hr.RaggedArray(_interface(wide), _interface(offs))))):
        P._current[0] = name
        try:
            call()
        except Exception:
            failed.append((name, traceback.format_exc()))
    for name, tb in failed:
        print(f"FAIL {name}:\n{tb}")
    for what, fname, argtys, e in P._failures:
        print(f"FAIL compile {what}: {fname} {argtys}: {e!r}"[:600])
    print(f"{len(calls) + 3 - len(failed)} calls reached their kernels ({len(set(_reached))} "
          f"kernels), {len(failed)} failed, {len(P._failures)} compile failures")
    return 1 if failed or P._failures else 0


if __name__ == "__main__":
    sys.exit(main())
