#!/usr/bin/env bats
# lmd-run generate: against HF transformers' greedy continuations, batching, sampling, bad input.
load lib

setup() { setup_tmp; }
teardown() { teardown_tmp; }

TINY=$ROOT/share/models/lmd-tiny

gen() { lmd-run generate "$@" --device cpu; }

# name of the model directory of a reference file
ref_model() {
	case $1 in
	lmd-*) echo "$SHARED/models/$1" ;;
	rand-*) echo "$SHARED/models/rand/${1#rand-}" ;;
	esac
}

@test "greedy continuations equal HF transformers' for every reference model (fp32)" {
	need_shared
	local bad=0
	for ref in "$SHARED"/reference/*.json; do
		local name=$(basename "$ref" .json) model
		model=$(ref_model "$name")
		[ "$name" = rand-llama-rope-dynamic ] && continue   # only logits bind there (HF recomputes the base)
		local n=$(jq '.cases | length' "$ref")
		for ((i = 0; i < n; i++)); do
			[ "$(jq ".prompts[$i]" "$ref")" != null ] || continue   # the long case is given as ids only
			local prompt=$(jq -r ".prompts[$i]" "$ref") k=$(jq ".cases[$i].greedy | length" "$ref")
			local want got
			want=$(jq -r ".cases[$i].greedy | map(tostring) | join(\" \")" "$ref" | lmd-run detokenize --skip-special "$model")
			got=$(gen "$model" --prompt "$prompt" --max-tokens "$k" --temperature 0 --ignore-eos --dtype fp32)
			if [ "$want" != "$got" ]; then
				echo "$name case $i: want [$want] got [$got]"; bad=1
			fi
		done
	done
	[ "$bad" -eq 0 ]
}

@test "the prompt is BOS + the tokenized text, as in the reference" {
	need_shared
	local want got
	want=$(jq -r '.cases[1].ids | map(tostring) | join(" ")' "$SHARED/reference/lmd-small.json")
	got=$(jq -r '.prompts[1]' "$SHARED/reference/lmd-small.json" | tr -d '\n' | lmd-run tokenize --add-special "$SHARED/models/lmd-small")
	[ "$want" = "$got" ]
}

@test "--prompt streams only the continuation; --echo adds the prompt" {
	run gen "$TINY" --prompt "Once upon a time" --max-tokens 8 --temperature 0
	[ "$status" -eq 0 ]
	[ -n "$output" ]
	local plain=$output
	run gen "$TINY" --prompt "Once upon a time" --max-tokens 8 --temperature 0 --echo
	[ "$output" = "Once upon a time$plain" ]
}

@test "JSON lines: one output line per input, in order, equal to running each alone" {
	local prompts=("It was a dark and stormy night" "The old man said" "In the morning" "She" "They walked along the river")
	: > "$TMP/in.jsonl"
	for p in "${prompts[@]}"; do
		jq -nc --arg p "$p" '{prompt: $p, max_tokens: 12, temperature: 0, ignore_eos: true}' >> "$TMP/in.jsonl"
	done
	gen "$TINY" < "$TMP/in.jsonl" > "$TMP/out.jsonl"
	[ "$(wc -l < "$TMP/out.jsonl")" -eq 5 ]
	for i in 0 1 2 3 4; do
		[ "$(jq -r "select(.index == $i) | .index" "$TMP/out.jsonl")" = "$i" ]
		local alone batched
		alone=$(gen "$TINY" --prompt "${prompts[$i]}" --max-tokens 12 --temperature 0 --ignore-eos)
		batched=$(sed -n "$((i + 1))p" "$TMP/out.jsonl" | jq -r .text)
		[ "$alone" = "$batched" ]
		[ "$(sed -n "$((i + 1))p" "$TMP/out.jsonl" | jq -r .finish_reason)" = length ]
		[ "$(sed -n "$((i + 1))p" "$TMP/out.jsonl" | jq -r .completion_tokens)" = 12 ]
	done
}

@test "many concurrent sequences with a small KV cache (preemption) give the same greedy outputs" {
	: > "$TMP/in.jsonl"
	for i in $(seq 1 16); do
		jq -nc --arg p "Chapter $i. The" '{prompt: $p, max_tokens: 40, temperature: 0, ignore_eos: true}' >> "$TMP/in.jsonl"
	done
	gen "$TINY" --max-batch-size 16 < "$TMP/in.jsonl" | jq -c .text > "$TMP/roomy"
	# 3 blocks of 16 tokens per sequence at most; a pool of 12 blocks holds 4 sequences: the rest wait or are preempted
	gen "$TINY" --max-batch-size 8 --cache-block-seq-len 16 --session-len 64 --cache-max-entry-count 0.000001 \
		--max-prefill-token-num 7 < "$TMP/in.jsonl" | jq -c .text > "$TMP/tight"
	diff "$TMP/roomy" "$TMP/tight"
	[ "$(wc -l < "$TMP/tight")" -eq 16 ]
}

@test "a bad line gives an error line, the others still run, exit 2" {
	printf '%s\n' '{"prompt": "Once", "max_tokens": 4}' 'not json' '{"prompt": "Twice", "temperature": -1}' \
		'{"prompt": "Thrice", "max_tokens": 3}' > "$TMP/in.jsonl"
	run gen "$TINY" < "$TMP/in.jsonl"
	[ "$status" -eq 2 ]
	[ "${#lines[@]}" -eq 4 ]
	[ "$(echo "${lines[0]}" | jq -r .completion_tokens)" -le 4 ]
	echo "${lines[1]}" | jq -e .error
	echo "${lines[2]}" | jq -r .error | grep -q temperature
	[ "$(echo "${lines[3]}" | jq -r .index)" = 3 ]
}

@test "the same seed gives the same text; sampling options are accepted" {
	local a b
	a=$(gen "$TINY" --prompt "The" --max-tokens 20 --temperature 0.9 --top-p 0.9 --top-k 40 --min-p 0.01 --repetition-penalty 1.1 --seed 7)
	b=$(gen "$TINY" --prompt "The" --max-tokens 20 --temperature 0.9 --top-p 0.9 --top-k 40 --min-p 0.01 --repetition-penalty 1.1 --seed 7)
	[ "$a" = "$b" ]
}

@test "a stop string ends the text before it, even across tokens" {
	local full cut
	full=$(gen "$TINY" --prompt "Once upon a time" --max-tokens 30 --temperature 0 --ignore-eos)
	local stop=${full:10:4}
	cut=$(gen "$TINY" --prompt "Once upon a time" --max-tokens 30 --temperature 0 --ignore-eos --stop "$stop")
	[ "$cut" = "${full%%"$stop"*}" ]
	echo "{\"prompt\": \"Once upon a time\", \"max_tokens\": 30, \"temperature\": 0, \"stop\": \"$stop\"}" | gen "$TINY" | jq -e '.finish_reason == "stop"'
}

@test "bad values are usage errors (exit 2) with a clear message" {
	run gen "$TINY" --prompt "" ; [ "$status" -eq 2 ]; [[ "$output" == *empty* ]]
	run gen "$TINY" --prompt "x" --max-tokens 0 ; [ "$status" -eq 2 ]
	run gen "$TINY" --prompt "x" --temperature -1 ; [ "$status" -eq 2 ]
	run gen "$TINY" --prompt "x" --top-p 1.5 ; [ "$status" -eq 2 ]
	run gen "$TINY" --prompt $'\xff\xfe' ; [ "$status" -eq 2 ]; [[ "$output" == *UTF-8* ]]
	run lmd-run generate "$TINY" --device gpu --prompt x ; [ "$status" -eq 2 ]
}

@test "a prompt longer than the session is refused naming both lengths, or cut with --truncate" {
	local long=$(printf 'word %.0s' $(seq 1 80))
	run gen "$TINY" --prompt "$long" --session-len 32 --max-tokens 4
	[ "$status" -eq 2 ]
	[[ "$output" == *"session length 32"* ]]
	run gen "$TINY" --prompt "$long" --session-len 32 --max-tokens 4 --truncate
	[ "$status" -eq 0 ]
}

@test "--device cuda without a GPU exits 4" {
	command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1 && skip "a GPU is present"
	run lmd-run generate "$TINY" --device cuda --prompt x
	[ "$status" -eq 4 ]
	[[ "$output" == *"no usable CUDA GPU"* ]]
}

@test "an HF directory runs directly (converted once into the cache)" {
	export LMD_CACHE=$TMP/cache
	run gen "$TINY" --prompt "Hello" --max-tokens 3
	[ "$status" -eq 0 ]
	[ -n "$(ls "$TMP/cache")" ]
}

@test "--prompt-file, a hint at a terminal without input, a newline after the answer on a terminal" {
	command -v script >/dev/null || skip "no script(1)"
	local tiny=$ROOT/share/models/lmd-tiny
	printf 'Once upon a time' > "$TMP/p.txt"
	a=$(lmd-run generate "$tiny" --device cpu --prompt-file "$TMP/p.txt" --max-tokens 8 --temperature 0)
	b=$(lmd-run generate "$tiny" --device cpu --prompt 'Once upon a time' --max-tokens 8 --temperature 0)
	[ -n "$a" ] && [ "$a" = "$b" ]
	run lmd-run generate "$tiny" --prompt x --prompt-file "$TMP/p.txt"
	[ "$status" -eq 2 ]
	run script -qec "timeout 5 lmd-run generate '$tiny' --device cpu" /dev/null
	[[ $output == *"reading JSON lines from the terminal"*"--prompt TEXT"* ]]
	script -qec "lmd-run generate '$tiny' --device cpu --prompt hi --max-tokens 3 < /dev/null" /dev/null > "$TMP/tty"
	[ "$(tail -c 2 "$TMP/tty" | od -An -c | tr -d ' ')" = '\r\n' ]
	lmd-run generate "$tiny" --device cpu --prompt hi --max-tokens 3 > "$TMP/pipe"
	[ "$(tail -c 1 "$TMP/pipe" | od -An -c | tr -d ' ')" != '\n' ]   # piped: the text exactly
}

@test "--seed: random by default (printed with -v), the same text when given; --tp checked; underscore spellings" {
	local tiny=$ROOT/share/models/lmd-tiny s1 s2
	s1=$(lmd-run generate "$tiny" --device cpu --prompt hi --max-tokens 1 -v 2>&1 >/dev/null | sed -n 's/.*: seed //p')
	s2=$(lmd-run generate "$tiny" --device cpu --prompt hi --max-tokens 1 -v 2>&1 >/dev/null | sed -n 's/.*: seed //p')
	[[ $s1 =~ ^[0-9]+$ && $s2 =~ ^[0-9]+$ && $s1 != "$s2" ]]
	a=$(lmd-run generate "$tiny" --device cpu --prompt hi --max-tokens 16 --seed "$s1")
	b=$(lmd-run generate "$tiny" --device cpu --prompt hi --max-tokens 16 --seed "$s1")
	[ "$a" = "$b" ]
	lmd-run generate "$tiny" --device cpu --prompt hi --max-tokens 1 --tp 1 > /dev/null
	run lmd-run generate "$tiny" --device cpu --prompt hi --tp 2
	[ "$status" -eq 2 ]
	[[ $output == *"--tp 2"*"split for 1 rank"* ]]
	c=$(lmd-run generate "$tiny" --device cpu --prompt hi --max_tokens 16 --seed "$s1" --session_len 64 --cache_max_entry_count 0.5)
	[ "$c" = "$a" ]
	run lmd-run generate "$tiny" --prompt hi --no_such_flag
	[ "$status" -eq 2 ]
}
