#!/bin/bash
# session 15, run 3: q4_stream's shape up to 8 rows (LMD_CUDA_Q4_DEC=np1, np2, ring4): test-ops quant under np2
# and ring4 (int4 products against the CPU, rows alone = rows among others), q4speed under each, lmd-bench gen
# W4A16 at batch 1 under each, fp16 beside it
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
for v in np2 ring4; do
  say "test-ops quant $v"; LMD_CUDA_Q4_DEC=$v timeout 150 build/t/test-ops quant > $OUT/quant-$v.log 2>&1; echo "quant-$v-rc=$?" | tee -a $OUT/quant-$v.log
  grep -iE 'differ|NMSE|fail' $OUT/quant-$v.log | head -5
done
for v in np1 np2 ring4; do
  say "q4speed $v"; LMD_CUDA_Q4_DEC=$v timeout 60 build/t/test-ops q4speed > $OUT/q4speed-$v.txt 2>&1
  grep ' n1 .*g128 f16' $OUT/q4speed-$v.txt
done
say wait-models; wait; cat $OUT/models.log
b() {  # label model concurrency [env...]
  local l=$1 mm=$2 cc=$3; shift 3
  env "$@" build/bin/lmd-bench gen --device cuda --concurrency $cc --prompt-tokens 128 --completion-tokens 64 -f csv /tmp/m-$mm 2>>$OUT/bench.log | grep -v '^date' | sed "s/^/$l,/" | tee -a $OUT/bench.csv; }
say bench
b w4,np1 w4 1,8 LMD_CUDA_Q4_DEC=np1
b w4,np2 w4 1,8 LMD_CUDA_Q4_DEC=np2
b w4,ring4 w4 1,8 LMD_CUDA_Q4_DEC=ring4
b f16,default f16 1 X=1
b w4,np1 w4 1 LMD_CUDA_Q4_DEC=np1
b w4,np2 w4 1 LMD_CUDA_Q4_DEC=np2
b w4,ring4 w4 1 LMD_CUDA_Q4_DEC=ring4
say done
