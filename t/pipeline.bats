#!/usr/bin/env bats
# The whole quantization chain on lmd-tiny through share/mk/quantize.mk: calib -> kvparams -> awq ->
# convert, nothing re-run when nothing changed, and text generated from the result with a KV int8 cache.
load lib

setup() { setup_tmp; }
teardown() { teardown_tmp; }

TINY=$ROOT/share/models/lmd-tiny
MK="make -s -f $ROOT/share/mk/quantize.mk MODEL=$TINY BIN=$BUILD/bin/ CALIB_SAMPLES=8 CALIB_SEQLEN=256 AWQ_SEQLEN=128 DEVICE=cpu"

@test "quantize.mk runs the chain on lmd-tiny; a second run does nothing; the result generates text" {
	$MK OUT="$TMP/q"
	[ -s "$TMP/q/calib.msgpack" ] && [ -s "$TMP/q/kv.csv" ]
	[ -f "$TMP/q/awq/model.safetensors" ] && [ -f "$TMP/q/model/index.msgpack" ]
	jq -e '.quantization_config.quant_method == "awq"' "$TMP/q/awq/config.json"
	lmd-convert --info --json "$TMP/q/model" | jq -e '.bytes.u8 > 0'
	# up to date: make -q says so and a run rebuilds nothing
	$MK OUT="$TMP/q" -q
	local before=$(stat -c %Y "$TMP/q/model/index.msgpack")
	run $MK OUT="$TMP/q"
	[ "$status" -eq 0 ]
	[ -z "$output" ]
	[ "$(stat -c %Y "$TMP/q/model/index.msgpack")" = "$before" ]
	# the quantized model with the quantized KV cache writes text
	run lmd-run generate "$TMP/q/model" --device cpu --quant-policy 8 --kv-params "$TMP/q/kv.csv" --max-tokens 16 \
		--temperature 0 --prompt "The old man said"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "${#output}" -gt 10 ]
}

@test "the quantized model stays close to the original (perplexity within 15% on held-out text)" {
	need_shared
	$MK OUT="$TMP/q"
	ppl() { lmd-bench ppl "$1" --text "$SHARED/data/gutenberg-heldout.txt" --windows 4 --device cpu "${@:2}" 2>/dev/null | tail -1 | cut -d' ' -f2; }
	local b q
	b=$(ppl "$TINY"); q=$(ppl "$TMP/q/model" --quant-policy 8)
	echo "fp $b, awq + kv int8 $q"
	awk -v b="$b" -v q="$q" 'BEGIN { exit !(q < b * 1.15) }'
}

@test "quantize.mk as the README shows it works in the source tree (no BIN) and a failed run leaves no OUT" {
	[ "$BUILD" = "$ROOT/build" ] || skip "the source tree's build/ is not the build under test"
	cd "$ROOT"
	run env PATH=/usr/bin:/bin make -s -f share/mk/quantize.mk MODEL="$TMP/no-such-model" OUT="$TMP/q" DEVICE=cpu
	echo "$output"
	[ "$status" -ne 0 ]
	[[ $output != *"lmd-calib: not found"* && $output != *"No such file or directory"*"lmd-calib"* ]]
	[ ! -e "$TMP/q" ]
	env PATH=/usr/bin:/bin make -s -f share/mk/quantize.mk MODEL="$TINY" OUT="$TMP/q" CALIB_SAMPLES=2 CALIB_SEQLEN=64 \
		W_GROUP_SIZE=64 DEVICE=cpu 2>/dev/null
	[ -f "$TMP/q/model/index.msgpack" ] && [ -f "$TMP/q/kv.csv" ]
	run env PATH=/usr/bin:/bin make -s -f share/mk/quantize.mk MODEL="$TINY" OUT="$TMP/q2" BIN=/nowhere/
	[ "$status" -ne 0 ]
	[[ $output == *"lmd-calib is not on PATH nor in /nowhere/"* ]]
	[ ! -e "$TMP/q2" ]
}
