"""Kernel factories (``cpu``, ``cuda``) and the compiled-kernel registry."""

from __future__ import annotations

import sys


def compiled_count() -> int:
    """Number of kernel specialisations compiled or loaded in this process.

    It is 0 right after ``import hrarray``: kernels compile lazily, once per
    signature, at their first call (or load, with a warm disk cache, as
    native entries: ``hrarray._kernels.native``).
    """
    n = 0
    cpu = sys.modules.get("hrarray._kernels.cpu")
    if cpu is not None:
        n += cpu.compiled_count()
    cuda = sys.modules.get("hrarray._kernels.cuda")
    if cuda is not None and hasattr(cuda, "compiled_count"):
        n += cuda.compiled_count()
    return n
