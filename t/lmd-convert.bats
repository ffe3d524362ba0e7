#!/usr/bin/env bats
# lmd-convert: HF -> lmd model directory, --tp, --dtype, --info, and every kind of bad input.
load lib

setup() { setup_tmp; }
teardown() { teardown_tmp; }

info() { lmd-convert --info --json "$1" | jq -r "$2"; }

@test "converts a generated llama model and --info counts its parameters" {
	gen-model --hidden 64 --inter 96 --layers 3 --heads 4 --kv-heads 2 --vocab 100 "$TMP/hf"
	run lmd-convert -q "$TMP/hf" "$TMP/out"
	[ "$status" -eq 0 ]
	[ -f "$TMP/out/index.msgpack" ] && [ -f "$TMP/out/weights.bin" ]
	# embed + output + 3 x (2 norms + q 64x64 + k,v 32x64 + o 64x64 + 3 x 64x96) + norm
	[ "$(info "$TMP/out" .parameters)" -eq $((2*100*64 + 3*(2*64 + 64*64 + 2*32*64 + 64*64 + 3*64*96) + 64)) ]
	[ "$(info "$TMP/out" .bytes.f16)" -eq $((2 * $(info "$TMP/out" .parameters))) ]
	[ "$(info "$TMP/hf" .parameters)" -eq "$(info "$TMP/out" .parameters)" ]
	lmd-convert --info "$TMP/out" | grep -qx 'architecture: llama'
}

@test "the index is plain msgpack that a stock tool reads" {
	command -v /usr/bin/python3 >/dev/null && /usr/bin/python3 -c 'import msgpack' 2>/dev/null || skip "python3-msgpack not installed"
	gen-model "$TMP/hf"
	lmd-convert -q "$TMP/hf" "$TMP/out"
	run /usr/bin/python3 -c 'import msgpack,sys; d=msgpack.unpack(open(sys.argv[1],"rb")); print(d["magic"], d["version"], len(d["tensors"]), d["config"]["architecture"])' "$TMP/out/index.msgpack"
	[ "$status" -eq 0 ]
	[ "$output" = "lmd-model 1 21 llama" ]
}

@test "internlm2 packed wqkv converts to the same tensors as llama" {
	gen-model --arch llama --heads 8 --kv-heads 2 --hidden 64 --seed 7 "$TMP/l"
	gen-model --arch internlm2 --heads 8 --kv-heads 2 --hidden 64 --seed 7 "$TMP/i"
	lmd-convert -q "$TMP/l" "$TMP/lo"
	lmd-convert -q "$TMP/i" "$TMP/io"
	[ "$(info "$TMP/io" .architecture)" = internlm2 ]
	cmp "$TMP/lo/weights.bin" "$TMP/io/weights.bin"
	gen-model --arch llama --bias --seed 3 "$TMP/lb"
	gen-model --arch internlm2 --bias --seed 3 "$TMP/ib"
	lmd-convert -q "$TMP/lb" "$TMP/lbo"
	lmd-convert -q "$TMP/ib" "$TMP/ibo"
	cmp "$TMP/lbo/weights.bin" "$TMP/ibo/weights.bin"
}

@test "qwen2 with tied embeddings has biases and no output tensor" {
	gen-model --arch qwen2 --tie "$TMP/q"
	lmd-convert -q "$TMP/q" "$TMP/qo"
	[ "$(info "$TMP/qo" .config.tie_embeddings)" = true ]
	[ "$(info "$TMP/qo" .config.qkv_bias)" = true ]
	[ "$(info "$TMP/qo" .config.o_bias)" = false ]
}

@test "sharded input with classic config and llama3 rope" {
	gen-model --shards 3 --layers 3 --style classic --rope llama3 --dtype bf16 "$TMP/hf"
	[ -f "$TMP/hf/model.safetensors.index.json" ]
	lmd-convert -q "$TMP/hf" "$TMP/out"
	[ "$(info "$TMP/out" .config.rope.type)" = llama3 ]
	[ "$(info "$TMP/out" .config.dtype)" = bf16 ]
}

@test "--tp 2 splits and re-joining gives back the original tensors" {
	gen-model --heads 4 --kv-heads 2 --inter 96 --shards 2 "$TMP/hf"
	lmd-convert -q "$TMP/hf" "$TMP/one"
	lmd-convert -q --tp 2 "$TMP/hf" "$TMP/two"
	[ -f "$TMP/two/weights.rank0.bin" ] && [ -f "$TMP/two/weights.rank1.bin" ]
	[ "$(info "$TMP/two" .tp)" -eq 2 ]
	lmd-convert -q "$TMP/two" "$TMP/back"
	cmp "$TMP/one/weights.bin" "$TMP/back/weights.bin"
}

@test "--tp that does not divide the kv heads is a usage error" {
	gen-model --heads 4 --kv-heads 2 "$TMP/hf"
	run lmd-convert --tp 4 "$TMP/hf" "$TMP/out"
	[ "$status" -eq 2 ]
	[[ "$output" == *"--tp 4 does not divide"* ]]
	[ ! -e "$TMP/out" ]
}

@test "--dtype fp32 and bf16 -> fp16 saturation warning" {
	gen-model --dtype bf16 "$TMP/hf"
	lmd-convert -q --dtype fp32 "$TMP/hf" "$TMP/f32"
	[ "$(info "$TMP/f32" .config.dtype)" = f32 ]
	lmd-convert -q --dtype fp16 "$TMP/f32" "$TMP/f16"
	[ "$(info "$TMP/f16" .bytes.f16)" -gt 0 ]
}

@test "an existing DST is refused without --force" {
	gen-model "$TMP/hf"
	lmd-convert -q "$TMP/hf" "$TMP/out"
	run lmd-convert -q "$TMP/hf" "$TMP/out"
	[ "$status" -eq 2 ]
	run lmd-convert -q --force "$TMP/hf" "$TMP/out"
	[ "$status" -eq 0 ]
}

# Each broken variant: exit 3, one line naming the file and the tensor or field, nothing left at DST.
bad() {
	local kind=$1 expect=$2
	gen-model --shards 2 --break "$kind" "$TMP/hf"
	run lmd-convert "$TMP/hf" "$TMP/out"
	echo "$output"
	[ "$status" -eq 3 ]
	[ "${#lines[@]}" -eq 1 ]
	[[ "$output" == *"$expect"* ]]
	[ ! -e "$TMP/out" ]
	[ -z "$(ls "$TMP" | grep tmp)" ]
}

@test "bad input: missing config.json" { bad no-config "missing config.json"; }
@test "bad input: invalid JSON" { bad bad-json "config.json: invalid JSON"; }
@test "bad input: unsupported architecture" { bad unsupported-arch "architecture 'MixtralForCausalLM' is not supported"; }
@test "bad input: missing shard" { bad no-shard "model-00002-of-00002.safetensors"; }
@test "bad input: truncated shard" { bad truncated "model-00002-of-00002.safetensors"; }
@test "bad input: header length past the end" { bad header-past-end "header length"; }
@test "bad input: overlapping tensors" { bad overlap "overlap"; }
@test "bad input: offsets out of range" { bad out-of-range "past the end of the data"; }
@test "bad input: shape does not match the byte size" { bad shape-mismatch "shape needs"; }
@test "bad input: unknown dtype" { bad unknown-dtype "unknown dtype 'F8_E9M9'"; }
@test "bad input: a tensor missing for the architecture" { bad missing-tensor "tensor 'model.layers.0.input_layernorm.weight' is missing"; }

@test "bad input: DST not writable" {
	gen-model "$TMP/hf"
	mkdir "$TMP/ro"; chmod 555 "$TMP/ro"
	dst=$TMP/ro/out
	[ "$(id -u)" -ne 0 ] || dst=/proc/lmd-test-out   # root writes anywhere but /proc
	run lmd-convert "$TMP/hf" "$dst"
	[ "$status" -eq 3 ]
	[[ "$output" == *"cannot create '$dst'"* ]]
}

@test "bad input: DST under a file" {
	gen-model "$TMP/hf"
	touch "$TMP/file"
	run lmd-convert "$TMP/hf" "$TMP/file/out"
	[ "$status" -eq 3 ]
	[[ "$output" == *"file/out"* ]]
}

@test "a corrupt lmd index is refused naming it" {
	gen-model "$TMP/hf"
	lmd-convert -q "$TMP/hf" "$TMP/out"
	printf 'garbage' > "$TMP/out/index.msgpack"
	run lmd-convert --info "$TMP/out"
	[ "$status" -eq 3 ]
	[[ "$output" == *"index.msgpack"* ]]
	lmd-convert -q "$TMP/hf" "$TMP/out2"
	truncate -s 100 "$TMP/out2/weights.bin"
	run lmd-convert --info "$TMP/out2"
	[ "$status" -eq 3 ]
	[[ "$output" == *"past the end of the file"* ]]
}

@test "usage errors exit 2" {
	run lmd-convert
	[ "$status" -eq 2 ]
	run lmd-convert --dtype int3 a b
	[ "$status" -eq 2 ]
	run lmd-convert --tp 0 a b
	[ "$status" -eq 2 ]
	run lmd-convert --bogus
	[ "$status" -eq 2 ]
}

# Against the real models in ../shared.
@test "every model in ../shared converts; parameter counts of lmd-tiny and lmd-small" {
	need_shared
	for d in "$SHARED"/models/lmd-* "$SHARED"/models/rand/*; do
		lmd-convert -q "$d" "$TMP/$(basename "$d")"
	done
	[ "$(info "$TMP/lmd-tiny" .parameters)" -eq 6819072 ]
	[ "$(info "$TMP/lmd-small" .parameters)" -eq 13472640 ]
	[ -f "$TMP/lmd-tiny/tokenizer.model" ]
}

@test "../shared rand/internlm2 and rand/llama-gqa convert to identical tensors" {
	need_shared
	lmd-convert -q "$SHARED/models/rand/internlm2" "$TMP/i"
	lmd-convert -q "$SHARED/models/rand/llama-gqa" "$TMP/l"
	cmp "$TMP/i/weights.bin" "$TMP/l/weights.bin"
}

@test "../shared lmd-small --tp 2 round-trips" {
	need_shared
	lmd-convert -q "$SHARED/models/lmd-small" "$TMP/one"
	lmd-convert -q --tp 2 "$SHARED/models/lmd-small" "$TMP/two"
	lmd-convert -q "$TMP/two" "$TMP/back"
	cmp "$TMP/one/weights.bin" "$TMP/back/weights.bin"
}
