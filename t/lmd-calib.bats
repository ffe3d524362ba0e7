#!/usr/bin/env bats
# lmd-calib: statistics file readable by Python's msgpack, consistent with its own definition, datasets.
load lib

setup() { setup_tmp; }
teardown() { teardown_tmp; }

TINY=$ROOT/share/models/lmd-tiny


@test "statistics of lmd-tiny: schema, counts and per-channel invariants (read by Python's msgpack)" {
	need_msgpack
	lmd-calib "$TINY" --device cpu --calib-samples 4 --calib-seqlen 128 --batch-size 2 -o "$TMP/s.calib"
	"$PY" - "$TMP/s.calib" <<'PY'
import sys, msgpack, math
d = msgpack.unpack(open(sys.argv[1], 'rb'))
assert d['format'] == 'lmd-calib' and d['version'] == 1
m = d['model']
assert (m['layers'], m['hidden'], m['inter'], m['heads'], m['kv_heads'], m['head_dim']) == (6, 256, 768, 8, 4, 32)
assert d['tokens'] == 4 * 128 and d['dataset'] == 'wikitext2'
assert len(d['inputs']) == 6 * 4 and len(d['kv']) == 6
ch = {'attn_in': 256, 'o_in': 256, 'ffn_in': 256, 'w2_in': 768}
for e in d['inputs']:
    kind = e['name'].split('.')[2]
    assert e['channels'] == ch[kind] and e['count'] == 512, e['name']
    for a, b, s in zip(e['absmax'], e['absmean'], e['sumsq']):
        assert a >= b - 1e-6 and b >= 0
        assert s <= e['count'] * a * a * (1 + 1e-5) + 1e-6      # sum of squares under count * max²
        assert s >= e['count'] * b * b * (1 - 1e-5) - 1e-6      # and over count * mean² (Cauchy-Schwarz)
    assert max(e['absmax']) > 0
for l, e in enumerate(d['kv']):
    assert e['layer'] == l
    for x in 'kv':
        mn, mx = e[x + '_min_ch'], e[x + '_max_ch']
        assert len(mn) == 128 and all(a <= b for a, b in zip(mn, mx))
        for h in range(4):
            assert e[x + '_min'][h] == min(mn[h * 32:(h + 1) * 32]) and e[x + '_max'][h] == max(mx[h * 32:(h + 1) * 32])
assert d['inputs'][0]['linears'] == ['layers.0.wq', 'layers.0.wk', 'layers.0.wv']
PY
}

@test "the same seed gives the same file; another seed another; batch size does not change the statistics" {
	lmd-calib "$TINY" --device cpu --dtype fp32 --calib-samples 3 --calib-seqlen 64 -o "$TMP/a"
	lmd-calib "$TINY" --device cpu --dtype fp32 --calib-samples 3 --calib-seqlen 64 -o "$TMP/b" --batch-size 3
	lmd-calib "$TINY" --device cpu --dtype fp32 --calib-samples 3 --calib-seqlen 64 -o "$TMP/c" --seed 7
	cmp "$TMP/a" "$TMP/b"
	! cmp -s "$TMP/a" "$TMP/c"
}

@test "datasets: a JSON-lines file, a data directory, a missing set, too short a text" {
	printf '{"text": "The quick brown fox jumps over the lazy dog. %.0s"}\n' $(seq 40) > "$TMP/d.jsonl"
	lmd-calib "$TINY" --device cpu --calib-dataset "$TMP/d.jsonl" --calib-samples 2 --calib-seqlen 32 -o "$TMP/j"
	[ -s "$TMP/j" ]
	cp "$TMP/d.jsonl" "$TMP/c4.jsonl"
	LMD_DATA=$TMP lmd-calib "$TINY" --device cpu --calib-dataset c4 --calib-samples 2 --calib-seqlen 32 -o "$TMP/k"
	[ -s "$TMP/k" ]
	run lmd-calib "$TINY" --calib-dataset ptb --data-dir "$TMP" -o "$TMP/x"
	[ "$status" -eq 3 ]
	[[ $output == *"'ptb'"* && $output == *"$TMP"* ]]
	echo "too short" > "$TMP/short.txt"
	run lmd-calib "$TINY" --device cpu --calib-dataset "$TMP/short.txt" --calib-seqlen 64 -o "$TMP/x"
	[ "$status" -eq 2 ]
	[[ $output == *"short.txt"* ]]
	[ ! -e "$TMP/x" ]
	run lmd-calib "$TINY" --calib-dataset "$TMP/nonexistent" -o "$TMP/x"
	[ "$status" -eq 3 ]
	[[ $output == *nonexistent* ]]
}

@test "the shipped calibration text is WikiText-2 validation, with its attribution" {
	[ -f "$ROOT/share/data/ATTRIBUTION" ]
	grep -q "CC BY-SA 3.0" "$ROOT/share/data/ATTRIBUTION"
	sha256sum "$ROOT/share/data/wikitext2.txt" | grep -q 4cd0f6876d07a413aa911261ff6d363c72d757d47f0fdd6015702014c89cb9c7
}

@test "ptb and c4 are not shipped: refused at once, before the model is loaded, saying what to give" {
	for set in ptb c4; do
		for tool in lmd-calib lmd-awq; do
			run env -u LMD_DATA $tool "$TMP/no-model-here" --calib-dataset $set -o "$TMP/x"
			echo "$output"
			[ "$status" -eq 3 ]
			[[ $output == *"'$set': not installed (lmd ships wikitext2 only)"* ]]
			[[ $output != *no-model-here* ]]
		done
	done
}
