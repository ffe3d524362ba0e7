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
