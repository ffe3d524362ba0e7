#!/bin/bash
# session 17, run C (what the device budget left allows): the L2 prefetch (c48cd11), LMD_CUDA_PREFETCH 16 (default)
# against 0: test-ops quant; greedy lmd-small fp16 and W4 GPU vs CPU under each; W4A16 g128 Llama-2-7B shape at batch 1.
t0=$(date +%s); say() { echo "== $(( $(date +%s) - t0 ))s: $*"; }
echo c48cd11 > COMMIT
export SHARED=.gpu/shared LMD_SHARE=$PWD/share LMD_CACHE=/tmp/lmd-cache
bench/prebuilt.sh --unpack .gpu/prebuilt.tar.xz; export LD_LIBRARY_PATH=$PWD/build/lib
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
py() { env -u LD_LIBRARY_PATH python3 "$@"; }
( build/t/gen-model --hidden 4096 --inter 11008 --layers 32 --heads 32 --kv-heads 32 --vocab 32000 --max-pos 4096 --dtype f16 \
	--scaled --awq 128 /tmp/hf-w4 >/dev/null && cp $SHARED/tokenizers/llama2/tokenizer.model $SHARED/tokenizers/llama2/special_tokens_map.json /tmp/hf-w4/ &&
	build/bin/lmd-convert -q /tmp/hf-w4 /tmp/m-w4; echo "model rc=$? at $(( $(date +%s) - t0 ))s" ) > $OUT/models.log 2>&1 &
say "test-ops quant"; timeout 100 build/t/test-ops quant > $OUT/ops.txt 2>&1; echo "test-ops quant: exit $?" | tee -a $OUT/ops.txt
grep -v " us \| GB/s" $OUT/ops.txt | tail -4
say greedy
printf '{"prompt": "%s"}\n' "Once upon a time" "The old man looked at" "It was a dark and stormy night" "She opened the letter and" "In the morning the village" "He said that he would never" > /tmp/p6.jsonl
for i in 1 2 3 4 5 6 7 8 9 10; do cat /tmp/p6.jsonl; done > /tmp/p60.jsonl
g="build/bin/lmd-run generate --max-tokens 48 --temperature 0 --ignore-eos"
build/bin/lmd-awq $SHARED/models/lmd-small --method rtn -o /tmp/small-w4 2>/dev/null
for m in $SHARED/models/lmd-small /tmp/small-w4; do
	$g --device cpu $m < /tmp/p60.jsonl > /tmp/cpu.jsonl 2>/dev/null
	for s in 16 0; do
		LMD_CUDA_PREFETCH=$s $g --device cuda $m < /tmp/p60.jsonl > /tmp/gpu-$s.jsonl 2>>$OUT/greedy.txt
		py bench/compare_gen.py "$(basename $m) LMD_CUDA_PREFETCH=$s GPU vs CPU" /tmp/gpu-$s.jsonl /tmp/cpu.jsonl | tee -a $OUT/greedy.txt
	done
done
say "wait model"; wait; cat $OUT/models.log
for s in 16 0 16 0; do
	LMD_CUDA_PREFETCH=$s build/bin/lmd-bench gen --device cuda --concurrency 1 --prompt-tokens 128 --completion-tokens 64 \
		-f csv /tmp/m-w4 2>/dev/null | sed "s/^/pf$s,/" | tee -a $OUT/bench.csv | cut -d, -f1,7,15,16,20
done
say done
