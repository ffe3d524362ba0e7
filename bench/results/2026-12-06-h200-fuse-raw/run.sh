#!/bin/bash
# session 15, run 2: rope_kv_store (1233a2b): greedy f16 and W4 with LMD_CUDA_FUSE=0 and 1 (GPU = CPU),
# full test-ops, lmd-bench gen f16 and W4 at 1/16/64 with LMD_CUDA_FUSE=0 and 1 on one machine
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
g="build/bin/lmd-run generate --max-tokens 48 --temperature 0 --ignore-eos"
py() { env -u LD_LIBRARY_PATH python3 "$@"; }
build/bin/lmd-awq $SHARED/models/lmd-small --method rtn -o /tmp/lmd-small-w4 2>>$OUT/g.err
for m in lmd-small lmd-small-w4; do
  d=$SHARED/models/$m; [ $m = lmd-small-w4 ] && d=/tmp/$m; o=/tmp/$m
  $g --device cuda $d < /tmp/p60.jsonl > $o-def.jsonl 2>>$OUT/g.err
  LMD_CUDA_FUSE=0 $g --device cuda $d < /tmp/p60.jsonl > $o-nopdl.jsonl 2>>$OUT/g.err
  $g --device cuda --deterministic $d < /tmp/p60.jsonl > $o-det.jsonl 2>>$OUT/g.err
  $g --device cuda --deterministic --max-batch-size 1 $d < /tmp/p60.jsonl > $o-det1.jsonl 2>>$OUT/g.err
  $g --device cuda --dtype fp32 $d < /tmp/p60.jsonl > $o-f32.jsonl 2>>$OUT/g.err
  $g --device cpu $d < /tmp/p60.jsonl > $o-cpu.jsonl 2>>$OUT/g.err
  $g --device cpu --dtype fp32 $d < /tmp/p60.jsonl > $o-cpu32.jsonl 2>>$OUT/g.err
  { py bench/compare_gen.py "$m default vs LMD_CUDA_FUSE=0" $o-def.jsonl $o-nopdl.jsonl
    py bench/compare_gen.py "$m deterministic 60 concurrent vs one at a time" $o-det.jsonl $o-det1.jsonl
    py bench/compare_gen.py "$m default vs deterministic" $o-def.jsonl $o-det.jsonl
    py bench/compare_gen.py "$m default GPU vs CPU" $o-def.jsonl $o-cpu.jsonl
    py bench/compare_gen.py "$m fp32 GPU vs CPU" $o-f32.jsonl $o-cpu32.jsonl; } 2>&1 | tee -a $OUT/greedy.txt
done
say test-ops; timeout 200 build/t/test-ops > $OUT/ops.log 2>&1; echo ops-rc=$? | tee -a $OUT/ops.log
grep -v ' us \| GB/s' $OUT/ops.log | tail -8
say wait-models; wait; cat $OUT/models.log
b() {  # label model concurrency [env...] -- extra
  local l=$1 mm=$2 cc=$3; shift 3
  local e=(); while [ $# -gt 0 ] && [ "$1" != --deterministic ]; do e+=("$1"); shift; done
  env "${e[@]}" build/bin/lmd-bench gen "$@" --device cuda --concurrency $cc --prompt-tokens 128 --completion-tokens 64 -f csv /tmp/m-$mm 2>>$OUT/bench.log | grep -v '^date' | sed "s/^/$l,/" | tee -a $OUT/bench.csv; }
say bench
b w4,fuse w4 1,16,64 X=1
b w4,nofuse w4 1,16,64 LMD_CUDA_FUSE=0
b f16,fuse f16 1,16,64 X=1
b f16,nofuse f16 1,16,64 LMD_CUDA_FUSE=0
b w4,fuse w4 1 X=1
b w4,nofuse w4 1 LMD_CUDA_FUSE=0
b f16,fuse f16 1 X=1
b f16,nofuse f16 1 LMD_CUDA_FUSE=0
b w4,nopdl-nofuse w4 1 LMD_CUDA_FUSE=0 LMD_CUDA_PDL=0
say done
