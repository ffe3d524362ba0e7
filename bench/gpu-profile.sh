#!/bin/bash
# Per-kernel GPU times of lmd's decode and prefill steps under Nsight Compute (device machine only):
# a Llama-2-7B-shaped fp16 model cut to 4 layers (per-layer kernels are the 7B ones), one 128-token
# prefill and 8 decode steps at batch 1, every kernel timed (gpu__time_duration), summed by kernel name;
# then the full section set for one prefill flash-attention launch and one decode GEMV. PROFILE_MODEL=w4: the
# W4A16 g128 model of the same shape. Caches are not flushed between kernels (--cache-control none), as in a step.
# Output: $OUT/profile-kernels.txt, $OUT/profile-fa.txt. Needs PREBUILT or built programs (see gpu-check.sh).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}; SHARED=${SHARED:-../shared}
mkdir -p "$OUT"
if [ -n "${PREBUILT:-}" ]; then
	bench/prebuilt.sh --unpack "$PREBUILT" || exit 1
	export LD_LIBRARY_PATH=$PWD/build/lib
fi
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || ls /usr/local/cuda/bin/ncu)
echo "ncu: $NCU"
# PROFILE_MODEL=w4: the same shape as W4A16 g128 (t/gen-model --awq 128)
w=${PROFILE_MODEL:-f16}; opt=--fast; [ "$w" = w4 ] && opt="--awq 128"
export HF=/tmp/l4-hf-$w M=/tmp/l4-$w
[ -d "$M" ] || build/t/gen-model --hidden 4096 --inter 11008 --layers 4 --heads 32 --kv-heads 32 --vocab 32000 --dtype f16 \
	--max-pos 4096 --scaled $opt "$HF" >/dev/null && cp "$SHARED"/tokenizers/llama2/tokenizer.model "$HF"/ &&
	build/bin/lmd-convert --force "$HF" "$M" || exit 1
run() { build/bin/lmd-bench gen --device cuda --concurrency 1 --prompt-tokens "$1" --completion-tokens 9 --warmup 0 \
	--session-len 2300 -f csv "$M"; }
"$NCU" --clock-control none --cache-control none --metrics gpu__time_duration.sum --log-file /tmp/ncu-decode.log -f -o /tmp/x \
	bash -c "$(declare -f run); run 128" >/tmp/ncu-run.log 2>&1 || tail -5 /tmp/ncu-run.log
"$NCU" --csv --print-units base -i /tmp/x.ncu-rep \
	>/tmp/ncu.csv 2>/dev/null
env -u LD_LIBRARY_PATH python3 - /tmp/ncu.csv <<'PY' | tee "$OUT/profile-kernels.txt"
import csv, sys, collections, re
lines = open(sys.argv[1]).read().splitlines()
start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
if start is None:
    print("no CSV from ncu:", *lines[:20], sep="\n")
    sys.exit(0)
rows = list(csv.DictReader(lines[start:]))
t = collections.defaultdict(list)
for r in rows:
    name = re.sub(r"\(.*", "", r["Kernel Name"])[:60]
    v = r.get("Metric Value", "0").replace(",", "")
    t[name].append(float(v) / 1e3)  # ns -> us
print(f"{len(rows)} kernels timed (4-layer 7B-shaped model, 128-token prefill then 8 decode steps, batch 1)")
print(f"{'kernel':60s} {'calls':>6s} {'mean us':>9s} {'min us':>8s} {'max us':>8s} {'total us':>10s}")
for k, v in sorted(t.items(), key=lambda kv: -sum(kv[1])):
    print(f"{k:60s} {len(v):6d} {sum(v)/len(v):9.2f} {min(v):8.2f} {max(v):8.2f} {sum(v):10.1f}")
PY
[ -n "${NO_FA:-}" ] && exit 0
"$NCU" --clock-control none --set full -k regex:fa_kernel -c 1 bash -c "$(declare -f run); run 2048" \
	>"$OUT/profile-fa.txt" 2>&1
grep -E "Duration|Achieved Occupancy|Theoretical Occupancy|Registers Per|Shared Memory Configuration Size|Dynamic Shared|Compute \(SM\) Throughput|Memory Throughput|Bank Conflicts|Warp Cycles Per Issued|Stall|Block Limit|One or More|Est. Speedup" \
	"$OUT/profile-fa.txt" | head -60
