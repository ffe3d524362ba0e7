# The quantization pipeline as real file dependencies (issue 6): calib -> kvparams -> awq -> convert.
#
#   make -f PREFIX/share/lmd/mk/quantize.mk MODEL=llama2-7b OUT=llama2-7b-q
#
# writes OUT/calib.msgpack (lmd-calib), OUT/kv.csv (lmd-kvparams), OUT/awq/ (lmd-awq, an AutoAWQ HF
# directory) and OUT/model/ (lmd-convert --model-format awq, int4 weights for the engine). Running it
# again with nothing changed runs nothing; changing the model re-runs everything, changing a setting
# below does not (remove OUT, or the file concerned). Run the result with, e.g.,
#   lmd-run generate OUT/model --quant-policy 8 --kv-params OUT/kv.csv      (KV_BITS=8)
# Settings (LMDeploy's defaults):
CALIB_DATASET ?= wikitext2
CALIB_SAMPLES ?= 128
CALIB_SEQLEN ?= 2048
BATCH_SIZE ?= 1
W_GROUP_SIZE ?= 128
METHOD ?= awq
# lmd-awq's own calibration (awq and gptq): documents cut into windows of AWQ_SEQLEN tokens (AutoAWQ's 512)
AWQ_SEQLEN ?= 512
# non-empty: LMDeploy's fixed-ratio smoothing on the statistics instead of the AWQ search
FIXED_RATIO ?=
KV_BITS ?= 8
DEVICE ?= auto
# Where the tools are, e.g. BIN=build/bin/ (default: on PATH, else the build/bin/ of the source tree
# this file is in)
HERE := $(dir $(lastword $(MAKEFILE_LIST)))
BIN ?= $(if $(shell command -v lmd-calib),,$(firstword $(wildcard $(HERE)../../build/bin/)))
ifeq ($(shell command -v $(BIN)lmd-calib),)
$(error lmd-calib is not on PATH nor in $(or $(BIN),the source tree's build/bin/): give BIN=DIR/ or run make first)
endif

ifndef MODEL
$(error MODEL=DIR is required (an HF or lmd model directory))
endif
ifndef OUT
$(error OUT=DIR is required)
endif

MODEL_FILES := $(wildcard $(MODEL)/config.json $(MODEL)/*.safetensors $(MODEL)/*.safetensors.index.json \
	$(MODEL)/index.msgpack $(MODEL)/weights*.bin)
CALIB_FLAGS = --calib-dataset $(CALIB_DATASET) --calib-samples $(CALIB_SAMPLES) --calib-seqlen $(CALIB_SEQLEN) \
	--batch-size $(BATCH_SIZE) --device $(DEVICE)
AWQ_FLAGS = --calib-dataset $(CALIB_DATASET) --calib-samples $(CALIB_SAMPLES) --calib-seqlen $(AWQ_SEQLEN) \
	--batch-size $(BATCH_SIZE) --device $(DEVICE)

.PHONY: all
all: $(OUT)/model/index.msgpack $(OUT)/kv.csv

$(OUT)/calib.msgpack: $(MODEL_FILES)
	@mkdir -p $(OUT)
	$(BIN)lmd-calib $(MODEL) $(CALIB_FLAGS) -o $@ || { rmdir $(OUT) 2>/dev/null; false; }

$(OUT)/kv.csv: $(OUT)/calib.msgpack
	$(BIN)lmd-kvparams $< --kv-bits $(KV_BITS) -o $@

$(OUT)/awq/config.json: $(OUT)/calib.msgpack $(MODEL_FILES)
	$(BIN)lmd-awq $(MODEL) --method $(METHOD) --w-group-size $(W_GROUP_SIZE) $(if $(filter awq,$(METHOD)),--stats $< \
		$(if $(FIXED_RATIO),--fixed-ratio)) $(if $(filter rtn,$(METHOD))$(FIXED_RATIO),,$(AWQ_FLAGS)) --force -o $(OUT)/awq

$(OUT)/model/index.msgpack: $(OUT)/awq/config.json
	$(BIN)lmd-convert --model-format awq --force $(OUT)/awq $(OUT)/model
