"""Locks that a ``fork()`` child can use.

A child of ``os.fork()`` has only the forking thread. A lock that another
thread held at that moment stays held in the child, and nothing will release
it: the child's first kernel load waited on it forever. Two measures:

- before a fork, the forking thread takes ``LOADING`` (held while hrarray
  imports Numba, loads a kernel module or builds a native entry) and Numba's
  compiler lock, in that order (the order in which a kernel load nests
  them), and so waits for a load or compile in progress in another thread to
  finish: the child never inherits an import, LLVM or Numba halfway through
  one;
- in the child, every lock made here is replaced by a fresh one, and Numba's
  compiler lock, held by the forking thread (the one thread of the child),
  is released.

``subprocess`` and ``multiprocessing``'s spawn and forkserver start methods do
not run these hooks; ``multiprocessing``'s fork method and ``os.fork`` do.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref

__all__ = ["LOADING", "Lock", "RLock", "hold_across_fork"]


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
_HOLD: list = []  # taken before a fork, in this order
_TAKEN: list = []  # what _before took: (lock, is_numba)


def Lock():
    return _ForkSafeLock(threading.Lock)


def RLock():
    return _ForkSafeLock(threading.RLock)


def hold_across_fork(lock):
    """Have a fork wait until ``lock`` is free."""
    _HOLD.append(lock)
    return lock


# Held while hrarray imports Numba, imports (loads or compiles) a generated kernel
# module or builds a native entry: a fork waits for it, so a child never inherits
# an import of Numba or a compile half done in another thread.
LOADING = hold_across_fork(RLock())


def _numba_compiler_lock():
    """Numba's global compiler lock (a ``threading.RLock``), if Numba is imported.

    Its raw lock, not the ``_CompilerLock`` wrapper, whose ``acquire`` also
    emits a compile event."""
    mod = sys.modules.get("numba.core.compiler_lock")
    wrapper = getattr(mod, "global_compiler_lock", None)
    return getattr(wrapper, "_lock", None)


def _before():
    for lock in _HOLD:
        lock.acquire()
        _TAKEN.append((lock, False))
    numba_lock = _numba_compiler_lock()
    if numba_lock is not None:
        numba_lock.acquire()
        _TAKEN.append((numba_lock, True))


def _after_in_parent():
    while _TAKEN:
        _TAKEN.pop()[0].release()


def _after_in_child():
    while _TAKEN:
        lock, is_numba = _TAKEN.pop()
        if is_numba:
            lock.release()  # owned by this thread, which is the child's
    for lock in list(_ALL):
        lock._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before, after_in_parent=_after_in_parent,
                        after_in_child=_after_in_child)
