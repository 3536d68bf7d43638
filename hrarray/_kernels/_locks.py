"""Locks that a ``fork()`` child can use.

A child of ``os.fork()`` has only the forking thread. A lock that another
thread held at that moment stays held in the child, and nothing will release
it: the child's first kernel load waited on it forever. So every hrarray lock
is made here, and a child gets each one afresh.

Numba cannot be treated so. A thread that imports Numba (hrarray's first
kernel in a process does, ~0.3-1 s) or compiles holds Numba's and llvmlite's
locks and import locks, and leaves their state half changed; a child forked
then hung in its first reduction (on Numba's module import lock, its compiler
lock, its typing context's lock or llvmlite's lock, as the fork fell). So a
fork waits, for up to ``FORK_WAIT_S``, until no other thread imports a module
of Numba, llvmlite or hrarray (Python's import locks name their owner,
``_ModuleLock.owner``, read defensively) and Numba's compiler lock and
llvmlite's lock are free; it holds those two across the fork, so no compile
starts in between, and the child releases them. Meanwhile Numba's compiler
lock is gated (``_GatedRLock``): a compile that would start in another thread
waits for the fork, so a wait ends with the compile in progress (~0.01-3.5 s
here), not with a run of compiles (a compiling thread re-took the lock at
once: forks waited to the bound, and a fork ``Pool(3)`` took 17 s to start).
Past the bound, the fork goes ahead, and the child gets fresh copies of the
locks that were still held (best effort: Numba may still be half changed).

Not covered: a fork by a thread that itself holds Numba's compiler lock while
another thread sets up Numba (its target context) can still leave the child
waiting on that set-up's lock.

An earlier version waited on hrarray's own load lock, i.e. through whole runs
of compiles (forks stalled 23-34 s), and deadlocked the parent: ``logging``'s
fork hook, registered later and so run earlier, held logging's locks, which
the compiling thread needed. ``logging`` is now imported before the hook is
registered, so its hook runs after this one; polling never blocks, and the
gate's wait is bounded too, so a lock that the forking thread holds for
another reason costs the bound, not a deadlock. The kernel modules are
imported with hrarray, so no import of hrarray's own is exposed.

``multiprocessing``'s fork method, ``os.fork`` and ``subprocess`` with a
``preexec_fn`` run these hooks; ``subprocess`` otherwise, and the spawn and
forkserver start methods, do not.
"""

from __future__ import annotations

# Imported before the hook is registered, as hooks run in the reverse order of
# registration: logging's (which holds logging's locks, and Numba's import and
# compiles use them) then runs after _before, not before it. And a module that
# registers its hooks while _before waits (hrarray's pool imports this one) has
# its after-fork hook run without its before-fork hook: "release unlocked lock".
import concurrent.futures.thread  # noqa: F401
import logging  # noqa: F401
import os
import sys
import threading
import time
import weakref

__all__ = ["Lock", "RLock"]


class _ForkSafeLock:
    """A ``threading`` lock that a fork child gets afresh (``_reset``)."""

    __slots__ = ("__weakref__", "_factory", "_lock")

    def __init__(self, factory):
        self._factory = factory
        self._lock = factory()
        _ALL.add(self)

    def acquire(self, blocking=True, timeout=-1):
        return self._lock.acquire(blocking, timeout)

    def release(self):
        self._lock.release()

    def __enter__(self):
        self._lock.acquire()
        return self

    def __exit__(self, *exc):
        self._lock.release()

    def _reset(self):
        self._lock = self._factory()


_ALL: weakref.WeakSet = weakref.WeakSet()
_TAKEN: dict = {}  # forking thread -> [(holder, attribute, lock, whether _before took it)]


def Lock():
    return _ForkSafeLock(threading.Lock)


def RLock():
    return _ForkSafeLock(threading.RLock)


FORK_WAIT_S = 10.0
_WATCHED = ("numba", "llvmlite", "hrarray")  # hrarray imports some modules lazily

# Forks waiting in _before; while there are any, _GatedRLock holds back the
# compiles that would start (_NO_FORK is set when there are none).
_PENDING = [0]
_PENDING_LOCK = threading.Lock()
_NO_FORK = threading.Event()
_NO_FORK.set()


class _GatedRLock:
    """Numba's compiler lock (its raw ``RLock``, wrapped): while a fork waits
    for a gap between compiles, a thread's outermost acquire waits for the fork
    (bounded), so that a run of compiles in another thread leaves a gap at its
    next compile; it re-took the lock at once, without yielding the GIL, and a
    fork waited for the whole run. Nested acquires pass, and so do threads
    importing a module the fork waits for (each would wait for the other)."""

    __slots__ = ("_lock",)

    def __init__(self, lock):
        self._lock = lock

    def acquire(self, blocking=True, timeout=-1):
        if blocking and not _NO_FORK.is_set() and not self._lock._is_owned() \
                and not _import_owners() & {threading.get_ident()}:
            _NO_FORK.wait(FORK_WAIT_S)
        return self._lock.acquire(blocking, timeout)

    def release(self):
        self._lock.release()

    def _is_owned(self):
        return self._lock._is_owned()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def _numba_locks() -> list:
    """``(holder, attribute, factory)`` of the global locks that Numba and
    llvmlite hold while a thread compiles, in the order they nest: Numba's
    compiler lock (the raw lock, gated, not Numba's wrapper, whose ``acquire``
    also emits an event) and llvmlite's lock around every LLVM call. Those of
    the modules imported; ``factory`` makes a fresh one for a child."""
    out = []
    mod = sys.modules.get("numba.core.compiler_lock")
    wrapper = getattr(mod, "global_compiler_lock", None)
    raw = getattr(wrapper, "_lock", None)
    if raw is not None and hasattr(raw, "_is_owned"):
        if not isinstance(raw, _GatedRLock):
            # (the same raw lock: a holder's release through either is the same)
            wrapper._lock = _GatedRLock(raw)
        out.append((wrapper, "_lock", lambda: _GatedRLock(threading.RLock())))
    ffi = sys.modules.get("llvmlite.binding.ffi")
    llvm = getattr(getattr(ffi, "lib", None), "_lock", None)
    if getattr(llvm, "_lock", None) is not None:
        out.append((llvm, "_lock", threading.RLock))
    return out


def _import_owners() -> set:
    """Threads importing a module of Numba, llvmlite or hrarray now (Python's
    import locks name their owner; without that, none)."""
    owners = set()
    try:
        for name, ref in list(sys.modules["_frozen_importlib"]._module_locks.items()):
            if name.partition(".")[0] in _WATCHED:
                owner = getattr(ref(), "owner", None)
                if owner is not None:
                    owners.add(owner)
    except Exception:  # importlib's internals not as expected
        return set()
    return owners


def _importing_elsewhere() -> bool:
    """Whether another thread is importing a module of Numba, llvmlite or hrarray."""
    return bool(_import_owners() - {threading.get_ident()})


def _try_take(holders) -> list:
    """Each lock of ``holders`` taken if free (never blocking), in order."""
    taken = []
    for holder, attr, factory in holders:
        lock = getattr(holder, attr)
        taken.append((holder, attr, factory, lock, lock.acquire(blocking=False)))
    return taken


def _before():
    # Wait (bounded) until no other thread is importing Numba or compiling,
    # then hold Numba's and llvmlite's locks across the fork, so that the child
    # gets neither half done. Polling never blocks, and sleeping releases the
    # GIL to the busy thread; compiles that would start meanwhile wait at the
    # gate (_GatedRLock), so the wait ends with the compile in progress.
    with _PENDING_LOCK:
        _PENDING[0] += 1
        _NO_FORK.clear()
    deadline = time.monotonic() + FORK_WAIT_S
    while True:
        taken = _try_take(_numba_locks())
        quiet = all(t[4] for t in taken) and not _importing_elsewhere()
        if quiet or time.monotonic() >= deadline:
            break
        for t in reversed(taken):
            if t[4]:
                t[3].release()
        time.sleep(0.002)
    _TAKEN[threading.get_ident()] = taken


def _fork_done():
    with _PENDING_LOCK:
        _PENDING[0] = max(_PENDING[0] - 1, 0)
        if not _PENDING[0]:
            _NO_FORK.set()


def _after_in_parent():
    for t in reversed(_TAKEN.pop(threading.get_ident(), [])):
        if t[4]:
            t[3].release()
    _fork_done()


def _after_in_child():
    global _PENDING_LOCK, _NO_FORK
    for holder, attr, factory, lock, taken in reversed(_TAKEN.pop(threading.get_ident(), [])):
        if taken:
            lock.release()  # owned by this thread, which is the child's
        elif getattr(holder, attr) is lock:
            # past the bound, another thread was still compiling: its lock would
            # never be released here (the child may still find Numba's other
            # state half done: docs/semantics.md)
            setattr(holder, attr, factory())
    _TAKEN.clear()  # other threads' forks in progress: not this process's
    _PENDING[0] = 0
    _PENDING_LOCK = threading.Lock()
    _NO_FORK = threading.Event()
    _NO_FORK.set()
    for lock in list(_ALL):
        lock._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before, after_in_parent=_after_in_parent,
                        after_in_child=_after_in_child)
