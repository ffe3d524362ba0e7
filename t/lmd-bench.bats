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
	done
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
