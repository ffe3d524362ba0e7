#!/bin/bash
# make gpu-check: on a machine with an NVIDIA GPU, build, run the CUDA op tests, the reference checks
# and the benchmarks, and write result files into $OUT (default bench/out), printing them as it goes.
#
#   bench/gpu-check.sh [correct|bench|serve|all|llama3|quant|kernels|kvq|ab]   (default all)
#
# correct  build; test-ops (every op vs the CPU reference, GPU-sized shapes with timings);
#          test-reference on the GPU (every ../shared/reference model vs HF: fp32 logprobs, greedy,
#          chunked and batched runs, bf16/fp16 top-1); greedy continuations of the trained models on
#          the GPU vs the CPU backend in the same dtype; 64 concurrent requests vs one at a time; CUDA graphs
#          on vs off (LMD_CUDA_GRAPH=0), which must give the same text.
# bench    a Llama-2-7B-shaped fp16 model with random weights (t/gen-model --fast, converted by
#          lmd-convert), lmd-bench gen at concurrency 1,16,64,256 x prompts 128,2048 (BENCH_CONC,
#          BENCH_PROMPTS), and the HF transformers eager baseline on the same model (bench/hf_baseline.py).
# serve    lmd-run serve on the same Llama-2-7B-shaped model, driven by t/gen-load (build/t/gen-load): 1, 16, 64
#          and 256 concurrent streamed completions of 128 random prompt tokens in and 128 out, beside lmd-bench
#          gen in-process at 256: output tokens/s and TTFT p50 / p99 of both in $OUT/serve.csv. Then lmd-bench
#          serve against it: 128 / 128 at 1, 16, 64, 256 concurrent and a ShareGPT-like mix (bench/sharegpt_like.py)
#          at 64 and 256: bench-serve-1.csv, bench-serve.gp and bench-serve-sharegpt.gp (gnuplot scripts with
#          their data: `gnuplot F.gp > F.png`), the tables in bench-serve.log.
# llama3   (alone) the same benchmark on a Llama-3-8B-shaped model (GQA, 128k vocabulary), prompts of 128
#          (and 2048 at batch 1), plus --deterministic at batch 1 and 256; LLAMA3_TOKENIZER names its tokenizer directory.
# quant    (alone) W4A16: test-ops quant (int4 products vs the CPU reference at Llama-2-7B and Llama-3-8B shapes,
#          timed; quantized KV caches in mixed steps); lmd-small as W4 (SMALL_W4, default: lmd-awq --method rtn of
#          it) and with KV int8/int4, greedy on the GPU vs the CPU and 60 concurrent vs one at a time, perplexity
#          GPU vs CPU; Llama-2-7B-shaped fp16 and W4A16 g128
#          models (t/gen-model --fast / --awq 128) through lmd-bench gen at QUANT_CONC (default 1,64) x
#          prompts 128 and at 1 x 2048 (QUANT_MODELS: default "f16 w4"), each with KV plain, int8 and int4
#          (QUANT_KV: default "0 8 4"). Files: quant-ops.txt quant-greedy.txt quant-bench.csv quant-bench.log.
# kernels  (alone, ~5 min with the models made) the decode products old vs new: test-ops quant (the int4 products
#          vs the CPU reference, bit for bit alone vs among others); test-ops q4speed under LMD_CUDA_Q4=old,
#          stream16 and stream64 (and LMD_CUDA_GEMM=lmd for the fp16 lines); lmd-bench gen at KERNELS_CONC
#          (default 1,16,64,256) x 128 in / 64 out on the Llama-2-7B-shaped W4A16 g128 model (kernels old and
#          stream32, the default) and the fp16 one (KERNELS_MODELS, default "w4 f16"; made as in quant when /tmp/llama2-7b-W
#          is missing, ~2.5 min each; KERNELS_MODELS= leaves the benchmark out, KERNELS_OPS=0 the op tests).
#          Files: kernels-ops.txt kernels-speed.txt kernels-bench.csv kernels-bench.log.
# kvq      (alone) quantized KV caches: test-ops kvq (int8/int4 caches vs the CPU reference in the fast decode and
#          prefill kernels, rows alone vs among others, decode attention at 4k and a 2048-token prefill timed for
#          plain / int8 / int4 and the generic kernel); lmd-small fp16 with KV int8/int4 greedy GPU vs CPU and 60
#          concurrent vs one at a time, perplexity GPU vs CPU; the Llama-2-7B-shaped fp16 model (/tmp/llama2-7b-f16)
#          through lmd-bench mem and lmd-bench gen for KV plain / int8 / int4 at KVQ_CONC (default 1,64,256) x 128
#          and 1 x 2048. Files: kvq-ops.txt kvq-greedy.txt kvq-mem.txt kvq-bench.csv kvq-bench.log.
# ab       (alone) settings of the CUDA backend side by side on one machine: AB is a list of NAME:ENV, ENV being
#          comma-separated VAR=VALUE (or - for none), e.g. AB="def:- blas:LMD_CUDA_GEMV=0". The whole test-ops under
#          the first, test-ops quant under the others (AB_OPS=first: only the first; quant: test-ops quant under the
#          first alone; 0: none); test-ops q4speed under each (AB_SPEED=0: not); greedy lmd-small fp16 and W4 (RTN
#          g128) on the GPU under each vs the CPU (must agree: the settings are meant to give the same bits;
#          AB_GREEDY=0: not); lmd-bench gen 128 in / 64 out at AB_CONC (default 1,16) on the Llama-2-7B-shaped W4A16
#          g128 model under each, then at 1 again in reverse order (drift), and fp16 beside under the first
#          (AB_F16=all: under each; a list of NAMEs: under those; 0: not). AB_BENCH_FIRST=1: lmd-bench gen before
#          the checks (a run cut short keeps its timings; they count only with the checks that follow them).
#          Files: ab-ops.txt ab-speed.txt ab-greedy.txt ab-bench.csv ab-bench.log.
# Files: $OUT/gpu.txt ops.txt reference.txt greedy.txt bench.csv bench.log (with the step profiles)
# bench-modes.csv (LMD_CUDA_GEMM=pad128, lmd, lt128 and pad64: batch-invariant) hf.csv serve.csv serve.log bench-serve*.
# BENCH_EXTRA=0 leaves out the profile runs, the LMD_CUDA_GEMM comparisons and the HF baseline.
# Environment: SHARED (default ../shared), OUT, BENCH_CONC, BENCH_PROMPTS, HF_BATCH (default 1,16,64,256), PREBUILT (a
# tar.xz of the programs and the shared libraries they need, for a machine without the -dev packages; made
# here by bench/prebuilt.sh; bench/carry.sh makes it and the parts of ../shared a run through the device tool
# needs).
set -u
cd "$(dirname "$0")/.."
stage=${1:-all}
OUT=${OUT:-bench/out}
SHARED=${SHARED:-../shared}
export LMD_SHARE=$PWD/share LMD_CACHE=${LMD_CACHE:-/tmp/lmd-cache}
mkdir -p "$OUT" "$LMD_CACHE"
fail=0
t_start=$(date +%s)
say() { echo "== $(( $(date +%s) - t_start ))s: $*"; }

say "gpu"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.mem,power.limit --format=csv \
	| tee "$OUT/gpu.txt"
echo "commit $(cat COMMIT 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)" | tee -a "$OUT/gpu.txt"
if [ -n "${PREBUILT:-}" ]; then  # a tar of build/bin, build/t programs and lib/ made elsewhere (no -dev packages here)
	say "prebuilt binaries from $PREBUILT"
	bench/prebuilt.sh --unpack "$PREBUILT" || exit 1
	export LD_LIBRARY_PATH=$PWD/build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
	say "build"
	make -j"$(nproc)" all >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
	tail -1 "$OUT/build.log"
fi
py() { env -u LD_LIBRARY_PATH python3 "$@"; }

# The Llama-2-7B-shaped benchmark model (fp16, random weights), made once.
HF=/tmp/llama2-7b-hf MODEL=/tmp/llama2-7b
llama2_model() {
	say "benchmark model: Llama-2-7B shape, fp16, random weights"
	[ -d "$MODEL" ] && return 0
	rm -rf "$HF"
	build/t/gen-model --hidden 4096 --inter 11008 --layers 32 --heads 32 --kv-heads 32 --vocab 32000 --dtype f16 \
		--max-pos 4096 --scaled --fast --shards 4 "$HF" || exit 1
	cp "$SHARED"/tokenizers/llama2/tokenizer.model "$SHARED"/tokenizers/llama2/special_tokens_map.json "$HF"/ 2>/dev/null
	say "lmd-convert"
	build/bin/lmd-convert --model-name llama2-7b-shape-random "$HF" "$MODEL" || exit 1
}

# The Llama-2-7B-shaped fp16 (f16) and W4A16 g128 (w4) models with random weights, /tmp/llama2-7b-W, made once.
quant_models() {
	say "Llama-2-7B shape: $* models with random weights"
	for w in "$@"; do
		[ -d /tmp/llama2-7b-$w ] && continue
		opt="--fast"; [ $w = w4 ] && opt="--awq 128"
		rm -rf /tmp/llama2-7b-$w-hf
		build/t/gen-model --hidden 4096 --inter 11008 --layers 32 --heads 32 --kv-heads 32 --vocab 32000 --dtype f16 \
			--max-pos 4096 --scaled $opt "/tmp/llama2-7b-$w-hf" || exit 1
		cp "$SHARED"/tokenizers/llama2/tokenizer.model "$SHARED"/tokenizers/llama2/special_tokens_map.json \
			/tmp/llama2-7b-$w-hf/ 2>/dev/null
		build/bin/lmd-convert -q --model-name llama2-7b-shape-$w /tmp/llama2-7b-$w-hf /tmp/llama2-7b-$w || exit 1
		rm -rf /tmp/llama2-7b-$w-hf
	done
}

if [ "$stage" = correct ] || [ "$stage" = all ]; then
	say "op tests (CUDA vs CPU reference)"
	build/t/test-ops >"$OUT/ops.txt" 2>&1; rc=$?
	cat "$OUT/ops.txt"; echo "test-ops: exit $rc" | tee -a "$OUT/ops.txt"; [ $rc = 0 ] || fail=1

	say "reference models on the GPU"
	SHARED=$SHARED LMD_REF_DEVICE=cuda LMD_REF_VERBOSE=1 build/t/test-reference >"$OUT/reference.txt" 2>&1; rc=$?
	cat "$OUT/reference.txt"; echo "test-reference (cuda): exit $rc" | tee -a "$OUT/reference.txt"; [ $rc = 0 ] || fail=1

	say "greedy: GPU vs CPU in the same dtype; 64 concurrent vs one at a time"
	py - >/tmp/prompts.jsonl <<'PY'
import json
starts = ["Once upon a time", "The old man looked at", "It was a dark and stormy night", "She opened the letter and",
          "In the morning the village", "He said that he would never", "The captain of the ship", "My dear friend,",
          "When the war was over", "The house stood on a hill", "Nobody knew why the", "At last the door opened and"]
for i in range(64):
    print(json.dumps({"prompt": f"{starts[i % len(starts)]} {['', 'quietly', 'again', 'once more', 'at noon'][i % 5]}".strip()}))
PY
	: >"$OUT/greedy.txt"
	# 64 concurrent vs one at a time must be identical with --deterministic (batch invariance) in every dtype; GPU vs CPU free-running
	# texts are reported (the binding GPU-vs-CPU check is test-reference's lockstep one, ties allowed), fp32 binds.
	for m in lmd-tiny lmd-small; do
		dir=$SHARED/models/$m
		for dt in weights fp32 fp16 bf16; do
			g="build/bin/lmd-run generate --max-tokens 48 --temperature 0 --ignore-eos --deterministic"
			[ $dt = weights ] || g="$g --dtype $dt"
			$g --device cuda "$dir" </tmp/prompts.jsonl >/tmp/$m-cuda.jsonl 2>/tmp/$m-cuda.err || { cat /tmp/$m-cuda.err; fail=1; }
			$g --device cpu "$dir" </tmp/prompts.jsonl >/tmp/$m-cpu.jsonl 2>/tmp/$m-cpu.err || { cat /tmp/$m-cpu.err; fail=1; }
			$g --device cuda --max-batch-size 1 "$dir" </tmp/prompts.jsonl >/tmp/$m-cuda1.jsonl 2>&1 || fail=1
			LMD_CUDA_GRAPH=0 $g --device cuda "$dir" </tmp/prompts.jsonl >/tmp/$m-cuda-ng.jsonl 2>&1 || fail=1
			py bench/compare_gen.py "$m $dt greedy, GPU with CUDA graphs vs without" /tmp/$m-cuda.jsonl \
				/tmp/$m-cuda-ng.jsonl | tee -a "$OUT/greedy.txt" || fail=1
			# lmd's own decode kernels and the one-algorithm cuBLASLt path keep the invariance as well
			for mode in lmd lt128; do
				[ $dt = fp16 ] || [ $dt = bf16 ] || continue
				LMD_CUDA_GEMM=$mode $g --device cuda "$dir" </tmp/prompts.jsonl >/tmp/$m-$mode.jsonl 2>&1 || fail=1
				LMD_CUDA_GEMM=$mode $g --device cuda --max-batch-size 1 "$dir" </tmp/prompts.jsonl \
					>/tmp/$m-${mode}1.jsonl 2>&1 || fail=1
				py bench/compare_gen.py "$m $dt greedy, LMD_CUDA_GEMM=$mode, 64 concurrent vs one at a time" \
					/tmp/$m-$mode.jsonl /tmp/$m-${mode}1.jsonl | tee -a "$OUT/greedy.txt" || fail=1
			done
			py bench/compare_gen.py "$m $dt greedy, GPU 64 concurrent vs one at a time" /tmp/$m-cuda.jsonl \
				/tmp/$m-cuda1.jsonl | tee -a "$OUT/greedy.txt" || fail=1
			bind=0; [ $dt = fp32 ] && bind=1
			py bench/compare_gen.py "$m $dt greedy, GPU vs CPU backend$([ $bind = 1 ] || echo ' (reported)')" \
				/tmp/$m-cuda.jsonl /tmp/$m-cpu.jsonl | tee -a "$OUT/greedy.txt" || [ $bind = 0 ] || fail=1
		done
	done
	build/bin/lmd-run generate -v --device cuda --max-tokens 4 --prompt "Once upon a time" "$SHARED/models/lmd-small" \
		2>&1 | grep -i "gpu memory" | tee -a "$OUT/greedy.txt"
fi

if [ "$stage" = bench ] || [ "$stage" = all ]; then
	llama2_model
	extra=${BENCH_EXTRA:-1}
	[ "$extra" = 1 ] && say "where a step's time goes (LMD_CUDA_PROFILE=1), batch 1 and 256, 128 prompt tokens"
	[ "$extra" = 1 ] && for cc in 1 256; do
		LMD_CUDA_PROFILE=1 build/bin/lmd-bench gen --device cuda --concurrency $cc --prompt-tokens 128 \
			--completion-tokens 128 -f csv "$MODEL" 2>&1 | grep -v "^date" | tee -a "$OUT/profile.log"
	done
	say "lmd-bench gen"
	build/bin/lmd-bench gen -v --device cuda --concurrency "${BENCH_CONC:-1,16,64,256}" \
		--prompt-tokens "${BENCH_PROMPTS:-128,2048}" --completion-tokens 128 -f csv -o "$OUT/bench.csv" "$MODEL" \
		2>&1 | tee "$OUT/bench.log"
	[ -f "$OUT/profile.log" ] && cat "$OUT/profile.log" >>"$OUT/bench.log" && rm -f "$OUT/profile.log"
	cat "$OUT/bench.csv"
	if [ "$extra" = 1 ]; then
		say "the same batch-invariant: blocks of 128 rows (pad128, what --deterministic picks), lmd's tiled kernels (lmd), one cuBLASLt algorithm a shape (lt128), blocks of 64 rows (pad64)"
		for mode in pad128 lmd lt128 pad64; do for cp in "1 128" "16 128" "64 128" "256 128"; do
			set -- $cp
			LMD_CUDA_GEMM=$mode build/bin/lmd-bench gen --device cuda --concurrency $1 --prompt-tokens $2 \
				--completion-tokens 128 -f csv "$MODEL" 2>/dev/null | grep -v "^date" | sed "s/^/$mode,/" \
				| tee -a "$OUT/bench-modes.csv"
		done; done
		say "sampled decoding: temperature 0.8 with top-k 40 (cut on the device), 1, 64 and 256 concurrent; without top-k (whole rows, sampled on host threads), 64"
		build/bin/lmd-bench gen --device cuda --concurrency 1,64,256 --prompt-tokens 128 --completion-tokens 128 \
			--temperature 0.8 --top-k 40 -f csv "$MODEL" 2>/dev/null | grep -v "^date" | tee -a "$OUT/bench-modes.csv"
		build/bin/lmd-bench gen --device cuda --concurrency 64 --prompt-tokens 128 --completion-tokens 128 \
			--temperature 0.8 -f csv "$MODEL" 2>/dev/null | grep -v "^date" | tee -a "$OUT/bench-modes.csv"
		say "HF transformers baseline"
		PYTHONUNBUFFERED=1 timeout 300 env -u LD_LIBRARY_PATH python3 bench/hf_baseline.py "$HF" --batch "${HF_BATCH:-1,16,64,256}" >"$OUT/hf.csv" \
			2>/tmp/hf.log; echo "hf_baseline: exit $?"
		tail -3 /tmp/hf.log; cat "$OUT/hf.csv"
	fi
fi

if [ "$stage" = serve ] || [ "$stage" = all ]; then
	llama2_model
	say "lmd-run serve: 1/16/64/256 concurrent streamed requests, 128 in / 128 out (t/gen-load), and lmd-bench gen at 256"
	build/bin/lmd-run serve "$MODEL" --device cuda --server-port 0 --max-batch-size 256 2>"$OUT/serve.log" &
	server=$!
	port=
	for _ in $(seq 600); do
		port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$OUT/serve.log")
		[ -n "$port" ] || ! kill -0 $server 2>/dev/null && break
		sleep 0.5
	done
	[ -n "$port" ] || { cat "$OUT/serve.log"; exit 1; }
	until grep -q "ready" "$OUT/serve.log"; do  # the model loads after the server listens
		kill -0 $server 2>/dev/null || { cat "$OUT/serve.log"; exit 1; }
		sleep 0.5
	done
	build/t/gen-load -w 600 -c 1,16,64,256 -p 128 -n 128 "http://127.0.0.1:$port" "$MODEL" >"$OUT/serve-load.csv" || fail=1
	say "lmd-bench serve: 128 in / 128 out at 1, 16, 64 and 256 concurrent; a ShareGPT-like length mix at 64 and 256"
	url=http://127.0.0.1:$port
	build/bin/lmd-bench serve "$url" --num-prompts 16 --max-concurrency 1 --random-input-len 128 --random-output-len 128 \
		-f csv -o "$OUT/bench-serve-1.csv" 2>>"$OUT/bench-serve.log" || fail=1
	build/bin/lmd-bench serve "$url" --num-prompts 768 --max-concurrency 16,64,256 --random-input-len 128 \
		--random-output-len 128 -f gnuplot -o "$OUT/bench-serve.gp" 2>>"$OUT/bench-serve.log" || fail=1
	py bench/sharegpt_like.py 1000 >/tmp/sharegpt-like.csv
	build/bin/lmd-bench serve "$url" --num-prompts 1000 --max-concurrency 64,256 --dataset /tmp/sharegpt-like.csv \
		-f gnuplot -o "$OUT/bench-serve-sharegpt.gp" 2>>"$OUT/bench-serve.log" || fail=1
	cat "$OUT/bench-serve-1.csv" "$OUT/bench-serve.log"
	kill -TERM $server
	wait $server || { echo "serve: exit status $? after SIGTERM"; fail=1; }
	build/bin/lmd-bench gen --device cuda --concurrency 256 --prompt-tokens 128 --completion-tokens 128 -f csv \
		"$MODEL" 2>/dev/null >"$OUT/serve-bench.csv" || fail=1
	# one table: the server at each concurrency, then lmd-bench gen in-process at 256
	{
		echo "source,concurrency,output_tokens_per_s,ttft_p50_ms,ttft_p99_ms"
		awk -F, 'NR > 1 { print "lmd-run serve," $1 "," $6 "," $7 "," $8 }' "$OUT/serve-load.csv"
		awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
			{ print "lmd-bench gen," $col["concurrency"] "," $col["output_tok_s"] "," $col["ttft_p50_ms"] "," $col["ttft_p99_ms"] }' \
			"$OUT/serve-bench.csv"
	} >"$OUT/serve.csv"
	cat "$OUT/serve.csv"
	awk -F, '$2 == 256 { v[$1] = $3 } END { if (v["lmd-bench gen"] > 0) printf "serve / lmd-bench gen at 256: %.1f %%\n", \
		100 * v["lmd-run serve"] / v["lmd-bench gen"] }' "$OUT/serve.csv"
fi

if [ "$stage" = llama3 ]; then
	HF=/tmp/llama3-8b-hf MODEL=/tmp/llama3-8b TOK=${LLAMA3_TOKENIZER:-$SHARED/tokenizers/llama3}
	say "benchmark model: Llama-3-8B shape (GQA 32/8, vocab 128256), fp16, random weights"
	if [ ! -d "$MODEL" ]; then
		rm -rf "$HF"
		build/t/gen-model --hidden 4096 --inter 14336 --layers 32 --heads 32 --kv-heads 8 --vocab 128256 --dtype f16 \
			--rope llama3 --max-pos 8192 --scaled --fast --shards 4 "$HF" || exit 1
		cp "$TOK"/tokenizer.model "$TOK"/special_tokens_map.json "$HF"/ || exit 1
		build/bin/lmd-convert --model-name llama3-8b-shape-random "$HF" "$MODEL" || exit 1
	fi
	say "lmd-bench gen (Llama-3-8B shape)"
	build/bin/lmd-bench gen -v --device cuda --concurrency "${BENCH_CONC:-1,16,64,256}" --prompt-tokens 128 \
		--completion-tokens 128 -f csv -o "$OUT/bench-llama3.csv" "$MODEL" 2>&1 | tee "$OUT/bench-llama3.log"
	build/bin/lmd-bench gen --device cuda --concurrency 1 --prompt-tokens 2048 --completion-tokens 128 -f csv \
		"$MODEL" 2>/dev/null | grep -v "^date" | tee -a "$OUT/bench-llama3.csv"
	say "the same with --deterministic (batch-invariant products: pad128), batch 1 and 256"
	for cc in 1 256; do
		build/bin/lmd-bench gen --deterministic --device cuda --concurrency $cc --prompt-tokens 128 \
			--completion-tokens 128 -f csv "$MODEL" 2>/dev/null | grep -v "^date" \
			| tee -a "$OUT/bench-llama3-deterministic.csv"
	done
fi
# lmd-small as W4 (lmd-awq --method rtn, groups of $2) in directory $1
small_w4() {
	build/bin/lmd-awq "$SHARED/models/lmd-small" --method rtn --w-group-size $2 -o "$1-hf" --force -q &&
		build/bin/lmd-convert -q --model-format awq "$1-hf" "$1" || fail=1
}
# /tmp/qprompts60.jsonl: six story openings, ten times over, for the greedy comparisons
prompts60() {
	printf '{"prompt": "%s"}\n' "Once upon a time" "The old man looked at" "It was a dark and stormy night" \
		"She opened the letter and" "In the morning the village" "He said that he would never" >/tmp/qprompts.jsonl
	for i in 1 2 3 4 5 6 7 8 9 10; do cat /tmp/qprompts.jsonl; done >/tmp/qprompts60.jsonl
}
# lmd-small greedy and perplexity for each weights:dtype:KV configuration in $1 into file $2: GPU 60 concurrent vs one
# at a time (must agree), GPU vs CPU (reported), perplexity on both.
small_checks() {
	local small=${SMALL_W4:-/tmp/small-w4} cfg m name g file=$2
	if [[ "$1" == *w4:* ]] && [ ! -d "$small" ]; then
		small_w4 "$small" 64
	fi
	prompts60
	: >"$file"
	for cfg in $1; do  # weights:dtype:KV
		set -- ${cfg//:/ }
		m=$small; [ $1 = f16 ] && m=$SHARED/models/lmd-small
		name="lmd-small $1 $2 KV ${3/0/plain}"
		g="build/bin/lmd-run generate --max-tokens 48 --temperature 0 --ignore-eos --dtype $2 --quant-policy $3 --deterministic"
		$g --device cuda "$m" </tmp/qprompts60.jsonl >/tmp/q-cuda.jsonl 2>/tmp/q.err || { cat /tmp/q.err; fail=1; }
		$g --device cuda --max-batch-size 1 "$m" </tmp/qprompts60.jsonl >/tmp/q-cuda1.jsonl 2>&1 || fail=1
		$g --device cpu "$m" </tmp/qprompts60.jsonl >/tmp/q-cpu.jsonl 2>&1 || fail=1
		py bench/compare_gen.py "$name greedy, GPU 60 concurrent vs one at a time" /tmp/q-cuda.jsonl /tmp/q-cuda1.jsonl \
			| tee -a "$file" || fail=1
		py bench/compare_gen.py "$name greedy, GPU vs CPU backend (reported)" /tmp/q-cuda.jsonl /tmp/q-cpu.jsonl \
			| tee -a "$file"
		for dev in cuda cpu; do
			echo "$name perplexity (wikitext-2, 8 windows of 512) on $dev: $(build/bin/lmd-bench ppl --device $dev \
				--dtype $2 --quant-policy $3 --windows 8 --text "$SHARED/data/wikitext-2-raw/wiki.test.raw" "$m" \
				2>/dev/null | tail -1)" | tee -a "$file"
		done
	done
}
# lmd-bench gen on /tmp/llama2-7b-$1 with --quant-policy $2: concurrencies $3 x 128 prompt tokens, and 1 x 2048, rows
# prefixed "$1,kv$2," into $OUT/$4-bench.csv (logs: $4-bench.log)
quant_gen() {
	build/bin/lmd-bench gen -v --device cuda --quant-policy $2 --concurrency "$3" --prompt-tokens 128 \
		--completion-tokens 128 -f csv /tmp/llama2-7b-$1 2>>"$OUT/$4-bench.log" | sed "s/^/$1,kv$2,/" \
		| tee -a "$OUT/$4-bench.csv"
	build/bin/lmd-bench gen --device cuda --quant-policy $2 --concurrency 1 --prompt-tokens 2048 \
		--completion-tokens 32 -f csv /tmp/llama2-7b-$1 2>>"$OUT/$4-bench.log" | grep -v "^date" \
		| sed "s/^/$1,kv$2,/" | tee -a "$OUT/$4-bench.csv"
}
if [ "$stage" = quant ]; then
	say "test-ops quant: W4A16 products and quantized KV vs the CPU reference"
	build/t/test-ops quant >"$OUT/quant-ops.txt" 2>&1; rc=$?
	cat "$OUT/quant-ops.txt"; echo "test-ops quant: exit $rc" | tee -a "$OUT/quant-ops.txt"; [ $rc = 0 ] || fail=1
	say "lmd-small (W4, and fp16 with KV int8/int4): greedy GPU vs CPU, 60 concurrent vs one at a time; perplexity"
	small_checks "${QUANT_GREEDY:-w4:fp16:0 w4:bf16:0 f16:fp16:8 f16:fp16:4 w4:bf16:8}" "$OUT/quant-greedy.txt"
	quant_models ${QUANT_MODELS:-f16 w4}
	say "lmd-bench gen: fp16 vs W4A16, KV plain / int8 / int4"
	: >"$OUT/quant-bench.csv"
	for w in ${QUANT_MODELS:-f16 w4}; do
		for qp in ${QUANT_KV:-0 8 4}; do
			quant_gen $w $qp "${QUANT_CONC:-1,64}" quant
		done
	done
fi
if [ "$stage" = kernels ] && [ "${KERNELS_OPS:-1}" = 1 ]; then
	say "test-ops quant: int4 products (default kernels, then old, stream16, stream64) vs the CPU reference, alone vs among others"
	build/t/test-ops quant >"$OUT/kernels-ops.txt" 2>&1; rc=$?
	cat "$OUT/kernels-ops.txt"; echo "test-ops quant: exit $rc" | tee -a "$OUT/kernels-ops.txt"
	[ $rc = 0 ] || fail=1
	say "test-ops q4speed: int4 product timings, LMD_CUDA_Q4=old / stream16 / stream64; fp16 at pad128 and lmd"
	: >"$OUT/kernels-speed.txt"
	for q4 in old stream16 stream64; do
		for gemm in pad128 lmd; do
			[ $q4 != stream64 ] && [ $gemm = lmd ] && continue
			export LMD_CUDA_Q4=$q4
			LMD_CUDA_GEMM=$gemm build/t/test-ops q4speed 2>&1 | grep "GB/s\|cuda:" | sed "s/^/q4=$q4 gemm=$gemm /" \
				| tee -a "$OUT/kernels-speed.txt"
		done
	done
	unset LMD_CUDA_Q4
fi
if [ "$stage" = kernels ] && [ -n "${KERNELS_MODELS-w4 f16}" ]; then
	quant_models ${KERNELS_MODELS:-w4 f16}
	say "lmd-bench gen: W4A16 g128 with kernels old and stream32 (the default), fp16 beside"
	: >"$OUT/kernels-bench.csv"
	for run in w4:old w4:stream32 f16:stream32; do
		set -- ${run//:/ }
		[[ " ${KERNELS_MODELS:-w4 f16} " = *" $1 "* ]] || continue
		export LMD_CUDA_Q4=$2
		build/bin/lmd-bench gen -v --device cuda --concurrency "${KERNELS_CONC:-1,16,64,256}" --prompt-tokens 128 \
			--completion-tokens 64 -f csv /tmp/llama2-7b-$1 2>>"$OUT/kernels-bench.log" | sed "s/^/$1,q4-$2,/" \
			| tee -a "$OUT/kernels-bench.csv"
	done
	unset LMD_CUDA_Q4
fi
if [ "$stage" = kvq ]; then
	say "test-ops kvq: quantized KV caches vs the CPU reference, timed beside plain ones"
	build/t/test-ops kvq >"$OUT/kvq-ops.txt" 2>&1; rc=$?
	cat "$OUT/kvq-ops.txt"; echo "test-ops kvq: exit $rc" | tee -a "$OUT/kvq-ops.txt"; [ $rc = 0 ] || fail=1
	say "lmd-small fp16 and bf16 with KV int8/int4: greedy GPU vs CPU, 60 concurrent vs one at a time; perplexity"
	small_checks "${KVQ_GREEDY:-f16:fp16:8 f16:fp16:4 f16:bf16:8 f16:bf16:4}" "$OUT/kvq-greedy.txt"
	quant_models f16
	say "lmd-bench mem and gen, fp16 model, KV plain / int8 / int4"
	: >"$OUT/kvq-bench.csv"
	: >"$OUT/kvq-mem.txt"
	for qp in ${KVQ_KV:-0 8 4}; do
		build/bin/lmd-bench mem --device cuda --quant-policy $qp --session-len 2048 --max-batch-size 64 \
			/tmp/llama2-7b-f16 2>&1 | tee -a "$OUT/kvq-mem.txt"
		quant_gen f16 $qp "${KVQ_CONC:-1,64,256}" kvq
	done
fi
if [ "$stage" = ab ]; then
	ab=${AB:?AB: a list of NAME:ENV}
	ab_env() { local e=${1#*:}; [ "$e" = - ] || tr , '\n' <<<"$e"; }  # the VAR=VALUE lines of one NAME:ENV
	ab_run() { local a=$1; shift; mapfile -t e < <(ab_env "$a"); env "${e[@]}" "$@"; }
	( quant_models w4 $([ "${AB_F16:-1}" = 0 ] || echo f16) >"$OUT/ab-models.log" 2>&1 ) &
	models=$!
	: >"$OUT/ab-ops.txt"; : >"$OUT/ab-speed.txt"; : >"$OUT/ab-greedy.txt"; : >"$OUT/ab-bench.csv"
	ab_checks() {
		ops=${AB_OPS:-all} what=  # the whole test-ops under the first setting, then test-ops quant
		[ "$ops" = quant ] && ops=first what=quant
		for a in $ab; do
			[ "$ops" = 0 ] && break
			say "test-ops $what under ${a%%:*}"
			ab_run "$a" build/t/test-ops $what >/tmp/ab-ops.txt 2>&1; rc=$?
			{ echo "# ${a} test-ops $what: exit $rc"; grep -v " us \| GB/s" /tmp/ab-ops.txt | tail -5; } |
				tee -a "$OUT/ab-ops.txt"
			[ $rc = 0 ] || fail=1
			[ "$ops" = first ] && break
			what=quant
		done
		for a in $ab; do
			[ "${AB_SPEED:-1}" = 0 ] && break
			say "q4speed under ${a%%:*}"
			ab_run "$a" build/t/test-ops q4speed 2>&1 | grep "GB/s" | sed "s/^/${a%%:*} /" | tee -a "$OUT/ab-speed.txt"
		done
		greedy=("$SHARED/models/lmd-small" /tmp/ab-small-w4)
		[ "${AB_GREEDY:-1}" = 0 ] && greedy=()
		[ ${#greedy[@]} = 0 ] || {
			say "greedy lmd-small fp16 and W4 (RTN g128): GPU under each setting vs CPU"
			small_w4 /tmp/ab-small-w4 128
			prompts60
		}
		g="build/bin/lmd-run generate --max-tokens 48 --temperature 0 --ignore-eos"
		for m in "${greedy[@]}"; do
			$g --device cpu "$m" </tmp/qprompts60.jsonl >/tmp/ab-cpu.jsonl 2>>"$OUT/ab-greedy.txt" || fail=1
			for a in $ab; do
				ab_run "$a" $g --device cuda "$m" </tmp/qprompts60.jsonl >/tmp/ab-gpu.jsonl 2>>"$OUT/ab-greedy.txt" || fail=1
				py bench/compare_gen.py "$(basename "$m") ${a%%:*} GPU vs CPU" /tmp/ab-gpu.jsonl /tmp/ab-cpu.jsonl \
					| tee -a "$OUT/ab-greedy.txt" || fail=1
			done
		done
	}
	abg() {  # NAME:ENV model concurrency
		ab_run "$1" build/bin/lmd-bench gen --device cuda --concurrency $3 --prompt-tokens 128 --completion-tokens 64 \
			-f csv /tmp/llama2-7b-$2 2>>"$OUT/ab-bench.log" | sed "s/^date/weights,setting,date/; t; s/^/$2,${1%%:*},/" \
			| { [ -s "$OUT/ab-bench.csv" ] && grep -v "^weights,setting" || cat; } | tee -a "$OUT/ab-bench.csv"
	}
	ab_bench() {
		say "lmd-bench gen, Llama-2-7B shape, W4A16 g128 under each setting (then at 1 in reverse order), fp16 beside"
		wait $models || { cat "$OUT/ab-models.log"; exit 1; }
		for a in $ab; do abg "$a" w4 "${AB_CONC:-1,16}"; done
		for a in $ab; do
			case " ${AB_F16:-1} " in
			" 0 ") ;;
			" 1 ") [ "$a" = "${ab%% *}" ] && abg "$a" f16 "${AB_CONC:-1,16}" ;;
			" all ") abg "$a" f16 "${AB_CONC:-1,16}" ;;
			*" ${a%%:*} "*) abg "$a" f16 "${AB_CONC:-1,16}" ;;
			esac
		done
		for a in $(tr ' ' '\n' <<<"$ab" | tac); do abg "$a" w4 1; done
	}
	if [ "${AB_BENCH_FIRST:-0}" = 1 ]; then ab_bench; ab_checks; else ab_checks; ab_bench; fi
fi
say "done (failures: $fail)"
exit $fail
