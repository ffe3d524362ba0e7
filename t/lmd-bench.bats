#!/usr/bin/env bats
# lmd-bench gen: the table's shape and sanity of its numbers, on the bundled tiny model.
load lib

setup() { setup_tmp; }
teardown() { teardown_tmp; }

TINY=$ROOT/share/models/lmd-tiny

@test "gen writes one CSV row per concurrency and prompt length, with sane numbers" {
	run lmd-bench gen "$TINY" --device cpu --concurrency 1,3 --prompt-tokens 8,16 --completion-tokens 4 --warmup 0 -q
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 5 ]
	[[ "${lines[0]}" == date,commit,device,model,dtype,concurrency,* ]]
	for i in 1 2 3 4; do
		IFS=, read -r -a f <<< "${lines[$i]}"
		[ "${f[2]}" = cpu ]
		[ "${f[3]}" = lmd-tiny ]
		awk -v t="${f[14]}" 'BEGIN { exit !(t > 0) }'      # output tokens/s
		awk -v a="${f[8]}" -v b="${f[12]}" 'BEGIN { exit !(a <= b) }'  # ttft min <= p99
		[ "${f[21]}" = greedy ]
	done
}

@test "gen samples with the generation options and says so in its sampling column" {
	run lmd-bench gen "$TINY" --device cpu --prompt-tokens 8 --completion-tokens 4 --warmup 0 -q --temperature 0.8 \
		--top-k 40 --top-p 0.9 --seed 7
	[ "$status" -eq 0 ]
	IFS=, read -r -a f <<< "${lines[1]}"
	[ "${f[21]}" = "t=0.8 k=40 p=0.9 min_p=0 rep=1 seed=7" ]
	run lmd-bench gen "$TINY" --device cpu --top-p 2 ; [ "$status" -eq 2 ]
}

@test "gen writes markdown and JSON to a file atomically" {
	lmd-bench gen "$TINY" --device cpu --prompt-tokens 8 --completion-tokens 2 --warmup 0 -q -f md -o "$TMP/t.md"
	grep -q '^| date | commit |' "$TMP/t.md"
	lmd-bench gen "$TINY" --device cpu --prompt-tokens 8 --completion-tokens 2 --warmup 0 -q -f json -o "$TMP/t.json"
	[ "$(jq '.[0].concurrency' "$TMP/t.json")" = 1 ]
	[ -z "$(ls "$TMP" | grep tmp)" ]
}

@test "bad options are usage errors" {
	run lmd-bench gen "$TINY" --concurrency 0 ; [ "$status" -eq 2 ]
	run lmd-bench gen "$TINY" -f xml ; [ "$status" -eq 2 ]
	run lmd-bench nosuch ; [ "$status" -eq 2 ]
	run lmd-bench gen /nonexistent --device cpu ; [ "$status" -eq 3 ]
}

# lmd-bench mem: a row's predicted and measured cells by item name
mem_cell() { awk -F, -v k="$1" -v c="$2" '$1 == k { print $c }' "$TMP/mem.csv"; }

@test "mem predicts the weights, KV pool and workspace, and the sessions each KV format fits (CPU: predicted only)" {
	lmd-bench mem "$TINY" --device cpu --quant-policy 8 --session-len 512 --max-batch-size 4 --gpu-mem 1 >"$TMP/mem.csv"
	[ "$(head -1 "$TMP/mem.csv")" = item,predicted,measured,unit ]
	# kvcache.h's layout from the model's config: a block of 64 tokens, K and V of every layer and kv head,
	# head_dim codes (int8) or head_dim / 2 (int4) plus a scale and zero of the dtype (bf16: 2 bytes each)
	read -r L KVH D <<<"$(jq -r '"\(.num_hidden_layers) \(.num_key_value_heads) \(.head_dim)"' "$TINY/config.json")"
	python3 - "$L" "$KVH" "$D" "$(mem_cell kv_block 2)" "$(mem_cell kv_blocks 2)" "$(mem_cell kv_pool 2)" \
		"$(mem_cell sessions_kv_plain 2)" "$(mem_cell sessions_kv_int8 2)" "$(mem_cell sessions_kv_int4 2)" \
		"$(mem_cell sessions 2)" "$(mem_cell weights 2)" "$(mem_cell workspace 2)" <<'PY'
import sys
L, KVH, D, blk, nblk, pool, s0, s8, s4, s, w, ws = (float(x) for x in sys.argv[1:])
mib = 1 << 20
int8 = 2 * L * KVH * 64 * (D + 4) / mib
assert abs(blk - int8) < 0.051, (blk, int8)
assert nblk == 4 * 512 / 64, nblk                    # max-batch-size sessions of 512 tokens
assert abs(pool - nblk * int8) < 0.051, pool
assert s == s8, (s, s8)                              # the policy asked for
per = lambda b: 8 * 2 * L * KVH * 64 * b             # bytes of a 512-token session
room = 1024 * mib - (w + ws) * mib                   # 1 GiB less weights and workspace (no context on the CPU)
for got, b in ((s0, 2 * D), (s8, D + 4), (s4, D / 2 + 4)):
    assert abs(got - room // per(b)) <= 1, (got, room // per(b))
assert s8 > 1.7 * s0 and s4 > 1.7 * s8
PY
	[ -z "$(mem_cell weights 3)$(mem_cell kv_pool 3)$(mem_cell sessions 3)" ]  # nothing measured on the CPU
	lmd-bench mem "$TINY" --device cpu -f json -o "$TMP/mem.json"
	[ "$(jq -r '.[] | select(.item == "session_len") | .predicted' "$TMP/mem.json")" = \
		"$(jq -r .max_position_embeddings "$TINY/config.json")" ]
}

@test "mem: bad options are usage errors" {
	run lmd-bench mem "$TINY" --gpu-mem 0 ; [ "$status" -eq 2 ]
	run lmd-bench mem "$TINY" --quant-policy 3 ; [ "$status" -eq 2 ]
	run lmd-bench mem "$TINY" --kv-params x.csv ; [ "$status" -eq 2 ]
	run lmd-bench mem ; [ "$status" -eq 2 ]
	run lmd-bench mem /nonexistent --device cpu ; [ "$status" -eq 3 ]
}
