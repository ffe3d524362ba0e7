#!/usr/bin/env bats
# lmd-awq and lmd-convert --model-format awq: the AutoAWQ gemm format checked by an independent reader,
# refusals, and the quantized model running in the engine.
load lib

setup() { setup_tmp; }
teardown() { teardown_tmp; }

TINY=$ROOT/share/models/lmd-tiny
PY=/usr/bin/python3
command -v python3 >/dev/null && PY=python3

@test "RTN output follows the AutoAWQ gemm format: dequantized by its definition, within half a step of the weights" {
	lmd-awq "$TINY" --method rtn --w-group-size 64 -o "$TMP/rtn"
	"$PY" - "$TMP/rtn" "$TINY" <<'PY'
import json, struct, sys
def load(path):
    f = open(path, 'rb'); n = struct.unpack('<Q', f.read(8))[0]; h = json.loads(f.read(n)); base = 8 + n
    data = open(path, 'rb').read()
    def get(name):
        e = h[name]; b, t = e['data_offsets']; raw = data[base + b:base + t]
        if e['dtype'] == 'I32': v = list(struct.unpack('<%di' % (len(raw) // 4), raw))
        elif e['dtype'] == 'F16': v = list(struct.unpack('<%de' % (len(raw) // 2), raw))
        elif e['dtype'] == 'BF16': v = [struct.unpack('<f', b'\0\0' + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
        else: raise SystemExit('dtype ' + e['dtype'])
        return e['shape'], v
    return h, get
cfg = json.load(open(sys.argv[1] + '/config.json'))
q = cfg['quantization_config']
assert q['quant_method'] == 'awq' and q['version'] == 'gemm' and q['bits'] == 4 and q['group_size'] == 64 and q['zero_point']
h, get = load(sys.argv[1] + '/model.safetensors')
_, orig = load(sys.argv[2] + '/model.safetensors')
order = [0, 2, 4, 6, 1, 3, 5, 7]
for name, out, inn in [('model.layers.0.self_attn.k_proj', 128, 256), ('model.layers.5.mlp.down_proj', 256, 768)]:
    (qs, qw), (zs, qz), (ss, sc) = get(name + '.qweight'), get(name + '.qzeros'), get(name + '.scales')
    assert qs == [inn, out // 8] and zs == [inn // 64, out // 8] and ss == [inn // 64, out], (qs, zs, ss)
    assert h[name + '.scales']['dtype'] == 'F16' and h[name + '.qweight']['dtype'] == 'I32'
    assert name + '.weight' not in h
    def nib(words, r, c, cols):  # value at row r, output column c
        w = words[r * (cols // 8) + c // 8] & 0xffffffff
        return (w >> (4 * order.index(c % 8))) & 15
    ws, w = orig(name + '.weight')
    assert ws == [out, inn]
    worst = 0
    for o in range(out):
        for i in range(inn):
            g = i // 64
            s = sc[g * out + o]
            d = (nib(qw, i, o, out) - nib(qz, g, o, out)) * s
            worst = max(worst, abs(d - w[o * inn + i]) / s)
    assert worst <= 0.5 + 1e-2, worst
    print(name, 'worst error in steps', worst)
assert 'lm_head.weight' in h and h['model.embed_tokens.weight']['dtype'] == 'F16'
PY
}

@test "a group size that does not divide a layer is refused naming the layer; other bad usage" {
	run lmd-awq "$TINY" --method rtn --w-group-size 96 -o "$TMP/x"
	[ "$status" -eq 2 ]
	[[ $output == *"'layers.0.wq'"* && $output == *96* ]]
	[ ! -e "$TMP/x" ]
	run lmd-awq "$TINY" --method rtn
	[ "$status" -eq 2 ]
	run lmd-awq "$TINY" --method rtn --search-scale -o "$TMP/x"
	[ "$status" -eq 2 ]
	run lmd-awq "$TINY" --w-bits 3 -o "$TMP/x"
	[ "$status" -eq 2 ]
}

@test "statistics of another model are refused naming the mismatch" {
	need_shared
	lmd-calib "$SHARED/models/rand/llama-gqa" --device cpu --calib-samples 1 --calib-seqlen 32 -o "$TMP/other.calib"
	run lmd-awq "$TINY" --stats "$TMP/other.calib" -o "$TMP/x"
	[ "$status" -eq 2 ]
	[[ $output == *other.calib* && $output == *"another model"* ]]
	echo garbage > "$TMP/bad.calib"
	run lmd-awq "$TINY" --stats "$TMP/bad.calib" -o "$TMP/x"
	[ "$status" -eq 3 ]
	[[ $output == *bad.calib* ]]
}

@test "AWQ (the default search + clip), its fixed ratio and GPTQ convert with --model-format awq, run int4, and beat RTN on WikiText-2" {
	need_shared
	local cal=(--calib-samples 24 --search-tokens 1024)
	lmd-awq "$TINY" "${cal[@]}" -o "$TMP/awq" 2>"$TMP/log"
	grep -q 'search + clip' "$TMP/log"
	lmd-awq "$TINY" --fixed-ratio --calib-samples 8 -o "$TMP/fixed"
	lmd-awq "$TINY" --method gptq --calib-samples 24 -o "$TMP/gptq"
	lmd-awq "$TINY" --method rtn -o "$TMP/rtn"
	lmd-convert --model-format awq "$TMP/awq" "$TMP/awq.lmd"
	lmd-convert --info --json "$TMP/awq.lmd" | jq -e '.bytes.u8 > 0'
	jq -e '.quantization_config | .quant_method == "awq" and .version == "gemm" and .group_size == 128' "$TMP/gptq/config.json"
	ppl() { lmd-bench ppl "$1" --text "$SHARED/data/wikitext-2-raw/wiki.test.raw" --windows 4 --device cpu --dtype fp32 2>/dev/null | tail -1 | cut -d' ' -f2; }
	local base awq rtn gptq fixed
	base=$(ppl "$TINY"); awq=$(ppl "$TMP/awq.lmd"); rtn=$(ppl "$TMP/rtn"); gptq=$(ppl "$TMP/gptq"); fixed=$(ppl "$TMP/fixed")
	echo "fp $base awq $awq gptq $gptq fixed $fixed rtn $rtn"
	awk -v b="$base" -v a="$awq" -v g="$gptq" -v f="$fixed" -v r="$rtn" \
		'BEGIN { exit !(a < r && g < r && f < r && a > b * 0.95 && r < b * 1.5) }'
	run lmd-run generate "$TMP/awq.lmd" --device cpu --max-tokens 8 --temperature 0 --prompt "Once upon a time"
	[ "$status" -eq 0 ]
	[ -n "$output" ]
}

@test "--no-search: every scale 1, so with --no-clip it is RTN byte for byte; alone it clips" {
	need_shared
	lmd-awq "$TINY" --method rtn -o "$TMP/rtn"
	lmd-awq "$TINY" --no-search --no-clip --calib-samples 4 -v -o "$TMP/none" 2>"$TMP/log"
	grep -q 'neither search nor clip' "$TMP/log"
	cmp "$TMP/rtn/model.safetensors" "$TMP/none/model.safetensors"
	lmd-awq "$TINY" --no-search --calib-samples 4 -v -o "$TMP/clip" 2>"$TMP/log"
	grep -q 'awq (clip)' "$TMP/log"
	grep -q 'ratios qkv -, o -, w13 -, w2 -;.*clipped' "$TMP/log"
	! cmp -s "$TMP/rtn/model.safetensors" "$TMP/clip/model.safetensors"
	run lmd-awq "$TINY" --method gptq --no-search -o "$TMP/x"
	[ "$status" -eq 2 ]
}

@test "options of one method are refused with another; too little calibration text for one window is refused" {
	run lmd-awq "$TINY" --method gptq --fixed-ratio -o "$TMP/x"
	[ "$status" -eq 2 ]
	run lmd-awq "$TINY" --act-order -o "$TMP/x"
	[ "$status" -eq 2 ]
	run lmd-awq "$TINY" --method rtn --no-clip -o "$TMP/x"
	[ "$status" -eq 2 ]
	run lmd-awq "$TINY" --method bogus -o "$TMP/x"
	[ "$status" -eq 2 ]
	printf 'a few words\n' > "$TMP/short.txt"
	run lmd-awq "$TINY" --calib-dataset "$TMP/short.txt" -o "$TMP/x"
	[ "$status" -eq 2 ]
	[[ $output == *short.txt* && $output == *window* ]]
	[ ! -e "$TMP/x" ]
}

@test "--model-format awq refuses a directory that is not AWQ" {
	run lmd-convert --model-format awq "$TINY" "$TMP/x"
	[ "$status" -eq 3 ]
	[[ $output == *"not an AWQ"* ]]
}

@test "--equalize: a no-op on a trained model (byte for byte); on planted outlier channels it moves exactly those, v -> o too without GQA, and its output loads, runs and beats RTN" {
	lmd-awq "$TINY" --method rtn -o "$TMP/rtn"
	lmd-awq "$TINY" --method rtn --equalize -v -o "$TMP/eq" 2>"$TMP/log"
	cmp "$TMP/rtn/model.safetensors" "$TMP/eq/model.safetensors"
	grep -q 'equalization, then rtn' "$TMP/log"
	[ "$(grep -c 'equalized channels qkv 0, o -, w13 0, w2 0' "$TMP/log")" -eq "$(jq .num_hidden_layers "$TINY/config.json")" ]
	run lmd-awq "$TINY" --method rtn --equalize-threshold 3 -o "$TMP/x"
	[ "$status" -eq 2 ]
	[[ $output == *--equalize* ]]
	need_shared
	"$PY" "$SHARED/tools/make_outlier.py" "$SHARED/models/rand/llama-mha-bf16" "$TMP/mha" --seed 3 --channels 4 --alpha 32 \
		--sites qkv,mlp,o,down
	lmd-awq "$TMP/mha" --method gptq --equalize --calib-samples 4 -v -o "$TMP/mha-q" 2>"$TMP/log"
	[ "$(grep -c 'equalized channels qkv 4, o 4, w13 4, w2 4' "$TMP/log")" -eq 2 ]
	lmd-convert --model-format awq "$TMP/mha-q" "$TMP/mha.lmd"
	run lmd-run generate "$TMP/mha.lmd" --device cpu --max-tokens 4 --temperature 0 --prompt "Once upon a time"
	[ "$status" -eq 0 ]
	"$PY" "$SHARED/tools/make_outlier.py" "$TINY" "$TMP/tiny-out" --seed 5 --channels 8 --alpha 32
	lmd-awq "$TMP/tiny-out" --method rtn -o "$TMP/out-rtn"
	lmd-awq "$TMP/tiny-out" --method rtn --equalize --equalize-threshold 4 -o "$TMP/out-eq"
	ppl() { lmd-bench ppl "$1" --text "$SHARED/data/gutenberg-heldout.txt" --windows 4 --device cpu --dtype fp32 2>/dev/null | tail -1 | cut -d' ' -f2; }
	local rtn0 rtn eq
	rtn0=$(ppl "$TMP/rtn"); rtn=$(ppl "$TMP/out-rtn"); eq=$(ppl "$TMP/out-eq")
	echo "RTN $rtn0, on the variant $rtn, equalized $eq"
	awk -v o="$rtn0" -v r="$rtn" -v e="$eq" 'BEGIN { exit !(e < r && e - o < 0.2 * (r - o)) }'
}
