#!/usr/bin/env bats
# lmd-kvparams: the CSV against the statistics read by Python's msgpack; the engine's KV int8/int4 quality.
load lib

setup() { setup_tmp; }
teardown() { teardown_tmp; }

TINY=$ROOT/share/models/lmd-tiny


@test "CSV parameters follow their formulas from the statistics (asymmetric 8 and 4 bits, symmetric)" {
	need_msgpack
	lmd-calib "$TINY" --device cpu --calib-samples 2 --calib-seqlen 64 -o "$TMP/s.calib"
	lmd-kvparams "$TMP/s.calib" > "$TMP/a8.csv"
	lmd-kvparams "$TMP/s.calib" --kv-bits 4 -o "$TMP/a4.csv"
	lmd-kvparams "$TMP/s.calib" --kv-bits 8 --kv-sym > "$TMP/s8.csv"
	"$PY" - "$TMP" <<'PY'
import sys, msgpack, csv
d = msgpack.unpack(open(sys.argv[1] + '/s.calib', 'rb'))
def rows(f):
    r = list(csv.reader(open(sys.argv[1] + '/' + f)))
    assert r[0] == ['layer', 'kv', 'head', 'scale', 'zero', 'bits']
    assert all(int(x[5]) == (4 if f == 'a4.csv' else 8) for x in r[1:])
    return {(int(a), b, int(c)): (float(s), float(z)) for a, b, c, s, z, _ in r[1:]}
a8, a4, s8 = rows('a8.csv'), rows('a4.csv'), rows('s8.csv')
assert len(a8) == 6 * 2 * 4
for e in d['kv']:
    for x in 'kv':
        for h in range(4):
            mn, mx = e[x + '_min'][h], e[x + '_max'][h]
            k = (e['layer'], x, h)
            def near(a, b): return abs(a - b) <= 1e-6 * max(1, abs(b))
            assert near(a8[k][0], (mx - mn) / 255) and near(a8[k][1], mn), (k, a8[k], mn, mx)
            assert near(a4[k][0], (mx - mn) / 15) and near(a4[k][1], mn)
            am = max(abs(mn), abs(mx))
            assert near(s8[k][0], am / 127) and near(s8[k][1], -am)
PY
}

@test "KV int8 costs at most 0.5% perplexity and int4 at most 5% (lmd-tiny, online); offline parameters run" {
	need_shared
	ppl() { lmd-bench ppl "$TINY" --text "$SHARED/data/gutenberg-heldout.txt" --windows 4 --device cpu "$@" 2>/dev/null | tail -1 | cut -d' ' -f2; }
	local b q8 q4 o8
	b=$(ppl); q8=$(ppl --quant-policy 8); q4=$(ppl --quant-policy 4)
	lmd-calib "$TINY" --device cpu --calib-samples 8 --calib-seqlen 256 -o "$TMP/s.calib"
	lmd-kvparams "$TMP/s.calib" > "$TMP/kv8.csv"
	o8=$(ppl --quant-policy 8 --kv-params "$TMP/kv8.csv")
	echo "base $b int8 $q8 int4 $q4 int8-offline $o8"
	awk -v b="$b" -v a="$q8" -v c="$q4" -v o="$o8" 'BEGIN { exit !(a <= b * 1.005 && c <= b * 1.05 && o <= b * 1.02 && a != c) }'
}

@test "bad input: wrong bits, a CSV for another model, --kv-params without --quant-policy" {
	run lmd-kvparams /nonexistent.calib
	[ "$status" -eq 3 ]
	echo x > "$TMP/x.calib"
	run lmd-kvparams "$TMP/x.calib" --kv-bits 6
	[ "$status" -eq 2 ]
	printf 'layer,kv,head,scale,zero\n0,k,9,0.1,0\n' > "$TMP/bad.csv"
	run lmd-bench ppl "$TINY" --text "$ROOT/share/data/wikitext2.txt" --windows 1 --quant-policy 8 --kv-params "$TMP/bad.csv"
	[ "$status" -eq 3 ]
	[[ $output == *bad.csv* && $output == *"line 2"* ]]
	run lmd-bench ppl "$TINY" --text "$ROOT/share/data/wikitext2.txt" --windows 1 --kv-params "$TMP/bad.csv"
	[ "$status" -eq 2 ]
}

@test "bad numbers in a KV CSV are refused naming the line and field; a CSV for 4 bits is refused under policy 8" {
	lmd-calib "$TINY" --device cpu --calib-samples 1 --calib-seqlen 32 -o "$TMP/s.calib"
	lmd-kvparams "$TMP/s.calib" --kv-bits 4 -o "$TMP/kv4.csv"
	ppl() { lmd-bench ppl "$TINY" --device cpu --text "$ROOT/share/data/wikitext2.txt" --windows 1 --seqlen 32 "$@"; }
	run ppl --quant-policy 8 --kv-params "$TMP/kv4.csv"
	echo "$output"
	[ "$status" -eq 2 ]
	[[ $output == *kv4.csv*"line 2"*"--kv-bits 4"* ]]
	ppl --quant-policy 4 --kv-params "$TMP/kv4.csv" >/dev/null
	lmd-kvparams "$TMP/s.calib" -o "$TMP/kv8.csv"
	local bad field
	for bad in inf 1e30 -0.5 0 nan; do
		for field in 4 5; do
			[ "$field" = 4 ] || [ "$bad" != 0 -a "$bad" != -0.5 ] || continue
			awk -F, -v OFS=, -v f=$field -v b=$bad 'NR == 3 { $f = b } { print }' "$TMP/kv8.csv" > "$TMP/bad.csv"
			run ppl --quant-policy 8 --kv-params "$TMP/bad.csv"
			echo "$bad in field $field: $output"
			[ "$status" -eq 3 ]
			[[ $output == *"line 3: "$([ $field = 4 ] && echo scale || echo zero)* ]]
		done
	done
}
