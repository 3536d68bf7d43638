"""Disk-cached CPU kernels called without Numba's dispatcher (the warm start).

Why
---
The first call of a disk-cached ``@numba.njit`` function in a fresh process
costs ~0.65 s on the development VM before any work is done: ``import numba``
(~0.3 s), then Numba's typing and target contexts (~0.35 s), which also run
every installed package's ``numba_extensions`` hook (awkward's imports all of
awkward, another ~0.3 s). That is paid again by every script, CLI and worker.

What this does
--------------
For each kernel function and argument types, the first process that calls it
compiles a small *entry*: a ``@njit`` wrapper taking the arrays as
``PyObject*`` (it reads NumPy's ``PyArrayObject`` fields itself) and the
scalars as C values, calling the kernel. Its optimised LLVM module (wrapper
and kernel, linked) is emitted as an ELF object with every function but the
wrapper made internal, and stored next to the generated kernel module with
the list of symbols it needs from the process (the kernel is compiled for
that object only: Numba emits no machine code of its own for it; see
``_kernel_module``). Later processes load that object into one llvmlite
MCJIT engine (``import llvmlite.binding``: ~0.05 s, Numba itself is not
imported) and call the wrapper through ``ctypes``, which releases the GIL
like the ``nogil`` kernels do.

Safety
------
- An entry is keyed by the generated module's name (a hash of its source,
  the declaration key, hrarray's kernel sources and Numba's version), the
  function, the argument types, the llvmlite version and the host CPU's name
  and features; its object bytes carry a SHA-256 checked before loading, and
  its header the entry's name, checked against the file it is read from.
- An entry is used only if every undefined symbol of its object resolves in
  this process (libc, libm, the CPython API). Kernels that allocate (Numba's
  runtime) are marked unusable and keep the dispatcher path. Nothing is
  added to LLVM's process-wide symbol table: the one runtime symbol a
  kernel names without reaching it is defined inside its object.
- The ``PyArrayObject`` field offsets are checked against a probe array once
  per process; any mismatch (or a non-Linux, non-64-bit-little-endian
  platform, or ``HRARRAY_NATIVE=0``) turns the whole path off.
- Anything unexpected while building or loading falls back to calling the
  Numba dispatcher, which gives the same results (the same kernel code).
"""

from __future__ import annotations

import ctypes
import hashlib
import inspect
import json
import os
import struct
import sys
import threading
from pathlib import Path

import numpy as np

from hrarray._kernels import _locks

MAGIC = b"HRN1\n"
_lock = _locks.RLock()
_engine = None  # None: not started; False: off in this process
# every engine ever started: loaded code must outlive the entries calling it
# (tests swap engines; an engine freed under a cached entry would crash)
_keep: list = []
# Numba runtime symbols a kernel's object may name without reaching them:
# the destructor call inside an inlined decref, only taken for arrays that
# own a Numba allocation (ours are views of NumPy memory: meminfo NULL). The
# object defines them itself, as internal functions that trap (_stub_module).
# They were once bound at load time with llvm.add_symbol(name, abort), which
# is process-wide: a load between Numba's registering its runtime symbols and
# compiling its runtime module linked Numba's own decref to abort(), and the
# process died at the first destructor (a helper's audit: 6 runs of 11 with
# 32 threads on a warm cache, SIGABRT).
_STUB_SYMBOLS = ("NRT_MemInfo_call_dtor",)
# callconv.py: RETCODE_OK = 0, RETCODE_NONE = -2 (a function returning None)
_OK_STATUS = (0, -2)
# entries built (and the seconds that took beyond compiling the kernel) and
# loaded in this process: the test suite reports them (compile time rules it)
stats = {"built": 0, "build_s": 0.0, "loaded": 0}


def enabled() -> bool:
    v = os.environ.get("HRARRAY_NATIVE", "1").strip().lower()
    return v not in {"0", "false", "no", "off"}


def _platform_ok() -> bool:
    return (
        sys.platform.startswith("linux")
        and struct.calcsize("P") == 8
        and sys.byteorder == "little"
    )


class _Engine:
    """One MCJIT engine holding every loaded entry of this process."""

    def __init__(self):
        import llvmlite
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        self.llvm = llvm
        tm = llvm.Target.from_default_triple().create_target_machine()
        self.ee = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
        self.head = _array_field_base()
        features = llvm.get_host_cpu_features().flatten()
        self.host = hashlib.sha256(
            "|".join(
                (llvmlite.__version__, llvm.get_host_cpu_name(), features,
                 sys.implementation.cache_tag, str(self.head))
            ).encode()
        ).hexdigest()[:16]

    def resolvable(self, name: str) -> bool:
        # Numba's helpers are registered with LLVM only once Numba is
        # imported: never counted on. Otherwise LLVM's own process-wide
        # lookup, the one MCJIT resolves with (an unresolved symbol there is
        # a fatal error, not an exception).
        if name.startswith(("NRT_", "numba_")):
            return False
        return self.llvm.address_of_symbol(name) is not None

    def loadable(self, undefined: list[str]) -> bool:
        """Whether an object naming these undefined symbols can be loaded
        (nothing is ever added to LLVM's process-wide symbol table)."""
        return all(self.resolvable(n) for n in undefined)

    def load(self, obj: bytes, symbol: str, undefined: list[str]) -> int | None:
        if not self.loadable(undefined):
            return None
        self.ee.add_object_file(self.llvm.ObjectFileRef.from_data(obj))
        self.ee.finalize_object()
        addr = self.ee.get_function_address(symbol)
        stats["loaded"] += 1
        return addr or None


def _array_field_base() -> int:
    """Offset of ``PyArrayObject.data`` (``nd``, ``dimensions`` and
    ``strides`` follow at +8, +16, +24), checked on a probe array; raises
    where NumPy's struct is laid out otherwise."""
    head = object.__basicsize__
    a = np.zeros((3, 5), np.int16)[:, ::2]
    base = id(a)
    vp = ctypes.c_void_p.from_address
    ok = (
        vp(base + head).value == a.ctypes.data
        and ctypes.c_int.from_address(base + head + 8).value == a.ndim
        and list((ctypes.c_int64 * 2).from_address(vp(base + head + 16).value)) == list(a.shape)
        and list((ctypes.c_int64 * 2).from_address(vp(base + head + 24).value)) == list(a.strides)
    )
    if not ok:
        raise RuntimeError("unexpected PyArrayObject layout")
    return head


def engine():
    """The process's engine, or None where the native path is off."""
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                try:
                    if not (enabled() and _platform_ok()):
                        raise RuntimeError("off")
                    _engine = _Engine()
                    _keep.append(_engine)
                except Exception:  # no llvmlite, odd platform: the dispatcher path
                    _engine = False
    return _engine or None


# ------------------------------------------------------------------ arg types

_INT_CODES = {np.dtype(t).char for t in (np.int8, np.int16, np.int32, np.int64,
                                          np.uint8, np.uint16, np.uint32, np.uint64)}
_ARRAY_DTYPES = {np.dtype(t) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64,
                                        np.uint8, np.uint16, np.uint32, np.uint64,
                                        np.float32, np.float64, np.complex64, np.complex128)}


_C_ALIGNED = 0x1 | 0x100  # NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED
_SCALARS = {bool: "?", np.bool_: "?", int: "q", float: "d", complex: "D"}
_SCALARS.update({np.dtype(c).type: c for c in _INT_CODES | {"f", "d", "F", "D"}})


def call_key(args) -> tuple:
    """The cheap per-call key of the arguments: ``(dtype, ndim, flags)`` for
    an array, the type of anything else (checked once, by ``arg_key``)."""
    return tuple([(a.dtype, a.ndim, a.flags.num & _C_ALIGNED) if type(a) is np.ndarray
                  else type(a) for a in args])


def arg_key(k):
    """One element of a ``call_key`` as the entry is specialised on, or None
    where the native path does not take it."""
    if isinstance(k, tuple):
        dt, ndim, flags = k
        # unaligned arrays: Numba types them apart (LLVM may assume alignment)
        if dt not in _ARRAY_DTYPES or not dt.isnative or not flags & 0x100:
            return None
        return ("a", dt.char, ndim, bool(flags & 0x1))
    return _SCALARS.get(k)


def _numba_type(k):
    from numba import types
    from numba.np.numpy_support import from_dtype

    if isinstance(k, tuple):
        _, char, ndim, c = k
        return types.Array(from_dtype(np.dtype(char)), ndim, "C" if c else "A")
    if k == "?":
        return types.boolean
    return from_dtype(np.dtype(k))


# ------------------------------------------------------------------ building

def _array_value(context, builder, aty, obj, head: int):
    """IR building an array of Numba type ``aty`` from ``obj``, a
    ``PyObject*`` to a NumPy array of that type: a view (no reference taken,
    meminfo NULL), valid while the caller holds the array."""
    from llvmlite import ir
    from numba.core import types
    from numba.np.arrayobj import populate_array

    i64 = ir.IntType(64)
    p64 = i64.as_pointer()
    base = builder.ptrtoint(obj, i64)

    def word(addr, off):
        return builder.load(builder.inttoptr(builder.add(addr, i64(off)), p64))

    dims = word(base, head + 16)
    strides = word(base, head + 24)
    ary = context.make_array(aty)(context, builder)
    dty = context.get_data_type(aty.dtype)
    populate_array(
        ary,
        data=builder.inttoptr(word(base, head), dty.as_pointer()),
        shape=[word(dims, 8 * d) for d in range(aty.ndim)],
        strides=[word(strides, 8 * d) for d in range(aty.ndim)],
        itemsize=context.get_constant(types.intp, context.get_abi_sizeof(dty)),
        meminfo=None,
    )
    return ary._getvalue()


def _build(dispatcher, keys, name: str, head: int):
    """Compile ``dispatcher`` for argument ``keys`` and an entry ``name``
    calling it with C arguments; returns (object bytes, undefined symbols).

    The entry is written in LLVM IR against Numba's calling convention and
    linked with the kernel's optimised module; one object is emitted from
    that (no second optimisation of the kernel: the entry only unpacks its
    arguments and makes one call)."""
    import time

    import llvmlite.binding as llvm
    from llvmlite import ir
    from numba.core import types
    from numba.core.errors import TypingError

    argtys = tuple(_numba_type(k) for k in keys)
    try:
        cres, kmod = _kernel_module(dispatcher, argtys)
    except TypingError:  # (the dispatcher would fail the same way)
        raise
    except Exception:  # Numba's internals otherwise than expected: the long way
        dispatcher.compile(argtys)
        cres = dispatcher.overloads[argtys]
        kmod = cres.library._get_module_for_linking()
    t0 = time.perf_counter()
    ctx = cres.target_context
    lib = cres.library
    i64 = ir.IntType(64)
    wmod = ctx.create_module(name)
    # one parameter: the packed arguments, 8 bytes each (see _caller)
    fn = ir.Function(wmod, ir.FunctionType(ir.IntType(32), [ir.IntType(8).as_pointer()]), name)
    builder = ir.IRBuilder(fn.append_basic_block())
    base = builder.ptrtoint(fn.args[0], i64)

    def slot(i, ty):
        return builder.load(builder.inttoptr(builder.add(base, i64(8 * i)), ty.as_pointer()))

    vals = []
    i = 0  # the slot: complex values take two
    for k, t in zip(keys, argtys, strict=True):
        if isinstance(k, tuple):
            obj = builder.inttoptr(slot(i, i64), ir.IntType(8).as_pointer())
            vals.append(_array_value(ctx, builder, t, obj, head))
        elif k == "?":
            vals.append(builder.icmp_unsigned("!=", slot(i, ir.IntType(8)), ir.IntType(8)(0)))
        elif k in "fd":
            d = slot(i, ir.DoubleType())  # packed as a double; a float32 value is exact
            vals.append(builder.fptrunc(d, ir.FloatType()) if k == "f" else d)
        elif k in "FD":
            z = ctx.make_complex(builder, t)
            re, im = slot(i, ir.DoubleType()), slot(i + 1, ir.DoubleType())
            if k == "F":  # packed as doubles; a complex64's parts are exact
                re, im = builder.fptrunc(re, ir.FloatType()), builder.fptrunc(im, ir.FloatType())
            z.real, z.imag = re, im
            vals.append(z._getvalue())
            i += 1
        else:
            src = types.uint64 if np.dtype(k).kind == "u" else types.int64
            vals.append(ctx.cast(builder, slot(i, i64), src, t))
        i += 1
    restype = cres.signature.return_type
    callee = ir.Function(wmod, ctx.call_conv.get_function_type(restype, argtys),
                         cres.fndesc.mangled_name)
    status, _ = ctx.call_conv.call_function(builder, callee, restype, argtys, vals)
    builder.ret(status.code)
    mod = llvm.parse_assembly(str(wmod))
    mod.link_in(kmod, preserve=True)
    stubs = _stub_module(ctx, mod)
    if stubs is not None:
        mod.link_in(stubs)
    # every definition but the entry internal: entries never resolve each
    # other's symbols (Numba's mangled names carry per-process counters, so
    # two processes may give different functions the same name)
    for f in mod.functions:
        if not f.is_declaration and f.name != name:
            f.linkage = "internal"
    for gv in mod.global_variables:
        if not gv.is_declaration:
            gv.linkage = "internal"
    mod.verify()
    obj = lib.codegen._tm.emit_object(mod)
    stats["built"] += 1
    stats["build_s"] += time.perf_counter() - t0
    return obj, undefined_symbols(obj)


def _kernel_module(dispatcher, argtys):
    """The kernel's compile result for ``argtys`` and its optimised LLVM
    module (its callees linked in), compiled without machine code.

    Through ``dispatcher.compile`` Numba emits the kernel's machine code for
    its own engine (and writes its disk cache), which the entry, whose object
    holds the kernel's code again, never calls: ~0.2 s per signature of a
    ~2 s cold compile. This runs the dispatcher's own pipeline, flags and
    locals with ``no_compile`` (nor the CPython and cfunc wrappers, which
    the entry does not call), then what ``CPUCodeLibrary.finalize`` does
    before it hands the module to the engine: link the callees' libraries,
    optimise the module. The dispatcher gains no overload; a later
    dispatcher call (where the entry cannot run) compiles as it would have.
    Raises where Numba's internals differ (``_build`` then compiles through
    the dispatcher).
    """
    from numba.core import compiler
    from numba.core.compiler_lock import global_compiler_lock

    from hrarray._kernels._typing_memo import call_type_memo

    fc = dispatcher._compiler
    # each (function, argument types) typed once (_typing_memo)
    with global_compiler_lock, call_type_memo():
        flags = compiler.Flags()
        fc.targetdescr.options.parse_as_flags(flags, fc.targetoptions)
        flags = fc._customize_flags(flags)
        flags.no_compile = True
        flags.no_cpython_wrapper = True
        flags.no_cfunc_wrapper = True
        cres = compiler.compile_extra(
            fc.targetdescr.typing_context, fc.targetdescr.target_context,
            fc._get_implementation(argtys, {}), args=argtys, return_type=None,
            flags=flags, locals=fc.locals, pipeline_class=fc.pipeline_class)
        if cres.typing_error is not None:
            raise cres.typing_error
        lib = cres.library
        if lib._finalized:
            raise RuntimeError("the library was finalised")
        seen = set()
        for dep in lib._linking_libraries:
            if dep not in seen:
                seen.add(dep)
                lib._final_module.link_in(dep._get_module_for_linking(), preserve=True)
        lib._optimize_final_module()
        lib._final_module.verify()
        return cres, lib._final_module


def _stub_module(ctx, mod):
    """A module defining the ``_STUB_SYMBOLS`` that ``mod`` declares, each as
    a function that traps (never called: see ``_STUB_SYMBOLS``), or None.
    Linked in, they become internal like every definition but the entry."""
    import llvmlite.binding as llvm
    from llvmlite import ir

    names = []
    for name in _STUB_SYMBOLS:
        try:
            f = mod.get_function(name)
        except NameError:
            continue
        if f.is_declaration:
            names.append(name)
    if not names:
        return None
    smod = ctx.create_module("hrarray_stubs")
    trap = ir.Function(smod, ir.FunctionType(ir.VoidType(), []), "llvm.trap")
    for name in names:
        # Numba declares it void(i8*) (nrtdynmod); another type fails to link,
        # and the entry is then marked unusable (the dispatcher path)
        fn = ir.Function(smod, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()]),
                         name)
        b = ir.IRBuilder(fn.append_basic_block())
        b.call(trap, [])
        b.unreachable()
    return llvm.parse_assembly(str(smod))


def undefined_symbols(obj: bytes) -> list[str]:
    """Names of the undefined symbols of an ELF64 little-endian object."""
    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        raise ValueError("not an ELF64 little-endian object")
    (shoff,) = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
    out = []
    for i in range(shnum):
        sh = struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize)
        if sh[1] != 2:  # SHT_SYMTAB
            continue
        off, size, link, entsize = sh[4], sh[5], sh[6], sh[9]
        (stroff,) = struct.unpack_from("<Q", obj, shoff + link * shentsize + 0x18)
        for j in range(1, size // entsize):
            st_name, _, _, st_shndx, _, _ = struct.unpack_from("<IBBHQQ", obj, off + j * entsize)
            if st_shndx == 0 and st_name:
                end = obj.index(b"\0", stroff + st_name)
                out.append(obj[stroff + st_name:end].decode())
    return out


# ------------------------------------------------------------------ entries

def _read(path: Path):
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(MAGIC):
        return None
    try:
        nl = data.index(b"\n", len(MAGIC))
        head = json.loads(data[len(MAGIC):nl])
    except ValueError:
        return None
    obj = data[nl + 1:]
    if head.get("usable") and hashlib.sha256(obj).hexdigest() != head.get("sha256"):
        return None
    return head, obj


def _write(path: Path, head: dict, obj: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(MAGIC + json.dumps(head).encode() + b"\n" + obj)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: this process still uses the entry


class Lazy:
    """A generated kernel module, imported (which imports Numba and loads or
    compiles its kernels) on first use only."""

    def __init__(self, load):
        self._load = load
        self._mod = None
        self._lock = _locks.RLock()

    def get(self):
        if self._mod is None:
            with self._lock:
                if self._mod is None:
                    self._mod = self._load()
        return self._mod

    @property
    def loaded(self):
        """The module if imported, else None."""
        return self._mod


def functions(folder: Path | None, stem: str, names, lazy: Lazy) -> list:
    """One ``NativeFunction`` per kernel function ``names`` of the generated
    module ``stem`` (``folder``: the cache folder, None for no entries)."""
    return [NativeFunction(folder, stem, n, lambda n=n: getattr(lazy.get(), n)) for n in names]


class NativeFunction:
    """A kernel function called through native entries where possible.

    ``stem`` names the generated module (its file name: a hash of everything
    the kernel's code depends on), ``folder`` the cache folder,
    ``dispatcher()`` returns the Numba dispatcher (importing Numba; called
    only when an entry must be built or the native path is not taken).
    Calling it runs the kernel on the arguments and returns None.
    """

    def __init__(self, folder: Path | None, stem: str, fname: str, dispatcher):
        self.folder = folder
        self.stem = stem
        self.fname = fname
        self._dispatcher = dispatcher
        self._entries: dict = {}  # call_key -> entry (None: the dispatcher)
        self._short: dict = {}  # a caller's short key -> callable
        self._via_dispatcher = None  # (callable, read_only) from _read_only_caller

    def __call__(self, *args):
        self.resolve(None, args)(*args)

    def loaded(self) -> int:
        """Native entries loaded (argument types that run natively)."""
        return sum(e is not None for e in list(self._entries.values()))

    def resolve(self, short, args):
        """The callable running this function on ``args`` and on any
        arguments of the same types: the native entry or the dispatcher.

        ``short``, where not None, is a caller's cheaper key that determines
        the types of all of ``args`` (e.g. the types of the two arrays a
        kernel is given; it makes the others itself): it skips the per-array
        key of every argument (~0.35 us each)."""
        if short is not None:
            fn = self._short.get(short)
            if fn is not None:
                return fn
        key = call_key(args)
        try:
            entry = self._entries[key]
        except KeyError:
            entry = self._entry(key)
            if entry is None:
                _compile_typed_once(self._dispatcher(), self.via_dispatcher()[1](args))
        fn = self.via_dispatcher()[0] if entry is None else entry
        if short is not None:
            self._short[short] = fn
        return fn

    def via_dispatcher(self):
        """``(call, read_only)``: the dispatcher called with the caller's arrays
        read-only, and what makes them so (see _read_only_caller)."""
        pair = self._via_dispatcher
        if pair is None:
            pair = self._via_dispatcher = _read_only_caller(self._dispatcher())
        return pair

    def _entry(self, key):
        with _lock:
            if key in self._entries:
                return self._entries[key]
            entry = None
            spec = tuple(arg_key(k) for k in key)
            if None not in spec:
                try:
                    entry = self._make(spec)
                except Exception:  # build or load problems: the dispatcher path
                    entry = None
            self._entries[key] = entry
            return entry

    def _make(self, key):
        eng = engine()
        if eng is None or self.folder is None:
            return None
        ident = hashlib.sha256(repr((key, eng.host)).encode()).hexdigest()[:16]
        name = f"hrn_{self.stem}_{self.fname}_{ident}"
        path = self.folder / "native" / f"{name}.hrn"
        got = _read(path)
        if got is not None and (got[0].get("name") != name
                                or (got[0].get("usable") and got[0].get("symbol") != name)):
            # another entry's file under this name (a copy, a swap): the checksum
            # covers its object, not its key, and its code takes other arguments
            got = None
        if got is None:
            head = {"name": name, "usable": False}
            obj = b""
            try:
                obj, undefined = _build(self._dispatcher(), key, name, eng.head)
                head.update(symbol=name, undefined=undefined,
                            sha256=hashlib.sha256(obj).hexdigest(),
                            usable=eng.loadable(undefined))
            except Exception as exc:  # e.g. a kernel Numba cannot type this way
                head["error"] = repr(exc)[:300]
            _write(path, head, obj if head["usable"] else b"")
        else:
            head, obj = got
        if not head.get("usable"):
            return None
        addr = eng.load(obj, head["symbol"], head["undefined"])
        if addr is None:
            return None
        return _caller(addr, key, self)


# The kernels' parameters that carry the caller's arrays (values, scores,
# offsets): read, never written. Numba types a read-only array apart from a
# writable one, so a user's read-only values (an Arrow buffer, a memmap, a
# transform's offsets) compiled every dispatcher-path kernel a second time,
# 1-3 s each; passed read-only always, each compiles once. (The native entries
# take any array: their key leaves out the writeable flag.)
_READ_ONLY_PARAMS = frozenset({"values", "w", "offsets"})


def _same(args):
    return args


def _read_only_caller(dispatcher):
    """``(call, read_only)``: ``read_only(args)`` makes the arrays at the
    dispatcher's _READ_ONLY_PARAMS positions read-only views (~0.3 us each),
    ``call`` calls it so; the dispatcher itself where it has no such
    parameter."""
    try:
        names = list(inspect.signature(dispatcher.py_func).parameters)
    except (AttributeError, TypeError, ValueError):  # not a Numba dispatcher
        return dispatcher, _same
    at = tuple(i for i, n in enumerate(names) if n in _READ_ONLY_PARAMS)
    if not at:
        return dispatcher, _same

    def read_only(args):
        args = list(args)
        for i in at:
            a = args[i] if i < len(args) else None
            if type(a) is np.ndarray and a.flags.writeable:
                a = a.view()
                a.flags.writeable = False
                args[i] = a
        return args

    def call(*args):
        return dispatcher(*read_only(args))

    return call, read_only


def _compile_typed_once(dispatcher, args) -> None:
    """Compile ``dispatcher`` for the types of ``args`` now, as its first call
    would, each (function, argument types) pair typed once (_typing_memo);
    that call then finds the compiled code (or Numba's disk cache: loaded,
    not compiled). Where anything goes wrong here, that first call compiles
    and raises as it always did."""
    try:
        from numba.core.compiler_lock import global_compiler_lock

        from hrarray._kernels._typing_memo import call_type_memo

        argtys = tuple(dispatcher.typeof_pyval(a) for a in args)
        if argtys in dispatcher.overloads:
            return
        with global_compiler_lock, call_type_memo():
            dispatcher.compile(argtys)
    except Exception:  # e.g. a user function Numba cannot type: the call says so
        pass


def _caller(addr: int, key, owner: NativeFunction):
    """A Python function calling the entry at ``addr``: the arguments packed
    into one bytes object, 8 bytes each (an array as its ``PyObject*``, i.e.
    ``id()``, valid while the caller holds it; an integer as int64/uint64; a
    float as a double, a complex as two; a bool as one byte), passed as a
    ``char*`` (no copy).
    One ctypes argument instead of one each: ~1 us a call, not ~5. ctypes
    releases the GIL for the call, as the ``nogil`` kernels do."""
    fmt = "<" + "".join(
        "q" if isinstance(k, tuple) else "?7x" if k == "?" else "d" if k in "fd"
        else "dd" if k in "FD" else "Q" if np.dtype(k).kind == "u" else "q"
        for k in key)
    cfn = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_char_p)(addr)
    params = [f"a{i}" for i in range(len(key))]
    passed = [f"id({p})" if isinstance(k, tuple) else f"{p}.real, {p}.imag" if k in ("F", "D")
              else p for k, p in zip(key, params, strict=True)]
    src = (
        f"def call({', '.join(params)}):\n"
        f"    st = cfn(pack({', '.join(passed)}))\n"
        f"    if st not in OK:\n"
        f"        raise RuntimeError(f'hrarray native kernel {{NAME}} failed (status {{st}})')\n"
    )
    ns = {"cfn": cfn, "pack": struct.Struct(fmt).pack, "OK": _OK_STATUS,
          "NAME": f"{owner.stem}.{owner.fname}"}
    exec(compile(src, "<hrarray native call>", "exec"), ns)
    return ns["call"]
