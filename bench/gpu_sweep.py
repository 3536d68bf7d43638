"""Correctness sweep of hrarray on CUDA at full benchmark size.

Every op hrarray has, every workload, 1-D and 2-D, float32 and float64
(float32 first), at ``--n`` scalars (default 1e8): the CUDA result (CuPy
inputs) is checked against the float64 reference (``checks.py``, strict: the
API's empty-segment values and dtypes) and compared with hrarray's CPU result
on the same data (max/argmax must agree exactly; the others within the
reference tolerance, scaled the same way).  The hierarchy runs ``levels=3``
and, for sum/max/logsumexp, level by level.  Nothing is timed.

A deadline (``--budget-s``) skips the remaining cases, which are listed as
skipped.  Writes ``--out`` (JSON) after every case and prints one table line
per check; the exit status is 1 if any CUDA (or CPU) result is wrong or
raised (a NotImplementedError is listed as "not implemented", not counted), 2 if CUDA
is not usable at all.

    python3 bench/gpu_sweep.py --out $OUT/sweep.json --budget-s 150
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import anchors  # noqa: E402
import checks  # noqa: E402
import hrcall  # noqa: E402
import workloads as wl  # noqa: E402

OPS = ("sum", "mean", "max", "argmax", "logsumexp", "softmax", "attention_pool")
T0 = time.perf_counter()


def agreement(op, g, c, ref: checks.Reference) -> tuple[bool, float]:
    """CUDA result ``g`` vs CPU result ``c`` (NumPy arrays)."""
    g = np.asarray(g)
    c = np.asarray(c)
    if g.shape != c.shape:
        return False, float("inf")
    if op in ("max", "argmax"):
        same = (g == c) | (np.isnan(g) & np.isnan(c)) if g.dtype.kind == "f" else g == c
        bad = int((~same).sum())
        return bad == 0, float(bad)
    tol = checks.TOL[ref.dtype][op]
    g64 = g.astype(np.float64)
    c64 = c.astype(np.float64)
    with np.errstate(invalid="ignore"):
        d = np.abs(g64 - c64)
        both_nan = np.isnan(g64) & np.isnan(c64)
        both_inf = np.isinf(g64) & (g64 == c64)
        d[both_nan | both_inf] = 0.0
        if op in ("sum", "mean"):
            b = ref.basic()
            lens = np.maximum(ref.lengths, 1).reshape(-1, 1).astype(np.float64)
            scale = b["abs"] if op == "sum" else b["abs"] / lens
            d = d.reshape(d.shape[0], -1) / np.maximum(scale, 1e-300)
        elif op == "attention_pool":
            d = d.reshape(d.shape[0], -1) / np.maximum(ref.attention_pool()[1], 1e-300)
        elif op == "logsumexp":
            d = d / np.maximum(1.0, np.abs(c64))
        d[np.isnan(d)] = np.inf
    err = float(d.max()) if d.size else 0.0
    return err <= 2 * tol, err


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--n", type=float, default=wl.GPU_SCALARS, help="scalars per workload (default 1e8)"
    )
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("--workloads", default=",".join(wl.WORKLOADS))
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--ndims", default="1,2")
    p.add_argument(
        "--budget-s", type=float, default=150.0, help="deadline in seconds (default 150)"
    )
    p.add_argument(
        "--no-cpu", action="store_true", help="skip the comparison with hrarray's CPU result"
    )
    p.add_argument("--out", default=None, help="JSON output file")
    args = p.parse_args(argv)

    import hrarray as hr

    try:
        import cupy as cp

        cp.cuda.runtime.getDeviceCount()
    except Exception as e:
        print(f"gpu_sweep: CUDA not usable: {type(e).__name__}: {e}")
        return 2
    n = int(args.n)
    ops = [o for o in args.ops.split(",") if o]
    missing = [o for o in ops if not hasattr(hr, o)]
    ops = [o for o in ops if hasattr(hr, o)]
    rows: list[dict] = []
    doc = {"n": n, "ops": ops, "missing_ops": missing, "rows": rows, "complete": False}

    def save():
        doc["wall_s"] = round(time.perf_counter() - T0, 1)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(doc, f, indent=1, default=str)

    print(
        f"gpu_sweep: n={n:.3g}, ops {', '.join(ops)}"
        + (f" (missing: {', '.join(missing)})" if missing else "")
    )
    print(
        f"{'case':32s} {'op':14s} {'variant':15s} {'cuda vs ref':>22s} {'cpu vs ref':>14s} "
        f"{'cuda vs cpu':>14s}"
    )
    cases = [
        (dt, int(nd), name)
        for dt in args.dtypes.split(",")
        for nd in args.ndims.split(",")
        for name in args.workloads.split(",")
        if name
    ]
    for dt, nd, name in cases:
        label = f"{name} {dt} {nd}-D"
        if time.perf_counter() - T0 > args.budget_s:
            rows.append({"case": label, "skipped": "deadline"})
            print(f"{label:32s} skipped (deadline)")
            continue
        try:
            w = wl.make_workload(name, dt, nd, n)
            want_scores = "attention_pool" in ops
            ref = checks.Reference(w.values, w.top_offsets, w.scores if want_scores else None)
            xc = hrcall.build(hr, w.values, w.offsets)
            glev = [cp.asarray(o) for o in w.offsets]
            gv = cp.asarray(w.values)
            xg = hrcall.build(hr, gv, glev)
            sg = hrcall.with_scores(hr, xg, cp.asarray(w.scores), glev) if want_scores else None
            sc = hrcall.with_scores(hr, xc, w.scores, w.offsets) if want_scores else None
        except Exception as e:
            rows.append({"case": label, "error": f"setup: {type(e).__name__}: {e}"})
            print(f"{label:32s} SETUP ERROR {type(e).__name__}: {e}")
            traceback.print_exc(limit=4)
            save()
            continue
        for op in ops:
            variants = [(f"levels={w.depth}" if w.depth > 1 else "", False)]
            if w.depth > 1 and op in hrcall.LEVEL_BY_LEVEL_OPS:
                variants.append(("level by level", True))
            for variant, by_level in variants:
                row = {
                    "case": label,
                    "workload": name,
                    "dtype": dt,
                    "ndim": nd,
                    "op": op,
                    "variant": variant,
                }
                g = c = None
                try:
                    res = hrcall.op_callable(hr, op, xg, w.depth, sg, by_level=by_level)()
                    g = anchors.to_numpy(hrcall.result_array(res))
                    del res
                    chk = ref.check(op, g, strict=True)
                    row.update(cuda_ok=chk["ok"], cuda_err=chk["err"], cuda_why=chk["why"])
                except NotImplementedError as e:
                    row.update(cuda_notimpl=f"{e}"[:200])
                except Exception as e:
                    row.update(cuda_ok=False, cuda_error=f"{type(e).__name__}: {str(e)[:300]}")
                    traceback.print_exc(limit=4)
                if not args.no_cpu:
                    try:
                        res = hrcall.op_callable(hr, op, xc, w.depth, sc, by_level=by_level)()
                        c = anchors.to_numpy(hrcall.result_array(res))
                        chk = ref.check(op, c, strict=True)
                        row.update(cpu_ok=chk["ok"], cpu_err=chk["err"], cpu_why=chk["why"])
                    except Exception as e:
                        row.update(cpu_ok=False, cpu_error=f"{type(e).__name__}: {str(e)[:300]}")
                    if g is not None and c is not None:
                        ok, err = agreement(op, g, c, ref)
                        row.update(agree=ok, agree_err=err)
                rows.append(row)

                def show(ok, err, why, error, notimpl=None):
                    if notimpl:
                        return "not implemented"
                    if error:
                        return "ERROR"
                    return ("ok" if ok else "WRONG") + f" {err:.1e}"

                cu = show(
                    row.get("cuda_ok"),
                    row.get("cuda_err", 0),
                    row.get("cuda_why"),
                    row.get("cuda_error"),
                    row.get("cuda_notimpl"),
                )
                cpu = (
                    "-"
                    if args.no_cpu
                    else show(
                        row.get("cpu_ok"),
                        row.get("cpu_err", 0),
                        row.get("cpu_why"),
                        row.get("cpu_error"),
                    )
                )
                ag = (
                    "-"
                    if "agree" not in row
                    else ("agree" if row["agree"] else "DIFFER") + f" {row['agree_err']:.1e}"
                )
                print(
                    f"{label:32s} {op:14s} {variant:15s} {cu:>22s} {cpu:>14s} {ag:>14s}", flush=True
                )
                for k in ("cuda_error", "cuda_why", "cuda_notimpl", "cpu_error", "cpu_why"):
                    if row.get(k):
                        print(f"    {k}: {row[k]}")
        del xg, gv, glev, sg
        cp.get_default_memory_pool().free_all_blocks()
        save()
    wl.clear_cache()
    doc["complete"] = True
    bad = [
        r
        for r in rows
        if "op" in r
        and (r.get("cuda_ok") is False or r.get("cpu_ok") is False or r.get("agree") is False)
    ]
    notimpl = [r for r in rows if "cuda_notimpl" in r]
    errs = [r for r in rows if "error" in r]
    skipped = [r for r in rows if "skipped" in r]
    checked = [r for r in rows if "op" in r]
    doc["summary"] = {
        "checked": len(checked),
        "bad": len(bad),
        "case_errors": len(errs),
        "skipped_cases": len(skipped),
        "cuda_not_implemented": len(notimpl),
    }
    save()
    print(
        f"gpu_sweep: {len(checked)} checks, {len(bad)} bad, {len(notimpl)} not implemented on "
        f"CUDA, {len(errs)} case errors, {len(skipped)} cases skipped (deadline), "
        f"{time.perf_counter() - T0:.0f} s"
    )
    return 1 if bad or errs else 0


if __name__ == "__main__":
    sys.exit(main())
