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
of Numba, llvmlite or hrarray (Python's import locks name their owner, ``_ModuleLock.owner``,
read defensively) and Numba's compiler lock and llvmlite's lock are free; it
holds those two across the fork, so no compile starts in between, and the
child releases them. A wait ends at the first gap between two compiles (a
compile takes ~0.1-3.5 s here). Past the bound, the fork goes ahead, and the
child gets fresh copies of the locks that were still held (best effort: Numba
may still be half changed there).

An earlier version waited on hrarray's own load lock, i.e. through whole runs
of compiles (forks stalled 23-34 s), and deadlocked the parent: ``logging``'s
fork hook, registered later and so run earlier, held logging's locks, which
the compiling thread needed. ``logging`` is now imported before the hook is
registered, so its hook runs after this one; and polling never blocks, so a
lock that the forking thread holds for another reason costs the bound, not a
deadlock. The kernel modules are imported with hrarray, so no import of
hrarray's own is exposed.

``subprocess`` and ``multiprocessing``'s spawn and forkserver start methods do
not run these hooks; ``multiprocessing``'s fork method and ``os.fork`` do.
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
_TAKEN: list = []  # (holder, attribute, lock, whether _before took it)


def Lock():
    return _ForkSafeLock(threading.Lock)


def RLock():
    return _ForkSafeLock(threading.RLock)


FORK_WAIT_S = 10.0
_WATCHED = ("numba", "llvmlite", "hrarray")  # hrarray imports some modules lazily


def _numba_locks() -> list:
    """``(holder, attribute)`` of the global locks that Numba and llvmlite hold
    while a thread compiles, in the order they nest: Numba's compiler lock (its
    raw ``RLock``, not the wrapper, whose ``acquire`` also emits an event) and
    llvmlite's lock around every LLVM call. Those of the modules imported."""
    out = []
    mod = sys.modules.get("numba.core.compiler_lock")
    wrapper = getattr(mod, "global_compiler_lock", None)
    if getattr(wrapper, "_lock", None) is not None:
        out.append((wrapper, "_lock"))
    ffi = sys.modules.get("llvmlite.binding.ffi")
    llvm = getattr(getattr(ffi, "lib", None), "_lock", None)
    if getattr(llvm, "_lock", None) is not None:
        out.append((llvm, "_lock"))
    return out


def _importing_elsewhere() -> bool:
    """Whether another thread is importing a module of Numba, llvmlite or
    hrarray now (Python's import locks name their owner; without that, False)."""
    try:
        locks = sys.modules["_frozen_importlib"]._module_locks
        me = threading.get_ident()
        for name, ref in list(locks.items()):
            if name.partition(".")[0] not in _WATCHED:
                continue
            owner = getattr(ref(), "owner", None)
            if owner is not None and owner != me:
                return True
    except Exception:  # importlib's internals not as expected
        return False
    return False


def _try_take(holders) -> list:
    """Each lock of ``holders`` taken if free (never blocking), in order."""
    taken = []
    for holder, attr in holders:
        lock = getattr(holder, attr)
        taken.append((holder, attr, lock, lock.acquire(blocking=False)))
    return taken


def _before():
    # Wait (bounded) until no other thread is importing Numba or compiling,
    # then hold Numba's and llvmlite's locks across the fork, so that the child
    # gets neither half done. Polling never blocks, and sleeping releases the
    # GIL to the busy thread; a compile takes ~0.1-3.5 s, and the wait ends at
    # the first gap between two.
    deadline = time.monotonic() + FORK_WAIT_S
    while True:
        taken = _try_take(_numba_locks())
        quiet = all(t[3] for t in taken) and not _importing_elsewhere()
        if quiet or time.monotonic() >= deadline:
            break
        for _, _, lock, got in reversed(taken):
            if got:
                lock.release()
        time.sleep(0.002)
    _TAKEN.extend(taken)


def _after_in_parent():
    while _TAKEN:
        _, _, lock, taken = _TAKEN.pop()
        if taken:
            lock.release()


def _after_in_child():
    while _TAKEN:
        holder, attr, lock, taken = _TAKEN.pop()
        if taken:
            lock.release()  # owned by this thread, which is the child's
        elif getattr(holder, attr) is lock:
            # past the bound, another thread was still compiling: its lock would
            # never be released here (the child may still find Numba's other
            # state half done: docs/semantics.md)
            setattr(holder, attr, threading.RLock())
    for lock in list(_ALL):
        lock._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before, after_in_parent=_after_in_parent,
                        after_in_child=_after_in_child)
