"""Rendering of a results document: Markdown tables, target checks, PNG plots."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

OPS = ("sum", "mean", "max", "argmax", "logsumexp", "softmax", "attention_pool")
WORKLOADS = ("uniform", "powerlaw", "empty_heavy", "one_huge", "tiny", "hierarchy")
LARGE = ("uniform", "powerlaw", "empty_heavy", "one_huge")


# ---------------------------------------------------------------------------- helpers
def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _num(v):
    """Numbers stored as strings ('nan', 'inf') by the JSON writer back to floats."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _rows(doc):
    return [r for r in doc["results"] if r.get("impl") != "(case)"]


def _label(r) -> str:
    return r["workload"] + (" (level by level)" if r.get("variant") == "level by level" else "")


def _good(r) -> bool:
    return "gbps" in r and bool(r.get("ok"))


def _impls(rows) -> list[tuple[str, str]]:
    """(device, impl) columns: hrarray first per device, CPU before CUDA."""
    seen = []
    for r in rows:
        key = (r["device"], r["impl"])
        if key not in seen and r["device"] in ("cpu", "cuda"):
            seen.append(key)
    return sorted(
        seen, key=lambda k: (k[0] != "cpu", not k[1].startswith("hrarray"), seen.index(k))
    )


def _find(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def _ratios(r) -> str:
    """``paired; run-wide`` ratios of a CPU row (the run-wide one is WORKLOADS.md's
    roofline), the one ratio where both are the same (GPU: the copy)."""
    a = _num(r.get("ratio", float("nan")))
    b = r.get("ratio_runwide")
    if b is None or _num(b) == a:
        return f"{a:.2f}"
    return f"{a:.2f}; {_num(b):.2f}"


def _cell(r) -> str:
    if r is None:
        return "-"
    if "error" in r:
        return "ERR"
    if "skipped" in r:
        return "skip"
    s = f"{_fmt(r['gbps'])} ({_ratios(r)})" if "ratio" in r else _fmt(r["gbps"])
    if not r.get("ok"):
        s += " **WRONG**" if r["impl"].startswith("hrarray") else " WRONG"
    return s


def _best_anchor(rows, device, **kw):
    cands = [
        r
        for r in rows
        if r["device"] == device
        and not r["impl"].startswith("hrarray")
        and _good(r)
        and all(r.get(k) == v for k, v in kw.items())
    ]
    return max(cands, key=lambda r: r["gbps"]) if cands else None


def _combos(rows):
    out = []
    for r in rows:
        k = (r["dtype"], r["ndim"])
        if k not in out:
            out.append(k)
    return sorted(out, key=lambda k: (k[0], k[1]))


# ---------------------------------------------------------------------------- targets
def targets(doc) -> list[dict]:
    rows = _rows(doc)
    out = []

    def add(name, want, vals, fmt="{:.2f}", cmp="ge", paired=None):
        """``want``: "OP NUMBER[unit]"; vals: (value, where) for every case the target
        covers. ``paired``: the same ratios to the flat read timed beside each case, shown
        beside the verdict (which follows WORKLOADS.md: the run's fastest flat read)."""
        vals = [(v, w) for v, w in vals if v is not None]
        pw = min(paired) if paired else None
        if not vals:
            out.append(
                {
                    "target": name,
                    "want": want,
                    "value": "-",
                    "where": "not measured",
                    "status": "n/a",
                }
            )
            return
        worst = min(vals) if cmp == "ge" else max(vals)
        thr = float(want.split()[1].rstrip("xµs"))
        ok = worst[0] >= thr if cmp == "ge" else worst[0] <= thr
        out.append(
            {
                "target": name,
                "want": want,
                "value": fmt.format(worst[0]),
                "where": worst[1],
                "status": "PASS" if ok else "MISS",
                "paired": "-" if pw is None else f"{fmt.format(pw[0])} ({pw[1]})",
            }
        )

    def hr_rows(device, ops, wls, ndims=(1, 2), dtypes=None, variant_ok=True):
        return [
            r
            for r in rows
            if r["device"] == device
            and r["impl"].startswith("hrarray")
            and r["op"] in ops
            and r["workload"] in wls
            and r["ndim"] in ndims
            and (dtypes is None or r["dtype"] in dtypes)
            and (variant_ok or r.get("variant") != "level by level")
        ]

    def where(r):
        v = f"/{r['variant']}" if r.get("variant") else ""
        return f"{r['op']} {r['workload']}{v} {r['dtype']} {r['ndim']}-D"

    def ratios(rs, key="ratio"):
        # "ratio_runwide": to the run's fastest flat read (WORKLOADS.md's roofline);
        # "ratio": to the flat read timed beside the case (CPU; the same where unpaired)
        return [
            (_num(r.get(key, r["ratio"])) if _good(r) and "ratio" in r else 0.0, where(r))
            for r in rs
        ]

    def add_ratio(name, want, rs):
        add(name, want, ratios(rs, "ratio_runwide"), paired=ratios(rs))

    # CPU
    add_ratio(
        "CPU sum, mean on the 4 large workloads, 1-D and 2-D: ratio to roofline",
        ">= 0.8",
        hr_rows("cpu", ("sum", "mean"), LARGE),
    )
    add_ratio(
        "CPU max, argmax (1-D), large workloads: ratio",
        ">= 0.6",
        hr_rows("cpu", ("max", "min", "argmax"), LARGE, ndims=(1,)),
    )
    add_ratio(
        "CPU max, argmax (2-D), large workloads: ratio",
        ">= 0.8",
        hr_rows("cpu", ("max", "min", "argmax"), LARGE, ndims=(2,)),
    )
    add_ratio(
        "CPU tiny (sum, mean, max, argmax): ratio",
        ">= 0.5",
        hr_rows("cpu", ("sum", "mean", "max", "argmax"), ("tiny",)),
    )
    vals = []
    for r in hr_rows("cpu", ("sum",), WORKLOADS, ndims=(1,), dtypes=("float32",), variant_ok=False):
        a = _find(
            rows,
            device="cpu",
            impl="numpy reduceat",
            op="sum",
            workload=r["workload"],
            dtype=r["dtype"],
            ndim=1,
        )
        if a is not None and "gbps" in a:
            vals.append(((r["gbps"] / a["gbps"]) if _good(r) else 0.0, where(r)))
    add("CPU 1-D float32 sum vs corrected np.add.reduceat", ">= 4x", vals, "{:.1f}x")
    vals = []
    for r in hr_rows(
        "cpu", ("sum", "mean", "max", "argmax"), WORKLOADS, ndims=(2,), variant_ok=False
    ):
        b = _best_anchor(rows, "cpu", op=r["op"], workload=r["workload"], dtype=r["dtype"], ndim=2)
        if b is not None:
            vals.append(
                ((r["gbps"] / b["gbps"]) if _good(r) else 0.0, where(r) + f" vs {b['impl']}")
            )
    add("CPU 2-D vs the best anchor", ">= 20x", vals, "{:.1f}x")
    ov = doc.get("overheads") or {}
    co = (ov.get("call_overhead") or {}).get("hr.sum_median_us")
    add(
        "call overhead, 10 segments of 10 values",
        "<= 20 µs",
        [(co, "hr.sum median")],
        "{:.1f} µs",
        "le",
    )
    imp = ov.get("import") or {}
    add(
        "import hrarray (fresh process, best of runs)",
        "<= 0.3 s",
        [(imp.get("import_s"), "import")],
        "{:.3f} s",
        "le",
    )
    cc = imp.get("compiled_count")
    out.append(
        {
            "target": "import hrarray compiles nothing",
            "want": "compiled_count() == 0",
            "value": str(cc),
            "where": "fresh process",
            "status": "n/a" if cc is None else ("PASS" if cc == 0 else "MISS"),
        }
    )
    rep = (ov.get("first_call") or {}).get("reported") or {}
    numba_note = {True: ", Numba imported", False: ", Numba not imported"}.get(
        rep.get("numba_imported"), "")
    add(
        "first call in a fresh process, disk cache warm",
        "<= 0.5 s",
        [(rep.get("to_first_result_s"),
          "RaggedArray(...) + hr.sum, float64 1-D, as installed" + numba_note)],
        "{:.3f} s",
        "le",
    )
    # GPU
    add(
        "GPU sum, mean, max, all workloads, float32 1-D and 2-D: ratio to copy",
        ">= 0.8",
        ratios(
            hr_rows(
                "cuda", ("sum", "mean", "max"), WORKLOADS, dtypes=("float32",), variant_ok=False
            )
        ),
    )
    for wls, want in (
        (("uniform", "empty_heavy", "hierarchy"), ">= 1.2x"),
        (("powerlaw", "one_huge", "tiny"), ">= 2x"),
    ):
        vals = []
        for r in hr_rows(
            "cuda", ("sum", "mean", "max"), wls, dtypes=("float32",), variant_ok=False
        ):
            b = _best_anchor(
                rows,
                "cuda",
                op=r["op"],
                workload=r["workload"],
                dtype=r["dtype"],
                ndim=r["ndim"],
                variant=r.get("variant"),
            )
            if b is not None:
                vals.append(
                    ((r["gbps"] / b["gbps"]) if _good(r) else 0.0, where(r) + f" vs {b['impl']}")
                )
        add(f"GPU vs the best GPU anchor ({', '.join(wls)})", want, vals, "{:.2f}x")
    return out


# ---------------------------------------------------------------------------- markdown
def render_md(doc) -> str:
    m = doc["machine"]
    rows = _rows(doc)
    L = ["# hrarray benchmark results", ""]
    L.append(
        f"- Command: `{m.get('command')}`  ({m.get('date')}, wall {doc.get('wall_s')} s"
        + ("" if doc.get("complete") else ", INCOMPLETE")
        + ")"
    )
    wu = doc.get("warmup")
    if wu:
        L.append(
            f"- Warm-up before timing (`bench/warm.py`): {wu.get('jobs')} calls over "
            f"{wu.get('processes')} processes in {wu.get('wall_s')} s, {wu.get('failed')} failed"
            + (f"; {'; '.join(wu['worker_errors'])}" if wu.get("worker_errors") else "")
        )
    L.append(
        f"- CPU: {m.get('cpu_model')}, {m.get('usable_cpus', m.get('logical_cpus'))} usable of "
        f"{m.get('logical_cpus')} logical CPUs, {m.get('mem_total_GiB')} GiB, L3 "
        f"{m.get('L3', '?')}; "
        f"{m.get('numba_num_threads')} threads (Numba layer `{m.get('numba_threading_layer')}`)"
    )
    if m.get("gpu"):
        g = m["gpu"]
        L.append(
            f"- GPU: {g.get('name')} ({g.get('sms')} SMs, cc {g.get('cc')}, {g.get('mem_GB')} GB, "
            f"L2 {g.get('l2_MB')} MB), driver {g.get('driver')}, runtime {g.get('runtime')}"
        )
    elif doc.get("cuda_unavailable"):
        L.append(f"- GPU: not measured ({doc['cuda_unavailable']})")
    L.append(
        "- Versions: "
        + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
        + f"; Python {m.get('python')}"
    )
    p = doc.get("params", {})
    L.append(
        f"- Sizes: {p.get('n_scalars', 0):.3g} scalars per workload (1-D `(n,)`, 2-D "
        f"`(n/{p.get('d')}, "
        f"{p.get('d')})`), seed {p.get('seed')}; CPU: min of {p.get('repeats')} repeats; GPU: "
        "median of "
        f"{p.get('gpu_batches')} CUDA-event batches; per-method cap {p.get('cap_s')} s"
    )
    la = m.get("loadavg_1min_start_end")
    if la:
        cpus = m.get("usable_cpus") or m.get("logical_cpus") or 1
        busy = max(la) > 0.5 * cpus
        L.append(
            f"- Load average (1 min) at start / end: {la[0]} / {la[1]}"
            + (
                f" — **the machine was busy ({cpus} CPUs): other processes competed with the "
                "measured code; parallel CPU numbers are unreliable**"
                if busy
                else ""
            )
        )
    if m.get("env"):
        L.append("- Env: " + ", ".join(f"{k}={v}" for k, v in m["env"].items()))
    L.append("")
    L.append(
        "Cells: **GB/s of input bytes** (values + every level's offsets; attention_pool also its "
        "scores) and, "
        "in parentheses, **ratios to the roofline**: CPU, first to the all-core Numba flat "
        "read of the same values buffer timed between the calls of the measured one (both "
        "minima from the same seconds of a machine whose bandwidth drifts), then to "
        "WORKLOADS.md's roofline, the run's fastest flat read per dtype and layout (the "
        "roofline table; `ratio_runwide` in the JSON; the Targets table's verdicts); "
        "GPU: device-to-device copy, bytes read + written). Every "
        "result was "
        "checked against a float64 reference before timing; `WRONG` marks a result that failed "
        "(still timed), "
        "`ERR` one that raised, `-` no such op. JIT compilation is excluded (warm-up)."
    )
    L.append("")
    fails = doc.get("failures") or []
    if fails:
        L.append("## FAILURES (hrarray)")
        L.append("")
        L += [f"- {f}" for f in fails]
        L.append("")
    if doc.get("bench_errors"):
        L.append("## BENCH ERRORS (bugs in bench/'s own checks, not in the measured code)")
        L.append("")
        L += [f"- {f}" for f in doc["bench_errors"]]
        L.append("")
    if doc.get("hrarray_error"):
        L.append(f"**import hrarray failed**: {doc['hrarray_error']}\n")
    for n in doc.get("notes") or []:
        L.append(f"- Note: {n}")
    if doc.get("notes"):
        L.append("")

    tg = targets(doc) if rows or doc.get("overheads") else []
    if tg:
        L.append("## Targets (`shared/WORKLOADS.md`)")
        L.append("")
        L.append(
            "Ratios here are to the roofline as WORKLOADS.md defines it: the fastest flat read "
            "of the run (per dtype and layout); the last column gives the worst ratio to the "
            "flat read timed beside each case instead (the result tables' figure)."
        )
        L.append("")
        L.append("| target | want | worst measured | where | status | worst, paired flat read |")
        L.append("|---|---|---|---|---|---|")
        for t in tg:
            L.append(
                f"| {t['target']} | {t['want']} | {t['value']} | {t['where']} | {t['status']} "
                f"| {t.get('paired', '-')} |"
            )
        L.append("")

    if doc.get("rooflines"):
        L.append("## Rooflines (GB/s of the values buffer)")
        L.append("")
        keys = []
        for r in doc["rooflines"]:
            for k in r:
                if k not in ("device", "dtype", "ndim", "values_MB", "roofline", "paired_range") \
                        and k not in keys:
                    keys.append(k)
        L.append(
            "| device | dtype | ndim | values MB | " + " | ".join(keys)
            + " | run-wide roofline | flat read timed beside the cases (min-max) |"
        )
        L.append("|---|---|---|---|" + "---|" * (len(keys) + 2))
        for r in doc["rooflines"]:
            pr = r.get("paired_range")
            L.append(
                f"| {r['device']} | {r['dtype']} | {r['ndim']} | {r['values_MB']} | "
                + " | ".join(_fmt(r.get(k)) for k in keys)
                + f" | **{_fmt(r['roofline'])}** | "
                + (f"{_fmt(pr[0])}-{_fmt(pr[1])}" if pr else "-")
                + " |"
            )
        L.append("")
        L.append("GPU roofline = copy (target); `read` = flat CuPy sum, reported beside it.")
        L.append("")

    if rows:
        L.append("## Results")
        L.append("")
        devs = sorted({r["device"] for r in rows if r["device"] in ("cpu", "cuda")})
        for op in OPS:
            for dt, nd in _combos(rows):
                sub = [r for r in rows if r["op"] == op and r["dtype"] == dt and r["ndim"] == nd]
                if not sub:
                    continue
                cols = _impls(sub)
                labels = []
                for r in sub:
                    if _label(r) not in labels:
                        labels.append(_label(r))
                labels.sort(
                    key=lambda s: (
                        WORKLOADS.index(s.split()[0]) if s.split()[0] in WORKLOADS else 99,
                        s,
                    )
                )
                extra = [f"{d} hr / best anchor" for d in devs]
                L.append(f"### {op} — {dt} {nd}-D")
                L.append("")
                L.append(
                    "| workload | "
                    + " | ".join(
                        f"{i} ({d})" if not i.startswith("hrarray") else f"**{i}**" for d, i in cols
                    )
                    + " | "
                    + " | ".join(extra)
                    + " |"
                )
                L.append("|---|" + "---|" * (len(cols) + len(extra)))
                for lab in labels:
                    cells = []
                    for d, i in cols:
                        r = next(
                            (
                                r
                                for r in sub
                                if _label(r) == lab and r["device"] == d and r["impl"] == i
                            ),
                            None,
                        )
                        cells.append(_cell(r))
                    sp = []
                    for d in devs:
                        h = next(
                            (
                                r
                                for r in sub
                                if _label(r) == lab
                                and r["device"] == d
                                and r["impl"].startswith("hrarray")
                            ),
                            None,
                        )
                        wname = lab.split()[0]
                        b = (
                            _best_anchor(
                                sub, d, workload=wname, variant=h.get("variant") if h else None
                            )
                            if "level by level" not in lab
                            else None
                        )
                        sp.append(
                            f"{h['gbps'] / b['gbps']:.1f}x ({b['impl']})"
                            if h is not None and _good(h) and b is not None
                            else "-"
                        )
                    L.append(f"| {lab} | " + " | ".join(cells) + " | " + " | ".join(sp) + " |")
                L.append("")

        both = [r for r in rows if r["impl"] == "hrarray cuda" and "gbps" in r]
        if both:
            L.append("## hrarray: GPU vs CPU, same workload")
            L.append("")
            L.append("| op | dtype | ndim | workload | CPU GB/s | CUDA GB/s | CUDA / CPU |")
            L.append("|---|---|---|---|---|---|---|")
            for g in both:
                c = _find(
                    rows,
                    impl="hrarray cpu",
                    op=g["op"],
                    dtype=g["dtype"],
                    ndim=g["ndim"],
                    workload=g["workload"],
                    variant=g.get("variant"),
                )
                if c is None or "gbps" not in c:
                    continue
                L.append(
                    f"| {g['op']} | {g['dtype']} | {g['ndim']} | {_label(g)} | {_fmt(c['gbps'])} | "
                    f"{_fmt(g['gbps'])} | {g['gbps'] / c['gbps']:.1f}x |"
                )
            L.append("")

        odd = [
            r
            for r in rows
            if "error" in r or (("gbps" in r) and not r.get("ok")) or r.get("events_suspect")
        ]
        if odd:
            L.append("## Errors, wrong results, flags")
            L.append("")
            for r in odd:
                what = r.get("error") or r.get("why") or ""
                if r.get("events_suspect"):
                    what += " (CUDA events << wall clock: wall clock used)"
                v = f"/{r['variant']}" if r.get("variant") else ""
                L.append(
                    f"- {r['device']} {r['impl']} {r['op']} {r['workload']}{v} {r['dtype']} "
                    f"{r['ndim']}-D: "
                    f"{'ERR' if 'error' in r else 'WRONG' if not r.get('ok', True) else ''} {what}"
                )
            L.append("")

    ov = doc.get("overheads")
    if ov:
        L += _overheads_md(ov)

    if doc.get("workloads"):
        L.append("## Workloads")
        L.append("")
        L.append(
            "| workload | dtype | ndim | rows | segments | max len | median len | empty | values "
            "MB | offsets MB |"
        )
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for w in doc["workloads"]:
            lv = f" (levels {w['level_sizes']})" if w.get("level_sizes") else ""
            L.append(
                f"| {w['workload']} | {w['dtype']} | {w['ndim']} | {w['rows']} | "
                f"{w['nsegments']}{lv} | "
                f"{w['max_len']} | {w['median_len']:g} | {w['n_empty']} | {w['values_MB']} | "
                f"{w['offsets_MB']} |"
            )
        L.append("")
    L.append("## What each anchor's time includes")
    L.append("")
    for k, v in (doc.get("anchor_notes") or {}).items():
        L.append(f"- **{k}**: {v}")
    for k, v in (doc.get("anchors_unavailable") or {}).items():
        L.append(f"- **{k}**: not measured: {v}")
    L.append(
        "- **hrarray**: `hr.<op>(x)` on a `RaggedArray` built (and validated) once outside the "
        "timing; "
        "the output allocation is inside. Hierarchy: `levels=3` in one call, and `level by level` "
        "= three "
        "chained one-level calls (sum, max, logsumexp only: for the other ops the composition is a "
        "different "
        "quantity). Anchors run on the composed top-level offsets (the composition is timed)."
    )
    L.append("")
    return "\n".join(L) + "\n"


def _overheads_md(ov) -> list[str]:
    L = ["## Overheads", ""]
    L.append("| what | value | target | note |")
    L.append("|---|---|---|---|")
    co = ov.get("call_overhead") or {}
    if "hr.sum_median_us" in co:
        xs = co.get("x.sum()_median_us")
        L.append(
            f"| `hr.sum(x)`, 10 segments of 10 float64 (median of {co['calls']}) | "
            f"{co['hr.sum_median_us']:.1f} µs (p90 {co['hr.sum_p90_us']:.1f}) | <= 20 µs | "
            f"`x.sum()` {'-' if xs is None else f'{xs:.1f} µs'}; `np.add.reduceat` "
            f"{co['np.add.reduceat_median_us']:.1f} µs; `RaggedArray(...)` "
            f"{co['RaggedArray()_median_us']:.1f} µs |"
        )
    elif co:
        L.append(f"| call overhead | ERR | <= 20 µs | {co.get('error')} |")
    imp = ov.get("import") or {}
    if "import_s" in imp:
        ctx = imp.get("context") or {}
        mods = ", ".join(k for k, v in (imp.get("imported") or {}).items() if v) or "none"
        L.append(
            f"| `import hrarray` (fresh process, best of {len(imp.get('runs', []))}) | "
            f"{imp['import_s']:.3f} s "
            f"(first run {imp['first_run_import_s']:.3f} s) | <= 0.3 s | numpy alone "
            f"{ctx.get('numpy_s', float('nan')):.3f} s, numba after numpy "
            f"{ctx.get('numba_after_numpy_s', float('nan')):.3f} s; "
            f"modules loaded: {mods} |"
        )
        L.append(
            f"| kernels compiled by the import | {imp.get('compiled_count')} | 0 | "
            "`hrarray._kernels.compiled_count()` |"
        )
    elif imp:
        L.append(f"| import | ERR | <= 0.3 s | {imp.get('runs') or imp.get('error')} |")
    fc = ov.get("first_call") or {}
    rep = fc.get("reported") or {}
    if "first_call_s" in rep:
        nj = (fc.get("plain_njit_cached_first_call") or {}).get("first_call_s", float("nan"))
        L.append(
            "| first result in a fresh process, disk cache warm (2nd run): `RaggedArray(...)` + "
            f"first `hr.sum` | {rep.get('to_first_result_s', float('nan')):.3f} s | <= 0.5 s | "
            f"construct {rep['construct_s']:.3f} s (offsets check) + first call "
            f"{rep['first_call_s']:.3f} s; Numba imported: "
            f"{'yes' if rep.get('numba_imported') else 'no'}; after import "
            f"{rep['import_s']:.3f} s; second call {rep['second_call_s'] * 1e6:.0f} µs; then a "
            f"first 2-D float32 `hr.max` {rep.get('first_2d_max_s', float('nan')):.3f} s; 1st "
            f"run's first call {(fc.get('first_run') or {}).get('first_call_s', float('nan')):.3f}"
            f" s; a trivial disk-cached `@njit` function's first call: {nj:.3f} s |"
        )
    elif fc:
        L.append(f"| first call | ERR | <= 0.5 s | {rep.get('error') or fc} |")
    cc = ov.get("cold_compile") or {}
    for s in cc.get("signatures", []):
        L.append(
            f"| cold compile `hr.{s['op']}` {s['dtype']} {s['ndim']}-D (empty caches) | "
            f"{s['compile_s']:.2f} s | - | "
            f"first call {s['first_s']:.2f} s, then {s['second_s'] * 1e6:.0f} µs"
            + (f"; compiled_count {s['compiled_count']}" if "compiled_count" in s else "")
            + (f"; a first call cut into parallel chunks: {s['parallel_compile_s']:.2f} s more"
               + (f" ({s['parallel_compiled']} more compiled)" if "parallel_compiled" in s
                  else "")
               if "parallel_compile_s" in s else "")
            + " |"
        )
    if cc.get("error"):
        L.append(f"| cold compile | ERR | - | {cc['error']} |")
    mem = ov.get("memory")
    if isinstance(mem, list):
        for r in mem:
            L.append(
                f"| peak extra memory `hr.{r['op']}` {r['dtype']} {r['ndim']}-D ({r['nsegments']} "
                "segments x "
                f"{r['inner']}) | {r['peak_extra_bytes'] / 1e6:.2f} MB | O(nseg x inner) | "
                f"{r['extra_over_values']:.3f} x values ({r['values_bytes'] / 1e6:.0f} MB), "
                f"{r['extra_over_nseg_x_inner_x8']:.1f} x nseg x inner x 8 B; output "
                f"{r['output_bytes'] / 1e6:.2f} MB |"
            )
    elif isinstance(mem, dict) and mem.get("error"):
        L.append(f"| memory | ERR | - | {mem['error']} |")
    L.append("")
    return L


def summary_text(doc) -> str:
    """A short plain summary for the end of stdout."""
    L = []
    tg = targets(doc)
    if tg:
        L.append("targets:")
        for t in tg:
            L.append(
                f"  [{t['status']:4s}] {t['target']}: {t['value']} (want {t['want']}; worst: "
                f"{t['where']})"
            )
    hr = [r for r in _rows(doc) if r["impl"].startswith("hrarray") and "gbps" in r]
    ops = [o for o in OPS if any(r["op"] == o for r in hr)]
    if hr:
        L.append("hrarray GB/s (ratio to the flat read beside it; to the run-wide roofline); "
                 "* = WRONG")
        L.append(f"  {'device case':44s}" + "".join(f"{o:>20s}" for o in ops))
        keys = []
        for r in hr:
            k = (r["device"], r["dtype"], r["ndim"], r["workload"], r.get("variant") or "")
            if k not in keys:
                keys.append(k)
        for dev, dt, nd, w, v in keys:
            cells = []
            for o in ops:
                r = next(
                    (
                        x
                        for x in hr
                        if (
                            x["device"],
                            x["dtype"],
                            x["ndim"],
                            x["workload"],
                            x.get("variant") or "",
                            x["op"],
                        )
                        == (dev, dt, nd, w, v, o)
                    ),
                    None,
                )
                cells.append(
                    "-"
                    if r is None
                    else f"{_fmt(r['gbps'])} ({_ratios(r)})"
                    + ("" if r.get("ok") else "*")
                )
            name = f"{dev} {dt} {nd}-D {w}" + (f"/{v}" if v else "")
            L.append(f"  {name:44s}" + "".join(f"{c:>20s}" for c in cells))
    if doc.get("failures"):
        L.append(f"FAILURES: {len(doc['failures'])}")
        L += [f"  {f}" for f in doc["failures"]]
    if doc.get("bench_errors"):
        L.append(f"BENCH ERRORS (bench/ bugs): {len(doc['bench_errors'])}")
        L += [f"  {f}" for f in doc["bench_errors"]]
    return "\n".join(L)


# ---------------------------------------------------------------------------- plots
def plot(doc, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in _rows(doc) if "gbps" in r]
    paths = []
    roofs = {(r["device"], r["dtype"], r["ndim"]): r for r in doc.get("rooflines", [])}
    for dt, nd in _combos(rows):
        sub = [r for r in rows if r["dtype"] == dt and r["ndim"] == nd]
        wls = [w for w in WORKLOADS if any(r["workload"] == w for r in sub)]
        ops = [o for o in OPS if any(r["op"] == o for r in sub)]
        impls = []
        for r in sub:
            key = (
                r["device"],
                r["impl"] + (" (level by level)" if r.get("variant") == "level by level" else ""),
            )
            if key not in impls:
                impls.append(key)
        first_seen = list(impls)
        impls.sort(
            key=lambda k: (k[0] != "cpu", not k[1].startswith("hrarray"), first_seen.index(k))
        )
        ncol = min(3, len(wls))
        nrow = math.ceil(len(wls) / ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(6.2 * ncol, 4.2 * nrow), squeeze=False)
        # hrarray in fixed blues (CPU) and greens (CUDA); anchors in the other tab10 colours
        fixed = {
            "hrarray cpu": "#1f4e9c",
            "hrarray cpu (level by level)": "#8fb3e8",
            "hrarray cuda": "#1b7d33",
            "hrarray cuda (level by level)": "#8fd19e",
        }
        others = [plt.get_cmap("tab10")(i) for i in (1, 3, 4, 5, 6, 7, 8, 9)]
        anchors = [k for k in impls if k[1] not in fixed]
        colors = {k: fixed.get(k[1]) or others[anchors.index(k) % len(others)] for k in impls}
        devs = {k[0] for k in impls}
        vals = [r["gbps"] for r in sub if r["gbps"] > 0]
        vals += [
            _num(rf.get(f))
            for (dv, t, n), rf in roofs.items()
            if (t, n) == (dt, nd) and dv in devs
            for f in ("roofline", "read")
            if f in rf
        ]
        logy = len(devs) > 1 or (bool(vals) and max(vals) / min(vals) > 30)
        width = 0.8 / max(1, len(impls))
        for ax, w in zip(axes.ravel(), wls, strict=False):
            for j, key in enumerate(impls):
                xs, hs, bad = [], [], []
                for i, op in enumerate(ops):
                    r = next(
                        (
                            r
                            for r in sub
                            if r["workload"] == w
                            and r["op"] == op
                            and r["device"] == key[0]
                            and r["impl"]
                            + (" (level by level)" if r.get("variant") == "level by level" else "")
                            == key[1]
                        ),
                        None,
                    )
                    if r is None:
                        continue
                    xs.append(i - 0.4 + (j + 0.5) * width)
                    hs.append(r["gbps"])
                    bad.append(not r.get("ok"))
                if xs:
                    bars = ax.bar(
                        xs,
                        hs,
                        width,
                        color=colors[key],
                        label=f"{key[1]} ({key[0]})"
                        if not key[1].startswith("hrarray")
                        else key[1],
                    )
                    for b, isbad in zip(bars, bad, strict=True):
                        if isbad:
                            b.set_hatch("xx")
                            b.set_edgecolor("red")
            for dev, style, field in (
                ("cpu", "--", "roofline"),
                ("cuda", "-.", "copy"),
                ("cuda", ":", "read"),
            ):
                rf = roofs.get((dev, dt, nd))
                if rf and dev in devs and field in rf:
                    name = {
                        "roofline": "CPU roofline",
                        "copy": "GPU copy roofline",
                        "read": "GPU flat read",
                    }[field]
                    # the roofline WORKLOADS.md defines: the run's fastest flat read
                    ax.axhline(
                        _num(rf[field]),
                        color="black" if dev == "cpu" else "green",
                        ls=style,
                        lw=1.2,
                        label=name + (" (run's fastest flat read)" if dev == "cpu" else ""),
                    )
                    beside = [
                        r["roof_gbps"] for r in sub
                        if r["workload"] == w and r["device"] == "cpu" and "roof_gbps" in r
                    ]
                    if dev == "cpu" and beside:
                        # and the flat read timed beside this workload's cases, which
                        # the first ratio of the tables is taken to
                        ax.axhline(
                            statistics.median(beside),
                            color="gray",
                            ls=":",
                            lw=1.0,
                            label="CPU flat read beside the cases (median)",
                        )
            ax.set_xticks(range(len(ops)))
            ax.set_xticklabels(ops, rotation=20, fontsize=8)
            ax.set_title(w + (" (levels=3)" if w == "hierarchy" else ""))
            ax.set_ylabel("GB/s (input bytes)")
            if logy:
                ax.set_yscale("log")
            ax.grid(axis="y", alpha=0.3)
        for ax in axes.ravel()[len(wls) :]:
            ax.axis("off")
        handles, labels = [], []
        for ax in axes.ravel():
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=min(6, len(labels)),
            fontsize=8,
            bbox_to_anchor=(0.5, 0.0),
        )
        m = doc["machine"]
        gpu = f" | {m['gpu']['name']}" if m.get("gpu") else ""
        fig.suptitle(
            f"hrarray bench: {dt} {nd}-D, {doc['params']['n_scalars']:.3g} scalars | "
            f"{m.get('cpu_model', '?')} x{m.get('numba_num_threads')}{gpu}  (hatched = WRONG)",
            fontsize=10,
        )
        fig.tight_layout(rect=(0, 0.03 + 0.025 * math.ceil(len(labels) / 6) / nrow, 1, 0.96))
        p = Path(out) / f"plot_{dt}_{nd}d.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths
