"""Check the CUDA fast launch's argument marshalling against numba-cuda's, no GPU needed.

``hrarray._kernels.cuda`` launches its compiled kernels itself (``_fast_launch``): one
marshaller per kernel argument turns device arrays and scalars into the kernel's
parameters, as numba-cuda's ``_Kernel._prepare_args`` does; and the CUDA backend passes
CuPy and other ``__cuda_array_interface__`` arrays as light launch views
(``_launch_view``), not as numba device arrays. At run time each fast entry is checked
once against numba's own marshalling of a real launch. This script checks the whole
chain here, for every kernel launch that ``tests/ptx_check.py`` drives (every op and
state dtype of its wide set, every layout, the transforms): it compiles each kernel
with the real numba-cuda compiler (the device and its context stood in for, nothing
loaded or launched); over the same made-up device memory it builds numba's own device
array and hrarray's launch view; it checks both type alike, that the dispatcher's type
key finds the compiled kernel (as ``_fast_entry`` looks it up), and that the fast
marshalling of the launch views, and numba's marshalling of them (a kernel's first
launch), give exactly the parameters numba's marshalling of its own arrays gives (value
by value, ctypes scalars byte by byte).

Usage::

    python tests/launch_check.py

Exit status: 0 every marshalling matched, 1 a mismatch (listed), 3 no libNVVM here.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import types as pytypes

if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
    sys.exit("launch_check: run without NUMBA_ENABLE_CUDASIM (the simulator compiles nothing)")
os.environ["HRARRAY_CUDA_CACHE"] = "0"  # numba's disk cache asks a real context for its key
os.environ["HRARRAY_CUDA_FAST_LAUNCH"] = "1"  # what is checked, whatever the caller's setting

_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("ptx_check", os.path.join(_HERE, "ptx_check.py"))
P = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(P)

import numba  # noqa: E402
import numba.cuda.cudadrv.devices as _devices  # noqa: E402
import numpy as np  # noqa: E402
from numba.cuda.api_util import prepare_shape_strides_dtype  # noqa: E402
from numba.cuda.cudadrv.devicearray import DeviceNDArray  # noqa: E402
from numba.cuda.typing.typeof import Purpose, typeof  # noqa: E402

import hrarray._backends.cuda as B  # noqa: E402

K = P.K


class _Module:
    initialized = True

    def setup(self):
        pass

    def get_function(self, name):
        return pytypes.SimpleNamespace(module=self, kernel=("kernel", name), name=name)


# A compiled kernel binds to the current context when it is built: a stand-in context
# whose "module image" is never run.
_ctx = pytypes.SimpleNamespace(
    device=pytypes.SimpleNamespace(compute_capability=P.CC, id=0),
    create_module_image=lambda *a: _Module(),
)
_devices.get_context = lambda *a, **k: _ctx


class _Memory:
    """A device allocation's pointer, as numba-cuda's device arrays hold one."""

    def __init__(self, ptr: int):
        self.device_ctypes_pointer = ctypes.c_void_p(ptr)


class _CudaArray:
    """A CUDA array interface producer over a made-up pointer (what CuPy shows)."""

    def __init__(self, a: np.ndarray, ptr: int):
        self.__cuda_array_interface__ = {
            "version": 3, "shape": a.shape, "typestr": a.dtype.str, "data": (ptr, False),
            "strides": None if a.flags["C_CONTIGUOUS"] else a.strides,
        }


class _CupyLike:
    """What hrarray reads of a CuPy array (its CuPy branch of _launch_view)."""

    __module__ = "cupy._core.core"

    def __init__(self, a: np.ndarray, ptr: int, strides=None):
        self.data = pytypes.SimpleNamespace(ptr=ptr)
        self.shape, self.dtype = a.shape, a.dtype
        self.strides = a.strides if strides is None else strides
        self.flags = pytypes.SimpleNamespace(c_contiguous=a.flags["C_CONTIGUOUS"])
        # CuPy's own interface: no strides when C-contiguous
        self.__cuda_array_interface__ = _CudaArray(a, ptr).__cuda_array_interface__


def _numba_from_interface(obj):
    """numba-cuda's device array for an interface, built as from_cuda_array_interface
    builds it (strides filled in for a C-contiguous one; a null pointer when empty)."""
    d = obj.__cuda_array_interface__
    shape, strides, dt = prepare_shape_strides_dtype(d["shape"], d.get("strides"),
                                                     d["typestr"], "C")
    size = int(np.prod(shape))
    return DeviceNDArray(shape, strides, dt, gpu_data=_Memory(d["data"][0] if size else 0))


def _check_views() -> list:
    """Launch views of interface and CuPy-like arrays against numba's arrays for the
    same memory, over layouts the kernels' own arguments do not show."""
    bad = []
    base = np.zeros(64, np.float64)
    cases = [
        ("1-D", base[:10], None),
        ("2-D C", base[:12].reshape(4, 3), None),
        ("2-D F", base[:12].reshape(3, 4).T, None),
        ("2-D strided", base[:24].reshape(4, 6)[:, ::2], None),
        ("(3, 1), a 0 stride on the size-1 axis", base[:3].reshape(3, 1), (8, 0)),
        ("(1, 3), a 0 stride on the size-1 axis", base[:3].reshape(1, 3), (0, 8)),
        ("broadcast (3, 4)", np.broadcast_to(base[:4], (3, 4)), None),
        ("empty (0, 3)", base[:0].reshape(0, 3), None),
        ("negative stride", base[:5][::-1], None),
        ("bool", np.zeros(5, np.bool_), None),
        ("float16", np.zeros(5, np.float16), None),
        ("complex128", np.zeros(5, np.complex128), None),
    ]
    for name, a, cupy_strides in cases:
        for kind, obj in (("interface", _CudaArray(a, 0x7F00_0000_1000)),
                          ("cupy", _CupyLike(a, 0x7F00_0000_1000, cupy_strides))):
            if kind == "interface" and cupy_strides is not None:
                continue
            ref, view = _numba_from_interface(obj), B._launch_view(obj)
            if type(view) is not B._DeviceView:
                bad.append(f"view {name} ({kind}): not a launch view")
                continue
            x, y = ref._strided_memory_view_shim, view._strided_memory_view_shim
            got = (view._numba_type_, y.ptr, y.shape, y.size, y.dtype,
                   y._layout.strides_in_bytes, y._layout.is_contiguous_c,
                   y._layout.is_contiguous_f)
            want = (ref._numba_type_, x.ptr, x.shape, x.size, x.dtype,
                    tuple(x._layout.strides_in_bytes), x._layout.is_contiguous_c,
                    x._layout.is_contiguous_f)
            if got != want:
                bad.append(f"view {name} ({kind}): {got} where numba has {want}")
            if a.ndim == 2 and min(a.shape) > 1:
                # a column slice (the kernels' column chunks of very wide rows)
                sub = view.columns(1, a.shape[1])
                ref = _numba_from_interface(
                    _CudaArray(a[:, 1:], 0x7F00_0000_1000 + a.strides[1]))
                x, y = ref._strided_memory_view_shim, sub._strided_memory_view_shim
                got = (sub._numba_type_, y.ptr, y.shape, y.size,
                       tuple(y._layout.strides_in_bytes), y._layout.is_contiguous_c)
                want = (ref._numba_type_, x.ptr, x.shape, x.size,
                        tuple(x._layout.strides_in_bytes), x._layout.is_contiguous_c)
                if got != want:
                    bad.append(f"columns of {name} ({kind}): {got} where numba has {want}")
    # non-native byte order: numba's own path (as_cuda_array, then the caller swaps)
    fallback = B._view
    B._view = lambda a: "numba's path"
    try:
        got = B._launch_view(_CudaArray(np.zeros(5, ">f8"), 0x7F00_0000_1000))
        if not isinstance(got, str):
            bad.append("view of big-endian float64: not left to numba's path")
    except Exception as e:
        bad.append(f"view of big-endian float64: {type(e).__name__}: {e}")
    finally:
        B._view = fallback
    return bad


def _both(a, ptr: int):
    """(numba's device array, hrarray's launch view) over the same memory."""
    if not isinstance(a, np.ndarray):
        return a, a
    numba_array = DeviceNDArray(a.shape, a.strides, a.dtype, gpu_data=_Memory(ptr))
    return numba_array, B._launch_view(_CudaArray(a, ptr))


def main() -> int:
    try:
        P.cuda.compile_ptx(lambda x: None, (numba.float32[:],), cc=P.CC)
    except Exception as e:  # no libNVVM on this machine
        print(f"launch_check: cannot compile here ({type(e).__name__}: {e}); nothing checked")
        return 3
    launches = []
    P._compile = lambda fn, args, what: launches.append((fn, args, what))
    for op, dts in P.QUICK.items():
        for dt in dts:
            P.check_reduction(op, dt, P.LAYOUTS, unstaged=False)
    P.check_transforms(("float32", "float16", "int8"), ("1d", "2d"))
    nd = K._fast_module()
    if nd is None:
        print("launch_check: numba-cuda's dispatcher lacks what the fast launch uses")
        return 1
    bad = _check_views()
    ok, seen = 0, set()
    for fn, args, what in launches:
        argtys = tuple(typeof(a, Purpose.argument) if isinstance(a, np.ndarray)
                       else numba.typeof(a) for a in args)
        if (id(fn), argtys) in seen:
            continue
        seen.add((id(fn), argtys))
        pairs = [_both(a, 0x7F00_0000_0000 + 4096 * i) for i, a in enumerate(args)]
        ref_args = tuple(p[0] for p in pairs)
        dev = tuple(p[1] for p in pairs)
        name = f"{what}: {fn.py_func.__name__}"
        if any(isinstance(a, np.ndarray) and type(d) is not B._DeviceView
               for a, d in zip(args, dev, strict=True)):
            bad.append(f"{name}: an array did not become a launch view")
            continue
        if any(K._argument_key(a) is None for a in dev):
            bad.append(f"{name}: an argument has no fast-launch key")
            continue
        types_ = tuple(fn.typeof_pyval(a) for a in dev)
        if types_ != tuple(fn.typeof_pyval(a) for a in ref_args):
            bad.append(f"{name}: launch views type as {types_}, numba's arrays otherwise")
            continue
        kernel = fn.compile(argtys)
        if fn.overloads.get(types_) is not kernel:
            bad.append(f"{name}: the dispatcher's type key does not find the kernel")
            continue
        ms = [K._marshaller(t) for t in kernel.argument_types]
        if any(m is None for m in ms):
            bad.append(f"{name}: no marshaller for {kernel.argument_types}")
            continue
        mine: list = []
        for m, a in zip(ms, dev, strict=True):
            m(a, mine)
        ref: list = []
        for t, a in zip(kernel.argument_types, ref_args, strict=True):
            kernel._prepare_args(t, a, 0, [], ref)
        # a kernel's first launch is numba's own, on the launch views
        first: list = []
        for t, a in zip(kernel.argument_types, dev, strict=True):
            kernel._prepare_args(t, a, 0, [], first)
        if not K._same_parameters(mine, ref):
            bad.append(f"{name}: parameters differ:\n  fast  {mine}\n  numba {ref}")
        elif not K._same_parameters(first, ref):
            bad.append(f"{name}: numba marshals the launch views otherwise:\n"
                       f"  views  {first}\n  arrays {ref}")
        else:
            ok += 1
    for b in bad:
        print("FAIL", b)
    print(f"{ok} kernel signatures marshal as numba-cuda does, {len(bad)} fail "
          f"(numba-cuda {P._version()})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
