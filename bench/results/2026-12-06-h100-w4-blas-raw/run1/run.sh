#!/bin/bash
# session 13: verify main's default on a GPU (greedy, full test-ops); f16 default vs --deterministic; W4 with
# the dequantized weight through cuBLAS from LMD_CUDA_Q4_BLAS rows; rmsnorm prefetch (lmd-bench-rp) at batch 1
echo "$1" > COMMIT; t0=$(date +%s); say() { echo "== $(( $(date +%s) - t0 ))s: $*"; }
export SHARED=.gpu/shared
bench/prebuilt.sh --unpack .gpu/prebuilt.tar.xz; export LD_LIBRARY_PATH=$PWD/build/lib
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
mk() {  # $1 f16|w4
  local o="--fast"; [ $1 = w4 ] && o="--awq 128"
  build/t/gen-model --hidden 4096 --inter 11008 --layers 32 --heads 32 --kv-heads 32 --vocab 32000 --max-pos 4096 --dtype f16 --scaled $o /tmp/hf-$1 >/dev/null &&
  cp $SHARED/tokenizers/llama2/tokenizer.model $SHARED/tokenizers/llama2/special_tokens_map.json /tmp/hf-$1/ &&
  build/bin/lmd-convert -q /tmp/hf-$1 /tmp/m-$1; echo "models-$1-rc=$? at $(( $(date +%s) - t0 ))s"; }
( mk f16 & mk w4 & wait ) > $OUT/models.log 2>&1 &
say greedy
printf '{"prompt": "%s"}\n' "Once upon a time" "The old man looked at" "It was a dark and stormy night" "She opened the letter and" "In the morning the village" "He said that he would never" > /tmp/p6.jsonl
for i in 1 2 3 4 5 6 7 8 9 10; do cat /tmp/p6.jsonl; done > /tmp/p60.jsonl
g="build/bin/lmd-run generate --max-tokens 48 --temperature 0 --ignore-eos"; m=$SHARED/models/lmd-small
$g --device cuda $m < /tmp/p60.jsonl > /tmp/def.jsonl 2>$OUT/g.err
$g --device cuda --deterministic $m < /tmp/p60.jsonl > /tmp/det.jsonl 2>>$OUT/g.err
$g --device cuda --deterministic --max-batch-size 1 $m < /tmp/p60.jsonl > /tmp/det1.jsonl 2>>$OUT/g.err
$g --device cpu $m < /tmp/p60.jsonl > /tmp/cpu.jsonl 2>>$OUT/g.err
py() { env -u LD_LIBRARY_PATH python3 "$@"; }
{ py bench/compare_gen.py "deterministic 60 concurrent vs one at a time" /tmp/det.jsonl /tmp/det1.jsonl
  py bench/compare_gen.py "default vs deterministic" /tmp/def.jsonl /tmp/det.jsonl
  py bench/compare_gen.py "default GPU vs CPU" /tmp/def.jsonl /tmp/cpu.jsonl; } 2>&1 | tee $OUT/greedy.txt
say test-ops; timeout 170 build/t/test-ops > $OUT/ops.log 2>&1; echo ops-rc=$? | tee -a $OUT/ops.log
grep -v ' us \| GB/s' $OUT/ops.log | tail -15
say wait-models; wait; cat $OUT/models.log
b() {  # label model concurrency [env...] -- extra
  local l=$1 mm=$2 cc=$3; shift 3
  local e=(); while [ $# -gt 0 ] && [ "$1" != --deterministic ]; do e+=("$1"); shift; done
  env "${e[@]}" $BIN gen "$@" --device cuda --concurrency $cc --prompt-tokens 128 --completion-tokens 64 -f csv /tmp/m-$mm 2>>$OUT/bench.log | grep -v '^date' | sed "s/^/$l,/" | tee -a $OUT/bench.csv; }
xz -dkf .gpu/lmd-bench-rp.xz; BIN=build/bin/lmd-bench
say bench
b f16,default,main f16 1,16,64,256 X=1
BIN=".gpu/lmd-bench-rp"; b f16,default,rmsnorm-prefetch f16 1 X=1; BIN=build/bin/lmd-bench
b f16,default,main f16 1 X=1
b w4,blas128,main w4 1,16,64,128,256 X=1
b w4,blas64,main w4 64,128 LMD_CUDA_Q4_BLAS=64
b w4,kernels,main w4 256 LMD_CUDA_Q4_BLAS=0
b f16,deterministic,main f16 1,16,64,256 X=1 --deterministic
say done
