"""Locks that a ``fork()`` child can use.

A child of ``os.fork()`` has only the forking thread. A lock that another
thread held at that moment stays held in the child, and nothing will release
it: the child's first kernel load waited on it forever. So every hrarray lock
is made here, and a child gets each one afresh. Numba's global compiler lock
is treated the same way: if another thread held it at the fork (it was
compiling), the child gets a fresh one, and otherwise the forking thread holds
it across the fork so that no compile starts in between.

A fork never waits here. An earlier version took hrarray's load lock and
Numba's before a fork, to let a compile in another thread finish first. That
deadlocked the parent when a fork hook registered later (``logging``'s) had
already taken a lock that the compiling thread needed, and it stalled forks
for tens of seconds behind cold compiles.

What remains is Python's own hazard of forking with threads (3.12 warns about
it). A fork while another thread is importing a module (Numba, on hrarray's
first kernel) leaves that module's import lock held in the child. The kernel
modules are imported with hrarray so that only Numba's own import is exposed.

``subprocess`` and ``multiprocessing``'s spawn and forkserver start methods do
not run these hooks; ``multiprocessing``'s fork method and ``os.fork`` do.
"""

from __future__ import annotations

import os
import sys
import threading
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
_TAKEN: list = []  # (Numba's compiler lock, whether _before took it)


def Lock():
    return _ForkSafeLock(threading.Lock)


def RLock():
    return _ForkSafeLock(threading.RLock)


def _numba_compiler_lock():
    """Numba's global compiler lock (a ``threading.RLock``), if Numba is imported.

    Its raw lock, not the ``_CompilerLock`` wrapper, whose ``acquire`` also
    emits a compile event."""
    mod = sys.modules.get("numba.core.compiler_lock")
    wrapper = getattr(mod, "global_compiler_lock", None)
    return getattr(wrapper, "_lock", None)


def _before():
    # never blocks: held (for the fork's instant) only if free
    lock = _numba_compiler_lock()
    if lock is not None:
        _TAKEN.append((lock, lock.acquire(blocking=False)))


def _after_in_parent():
    while _TAKEN:
        lock, taken = _TAKEN.pop()
        if taken:
            lock.release()


def _after_in_child():
    while _TAKEN:
        lock, taken = _TAKEN.pop()
        if taken:
            lock.release()  # owned by this thread, which is the child's
        else:
            # another thread was compiling: its lock would never be released here
            mod = sys.modules.get("numba.core.compiler_lock")
            wrapper = getattr(mod, "global_compiler_lock", None)
            if getattr(wrapper, "_lock", None) is lock:
                wrapper._lock = threading.RLock()
    for lock in list(_ALL):
        lock._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before, after_in_parent=_after_in_parent,
                        after_in_child=_after_in_child)
