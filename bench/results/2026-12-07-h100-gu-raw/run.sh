# run1 (machine start to 221 s), branch wip/q4-bulk 7ead752 (binaries built from af8c009, the same code):
git rev-parse HEAD > COMMIT
AB_OPS=quant AB_CONC=1 AB_GREEDY=0 AB_F16="def" \
  AB="bgu:LMD_CUDA_Q4_BULK=1,LMD_CUDA_GU=1 def:- bulk:LMD_CUDA_Q4_BULK=1 dw8:LMD_CUDA_DEC_WARPS=8" \
  SHARED=.gpu/shared PREBUILT=.gpu/prebuilt-bulk.tar.xz bash bench/gpu-check.sh ab
# run2 (the same warm machine, right after):
AB_OPS=quant AB_SPEED=0 AB_CONC=1,16 AB_GREEDY=0 AB_F16="gu def" \
  AB="gu:LMD_CUDA_GU=1 def:- dw8:LMD_CUDA_DEC_WARPS=8 gd:LMD_CUDA_GU=1,LMD_CUDA_DEC_WARPS=8" \
  SHARED=.gpu/shared PREBUILT=.gpu/prebuilt-bulk.tar.xz bash bench/gpu-check.sh ab
# carry: .gpu/shared (bench/carry.sh), .gpu/prebuilt-bulk.tar.xz
#   (PROGS="lmd-run lmd-bench lmd-convert lmd-awq gen-model test-ops" bench/prebuilt.sh), COMMIT
# run3 (a fresh machine), gu-default b72ea1b (binaries from b72ea1b: .gpu/prebuilt-gu.tar.xz):
git rev-parse HEAD > COMMIT
AB_OPS=first AB_SPEED=0 AB_CONC=1,16,64 AB_F16=all \
  AB="def:- old:LMD_CUDA_GU=0,LMD_CUDA_DEC_WARPS=4" \
  SHARED=.gpu/shared PREBUILT=.gpu/prebuilt-gu.tar.xz bash bench/gpu-check.sh ab
