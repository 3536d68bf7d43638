#!/usr/bin/env bash
# GPU check for hrarray on a machine with an NVIDIA GPU and NO network.
#
# Needs (already installed there): python3 (3.12) with numpy, numba, numba-cuda,
# cupy-cuda13x, pytest, hypothesis; torch, matplotlib, tqdm optional. Installs
# nothing from the network: hrarray is used from this checkout via PYTHONPATH;
# wheels found in ./.whl (e.g. cuda-cccl for the cuda.compute anchor) are
# installed offline into a temporary folder if present.
#
# Steps, each under `timeout`, each continuing on failure (except the smoke test):
#   1. versions (python, numpy, numba, numba-cuda, cupy, torch, nvidia-smi -L)
#   2. smoke test: hrarray sum/max/argmax of a small CuPy and numba device array
#      against the CPU; if it fails the script stops here (the rest would only fail
#      the same way, on a lease's minutes)
#   3. python3 -m hrarray bench --device all: sum/mean/max/argmax, float32,
#      all workloads, 1-D and 2-D, 1e8 scalars, the GPU anchors (the CPU anchors
#      are measured on the development machine; at 1e8 they would eat the budget)
#                                                                -> $OUT/bench.log, $OUT/bench/*
#   4. python3 -m pytest -k "cuda or gpu" -n 12 -v: every CUDA-backend test on the real GPU
#      (hypothesis's full example counts), per-test timeout     -> $OUT/pytest.log
#   4b. (PROFILE=1) bench/gpu_profile.py: each launch's time and the host-side cost of a call,
#       with the fast launch on and off                          -> $OUT/profile.log
#   4c. (CONFIGS="256:16 256:32 ...") the same kernel split per BLOCK:ITEMS schedule
#                                                                -> $OUT/profile.log
#   4d. (unless SKIP_WIDE=1) bench/gpu_profile.py on rows of 65, 256, 768 and 4096 columns at
#       256 and 64 lanes across a row (kc.ROW_LANES), same run    -> $OUT/gpu_check.log
#   4e. (unless SKIP_PROBES=1) bench/gpu_probes.py: stream order, no host sync, per-thread
#       default streams, the fast launch, a context reset        -> $OUT/gpu_check.log
#   5. bench/gpu_sweep.py: every op x workload x 1-D/2-D x f32/f64 at 1e8,
#      CUDA vs float64 reference and vs hrarray CPU              -> $OUT/sweep.log
#   6. a short summary table: the LAST lines of stdout.
# At most 8 files under $OUT: gpu_check.log pytest.log sweep.log bench.log
# bench/results.md bench/results.json bench/plot_float32_1d.png bench/plot_float32_2d.png
#
# Usage (from anywhere):  OUT=/some/dir bash bench/gpu_check.sh
# Time limits (seconds, env): BENCH_BUDGET=200 PYTEST_TIMEOUT=240 SWEEP_BUDGET=80
# (the bench's and the sweep's `timeout` add 30 s to their budgets for writing results).
# Seen on an H200 machine (bench/RESULTS.md Run 17): the bench took 124 s for every workload
# once and 100 s for the 1-D half on another machine of the kind; the GPU tests got through
# 40 % in 80 s with -n 12 (so ~4 min in all); the sweep checks ~21 cases a minute, float32
# first (SWEEP_BUDGET=600 for all of it). A 15-minute lease: SKIP_SWEEP=1 and the defaults
# fit one call with a few minutes to spare; a machine start costs ~30 s, idling 30 s more.

set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
OUT=${OUT:-$ROOT/bench/out/gpu}
mkdir -p "$OUT/bench"
LOG=$OUT/gpu_check.log
: >"$LOG"
PYTEST_TIMEOUT=${PYTEST_TIMEOUT:-240}
SWEEP_BUDGET=${SWEEP_BUDGET:-80}
BENCH_BUDGET=${BENCH_BUDGET:-200}
T_START=$(date +%s)

say() { echo "$*" | tee -a "$LOG"; }
elapsed() { echo $(($(date +%s) - T_START)); }

export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1
export NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0
export NUMBA_CUDA_WARN_ON_IMPLICIT_COPY=0
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# numba-cuda finds NVVM through CUDA_HOME when it is not in a wheel
if [ -z "${CUDA_HOME:-}" ] && [ -z "${CUDA_PATH:-}" ] && command -v nvcc >/dev/null 2>&1; then
  CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
  export CUDA_HOME
  say "CUDA_HOME set from nvcc: $CUDA_HOME"
fi
# optional offline wheels (no index, no network)
if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
  if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/hrbench-site \
      "$ROOT"/.whl/*.whl >>"$LOG" 2>&1; then
    export PYTHONPATH="$PYTHONPATH:/tmp/hrbench-site"
    say "offline wheels installed from .whl/: $(cd "$ROOT/.whl" && ls ./*.whl | tr '\n' ' ')"
  else
    say "offline wheels from .whl/ failed to install (see log); continuing without them"
  fi
fi

# steps 2-4 run through bench/_py_compat.py: it aliases np.row_stack (removed in NumPy 2.5,
# still referenced by numba-cuda 0.30) and says so on stderr; nothing else changes
PY="python3 bench/_py_compat.py"

say "== 1. versions ($(date -u +%FT%TZ))"
timeout 60 python3 - 2>&1 <<'EOF' | tee -a "$LOG"
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("numpy", "numba", "numba_cuda", "cupy", "torch", "hypothesis", "pytest", "matplotlib",
             "tqdm", "awkward", "cuda.compute", "hrarray"):
    try:
        m = importlib.import_module(name)
        print(f"{name:14s}", getattr(m, "__version__", "(no __version__)"), getattr(m, "__file__", ""))
    except Exception as e:
        print(f"{name:14s} NOT IMPORTABLE: {type(e).__name__}: {str(e)[:120]}")
try:
    import cupy as cp
    p = cp.cuda.runtime.getDeviceProperties(0)
    print("cupy device:", p["name"].decode(), "driver", cp.cuda.runtime.driverGetVersion(),
          "runtime", cp.cuda.runtime.runtimeGetVersion())
except Exception as e:
    print("cupy device: NONE", type(e).__name__, e)
try:
    from numba import cuda
    print("numba.cuda.is_available():", cuda.is_available())
except Exception as e:
    print("numba.cuda: ERROR", type(e).__name__, e)
EOF
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L 2>&1 | tee -a "$LOG"; else say "nvidia-smi not found"; fi

say "== 2. smoke test at $(elapsed)s"
timeout 150 $PY bench/gpu_smoke.py >>"$LOG" 2>&1
RC_SMOKE=$?
tail -n 14 "$LOG"
if [ "$RC_SMOKE" -ne 0 ]; then
  say "smoke test FAILED (rc=$RC_SMOKE): stopping here at $(elapsed)s"
  exit 1
fi

say "== 3. benchmark, --device all, float32, sum/mean/max/argmax, 1e8 (budget ${BENCH_BUDGET}s) at $(elapsed)s"
timeout $((BENCH_BUDGET + 30)) $PY -m hrarray bench --device all --dtypes float32 --ndims 1,2 \
  --ops sum,mean,max,argmax --repeats 5 --cap-s 1 --budget-s "$BENCH_BUDGET" --no-overheads \
  --anchors "torch.segment_reduce,cuda.compute,awkward cuda,cupy cumsum-diff f32,cupy cumsum-diff f64" \
  --out "$OUT/bench" >"$OUT/bench.log" 2>&1
RC_BENCH=$?
grep -E "FAILURE|WRONG|BENCH BUG|Traceback" "$OUT/bench.log" | head -n 12 | tee -a "$LOG"
say "bench rc=$RC_BENCH"

say "== 4. pytest -k 'cuda or gpu' on the GPU (timeout ${PYTEST_TIMEOUT}s) at $(elapsed)s"
# NumPy >= 2.5 warns (DeprecationWarning) when numba-cuda imports its datetime helpers; the
# suite's `filterwarnings = error` would turn that into a collection error, so it is ignored here.
# -v: with xdist each test's outcome is a line as it ends, so a run cut by `timeout` still says
# what passed and what failed; `timeout -s INT` interrupts pytest as Ctrl-C would, so it still
# prints the tracebacks of the failures so far (a SIGTERM lost them on the H200 run).
timeout -s INT -k 30 "$PYTEST_TIMEOUT" $PY -m pytest -k "cuda or gpu" -n 12 -v --tb=short -rfE \
  -p no:cacheprovider -p no:benchmark --timeout 60 \
  -W "ignore:The 'generic' unit for NumPy timedelta:DeprecationWarning" >"$OUT/pytest.log" 2>&1
RC_PYTEST=$?
grep -cE "PASSED" "$OUT/pytest.log" | sed 's/^/pytest lines PASSED: /' | tee -a "$LOG"
grep -E "FAILED|ERROR" "$OUT/pytest.log" | head -n 15 | tee -a "$LOG"
tail -n 3 "$OUT/pytest.log" | tee -a "$LOG"
say "pytest rc=$RC_PYTEST"

if [ -n "${PROFILE:-}" ]; then
  # kernel split and host profile (bench/gpu_profile.py); PROFILE_OLD=DIR also runs the
  # hrarray package under DIR (an older tree) the same way, for a same-machine A/B
  say "== 4b. profile at $(elapsed)s"
  {
    if [ -n "${PROFILE_OLD:-}" ]; then
      echo "-- old tree: $PROFILE_OLD"
      PYTHONPATH="$PROFILE_OLD:$PYTHONPATH" timeout 90 $PY bench/gpu_profile.py ${PROFILE_ARGS:-}
    fi
    echo "-- this tree"
    timeout 90 $PY bench/gpu_profile.py ${PROFILE_ARGS:-}
    timeout 60 $PY bench/gpu_profile.py --cprofile
  } >"$OUT/profile.log" 2>&1
  grep -E "^--|events|host|launch|as_cuda|cupy.empty" "$OUT/profile.log" | tee -a "$LOG"
fi

if [ -n "${CONFIGS:-}" ]; then
  # schedule sweep, BLOCK:ITEMS pairs (e.g. CONFIGS="256:16 256:32 512:16 128:16"): each in
  # a process of its own (the settings are read at import), the kernel split of
  # bench/gpu_profile.py per case; appended to profile.log (the files under $OUT are few)
  say "== 4c. schedule sweep ($CONFIGS) at $(elapsed)s"
  for c in $CONFIGS; do
    echo "-- HRARRAY_CUDA_BLOCK=${c%%:*} HRARRAY_CUDA_ITEMS=${c##*:}"
    HRARRAY_CUDA_BLOCK=${c%%:*} HRARRAY_CUDA_ITEMS=${c##*:} timeout "${CONFIG_TIMEOUT:-90}" \
      $PY bench/gpu_profile.py --ops sum \
      --cases "${CONFIG_CASES:-uniform1d,tiny1d,one_huge1d,uniform2d,one_huge2d}"
  done >>"$OUT/profile.log" 2>&1
  grep -E "^-- HRARRAY|events" "$OUT/profile.log" | tail -n 60 | tee -a "$LOG"
fi

if [ "${SKIP_WIDE:-0}" != 1 ]; then
  # wide rows, the same run at 256 lanes across a row (the layout before ROW_LANES) and at
  # 64 (predicted ~1.3x on float32 sum: a quarter of the rows' bytes fewer in block carries)
  say "== 4d. wide rows, ROW_LANES 256 vs 64 at $(elapsed)s"
  # (its lines go to gpu_check.log: $OUT holds at most 8 files)
  timeout 120 $PY bench/gpu_profile.py --ops sum,max --row-lanes 256,64 \
    --cases uniform2d65,uniform2d256,uniform2d768,uniform2d4096 2>&1 \
    | grep -E "lanes|Error|Traceback" | tee -a "$LOG"
fi

if [ "${SKIP_PROBES:-0}" != 1 ]; then
  # streams, host syncs, per-thread default streams, the fast launch, a context reset
  # (bench/gpu_probes.py; a few seconds); its lines go to gpu_check.log
  say "== 4e. probes at $(elapsed)s"
  timeout 300 $PY bench/gpu_probes.py 2>&1 | tail -n 20 | tee -a "$LOG"
fi

if [ "${SKIP_SWEEP:-0}" = 1 ]; then
  say "== 5. correctness sweep skipped (SKIP_SWEEP=1)"
  RC_SWEEP=skipped
else
say "== 5. correctness sweep at 1e8 (budget ${SWEEP_BUDGET}s) at $(elapsed)s"
timeout $((SWEEP_BUDGET + 30)) $PY bench/gpu_sweep.py --budget-s "$SWEEP_BUDGET" >"$OUT/sweep.log" 2>&1
RC_SWEEP=$?
grep -E "WRONG|ERROR|DIFFER" "$OUT/sweep.log" | head -n 20 | tee -a "$LOG"
tail -n 1 "$OUT/sweep.log" | tee -a "$LOG"
say "sweep rc=$RC_SWEEP"
fi

say "== 6. summary at $(elapsed)s"
python3 - "$OUT" "$RC_PYTEST" "$RC_SWEEP" "$RC_BENCH" 2>&1 <<'EOF' | tee -a "$LOG"
import json, os, re, sys
out, rc_pytest, rc_sweep, rc_bench = sys.argv[1], *sys.argv[2:5]
def last(path, pat=None):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return "(no log)"
    if pat:
        lines = [l for l in lines if re.search(pat, l)]
    return lines[-1].strip() if lines else "(empty)"
print(f"pytest (cuda):  rc={rc_pytest}: {last(os.path.join(out, 'pytest.log'), r'passed|failed|error|skipped|deselected|no tests')}")
print(f"gpu_sweep:      rc={rc_sweep}: {last(os.path.join(out, 'sweep.log'), r'^gpu_sweep:')}")
print(f"bench:          rc={rc_bench}")
try:
    doc = json.load(open(os.path.join(out, "bench", "results.json")))
except (OSError, ValueError) as e:
    print("no bench results:", e)
    sys.exit(0)
roof = {(r["device"], r["ndim"]): r for r in doc.get("rooflines", [])}
for (dev, nd), r in sorted(roof.items()):
    extra = f", read {float(r['read']):.0f}" if "read" in r else ""
    print(f"roofline {dev} float32 {nd}-D: {float(r['roofline']):.0f} GB/s{extra}")
res = [r for r in doc["results"] if "gbps" in r]
ops = ("sum", "mean", "max", "argmax")
def cell(dev, impl, op, w, nd, variant=None):
    for r in res:
        if (r["device"], r["op"], r["workload"], r["ndim"]) == (dev, op, w, nd) and \
           (r["impl"] == impl if impl else not r["impl"].startswith("hrarray")) and \
           (variant is None or r.get("variant") == variant):
            return r
    return None
print("GB/s (ratio to copy for cuda, to roofline for cpu); * = wrong; best = best correct GPU anchor")
print(f"{'workload':22s} " + " ".join(f"{op + ' cuda':>15s} {op + ' cpu':>9s}" for op in ops) + f" {'best GPU anchor (sum)':>28s}")
wls = []
for r in res:
    if (r["workload"], r["ndim"]) not in wls:
        wls.append((r["workload"], r["ndim"]))
for w, nd in wls:
    cells = []
    for op in ops:
        variant = "levels=3" if w == "hierarchy" else ""
        g = cell("cuda", "hrarray cuda", op, w, nd, variant)
        c = cell("cpu", "hrarray cpu", op, w, nd, variant)
        fmt = lambda r: "-" if r is None else f"{r['gbps']:.0f}" + (f"({float(r['ratio']):.2f})" if "ratio" in r else "") + ("" if r.get("ok") else "*")
        cells.append(f"{fmt(g):>15s} {('-' if c is None else format(c['gbps'], '.1f') + ('' if c.get('ok') else '*')):>9s}")
    anchors = [r for r in res if r["device"] == "cuda" and not r["impl"].startswith("hrarray") and r["op"] == "sum"
               and r["workload"] == w and r["ndim"] == nd and r.get("ok")]
    best = max(anchors, key=lambda r: r["gbps"]) if anchors else None
    b = "-" if best is None else f"{best['gbps']:.0f} {best['impl']}"
    print(f"{w + ' ' + str(nd) + '-D':22s} " + " ".join(cells) + f" {b:>28s}")
fails = doc.get("failures") or []
print(f"hrarray failures in bench: {len(fails)}" + ("" if not fails else ": " + fails[0][:150]))
EOF
say "gpu_check done in $(elapsed)s"
