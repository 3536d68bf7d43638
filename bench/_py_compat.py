"""Launcher used by ``gpu_check.sh``: ``python3 bench/_py_compat.py (-m MODULE | SCRIPT) ARGS...``.

It applies one NumPy compatibility alias, announced on stderr, then runs the
module or script as ``__main__``: NumPy 2.5 removed ``np.row_stack``, which
numba-cuda 0.30 still registers an overload for when it first compiles a
kernel (``AttributeError: module 'numpy' has no attribute 'row_stack'``).
Nothing else changes; without the alias every CUDA launch fails there.
"""

import runpy
import sys

import numpy as np

if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack  # noqa: NPY201 - the alias numba-cuda needs
    print(
        f"[gpu_check] numpy {np.__version__} has no row_stack: aliased to vstack for numba-cuda",
        file=sys.stderr,
    )

if len(sys.argv) < 2:
    raise SystemExit(__doc__)
if sys.argv[1] == "-m":
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
else:
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
