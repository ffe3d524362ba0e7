#!/usr/bin/env bats
# --enable-prefix-caching (lmd-run generate, lmd-bench gen): a resent history prefills only its new tokens,
# and greedy texts are the same with the cache on and off (every KV quant policy, under preemption).
load lib

setup() { setup_tmp; }
teardown() { teardown_tmp; }

TINY=$ROOT/share/models/lmd-tiny
TEXT=$ROOT/share/data/wikitext2.txt

gen() { lmd-run generate "$TINY" --device cpu "$@"; }

# 64 chat requests: 4 system prompts of 100-250 tokens, each shared by 16 questions
shared_system_prompts() {
	local s i sys=()
	for s in 0 1 2 3; do sys[s]=$(tail -c +$((s * 3000 + 1)) "$TEXT" | head -c $((400 + s * 200))); done
	for i in $(seq 0 63); do
		jq -nc --arg s "${sys[i % 4]}" --arg u "Question $i: what happened in chapter $((i * 7))?" \
			'{messages: [{role: "system", content: $s}, {role: "user", content: $u}], max_tokens: 12,
			  temperature: 0, ignore_eos: true}'
	done
}

@test "the second turn of a chat with a 1,500-token history prefills only its new tokens" {
	local hist
	hist=$(head -c 3900 "$TEXT")
	# turn 2 resends turn 1 (system, user) with an answer and a new question; one request at a time
	jq -nc --arg h "$hist" '{messages: [{role: "system", content: "You are a historian."}, {role: "user", content: $h}],
		max_tokens: 8, temperature: 0}' > "$TMP/in.jsonl"
	jq -nc --arg h "$hist" '{messages: [{role: "system", content: "You are a historian."}, {role: "user", content: $h},
		{role: "assistant", content: "It was long ago."}, {role: "user", content: "Tell me more."}],
		max_tokens: 8, temperature: 0}' >> "$TMP/in.jsonl"
	gen --max-batch-size 1 --enable-prefix-caching -v < "$TMP/in.jsonl" > "$TMP/on" 2> "$TMP/log"
	gen --max-batch-size 1 < "$TMP/in.jsonl" > "$TMP/off"
	cat "$TMP/on" "$TMP/log"
	grep -q 'prefix caching on' "$TMP/log"
	local p1 p2 cached
	p1=$(sed -n 1p "$TMP/on" | jq .prompt_tokens)
	p2=$(sed -n 2p "$TMP/on" | jq .prompt_tokens)
	cached=$(sed -n 2p "$TMP/on" | jq .cached_tokens)
	[ "$p1" -ge 1400 ] && [ "$p1" -le 1700 ]
	[ "$(sed -n 1p "$TMP/on" | jq .cached_tokens)" -eq 0 ]
	# every whole block (64 tokens) of turn 1's prompt is cached: only the rest is prefilled
	[ "$cached" -eq $((p1 / 64 * 64)) ]
	[ $((p2 - cached)) -lt $((p2 - p1 + 64)) ]
	grep -q "prefix cache on: $cached of $((p1 + p2)) prompt tokens cached" "$TMP/log"
	# the same texts as without the cache
	diff <(jq -r .text "$TMP/on") <(jq -r .text "$TMP/off")
	# turn 2's own time to first token (it waits for turn 1): a fraction of what recomputing costs
	local on off
	on=$(jq -s '.[1].timings.ttft_ms - .[0].timings.total_ms' "$TMP/on")
	off=$(jq -s '.[1].timings.ttft_ms - .[0].timings.total_ms' "$TMP/off")
	echo "turn 2 ttft: $on ms cached, $off ms recomputed"
	jq -en --argjson on "$on" --argjson off "$off" '$on * 3 < $off'
}

@test "64 requests with shared system prompts give the same greedy texts with the cache on and off" {
	shared_system_prompts > "$TMP/in.jsonl"
	gen --enable-prefix-caching -v < "$TMP/in.jsonl" > "$TMP/on" 2> "$TMP/log"
	gen < "$TMP/in.jsonl" > "$TMP/off"
	cat "$TMP/log"
	[ "$(wc -l < "$TMP/on")" -eq 64 ]
	diff <(jq -r .text "$TMP/on") <(jq -r .text "$TMP/off")
	# admitted together, the requests still share: most of the system prompts come from the cache
	local cached total
	cached=$(jq -s 'map(.cached_tokens) | add' "$TMP/on")
	total=$(jq -s 'map(.prompt_tokens) | add' "$TMP/on")
	echo "$cached of $total prompt tokens cached"
	[ "$cached" -gt $((total / 2)) ]
	[ "$(jq -s 'map(.cached_tokens) | add' "$TMP/off")" -eq 0 ]
}

@test "every KV quant policy, a pool too small for the batch (preemption): the same greedy texts on and off" {
	# fp32 activations: under bf16 ones with an int4 cache, greedy picks on lmd-tiny already change with the
	# batch's composition (the CPU backend's products are not batch-invariant), cache or not
	shared_system_prompts | sed -n '1,12p' > "$TMP/in.jsonl"
	local q
	for q in 0 8 4; do
		gen --dtype fp32 --quant-policy $q < "$TMP/in.jsonl" | jq -r .text > "$TMP/off.$q"
		# 512 tokens of KV: requests wait and are preempted
		gen --dtype fp32 --quant-policy $q --enable-prefix-caching --session-len 512 --cache-block-seq-len 16 \
			--cache-max-entry-count 0.000001 --max-prefill-token-num 40 -v < "$TMP/in.jsonl" 2> "$TMP/log" |
			jq -r .text > "$TMP/on.$q"
		cat "$TMP/log"
		grep -qE ' [1-9][0-9]* preemptions; prefix cache on: [1-9][0-9]* of' "$TMP/log"
		diff "$TMP/off.$q" "$TMP/on.$q"
	done
}

@test "lmd-bench gen takes --enable-prefix-caching (fresh prompts per measurement: nothing cached)" {
	run lmd-bench gen "$TINY" --device cpu --enable-prefix-caching --concurrency 2 --prompt-tokens 80 \
		--completion-tokens 4 -v
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"prefix caching on"* ]]
	run lmd-bench gen "$TINY" --device cpu --no-enable-prefix-caching --concurrency 2 --prompt-tokens 80 \
		--completion-tokens 4
	[[ "$output" == *"prefix caching off"* ]]
}
