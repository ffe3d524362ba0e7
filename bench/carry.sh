#!/bin/bash
# Make .gpu/ (git-ignored) for a run through the device tool, whose machine sees only the working tree and
# the paths named in carry (64 MiB in all): the PREBUILT tar (bench/prebuilt.sh, PROGS below) and the parts
# of ../shared that bench/gpu-check.sh's ab, quant and kernels stages read: lmd-small and the Llama 2
# tokenizer files gen-model's models take. Then, on the device: SHARED=.gpu/shared PREBUILT=.gpu/prebuilt.tar.xz
# bench/gpu-check.sh STAGE, with carry [".gpu"].
#
#   bench/carry.sh          PROGS (default: lmd-run lmd-bench lmd-convert lmd-awq gen-model test-ops), SHARED
set -eu
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
PROGS=${PROGS:-lmd-run lmd-bench lmd-convert lmd-awq gen-model test-ops} bench/prebuilt.sh .gpu/prebuilt.tar.xz
rm -rf .gpu/shared
mkdir -p .gpu/shared/models .gpu/shared/tokenizers/llama2
cp -r "$SHARED"/models/lmd-small .gpu/shared/models/
cp "$SHARED"/tokenizers/llama2/tokenizer.model "$SHARED"/tokenizers/llama2/special_tokens_map.json \
	.gpu/shared/tokenizers/llama2/
echo ".gpu: $(du -sh .gpu | cut -f1) (the device tool carries 64 MiB with the tracked files)"
