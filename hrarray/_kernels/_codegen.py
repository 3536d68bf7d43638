"""Turning a declaration's state into source text (shared by the CPU and CUDA factories).

A state is a scalar or a tuple of ``K`` scalars. Kernels keep states in
registers, but partial states that cross a chunk or block boundary must be
stored in arrays, one array per tuple component. Numba cannot index a
variable-length tuple of arrays generically, so the factories generate the
few lines that load and store a state from the arity, and compile the rest
of the kernel, which is the same for every op, around them.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from hrarray._kernels import _locks


def comps(prefix: str, arity: int) -> list[str]:
    """Names of the per-component arrays: ``h0, h1, ...`` (``h0`` for a scalar)."""
    return [f"{prefix}{i}" for i in range(max(arity, 1))]


def args(prefix: str, arity: int) -> str:
    return ", ".join(comps(prefix, arity))


def load(prefix: str, arity: int, index: str) -> str:
    """Expression reading the state at ``index`` from arrays ``prefix{i}``."""
    if arity == 0:
        return f"{prefix}0[{index}]"
    items = [f"{prefix}{i}[{index}]" for i in range(arity)]
    # CPython builds a display of more than 30 items as a list, then a tuple, and
    # Numba's bytecode peephole for that asserted in the kernels (a Reducer of 31+
    # state components gave a bare AssertionError): tuples of at most 30, added
    parts = [f"({', '.join(items[k : k + 30])},)" for k in range(0, arity, 30)]
    return parts[0] if len(parts) == 1 else f"({' + '.join(parts)})"


def store(prefix: str, arity: int, index: str, value: str, indent: str) -> str:
    """Statements writing state ``value`` into arrays ``prefix{i}`` at ``index``."""
    if arity == 0:
        return f"{indent}{prefix}0[{index}] = {value}\n"
    return "".join(f"{indent}{prefix}{i}[{index}] = {value}[{i}]\n" for i in range(arity))


def component_dtypes(identity) -> list[np.dtype]:
    if isinstance(identity, tuple):
        return [_flat_dtype(v) for v in identity]
    return [_flat_dtype(identity)]


def _flat_dtype(v) -> np.dtype:
    if isinstance(v, tuple):
        raise TypeError("nested tuple states are not supported; flatten the state")
    return np.asarray(v).dtype


# ------------------------------------------------------------- module loading

_lock = _locks.Lock()
_gen_dir: Path | None = None
_disk_cache = False


def _temporary_dir(prefix: str) -> Path:
    """A private temporary folder, removed when the process that made it exits.

    Every process without a disk cache, and every process that builds a user
    Reducer, writes its generated modules to such a folder; they were never
    removed, so ``/tmp`` gathered one folder per process. The removal runs
    only in the process that made the folder: a forked child inherits the
    ``atexit`` entry and must not delete a folder its parent still writes to.
    A forked child writes into its parent's folder where the parent made one
    before the fork (``module_path`` makes it again if the parent has exited
    and removed it). A process that ends without ``atexit`` (``os._exit``, as
    ``multiprocessing``'s fork workers do; SIGTERM, as ``Pool.terminate``
    sends; a crash) leaves its folder, which carries its pid: the next process
    that makes one removes the folders of processes that are gone.
    """
    pid = os.getpid()
    _remove_stale(prefix)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{pid}-"))
    atexit.register(_remove_temporary_dir, path, pid)
    return path


def _remove_temporary_dir(path: Path, pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


def _remove_stale(prefix: str) -> None:
    """Remove the ``{prefix}{pid}-*`` folders in the temp dir whose process is
    gone (POSIX: on Windows ``os.kill`` would end the process it tests)."""
    if os.name != "posix":
        return
    try:
        for p in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
            pid = p.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (EPERM): alive
        return True
    return True


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
        return True
    except OSError:
        return False


def generated_dir() -> tuple[Path, bool]:
    """Folder for generated kernel modules and whether Numba may cache there.

    ``HRARRAY_CACHE_DIR`` chooses the folder; ``HRARRAY_CACHE=0`` turns the
    on-disk cache off. Otherwise the package folder is used where it is
    writable, then the user cache folder; where neither is, kernels are
    generated into a private temporary folder and compiled without a disk
    cache (silently: import must never fail on a read-only install).
    """
    global _gen_dir, _disk_cache
    with _lock:
        if _gen_dir is not None:
            return _gen_dir, _disk_cache
        want_cache = os.environ.get("HRARRAY_CACHE", "1") not in {"0", "false", "no", "off"}
        candidates = []
        if os.environ.get("HRARRAY_CACHE_DIR"):
            candidates.append(Path(os.environ["HRARRAY_CACHE_DIR"]))
        candidates.append(Path(__file__).resolve().parent.parent / "_kernel_cache")
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        if os.path.isabs(xdg):
            candidates.append(Path(xdg) / "hrarray")
        chosen = None
        if want_cache:
            for c in candidates:
                if _writable(c):
                    chosen = c
                    break
        if chosen is None:
            chosen = _temporary_dir("hrarray-kernels-")
            want_cache = False
        _gen_dir, _disk_cache = chosen, want_cache
        return _gen_dir, _disk_cache


def _numba_version() -> str:
    """Numba's version without importing it (the warm native path must not):
    its ``_version.py`` text, else the import."""
    spec = importlib.util.find_spec("numba")
    if spec is not None and spec.origin:
        p = Path(spec.origin).parent / "_version.py"
        if p.exists():
            return hashlib.sha256(p.read_bytes()).hexdigest()
    import numba

    return numba.__version__


def _source_fingerprint() -> str:
    """Hash of the files whose code ends up inside compiled kernels, so a
    cached kernel is never reused after the op semantics change (Numba keys
    its cache on the defining file only, not on callees in other files)."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for rel in ("_ops.py", "reducer.py", "_transforms_ops.py", "_kernels/_codegen.py",
                "_kernels/cpu.py", "_kernels/cuda.py", "_kernels/_cpu_bits.py",
                "_kernels/native.py"):
        p = root / rel
        if p.exists():
            h.update(p.read_bytes())
    h.update(_numba_version().encode())
    return h.hexdigest()[:16]


_FINGERPRINT: str | None = None


_private_dir: Path | None = None


def module_path(source: str, tag: str, persistent: bool = True) -> Path:
    """The file of a generated module: named by the hash of ``source``, the
    library's op files and ``tag`` (the declaration key), so a disk-cached
    kernel always matches its declaration; written if missing."""
    global _FINGERPRINT, _private_dir
    if _FINGERPRINT is None:
        _FINGERPRINT = _source_fingerprint()
    folder, _ = generated_dir()
    if not persistent:
        # user reducers: keyed by object identity, never worth keeping on disk
        with _lock:
            if _private_dir is None:
                _private_dir = _temporary_dir("hrarray-user-kernels-")
            folder = _private_dir
    digest = hashlib.sha256((source + tag + _FINGERPRINT).encode()).hexdigest()[:20]
    name = f"hrk_{digest}"
    path = folder / f"{name}.py"
    if not _holds(path, source):
        # missing, or damaged (a truncated or edited file raised SyntaxError from
        # every later process): a damaged cache file is a miss, written again
        folder.mkdir(parents=True, exist_ok=True)  # (a temp cleaner may have removed it)
        tmp = folder / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(source.encode())
        os.replace(tmp, path)  # atomic: concurrent processes race harmlessly
    return path


def _holds(path: Path, source: str) -> bool:
    """Whether the file at ``path`` holds exactly ``source`` (a read of a few
    KiB, once per module and process)."""
    try:
        return path.read_bytes() == source.encode()
    except OSError:
        return False


def import_module(path: Path, namespace: dict):
    """Import a generated module; ``namespace`` (the declaration's compiled
    functions and constants) is injected as module globals before any
    function is compiled."""
    spec = importlib.util.spec_from_file_location(f"hrarray._generated.{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    mod.__dict__.update(namespace)
    spec.loader.exec_module(mod)
    for obj in list(vars(mod).values()):
        _tolerate_damaged_cache(obj)
    sys.modules.setdefault(spec.name, mod)
    return mod


def _tolerate_damaged_cache(dispatcher) -> None:
    """Make a disk-cached Numba dispatcher treat a damaged cache file as a miss.

    Numba reads its index and data files with ``pickle``: one truncated or
    overwritten file (a full disk, a killed writer, a stray edit) raised
    ``UnpicklingError`` from every later call in every process, until the
    file was deleted by hand. Here a failed load rewrites the function's
    index empty (Numba's ``flush``; where the folder is read-only, caching
    is turned off for the function) and returns a miss, so the kernel is
    compiled and cached again; a failed save leaves the kernel uncached.
    """
    cache = getattr(dispatcher, "_cache", None)
    load, save = getattr(cache, "load_overload", None), getattr(cache, "save_overload", None)
    if load is None or save is None or getattr(cache, "cache_path", None) is None:
        return  # not a dispatcher, or one that caches nothing (NullCache)
    if getattr(cache, "_hrarray_tolerant", False):
        return  # a shared helper injected into many modules: wrapped once
    cache._hrarray_tolerant = True

    def load_overload(sig, target_context):
        try:
            return load(sig, target_context)
        except Exception:
            try:
                cache.flush()
            except Exception:
                cache.disable()
            return None

    def save_overload(sig, data):
        with contextlib.suppress(Exception):
            save(sig, data)

    cache.load_overload = load_overload
    cache.save_overload = save_overload


def load_module(source: str, tag: str, namespace: dict, persistent: bool = True):
    """Write ``source`` to a file named by its hash (``module_path``) and
    import it (``import_module``)."""
    return import_module(module_path(source, tag, persistent), namespace)


def jitify(fn, jit, _memo=None):
    """Compile ``fn`` with ``jit`` after compiling the plain Python functions it
    closes over (helpers such as a nan variant's base ``combine``).

    Numba can call a jitted function held in a closure cell but not a plain
    Python one, so the cells are rebuilt with compiled functions; ``fn``
    itself is left untouched, which lets the CPU and CUDA factories compile
    the same declaration with different ``jit`` decorators.
    """
    import types

    memo = {} if _memo is None else _memo
    if id(fn) in memo:
        return memo[id(fn)]
    cells = fn.__closure__
    if cells:
        new_cells = []
        changed = False
        for cell in cells:
            try:
                v = cell.cell_contents
            except ValueError:  # empty cell
                new_cells.append(cell)
                continue
            if isinstance(v, types.FunctionType):
                new_cells.append(types.CellType(jitify(v, jit, memo)))
                changed = True
            else:
                new_cells.append(cell)
        if changed:
            fn2 = types.FunctionType(
                fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, tuple(new_cells)
            )
            fn2.__qualname__ = fn.__qualname__
            fn2.__module__ = fn.__module__
            fn = fn2
    out = jit(fn)
    memo[id(fn)] = out
    return out


def decl_namespace(decl, jit, dtypes, *, is_empty: bool = False, finalize_jit=None) -> dict:
    """The names a generated module takes from a declaration, one definition
    for every CPU and CUDA factory: ``IDENT``, ``map_``, ``combine``,
    ``finalize`` (and ``is_empty`` where the module uses it) compiled with
    ``jit`` (``numba.njit`` or ``cuda.jit(device=True)``; ``finalize`` with
    ``finalize_jit`` where given), and ``DT{i}``, the state component types
    ``dtypes``."""
    memo: dict = {}
    fin = (jitify(decl.finalize, jit, memo) if finalize_jit is None
           else jitify(decl.finalize, finalize_jit, {}))
    ns = {
        "IDENT": decl.identity,
        "map_": jitify(decl.map, jit, memo),
        "combine": jitify(decl.combine, jit, memo),
        "finalize": fin,
    }
    if is_empty:
        ns["is_empty"] = jitify(decl.is_empty, jit, memo)
    for i, dt in enumerate(dtypes):
        ns[f"DT{i}"] = dt.type
    return ns
