#!/bin/bash
# Per-kernel GPU times of lmd's decode steps under Nsight Compute (device machine only): a Llama-2-7B-shaped
# model cut to 4 layers (per-layer kernels are the 7B ones), PROFILE_CONC (default 1) sequences of 128 prompt
# tokens, every kernel timed (gpu__time_duration) with the DRAM bytes it moved; 4 decode steps (a step begins
# with embed_kernel) summed by kernel name, a step's time and bandwidth: at 1 sequence the last 4 of 8, else
# steps 24-27 of 32 (every sequence decoding: the prompts are prefilled 2048 tokens a step by then, and the
# first ones not yet done).
# Then the full section set (stall reasons, occupancy, throughputs) for the first PROFILE_FULL_COUNT (default 1)
# launches, after PROFILE_FULL_SKIP (default 0), of the kernels matching PROFILE_FULL (default fa_kernel, with a
# 2048-token prompt at batch 1; any other regex runs the decode above; PROFILE_FULL= none).
# PROFILE_MODEL=w4: the W4A16 g128 model of the same shape.
# PROFILE_TIMES=0 skips the per-kernel times. Caches are not flushed between kernels (--cache-control none),
# as in a step.
# Output: $OUT/profile-kernels[-TAG].txt, $OUT/profile-full[-TAG].txt (TAG: PROFILE_TAG, default none). Needs
# PREBUILT or built programs (see gpu-check.sh).
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
w=${PROFILE_MODEL:-f16}; opt=--fast; [ "$w" = w4 ] && opt="--awq 128"
cc=${PROFILE_CONC:-1} tag=${PROFILE_TAG:+-$PROFILE_TAG}
export HF=/tmp/l4-hf-$w M=/tmp/l4-$w
[ -d "$M" ] || build/t/gen-model --hidden 4096 --inter 11008 --layers 4 --heads 32 --kv-heads 32 --vocab 32000 --dtype f16 \
	--max-pos 4096 --scaled $opt "$HF" >/dev/null && cp "$SHARED"/tokenizers/llama2/tokenizer.model "$HF"/ &&
	build/bin/lmd-convert --force "$HF" "$M" || exit 1
run() { build/bin/lmd-bench gen --device cuda --concurrency "$2" --prompt-tokens "$1" \
	--completion-tokens $(($2 > 1 ? 33 : 9)) --warmup 0 --session-len 2300 -f csv "$M"; }
if [ "${PROFILE_TIMES:-1}" != 0 ]; then  # PROFILE_TIMES=0: the full section set alone
"$NCU" --clock-control none --cache-control none \
	--metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum --log-file /tmp/ncu-decode.log -f -o /tmp/x \
	bash -c "$(declare -f run); run 128 $cc" >/tmp/ncu-run.log 2>&1 ||
	tail -5 /tmp/ncu-run.log
"$NCU" --csv --print-units base -i /tmp/x.ncu-rep >/tmp/ncu.csv 2>/dev/null
env -u LD_LIBRARY_PATH python3 - /tmp/ncu.csv "$w" "$cc" <<'PY' | tee "$OUT/profile-kernels$tag.txt"
import csv, sys, collections, re
lines = open(sys.argv[1]).read().splitlines()
start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
if start is None:
    print("no CSV from ncu:", *lines[:20], sep="\n")
    sys.exit(0)
k = {}  # launch ID -> [name, metrics]
for r in csv.DictReader(lines[start:]):
    e = k.setdefault(int(r["ID"]), [re.sub(r"\(.*", "", r["Kernel Name"])[:60], {}])
    e[1][r["Metric Name"]] = float(r.get("Metric Value", "0").replace(",", ""))
ids = sorted(k)
steps = [i for i in ids if k[i][0] == "embed_kernel"]
S, cc = 4, int(sys.argv[3])
first = 24 if cc > 1 else len(steps) - S  # the window of steps (see the top of the script)
end = steps[first + S] if first + S < len(steps) else 1 << 62
last = [i for i in ids if len(steps) >= first + S and steps[first] <= i < end]
t = collections.defaultdict(lambda: [0, 0.0, 0.0])
for i in last:
    m = k[i][1]
    e = t[k[i][0]]
    e[0] += 1
    e[1] += m.get("gpu__time_duration.sum", 0) / 1e3  # ns -> us
    e[2] += m.get("dram__bytes_read.sum", 0) + m.get("dram__bytes_write.sum", 0)
tot_us = sum(v[1] for v in t.values()) / S
tot_b = sum(v[2] for v in t.values()) / S
print(f"{len(ids)} kernels timed ({sys.argv[2]}, 4-layer 7B-shaped model, {sys.argv[3]} x 128-token prompts, "
      f"{len(steps)} steps); steps {first}-{first + S - 1} ({len(last)} kernels), per step:")
print(f"{'kernel':60s} {'calls':>6s} {'us':>9s} {'MB':>9s} {'GB/s':>8s}")
for name, v in sorted(t.items(), key=lambda kv: -kv[1][1]):
    print(f"{name:60s} {v[0] / S:6.1f} {v[1] / S:9.2f} {v[2] / S / 1e6:9.2f} {v[2] / max(v[1], 1e-9) / 1e3:8.0f}")
bw = tot_b / max(tot_us, 1e-9) / 1e3
print(f"{'step (kernels back to back)':60s} {'':6s} {tot_us:9.2f} {tot_b / 1e6:9.2f} {bw:8.0f}")
PY
fi
full=${PROFILE_FULL-fa_kernel}
[ -n "$full" ] || exit 0
if [ "$full" = fa_kernel ]; then set -- 2048 1; else set -- 128 "$cc"; fi
"$NCU" --clock-control none --set full -k "regex:$full" -c "${PROFILE_FULL_COUNT:-1}" --launch-skip "${PROFILE_FULL_SKIP:-0}" -f -o /tmp/full \
	bash -c "$(declare -f run); run $1 $2" >/tmp/ncu-full-run.log 2>&1
{
	"$NCU" -i /tmp/full.ncu-rep
	echo "== stall reasons (warps stalled per issued instruction, each profiled launch; from the raw page)"
	"$NCU" -i /tmp/full.ncu-rep --page raw | grep -E "^  [a-z_]+.*\(|issue_stalled_[a-z_]+_per_issue_active\.ratio" |
		awk '/\(/ {print; next} $NF + 0 >= 0.05'
} >"$OUT/profile-full$tag.txt" 2>&1
grep -E "^  [a-z_]+.*\(|Duration|Achieved Occupancy|Theoretical Occupancy|Registers Per|Dynamic Shared|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|Bank Conflicts|Warp Cycles Per Issued|Issue Slots Busy|Eligible Warps|Stall|Block Limit|One or More|Est. Speedup|issue_stalled" \
	"$OUT/profile-full$tag.txt" | head -120
