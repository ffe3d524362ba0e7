#!/usr/bin/env bats
# lmd-bench ppl: perplexity against HF transformers' (../shared/reference/*.json "ppl"), KLD and top-1.
load lib

setup() { setup_tmp; }
teardown() { teardown_tmp; }

WIKI=wikitext-2-raw/wiki.test.raw

# within 0.1% of the reference's 40-window WikiText-2 perplexity, fp32 compute (about 10-20 s each on 2 cores)
check_ref() {
	local name=$1 want got
	want=$(jq '.ppl.ppl' "$SHARED/reference/$name.json")
	run lmd-bench ppl "$SHARED/models/$name" --text "$SHARED/data/$WIKI" --seqlen 512 --windows 40 --dtype fp32 --device cpu
	[ "$status" -eq 0 ]
	got=$(echo "$output" | tail -1)
	[[ $got == "ppl "* ]]
	echo "$name: reference $want, got ${got#ppl }"
	awk -v a="${got#ppl }" -v b="$want" 'BEGIN { d = (a - b) / b; exit !(d < 0.001 && d > -0.001) }'
}

@test "lmd-tiny WikiText-2 perplexity equals HF transformers' within 0.1%" {
	need_shared
	check_ref lmd-tiny
}

@test "lmd-small WikiText-2 perplexity equals HF transformers' within 0.1%" {
	need_shared
	check_ref lmd-small
}

@test "tokens scored follow the recipe; json and csv outputs" {
	need_shared
	out=$(lmd-bench ppl "$SHARED/models/lmd-tiny" --text "$SHARED/data/$WIKI" --windows 2 -f json --device cpu 2>/dev/null)
	[ "$(echo "$out" | jq .tokens_scored)" = 1022 ]
	[ "$(echo "$out" | jq .windows)" = 2 ]
	out=$(lmd-bench ppl "$SHARED/models/lmd-tiny" --text "$SHARED/data/$WIKI" --windows 1 --seqlen 64 -f csv --device cpu 2>/dev/null)
	[ "$(echo "$out" | head -1)" = "model,text,seqlen,windows,tokens_scored,ppl,nll" ]
}

@test "--kld-base: a model against itself has KLD 0 and top-1 agreement 1" {
	need_shared
	out=$(lmd-bench ppl "$SHARED/models/lmd-tiny" --text "$SHARED/data/gutenberg-heldout.txt" --windows 2 \
		--kld-base "$SHARED/models/lmd-tiny" -f json --device cpu --dtype fp32 2>/dev/null)
	[ "$(echo "$out" | jq .kld)" = 0 ]
	[ "$(echo "$out" | jq .top1)" = 1 ]
	[ "$(echo "$out" | jq '.ppl == .base_ppl')" = true ]
}

@test "bad usage and too short a text are refused" {
	need_shared
	run lmd-bench ppl "$SHARED/models/lmd-tiny"
	[ "$status" -eq 2 ]
	[[ $output == *"--text"* ]]
	echo "a b c" > "$TMP/short.txt"
	run lmd-bench ppl "$SHARED/models/lmd-tiny" --text "$TMP/short.txt" --device cpu
	[ "$status" -eq 2 ]
	[[ $output == *"short.txt"* ]]
	run lmd-bench ppl "$SHARED/models/lmd-tiny" --text "$TMP/short.txt" --quant-policy 3
	[ "$status" -eq 2 ]
}
