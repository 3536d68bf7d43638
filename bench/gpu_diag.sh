#!/usr/bin/env bash
# Kernel diagnosis on a GPU machine (no network): bench/gpu_profile.py for this tree and, with
# OLD=DIR, for the hrarray package under DIR (same machine, same run: an A/B), a host-side
# cProfile of the sum call, and Nsight Compute's sections for the reduce and fix-up kernels.
# Usage: OUT=/some/dir [OLD=.ab/old] bash bench/gpu_diag.sh   (about 3 minutes)
set -u
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-bench/out/diag}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
  CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")"); export CUDA_HOME
fi
P="python3 bench/_py_compat.py bench/gpu_profile.py"
if [ -n "${OLD:-}" ]; then
  echo "-- old tree $OLD"
  PYTHONPATH="$PWD/$OLD:$PYTHONPATH" timeout 90 $P 2>&1 | grep -v row_stack | tee "$OUT/profile_old.txt"
fi
echo "-- this tree"
timeout 90 $P 2>&1 | grep -v row_stack | tee "$OUT/profile_new.txt"
timeout 45 $P --cprofile >"$OUT/cprofile.txt" 2>&1
grep -E "host time|tottime" -A 22 "$OUT/cprofile.txt" | cut -c1-150 | head -26
command -v ncu >/dev/null || { echo "no ncu"; exit 0; }
timeout 120 ncu --clock-control none --section SpeedOfLight --section Occupancy \
  --section ComputeWorkloadAnalysis --section InstructionStats --section WarpStateStats \
  --section SourceCounters --section MemoryWorkloadAnalysis -k regex:"reduce|fixup" -c 4 \
  $P --once --cases uniform1d,uniform2d --ops sum >"$OUT/ncu.txt" 2>&1
echo "ncu rc=$?"
grep -E "^  [a-z_]+.*::(reduce|fixup)|Duration|Executed Ipc A|Issue Slots Busy|SM Busy|Executed Instructions  |Warp Cycles Per Issued|Stall|Branch Eff|L1/TEX Hit|Mem Busy|Max Bandwidth|DRAM Throughput|Compute \(SM\)|Achieved Occ|uncoalesced|bank" "$OUT/ncu.txt" | cut -c1-160 | head -90
