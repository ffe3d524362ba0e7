#!/bin/bash
# make seed-table: the seeds' comparison (issue 14) on a machine with an NVIDIA GPU, written to
# bench/results/<date>-seed-table.md and .csv (SEED_OUT: another folder).
#
# Rows: fp16, W4A16, KV int8, KV int4, W4A16 + KV int8, W4A16 + KV int4 (lmd-bench gen), and HF transformers
# fp16 eager (bench/hf_baseline.py; memory from torch.cuda.max_memory_allocated). On the Llama-2-7B shape with
# random weights (t/gen-model --fast, and --awq 128 for W4A16): GPU memory (weights, KV of 8 sessions of 2048
# tokens, total in use), the most 2048-token sessions the GPU holds (KV pool room after weights, workspace and
# context, over a session's blocks), output tok/s at 1 and 64 concurrent, TTFT at 128 and 2048 prompt tokens.
# On lmd-small (real weights; W4 by lmd-awq --method rtn): GPU perplexity and KLD against its fp16 (wikitext-2).
#   PROMPTS=FILE   also measure each row on your own prompts (JSON lines {"prompt": ...}; lmd-run generate).
# Environment as gpu-check.sh: SHARED (default ../shared), PREBUILT; SEED_TMP (default /tmp/seed-table) holds the
# models, made once; SEED_STEP=models makes them and stops; SEED_DEVICE (default cuda) and SEED_SHAPE (t/gen-model's
# shape options, default Llama-2-7B's) run the table elsewhere, e.g. a small shape on the CPU to try the script.
set -u
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
export LMD_SHARE=$PWD/share
out=${SEED_OUT:-bench/results}
day=$(date -u +%Y-%m-%d)
csv=$out/$day-seed-table.csv md=$out/$day-seed-table.md
if [ -n "${PREBUILT:-}" ]; then
	bench/prebuilt.sh --unpack "$PREBUILT" || exit 1
	export LD_LIBRARY_PATH=$PWD/build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
	make -j"$(nproc)" all >/dev/null || exit 1
fi
tmp=${SEED_TMP:-/tmp/seed-table}
mkdir -p "$out" "$tmp"
dev=${SEED_DEVICE:-cuda}
shape=${SEED_SHAPE:---hidden 4096 --inter 11008 --layers 32 --heads 32 --kv-heads 32 --vocab 32000 --max-pos 4096}
for w in f16 w4; do  # the Llama-2-7B-shaped models
	[ -d "$tmp/llama2-7b-$w" ] && continue
	opt="--fast"; [ $w = w4 ] && opt="--awq 128"
	build/t/gen-model $shape --dtype f16 --scaled $opt "$tmp/hf-$w" || exit 1
	cp "$SHARED"/tokenizers/llama2/tokenizer.model "$SHARED"/tokenizers/llama2/special_tokens_map.json "$tmp/hf-$w"/
	build/bin/lmd-convert -q "$tmp/hf-$w" "$tmp/llama2-7b-$w" || exit 1
	[ $w = w4 ] && rm -rf "$tmp/hf-$w"
done
small=$tmp/small-w4
if [ ! -d "$small" ]; then
	build/bin/lmd-awq "$SHARED/models/lmd-small" --method rtn -o "$tmp/small-w4-hf" --force -q &&
		build/bin/lmd-convert -q --model-format awq "$tmp/small-w4-hf" "$small" || exit 1
fi
[ "${SEED_STEP:-}" = models ] && exit 0
wiki=$SHARED/data/wikitext-2-raw/wiki.test.raw
# one lmd row: name, weights (f16|w4), quant policy
row() {
	local name=$1 w=$2 qp=$3 m=$tmp/llama2-7b-$2 log=$tmp/$2-$3.log
	build/bin/lmd-bench gen -v --device $dev --quant-policy "$qp" --concurrency 1,64 --prompt-tokens 128 \
		--completion-tokens 128 -f csv "$m" >"$tmp/gen.csv" 2>"$log" || { cat "$log"; return 1; }
	build/bin/lmd-bench gen --device $dev --quant-policy "$qp" --concurrency 1 --prompt-tokens 2048 \
		--completion-tokens 16 -f csv "$m" 2>>"$log" | grep -v "^date" >>"$tmp/gen.csv" || return 1
	# the memory report of the first run: weights, KV block, workspace, free, total (MiB)
	local mem
	mem=$(grep -o "GPU memory: weights [0-9.]* MiB, KV pool [0-9]* blocks x [0-9.]* MiB = [0-9.]* MiB, workspace [0-9.]* MiB.*free [0-9.]* of [0-9.]* MiB" "$log" | head -1 |
		sed -E 's/.*weights ([0-9.]+) MiB, KV pool ([0-9]+) blocks x ([0-9.]+) MiB = ([0-9.]+) MiB, workspace ([0-9.]+) MiB.*free ([0-9.]+) of ([0-9.]+) MiB/\1 \2 \3 \4 \5 \6 \7/')
	local ppl kld=""
	if [ $w = w4 ]; then sm=$small; else sm=$SHARED/models/lmd-small; fi
	ppl=$(build/bin/lmd-bench ppl --device $dev --dtype fp16 --quant-policy "$qp" --windows 16 --text "$wiki" \
		--kld-base "$SHARED/models/lmd-small" -f json "$sm" 2>/dev/null)
	python3 - "$name" "$tmp/gen.csv" "$mem" "$ppl" <<'PY' >>"$csv"
import csv, json, math, sys
name, gen, mem, ppl = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4]
rows = list(csv.DictReader(open(gen)))
by = {(r["concurrency"], r["prompt_tokens"]): r for r in rows}
if len(mem) == 7:  # a device with a memory report
    wts, nblk, blk, pool, ws, free, total = (float(x) for x in mem)
    per_session = math.ceil(2048 / 64) * blk      # 64-token blocks (lmd-bench's default)
    fit = int((free + pool) // per_session)      # what the pool could hold: its room plus what is still free
    wts, kv8, used = f"{wts:.0f}", f"{8 * per_session:.0f}", f"{total - free:.0f}"
else:
    wts = kv8 = used = fit = ""
q = json.loads(ppl) if ppl.strip().startswith("{") else {}
print(",".join(str(x) for x in [name, wts, kv8, used, fit,
      by[("1", "128")]["output_tok_s"], by[("64", "128")]["output_tok_s"], by[("1", "128")]["ttft_mean_ms"],
      by[("1", "2048")]["ttft_mean_ms"], q.get("ppl", ""), q.get("kld", "")]))
PY
}
echo "config,weights_mib,kv_8x2048_mib,gpu_used_mib,sessions_2048,tok_s_1,tok_s_64,ttft_128_ms,ttft_2048_ms,ppl_lmd_small,kld_lmd_small" >"$csv"
row fp16 f16 0 && row W4A16 w4 0 && row "KV int8" f16 8 && row "KV int4" f16 4 && row "W4A16 + KV int8" w4 8 &&
	row "W4A16 + KV int4" w4 4 || exit 1
# HF transformers fp16, eager
env -u LD_LIBRARY_PATH python3 bench/hf_baseline.py "$tmp/hf-f16" --batch 1,64 --mem >"$tmp/hf.csv" 2>"$tmp/hf.log" &&
	env -u LD_LIBRARY_PATH python3 bench/hf_baseline.py "$tmp/hf-f16" --batch 1 --prompt 2048 --completion 2 \
		>"$tmp/hf2048.csv" 2>>"$tmp/hf.log" &&
	python3 - "$tmp/hf.csv" "$tmp/hf2048.csv" <<'PY' >>"$csv"
import csv, sys
a = {r["batch"]: r for r in csv.DictReader(open(sys.argv[1]))}
b = list(csv.DictReader(open(sys.argv[2])))[0]
print(",".join(["HF transformers fp16 (eager)", a["1"].get("weights_mib", ""), "", a["64"].get("max_mem_mib", ""), "",
                a["1"]["output_tok_s"], a["64"]["output_tok_s"], a["1"]["ttft_ms"], b["ttft_ms"], "", ""]))
PY
if [ -n "${PROMPTS:-}" ]; then  # speed on your own data
	echo "config,prompts,tok_s" >"$out/$day-seed-table-prompts.csv"
	for c in "fp16 f16 0" "W4A16 w4 0" "KV-int8 f16 8" "W4A16+KV-int8 w4 8"; do
		set -- $c
		s=$(date +%s.%N)
		n=$(build/bin/lmd-run generate --device $dev --quant-policy $3 --temperature 0 "$tmp/llama2-7b-$2" <"$PROMPTS" |
			python3 -c 'import json,sys; print(sum(json.loads(l)["completion_tokens"] for l in sys.stdin))')
		echo "$1,$(wc -l <"$PROMPTS"),$(python3 -c "print(round($n / ($(date +%s.%N) - $s), 1))")" >>"$out/$day-seed-table-prompts.csv"
	done
fi
{
	echo "# The seeds' table — $day, $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), commit $(cat COMMIT 2>/dev/null || git rev-parse --short HEAD)"
	echo
	echo "Llama-2-7B shape (random weights): memory, sessions, speed; lmd-small (real weights, wikitext-2, 16 windows"
	echo "of 512): GPU perplexity and KLD against its fp16. Made by \`make seed-table\` (bench/seed-table.sh)."
	echo
	python3 - "$csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
print("| " + " | ".join(rows[0]) + " |")
print("|" + "---|" * len(rows[0]))
for r in rows[1:]:
    print("| " + " | ".join(r) + " |")
PY
	[ -f "$out/$day-seed-table-prompts.csv" ] && { echo; echo "Own prompts ($PROMPTS):"; cat "$out/$day-seed-table-prompts.csv"; }
} >"$md"
cat "$md"
