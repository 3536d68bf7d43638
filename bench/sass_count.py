"""Static SASS instruction counts of hrarray's CUDA reduce kernels, without a GPU.

Compiles a reduction's kernels exactly as ``tests/ptx_check.py`` does (numba-cuda's real
compiler, NVVM, then nvJitLink for sm_90), disassembles the cubin with ``nvdisasm`` and
prints, per kernel, the instruction count, the registers per thread and every loop (a
backward branch): its length, its global loads (LDG) and its instruction mix. An element
loop unrolled 16 times shows 16 LDG; instructions / LDG is its cost per element.

Static counts are not time: they say what a loop costs per trip, not how often it runs
or how the memory system keeps up. They are the measure available without a GPU (the
reduce kernel measured instruction-bound in bench/RESULTS.md Run 17).

``nvdisasm`` is not a dependency: it comes with a CUDA toolkit, or from the
``nvidia-cuda-nvdisasm`` wheel (``pip download --no-deps nvidia-cuda-nvdisasm`` and unzip;
the binary is under ``nvidia/cu*/bin``); give its path with ``--nvdisasm`` or put it on
``PATH``.

Usage::

    python bench/sass_count.py --ops sum,max,argmax --dtype float32 [--kernel reduce]
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ptx_check():
    spec = importlib.util.spec_from_file_location(
        "ptx_check", os.path.join(_ROOT, "tests", "ptx_check.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cubin(ptx: str, name: str):
    """(cubin bytes, nvJitLink's info log) of ``ptx`` for sm_90."""
    from cuda.bindings import nvjitlink

    opts = ["-arch=sm_90", "-verbose"]
    h = nvjitlink.create(len(opts), opts)
    try:
        data = ptx.encode()
        nvjitlink.add_data(h, nvjitlink.InputType.PTX, data, len(data), name)
        nvjitlink.complete(h)
        buf = bytearray(nvjitlink.get_linked_cubin_size(h))
        nvjitlink.get_linked_cubin(h, buf)
        log = bytearray(nvjitlink.get_info_log_size(h))
        nvjitlink.get_info_log(h, log)
        return bytes(buf), log.decode(errors="replace")
    finally:
        nvjitlink.destroy(h)


_INSTR = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s*(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_BRANCH = re.compile(r"\bBRA\s+`\((\.L_x_\d+)\)")


def summarise(sass: str):
    """(instruction count, [(start, end, {opcode: count})] per loop)."""
    ops, labels = [], {}
    for line in sass.splitlines():
        m = _LABEL.match(line)
        if m:
            labels[m.group(1)] = len(ops)
            continue
        m = _INSTR.match(line)
        if m:
            ops.append((m.group(1).split(".")[0], line))
    loops = []
    for i, (_, line) in enumerate(ops):
        m = _BRANCH.search(line)
        if m and labels.get(m.group(1), len(ops)) < i:
            j = labels[m.group(1)]
            loops.append((j, i, collections.Counter(op for op, _ in ops[j:i + 1])))
    return len(ops), loops


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", default="sum,max,argmax")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--kernel", default="reduce", help="kernels whose name contains this")
    ap.add_argument("--nvdisasm", default=shutil.which("nvdisasm") or "")
    a = ap.parse_args(argv)
    if not a.nvdisasm or not os.path.exists(a.nvdisasm):
        print("sass_count: no nvdisasm (see the module docstring)")
        return 3
    P = _ptx_check()
    import numba
    from numba import cuda

    launches = []
    P._compile = lambda fn, args, what: launches.append((fn, args, what))
    for op in a.ops.split(","):
        P.check_reduction(op, a.dtype, ("1d", "2d"), unstaged=False)
    seen = set()
    with tempfile.TemporaryDirectory() as tmp:
        for fn, args, what in launches:
            name = fn.py_func.__name__
            argtys = tuple(numba.typeof(x) for x in args)
            if a.kernel not in name or (id(fn), argtys) in seen:
                continue
            seen.add((id(fn), argtys))
            ptx, _ = cuda.compile_ptx(fn.py_func, argtys, cc=P.CC)
            binary, log = cubin(ptx, name)
            path = os.path.join(tmp, "k.cubin")
            with open(path, "wb") as fh:
                fh.write(binary)
            sass = subprocess.run([a.nvdisasm, "-c", path], capture_output=True, text=True,
                                  check=True).stdout
            n, loops = summarise(sass)
            used = [ln.split(":", 1)[-1].strip() for ln in log.splitlines() if "Used" in ln]
            print(f"{what} {name}: {n} instructions; {used[-1] if used else ''}")
            for j, i, mix in loops:
                if i - j < 2:
                    continue
                ldg = mix.get("LDG", 0)
                per = f", {(i - j + 1) / ldg:.1f} per LDG" if ldg >= 4 else ""
                top = ", ".join(f"{k} {v}" for k, v in mix.most_common(8))
                print(f"  loop [{j}..{i}] {i - j + 1} instructions, {ldg} LDG{per}: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
