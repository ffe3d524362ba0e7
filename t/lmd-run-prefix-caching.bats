#!/usr/bin/env bats
# --enable-prefix-caching (lmd-run generate, lmd-bench gen, lmd-run serve where it is the default): a resent
# history prefills only its new tokens, and greedy texts are the same with the cache on and off (every KV quant
# policy, under preemption; over HTTP with concurrent requests).
load lib

setup() { setup_tmp; }
teardown() {
	stop_serve
	teardown_tmp
}

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

# --- over HTTP (lmd-run serve: prefix caching on by default)

# start_serve (lib.bash) skips without lmd-run serve; this also skips without its prefix caching
need_serve_prefix() {
	lmd-run serve --help 2>/dev/null | grep -q -- --no-enable-prefix-caching || skip "lmd-run serve has no prefix caching"
}
metric() { curl -sf "$SERVE_URL/metrics" | awk -v n="lmd:$1{" 'index($0, n) == 1 { print $NF }'; }
chat() { curl -sf "$SERVE_URL/v1/chat/completions" -H 'Content-Type: application/json' -d @"$1"; }

@test "over HTTP: the second turn of a chat with a 1,500-token history prefills only its new tokens (/metrics, timings)" {
	need_serve_prefix
	local hist mode
	hist=$(head -c 3900 "$TEXT")
	jq -nc --arg h "$hist" '{messages: [{role: "system", content: "You are a historian."}, {role: "user", content: $h}],
		max_tokens: 8, temperature: 0}' > "$TMP/turn1"
	for mode in on off; do
		if [ $mode = on ]; then start_serve "$TINY"; else start_serve "$TINY" --no-enable-prefix-caching; fi
		chat "$TMP/turn1" > "$TMP/a1.$mode"
		# the stateless API: turn 2 resends the whole history with the answer
		jq -c --slurpfile a "$TMP/a1.$mode" '.messages += [{role: "assistant", content: $a[0].choices[0].message.content},
			{role: "user", content: "Tell me more."}]' "$TMP/turn1" > "$TMP/turn2.$mode"
		local h0 p0 t
		h0=$(metric prefix_cache_hits_total)
		p0=$(metric prefill_tokens_total)
		t=$(curl -sf -o "$TMP/a2.$mode" -w '%{time_total}' "$SERVE_URL/v1/chat/completions" \
			-H 'Content-Type: application/json' -d @"$TMP/turn2.$mode")
		local p1 p2
		p1=$(jq .usage.prompt_tokens "$TMP/a1.$mode")
		p2=$(jq .usage.prompt_tokens "$TMP/a2.$mode")
		echo "$mode: turn 1 $p1 tokens, turn 2 $p2 tokens in $t s; hits +$(($(metric prefix_cache_hits_total) - h0)), prefilled +$(($(metric prefill_tokens_total) - p0))"
		[ "$p1" -ge 1400 ]
		if [ $mode = on ]; then
			# every whole block (64 tokens) of turn 1's prompt was cached: only the rest is prefilled
			[ $(($(metric prefix_cache_hits_total) - h0)) -ge $((p1 / 64 * 64)) ]
			[ $(($(metric prefill_tokens_total) - p0)) -lt $((p2 - p1 + 64)) ]
			[ "$(metric kv_cache_blocks_cached)" -gt 0 ]
		else
			[ $(($(metric prefill_tokens_total) - p0)) -eq "$p2" ]
			[ "$(metric prefix_cache_hits_total)" -eq 0 ]
		fi
		[ "$(metric kv_cache_blocks_used)" -eq 0 ]   # blocks kept only by the cache count as free
		echo "$t" > "$TMP/t.$mode"
		stop_serve
	done
	diff <(jq -r '.choices[0].message.content' "$TMP/a1.on" "$TMP/a2.on") \
		<(jq -r '.choices[0].message.content' "$TMP/a1.off" "$TMP/a2.off")
	jq -en --argjson on "$(cat "$TMP/t.on")" --argjson off "$(cat "$TMP/t.off")" '$on * 3 < $off'
}

@test "over HTTP: 64 concurrent requests with shared system prompts give the same greedy texts with the cache on and off" {
	need_serve_prefix
	shared_system_prompts > "$TMP/in.jsonl"
	split -l 1 -d -a 2 "$TMP/in.jsonl" "$TMP/req."
	local mode f
	for mode in on off; do
		if [ $mode = on ]; then start_serve "$TINY"; else start_serve "$TINY" --no-enable-prefix-caching; fi
		ls "$TMP"/req.?? | xargs -P 16 -I{} sh -c 'curl -sf "$1/v1/chat/completions" -H "Content-Type: application/json" \
			-d @"$2" > "$2.$3"' _ "$SERVE_URL" {} $mode
		for f in "$TMP"/req.??; do jq -c '.choices[0].message.content' "$f.$mode"; done > "$TMP/texts.$mode"
		echo "$mode: $(metric prefix_cache_hits_total) of $(metric prefix_cache_queries_total) tokens cached"
		[ "$(metric kv_cache_blocks_used)" -eq 0 ]
		[ $mode = off ] || [ "$(metric prefix_cache_hits_total)" -gt 0 ]
		stop_serve
	done
	[ "$(wc -l < "$TMP/texts.on")" -eq 64 ]
	diff "$TMP/texts.on" "$TMP/texts.off"
}
