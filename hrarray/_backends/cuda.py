"""CUDA arrays, numba-cuda kernels.

Accepted arrays: CuPy arrays, any object with ``__cuda_array_interface__``
(PyTorch CUDA tensors, numba device arrays, JAX, ...), CUDA DLPack producers,
and the numba simulator's device arrays. The backend keeps the caller's
object (zero-copy) and wraps it with ``numba.cuda.as_cuda_array`` only to
launch kernels. Results are allocated in the *input's* library: CuPy in,
CuPy out; a numba device array in, a numba device array out; a PyTorch
tensor in, a PyTorch tensor out (when torch is already imported), so no
result is ever copied between libraries.

Neither CuPy nor PyTorch is imported here: CuPy only when an operation needs
``xp`` (or allocates a CuPy result for a CuPy input), PyTorch never (its
module is used only if the caller already imported it).

Streams: kernels run on the stream named by the values' CUDA array
interface (CuPy's current stream, read under the values' device), so they are
ordered after the producer's work without a host synchronisation. PyTorch's
interface names no stream: its tensors get PyTorch's current stream
(docs/backends.md). A depth-1 reduction does not synchronise the host;
validation synchronises once (it must raise)."""

from __future__ import annotations

import sys
import threading
import zlib

import numba
import numpy as np
from numba import cuda

from hrarray._backends._detach import detach
from hrarray._backends.cpu import offsets_error
from hrarray._kernels import _codegen as cg
from hrarray._kernels import _locks
from hrarray._kernels import cuda as _kcuda
from hrarray._kernels.cuda import launch
from hrarray._ops import _value_dtype

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)
# threads per block of the small structural kernels (the simulator pays per thread)
_TPB = 32 if SIMULATOR else 128

# ------------------------------------------------------------ small kernels


@cuda.jit
def _k_first_past_int64(offsets, res):
    """res[0] = the first position of a uint64 offset past int64 (n if none)."""
    i = cuda.grid(1)
    if i < offsets.shape[0] and offsets[i] > np.uint64(0x7FFFFFFFFFFFFFFF):
        cuda.atomic.min(res, 0, np.int64(i))


@cuda.jit
def _k_first_mismatch(a, b, res):
    """res[0] = the first position where a and b differ (n if none)."""
    i = cuda.grid(1)
    if i < a.shape[0] and np.int64(a[i]) != np.int64(b[i]):
        cuda.atomic.min(res, 0, np.int64(i))


@cuda.jit
def _k_validate(offsets, limit, res):
    """res = [negative first?, first decreasing position (n if none), past end?,
    offsets[0], offsets[n - 1]] (the ends, fetched with the verdict: known
    ends spare every later compaction a host synchronisation)"""
    i = cuda.grid(1)
    n = offsets.shape[0]
    if i < n:
        v = np.int64(offsets[i])
        if i == 0:
            res[3] = v
            if v < 0:
                res[0] = 1
        if i > 0 and v < np.int64(offsets[i - 1]):
            cuda.atomic.min(res, 1, np.int64(i))
        if i == n - 1:
            res[4] = v
            if v > limit:
                res[2] = 1


@cuda.jit
def _k_diff(offsets, out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = np.int64(offsets[i + 1]) - np.int64(offsets[i])


@cuda.jit
def _k_take(a, idx, out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        j = np.int64(idx[i])
        if j < 0:
            j += a.shape[0]
        out[i] = a[j]


@cuda.jit
def _k_shift(a, lo, out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = a[i] - lo


@cuda.jit
def _k_ends(offsets, res):
    i = cuda.grid(1)
    if i == 0:
        res[0] = offsets[0]
        res[1] = offsets[offsets.shape[0] - 1]


_elementwise: dict = {}
_cast_lock = _locks.Lock()


def _elementwise_kernel(name: str, nd: int, body: str):
    """A kernel ``name(src, dst, size)`` running ``body`` for each element of an ``nd``-D
    (any strides) ``src`` and the C-contiguous ``dst`` of its shape, one thread per element;
    ``body`` reads and writes them at ``[IDX]`` (the element's index tuple). Compiled once
    per (name, nd, body)."""
    key = (name, nd, body)
    with _cast_lock:
        k = _elementwise.get(key)
        if k is not None:
            return k
        idx = ", ".join(f"i{d}" for d in range(nd))
        lines = ["    r = i\n"]
        for d in range(nd - 1, 0, -1):
            lines.append(f"    i{d} = r % src.shape[{d}]\n    r //= src.shape[{d}]\n")
        lines.append("    i0 = r\n")
        src = (
            "import numpy as np\nfrom numba import cuda\n\n"
            "@cuda.jit\n"
            f"def {name}(src, dst, size):\n"
            "    i = cuda.grid(1)\n"
            "    if i >= size:\n"
            "        return\n" + "".join(lines) + body.replace("IDX", idx)
        )
        tag = f"cuda-{name}-{nd}-{zlib.crc32(body.encode()):08x}"
        k = _elementwise[key] = getattr(cg.load_module(src, tag, {}, persistent=False), name)
        return k


def _cast_kernel(nd: int):
    """Element-wise cast/copy of an ``nd``-D (any strides) array into a
    C-contiguous one of the same shape."""
    return _elementwise_kernel("cast", nd, "    dst[IDX] = src[IDX]\n")


def _swap_kernel(nd: int, itemsize: int, unit: int):
    """Copy of an ``nd``-D (any strides) array of ``itemsize``-byte unsigned words into a
    C-contiguous one, reversing the bytes of each ``unit``-byte part (a complex number's
    two halves are swapped separately): non-native byte order to native."""
    moves = "".join(
        f"    y |= ((x >> np.uint64({8 * p})) & np.uint64(255)) << "
        f"np.uint64({8 * ((p // unit) * unit + unit - 1 - p % unit)})\n"
        for p in range(itemsize)
    )
    body = "    x = np.uint64(src[IDX])\n    y = np.uint64(0)\n" + moves + "    dst[IDX] = y\n"
    return _elementwise_kernel("swap", nd, body)


def _grid(n: int) -> int:
    return max(1, -(-n // _TPB))


# ------------------------------------------------------------ array plumbing


def _lib(a) -> str:
    """'cupy', 'torch', 'numba' (numba / simulator device arrays), or 'cai'."""
    mod = type(a).__module__ or ""
    if mod.startswith("cupy"):
        return "cupy"
    if mod.startswith("torch"):
        return "torch"
    if mod.startswith(("numba", "numba_cuda")):
        return "numba"
    return "cai"


def _is_numba(a) -> bool:
    return _lib(a) == "numba" and hasattr(a, "copy_to_host")


def _dlpack_stream() -> int:
    """numba's default stream as a DLPack consumer stream: 1 (legacy) or 2
    (per-thread, NUMBA_CUDA_PER_THREAD_DEFAULT_STREAM)."""
    try:
        from numba.cuda.core import config
    except ImportError:  # older numba-cuda: numba's own config
        config = numba.config
    return 2 if getattr(config, "CUDA_PER_THREAD_DEFAULT_STREAM", 0) else 1


class _DLPackCAI:
    """A ``__cuda_array_interface__`` view of a CUDA DLPack producer."""

    def __init__(self, obj):
        from cuda.core.utils import StridedMemoryView

        # The consumer stream, as DLPack numbers it: hrarray launches a numba
        # array's kernels on numba's default stream (legacy: 1, per-thread: 2), so
        # the producer orders its pending writes before them. -1 (no ordering) only
        # for a producer that refuses a stream.
        try:
            smv = StridedMemoryView.from_dlpack(obj, stream_ptr=_dlpack_stream())
        except Exception:  # a producer without stream support (any refusal)
            smv = StridedMemoryView.from_dlpack(obj, stream_ptr=-1)
        self._owner = obj
        self._smv = smv
        if smv.dtype is None:
            raise TypeError("DLPack tensor with a dtype NumPy cannot represent")
        dt = np.dtype(smv.dtype)
        strides = smv.strides
        self.__cuda_array_interface__ = {
            "version": 3,
            "shape": tuple(smv.shape),
            "typestr": dt.str,
            "data": (int(smv.ptr), bool(getattr(smv, "readonly", False))),
            "strides": None if strides is None else tuple(int(s) * dt.itemsize for s in strides),
            "stream": None,
        }


_detach = detach  # a PyTorch tensor that requires grad refuses __cuda_array_interface__


def _cai(a):
    try:
        return _detach(a).__cuda_array_interface__
    except AttributeError:
        return None


def _word_pairs(v, wdt):
    """``v`` (items wider than ``wdt``, any strides) as ``wdt`` words with a
    last axis of ``itemsize // wdt.itemsize``: the same memory, zero-copy."""
    if SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        # NumPy changes the item size where the last axis has length 1
        return FakeCUDAArray(v._ary[..., None].view(wdt))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    k = v.dtype.itemsize // wdt.itemsize
    return DeviceNDArray(shape=tuple(v.shape) + (k,), strides=tuple(v.strides) + (wdt.itemsize,),
                         dtype=wdt, stream=v.stream, gpu_data=v.gpu_data)


def _view(a):
    """A numba device array over ``a``'s memory (zero-copy)."""
    if _is_numba(a):
        return a
    a = _detach(a)
    if hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a, sync=False)
    raise TypeError(f"{type(a).__name__} is not a CUDA array")


def _contiguity(shape, strides, itemsize) -> tuple[bool, bool]:
    """(C, F) contiguity as numba-cuda's device arrays compute it (its
    dummyarray's _compute_layout): the numba type of a kernel argument."""
    size = 1
    for n in shape:
        size *= n
    if not shape or size == 0:
        return True, True
    if 0 in strides:
        return False, False
    c = f = True
    sd = itemsize
    for n, st in zip(reversed(shape), reversed(strides), strict=True):
        if n != 1:
            if st != sd:
                c = False
            sd *= n
    sd = itemsize
    for n, st in zip(shape, strides, strict=True):
        if n != 1:
            if st != sd:
                f = False
                break
            sd *= n
    return c, f


try:  # numba-cuda's own descriptions of a launched array (private; checked at import)
    from numba.cuda.cudadrv.devicearray import _StridedLayoutShim, _StridedMemoryViewShim
except ImportError:  # another numba-cuda: every kernel argument is a numba array
    _StridedLayoutShim = _StridedMemoryViewShim = None

_array_types: dict = {}


def _array_type(dt: np.dtype, ndim: int, layout: str):
    key = (dt, ndim, layout)
    t = _array_types.get(key)
    if t is None:
        from numba.cuda import types as nt
        from numba.cuda.np import numpy_support

        t = _array_types[key] = nt.Array(numpy_support.from_dtype(dt), ndim, layout)
    return t


class _DeviceView:
    """A kernel argument over a CUDA array's memory, made from its pointer, shape
    and strides alone: ``cuda.as_cuda_array`` costs ~27 us per array (Run 17), and
    a reduction passes three. numba-cuda types and marshals it as one of its
    device arrays: ``_numba_type_`` (the type its own array would have) and
    ``_strided_memory_view_shim`` are all its launch reads (``__cuda_memory__``
    marks device memory). ``owner`` keeps the array alive for the call."""

    __cuda_memory__ = True
    __slots__ = (
        "_numba_type_",
        "_strided_memory_view_shim",
        "dtype",
        "ndim",
        "owner",
        "shape",
        "size",
        "strides",
    )

    def __init__(self, owner, ptr: int, shape, strides, dt: np.dtype):
        self.owner = owner
        self.shape = shape
        self.strides = strides
        self.dtype = dt
        self.ndim = len(shape)
        size = 1
        for n in shape:
            size *= n
        self.size = size
        if size == 0:
            ptr = 0  # numba's own empty array holds a null pointer
        c, f = _contiguity(shape, strides, dt.itemsize)
        broadcast = size != 0 and 0 in strides
        layout = "C" if c and not broadcast else "F" if f and not broadcast else "A"
        self._numba_type_ = _array_type(dt, self.ndim, layout)
        self._strided_memory_view_shim = _StridedMemoryViewShim(
            ptr=ptr, shape=shape, dtype=dt, size=size,
            _layout=_StridedLayoutShim(strides_in_bytes=strides, is_contiguous_c=c,
                                       is_contiguous_f=f, is_contiguous_any=c or f),
        )

    def columns(self, c0: int, c1: int) -> _DeviceView:
        """Columns ``c0:c1`` of a 2-D view (``a[:, c0:c1]``, a view), for the
        kernels' column tiles (``hrarray._kernels.cuda._columns``)."""
        ptr = self._strided_memory_view_shim.ptr + c0 * self.strides[1]
        return _DeviceView(self.owner, ptr, (self.shape[0], c1 - c0), self.strides, self.dtype)


def _launch_view(a):
    """``a`` as a kernel argument: a numba device array as it is, a CuPy array or
    other ``__cuda_array_interface__`` producer as a :class:`_DeviceView`;
    ``_view`` under the simulator (its kernels index real arrays), for masked
    interfaces, where numba-cuda lacks the shims, and with the fast launch off
    (``HRARRAY_CUDA_FAST_LAUNCH=0``: every launch as numba-cuda's own)."""
    if SIMULATOR or not _kcuda.FAST_LAUNCH or _StridedMemoryViewShim is None or _is_numba(a):
        return _view(a)
    if _lib(a) == "cupy":
        # what CuPy's interface says: no strides when C-contiguous (CuPy ignores
        # size-1 dimensions there, so x[:, None] may carry a 0 stride that numba
        # would see as a broadcast), for the layout numba's own array gets
        dt = a.dtype
        shape = a.shape
        strides = _c_strides(shape, dt.itemsize) if a.flags.c_contiguous else a.strides
        ptr = a.data.ptr
    else:
        cai = _cai(a)
        if cai is None or cai.get("mask") is not None:
            return _view(a)
        dt = np.dtype(cai["typestr"])
        shape = tuple(int(n) for n in cai["shape"])
        strides = cai.get("strides")
        if strides is None:
            strides = _c_strides(shape, dt.itemsize)
        else:
            strides = tuple(int(x) for x in strides)
        ptr = int(cai["data"][0])
    if not dt.isnative:
        # numba types a non-native array only when it is launched (as_cuda_array
        # succeeds and the caller then swaps it): keep its path
        return _view(a)
    return _DeviceView(a, ptr, shape, strides, dt)


def _c_strides(shape, itemsize: int) -> tuple:
    st, acc = [], itemsize
    for n in reversed(shape):
        st.append(acc)
        acc *= n
    return tuple(reversed(st))


def _stream_of(a):
    """The stream that orders work on ``a`` (from its CUDA array interface)."""
    if SIMULATOR:
        return 0
    lib = _lib(a)  # (once: _is_numba would compute it again)
    if lib == "numba" and hasattr(a, "copy_to_host"):
        return getattr(a, "stream", 0) or 0
    if lib == "torch" and sys.modules.get("torch") is not None:
        # PyTorch's interface names no stream, but its caching allocator gives
        # results and temporaries on its current stream: run there too, so that
        # they are not reused, nor read by the caller, before the kernels finish
        ptr = sys.modules["torch"].cuda.current_stream(a.device).cuda_stream
        return cuda.external_stream(ptr) if ptr else 0
    cai = _cai(a)
    ptr = cai.get("stream") if cai else None
    if ptr is None or ptr == 0:
        return 0
    if ptr == 1:
        return cuda.legacy_default_stream()
    if ptr == 2:
        return cuda.per_thread_default_stream()
    return cuda.external_stream(ptr)


def _stream_key(stream):
    """What a scratch buffer is shared on: the stream's handle, and for the
    default-stream handles (0, and 2 = per-thread) also the calling thread,
    since under per-thread default streams (CuPy's or numba's setting) the same
    handle is a different stream in each thread, whose kernels would run
    concurrently over one buffer."""
    if isinstance(stream, int):
        key = stream
    else:
        h = getattr(stream, "handle", None)
        v = getattr(h, "value", h)
        try:
            key = int(v) if v is not None else 0
        except TypeError:
            return id(stream)
    if key in (0, 2):
        return (key, threading.get_ident())
    return key


def _device_ctx(a):
    """A context manager selecting ``a``'s device for numba launches."""
    import contextlib

    if SIMULATOR:
        return contextlib.nullcontext()
    dev = None
    lib = _lib(a)
    if lib == "cupy":
        dev = a.device.id
    elif lib == "torch":
        dev = a.device.index
    if dev is None:
        return contextlib.nullcontext()
    cur = cuda.get_current_device().id
    if dev == cur:
        return contextlib.nullcontext()
    return cuda.gpus[dev]


def _empty(like, shape, dtype, stream):
    """A new C-contiguous array in ``like``'s array library."""
    dtype = np.dtype(dtype)
    lib = _lib(like)
    if lib == "cupy":
        import cupy

        with cupy.cuda.Device(like.device.id):
            return cupy.empty(shape, dtype)
    if lib == "torch":
        torch = sys.modules.get("torch")
        if torch is not None:
            try:
                tdt = getattr(torch, dtype.name) if dtype != np.bool_ else torch.bool
            except AttributeError:
                tdt = None
            if tdt is not None:
                return torch.empty(shape, dtype=tdt, device=like.device)
    return cuda.device_array(shape, dtype, stream=stream)


# ------------------------------------------------------------ the backend


class CudaBackend:
    name = "cuda"

    @property
    def xp(self):
        """CuPy (imported on first use); a TypeError without it."""
        try:
            import cupy
        except ImportError as exc:
            raise TypeError(
                "this operation on CUDA arrays needs CuPy (pip install cupy-cuda12x or "
                "cupy-cuda13x); reductions work on any CUDA array without it"
            ) from exc
        return cupy

    def xpa(self, a):
        """``a`` as a CuPy array over the same memory (zero-copy, through its CUDA array
        interface): the structural operations index, compare and sum with CuPy, whose
        functions take no numba device array or other producer."""
        xp = self.xp
        if isinstance(a, xp.ndarray):
            return a
        return xp.asarray(_detach(a))

    # ------------------------------------------------------------ inputs
    def asarray(self, obj, argname: str):
        """The caller's CUDA array as it is (zero-copy); DLPack-only
        producers become numba device arrays (also zero-copy)."""
        from hrarray._backends import device_of, gpu_of

        if device_of(obj) != "cuda":
            raise TypeError(
                f"{argname} is a {type(obj).__name__} on the host but the array is on cuda; "
                "hrarray never copies between devices (move it explicitly)"
            )
        obj = _detach(obj)  # kept detached: every later interface read works
        if _is_numba(obj):
            return obj
        if hasattr(obj, "__cuda_array_interface__"):
            if all(hasattr(obj, a) for a in ("shape", "ndim", "dtype")):
                return obj
            # a bare producer (the interface and nothing else): a numba view of it
            try:
                return cuda.as_cuda_array(obj, sync=False)
            except Exception as exc:
                raise TypeError(f"{argname}: cannot view {type(obj).__name__} as a CUDA array "
                                f"through its __cuda_array_interface__: {exc}") from exc
        if hasattr(obj, "__dlpack__"):
            gpu = gpu_of(obj)
            cur = 0 if SIMULATOR else cuda.get_current_device().id
            if gpu is not None and gpu != cur:
                # its numba view would belong to the current GPU's context, and
                # the kernels would run there
                raise TypeError(
                    f"{argname}: a {type(obj).__name__} on GPU {gpu} reaches hrarray only "
                    f"by DLPack, which names no context: make GPU {gpu} the current device "
                    f"first (`with numba.cuda.gpus[{gpu}]:` around building the array and "
                    "every call on it)")
            try:
                return cuda.as_cuda_array(_DLPackCAI(obj), sync=False)
            except Exception as exc:
                raise TypeError(f"{argname}: cannot view DLPack producer {type(obj).__name__} "
                                f"as a CUDA array: {exc}") from exc
        raise TypeError(f"{argname} must be a CUDA array, got {type(obj).__name__}")

    def dtype(self, a) -> np.dtype:
        dt = getattr(a, "dtype", None)
        if isinstance(dt, np.dtype):
            return dt
        cai = _cai(a)
        if cai is not None:
            return np.dtype(cai["typestr"])
        return np.dtype(dt)

    def is_native(self, a) -> bool:
        return self.dtype(a).isnative

    def astype(self, a, dtype):
        """A C-contiguous copy of ``a`` in native byte order ``dtype``, in
        ``a``'s array library (a device kernel: no CuPy needed)."""
        dtype = np.dtype(dtype).newbyteorder("=")
        src = self._readable(a)
        with _device_ctx(a):
            stream = _stream_of(a)
            out = _empty(a, tuple(src.shape), dtype, stream)
            n = int(np.prod(src.shape)) if src.ndim else 1
            if n:
                k = _cast_kernel(max(src.ndim, 1))
                launch(k, _grid(n), _TPB, stream, (src, _view(out), n))
        return out

    def _readable(self, a):
        """A numba view a kernel can read: non-native byte order is swapped
        into a native copy (the one documented copy; API.md section 2)."""
        v = _view(a)
        if v.dtype.isnative:
            return v
        dt = v.dtype
        native = dt.newbyteorder("=")
        unit = dt.itemsize // 2 if dt.kind == "c" else dt.itemsize
        word = min(dt.itemsize, 8)  # the swap kernel moves unsigned words of up to 8 bytes
        with _device_ctx(a):
            stream = _stream_of(a)
            out = _empty(a, tuple(v.shape), native, stream)
            n = int(np.prod(v.shape)) if v.ndim else 1
            if n:
                wdt = np.dtype(f"u{word}")
                nw = n * (dt.itemsize // word)
                if dt.itemsize > word and not _c_contiguous(v):
                    # strided complex128: each number as its 8-byte words, a last axis
                    # (view() changes the item size of C-contiguous arrays only)
                    src, dst = _word_pairs(v, wdt), _view(out).view(wdt).reshape(
                        tuple(v.shape) + (dt.itemsize // word,))
                else:
                    src, dst = v.view(wdt), _view(out).view(wdt)
                launch(_swap_kernel(max(src.ndim, 1), word, min(unit, word)), _grid(nw), _TPB,
                       stream, (src, dst, nw))
        return _view(out)

    # ------------------------------------------------------------ offsets
    def first_past_int64(self, offsets):
        """``(position, value)`` of the first uint64 offset past int64's range,
        or None: checked before the conversion to int64, in which it would wrap
        negative on a GPU (and overflow under the simulator)."""
        src = self._readable(offsets)  # native byte order
        n = src.shape[0]
        with _device_ctx(offsets):
            stream = _stream_of(offsets)
            res = cuda.to_device(np.array([n], np.int64), stream=stream)
            launch(_k_first_past_int64, _grid(n), _TPB, stream, (src, res))
            k = int(_fetch(res, stream)[0])
        if k >= n:
            return None
        return k, int(_HostReader(src, offsets)[k])

    def first_mismatch(self, a, b):
        """First position where the equal-length integer arrays ``a`` and ``b``
        differ, or None: compared on the device (one host synchronisation; it
        copied both arrays to the host)."""
        n = a.shape[0]
        with _device_ctx(a):
            stream = _stream_of(a)
            res = cuda.to_device(np.array([n], np.int64), stream=stream)
            if n:
                launch(_k_first_mismatch, _grid(n), _TPB, stream,
                       (self._readable(a), self._readable(b), res))
            k = int(_fetch(res, stream)[0])
        return k if k < n else None

    def validate(self, offsets, limit: int, argname: str, what: str = "values"):
        n = offsets.shape[0]
        v = _view(offsets)
        with _device_ctx(offsets):
            stream = _stream_of(offsets)
            res = cuda.to_device(np.array([0, n, 0, 0, 0], np.int64), stream=stream)
            launch(_k_validate, _grid(n), _TPB, stream, (v, np.int64(limit), res))
            host = _fetch(res, stream)
        if host[0]:
            code, pos = 1, 0
        elif host[1] < n:
            code, pos = 2, int(host[1])
        elif host[2]:
            code, pos = 3, n - 1
        else:
            return int(host[3]), int(host[4])
        raise offsets_error(code, pos, _HostReader(v, offsets), limit, argname, what)

    def diff(self, offsets):
        n = max(offsets.shape[0] - 1, 0)
        with _device_ctx(offsets):
            stream = _stream_of(offsets)
            out = _empty(offsets, (n,), np.int64, stream)
            if n:
                launch(_k_diff, _grid(n), _TPB, stream, (_view(offsets), _view(out)))
        return out

    def take(self, a, idx):
        """``a[idx]`` for a 1-D ``a`` and in-range integer ``idx`` (negative
        counts from the end); the indices are trusted (validated offsets)."""
        n = idx.shape[0]
        with _device_ctx(a):
            stream = _stream_of(a)
            out = _empty(a, (n,), self.dtype(a), stream)
            if n:
                launch(_k_take, _grid(n), _TPB, stream, (_view(a), _view(idx), _view(out)))
        return out

    def shift(self, a, lo: int):
        n = a.shape[0]
        dt = self.dtype(a)
        with _device_ctx(a):
            stream = _stream_of(a)
            out = _empty(a, (n,), dt, stream)
            if n:
                launch(_k_shift, _grid(n), _TPB, stream, (_view(a), dt.type(lo), _view(out)))
        return out

    def concatenate(self, arrays):
        """The arrays joined along axis 0 (same trailing shape and dtype), in
        the first array's library; a device copy kernel, so no CuPy needed."""
        arrays = list(arrays)
        first = arrays[0]
        dt = self.dtype(first)
        inner = tuple(first.shape[1:])
        n = sum(int(a.shape[0]) for a in arrays)
        with _device_ctx(first):
            stream = _stream_of(first)
            out = _empty(first, (n, *inner), dt, stream)
            ov = _view(out)
            pos = 0
            for a in arrays:
                v = _view(a)
                if tuple(v.shape[1:]) != inner or v.dtype != dt:
                    raise ValueError(
                        f"cannot concatenate {v.dtype}{tuple(v.shape)} with {dt}{(n, *inner)}"
                    )
                k = int(v.shape[0])
                size = k * (int(np.prod(inner)) if inner else 1)
                if size:
                    launch(_cast_kernel(max(v.ndim, 1)), _grid(size), _TPB, stream,
                           (v, ov[pos : pos + k], size))
                pos += k
        return out

    def ends(self, offsets, known=None) -> tuple[int, int]:
        """``(offsets[0], offsets[-1])``: ``known`` where given (validation
        fetched them, or the offsets are compact by construction), else read
        from the device (a host synchronisation)."""
        if known is not None:
            return known
        with _device_ctx(offsets):
            stream = _stream_of(offsets)
            res = cuda.device_array(2, np.int64, stream=stream)
            launch(_k_ends, 1, 32, stream, (_view(offsets), res))
            host = _fetch(res, stream)
        return int(host[0]), int(host[1])

    # ------------------------------------------------------------ kernels
    def reduce(self, spec, values, offsets, fill, use_fill, aux=None):
        """Run the reduction of ``spec`` over validated offsets; dense result
        in ``values``' array library, asynchronous on ``values``' stream.

        ``aux`` is the per-element auxiliary 1-D array of a declaration with
        ``decl.aux`` (``map(v, aux[j], j)``; any strides, same length as
        ``values``)."""
        from hrarray._kernels.cuda import get_kernel

        nseg = offsets.shape[0] - 1
        inner = tuple(values.shape[1:])
        m = int(np.prod(inner)) if inner else 1
        out_dt = np.dtype(spec.out_dtype)
        with _device_ctx(values):
            stream = _stream_of(values)
            kv = self._kernel_view(values, spec.value_dtype)
            out = _empty(values, (nseg, m) if kv.ndim == 2 else (nseg,), out_dt, stream)
            fill_v = out_dt.type(fill) if use_fill else out_dt.type(0)
            if nseg:
                key = self._scratch_key(stream)
                if spec.decl.aux:
                    if aux is None:
                        raise TypeError("this reduction needs an auxiliary array (aux=)")
                    aux = _view(aux)
                get_kernel(spec.decl, value_dtype=kv.dtype).run(
                    kv, _launch_view(offsets), _launch_view(out), fill_v, bool(use_fill),
                    aux=aux, stream=stream, scratch_key=key,
                )
        return out.reshape((nseg, *inner))

    # ------------------------------------------------------------ transforms
    # The kernel kinds of hrarray.transforms (see hrarray._kernels.cpu_transforms
    # for their meaning); same schedule as the reductions.
    def reduce_aux(self, spec, values, offsets, aux, fill, use_fill):
        """A reduction whose map reads ``aux[j]`` next to ``values[j]``; ``aux``
        ``(n,)`` gives ``(nseg, *inner)``, ``(n, h)`` gives ``(nseg, h, *inner)``
        (one pass per head over a strided column of ``aux``)."""
        from hrarray._kernels.cuda import get_kernel

        nseg = offsets.shape[0] - 1
        inner = tuple(values.shape[1:])
        out_dt = np.dtype(spec.out_dtype)
        with _device_ctx(values):
            stream = _stream_of(values)
            kv = self._kernel_view(values, spec.value_dtype)
            w = _view(aux)
            adt = _value_dtype(w.dtype.newbyteorder("="))  # '>f2' too: float32
            if w.dtype != adt:
                w = _view(self.astype(w, adt))
            heads = None if w.ndim == 1 else w.shape[1]
            cols = (kv.shape[1],) if kv.ndim == 2 else ()
            hshape = (heads,) if heads is not None else ()
            out = _empty(values, (nseg, *hshape, *cols), out_dt, stream)
            fill_v = out_dt.type(fill) if use_fill else out_dt.type(0)
            if nseg and (heads is None or heads > 0):
                kern = get_kernel(spec.decl, value_dtype=kv.dtype)
                ov = _view(out)
                key = self._scratch_key(stream)
                if heads is None:
                    kern.run(kv, _launch_view(offsets), ov, fill_v, bool(use_fill), aux=w,
                             stream=stream, scratch_key=key)
                else:
                    o = _view(offsets)
                    for h in range(heads):
                        kern.run(kv, o, ov[:, h], fill_v, bool(use_fill), aux=w[:, h],
                                 stream=stream, scratch_key=key)
        return out.reshape((nseg, *hshape, *inner))

    def segment_map(self, mdecl, values, offsets, per_segment, ends=None):
        """``out[j] = fn(values[j], per_segment[i])`` over segment ``i``
        (``fn(per_segment[i])`` when the map does not read the values);
        compact ``(nvalues, *inner)`` in the library of ``per_segment``; ``ends``:
        the offsets' ends where the caller knows them (else a host read)."""
        from hrarray._kernels.cuda import get_kernel

        lo, hi = self.ends(offsets, ends)
        nvals = hi - lo
        inner = tuple(per_segment.shape[1:])
        m = int(np.prod(inner)) if inner else 1
        like = values if values is not None else per_segment
        with _device_ctx(like):
            stream = _stream_of(like)
            per = _view(per_segment)
            out_dt = np.dtype(mdecl.out_dtype)
            if not per.dtype.isnative:
                per = _view(self.astype(per, per.dtype))
            if per.ndim > 2:
                if not _c_contiguous(per):
                    per = _view(self.astype(per, per.dtype))
                per = per.reshape(per.shape[0], m)
            out = _empty(like, (nvals, m) if per.ndim == 2 else (nvals,), out_dt, stream)
            kv = None
            if mdecl.reads_values:
                kv = self._kernel_view(values, mdecl.value_dtype)
            if nvals and m:
                get_kernel(mdecl, "map").run(kv, _launch_view(offsets), per, _launch_view(out),
                                             stream=stream,
                                             scratch_key=self._scratch_key(stream))
        return out.reshape((nvals, *inner))

    def segment_scan(self, spec, values, offsets, exclusive, ends=None):
        """Running state of ``spec.decl`` restarting at each segment: compact
        ``(nvalues, *inner)`` of ``spec.out_dtype``; ``ends`` as segment_map's."""
        from hrarray._kernels.cuda import get_kernel

        lo, hi = self.ends(offsets, ends)
        nvals = hi - lo
        inner = tuple(values.shape[1:])
        with _device_ctx(values):
            stream = _stream_of(values)
            kv = self._kernel_view(values, spec.value_dtype)
            out = _empty(values, (nvals, *kv.shape[1:]), spec.out_dtype, stream)
            if nvals:
                get_kernel(spec.decl, "scan").run(
                    kv, _launch_view(offsets), _launch_view(out), bool(exclusive), stream=stream,
                    scratch_key=self._scratch_key(stream))
        return out.reshape((nvals, *inner))

    def _scratch_key(self, stream):
        # the context's generation, not the device number: see _kernels.cuda._scratch_for
        ctx = 0 if SIMULATOR else _kcuda.context_key()
        return (ctx, _stream_key(stream))

    def _kernel_view(self, values, value_dtype):
        """The numba array a kernel reads: 1-D, or 2-D rows ``(n, m)``.

        Strided values are read in place. Copies happen only for float16
        (read as float32), non-native byte order, and an inner shape of 2+
        dimensions that is not C-contiguous (made contiguous, then viewed as
        rows).
        """
        v = _launch_view(values)
        if v.dtype == value_dtype and v.dtype.isnative and v.ndim <= 2:
            return v  # the common case: no numba array made
        # copies of CuPy input come from CuPy's pool, stream-ordered on the stream
        # the kernel runs on (numba's allocator's deferred frees can synchronise
        # the device); others from numba's (a temporary of PyTorch's caching
        # allocator is freed at once; numba's are not reused while a kernel may
        # still read them). The view keeps its copy alive.
        v = _view(values)
        src = values if _lib(values) == "cupy" else v
        if v.dtype != value_dtype or not v.dtype.isnative:
            src = self.astype(src, value_dtype)
            v = _view(src)
        if v.ndim <= 2:
            return v
        if not _c_contiguous(v):
            v = _view(self.astype(src, v.dtype))
        return v.reshape(v.shape[0], int(np.prod(v.shape[1:])))

    def to_host(self, a):
        # under a's device: its stream (CuPy's is per device) and the copy's context
        with _device_ctx(a):
            v = _view(a)
            if not _c_contiguous(v):
                v = _view(self.astype(v, v.dtype))
            return _fetch(v, _stream_of(a))


def _fetch(v, stream):
    """Copy a (contiguous) numba device array to the host after the work
    queued on ``stream``: the one host synchronisation."""
    if SIMULATOR or isinstance(stream, int):
        return v.copy_to_host()  # synchronous on the default stream
    out = v.copy_to_host(stream=stream)
    stream.synchronize()
    return out


def _c_contiguous(v) -> bool:
    flags = getattr(v, "flags", None)
    if flags is not None:
        try:
            return bool(flags["C_CONTIGUOUS"])
        except (KeyError, TypeError):
            pass
    return bool(getattr(v, "is_c_contiguous", lambda: False)())


class _HostReader:
    """Reads single offsets from the device for error messages (error path only),
    under the device of ``owner`` (the caller's array ``v`` views)."""

    def __init__(self, v, owner=None):
        self._v = v
        self._owner = v if owner is None else owner

    def __getitem__(self, i):
        with _device_ctx(self._owner):
            return self._v[i : i + 1].copy_to_host()[0]


CUDA = CudaBackend()
