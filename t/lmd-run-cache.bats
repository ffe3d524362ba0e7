#!/usr/bin/env bats
# lmd-run cache: the HF->lmd conversions kept for running HF directories are listed and removed.
load lib

setup() { setup_tmp; export LMD_CACHE=$TMP/cache; }
teardown() { teardown_tmp; }

@test "cache list shows each conversion with its size; clean removes them (--older-than keeps recent ones)" {
	run lmd-run cache list
	[ "$status" -eq 0 ]
	lmd-run generate "$ROOT/share/models/lmd-tiny" --device cpu --prompt a --max-tokens 1 > /dev/null
	lmd-run cache list > "$TMP/list" 2> "$TMP/err"
	[ "$(wc -l < "$TMP/list")" -eq 1 ]
	read -r bytes path < "$TMP/list"
	[[ $path == "$TMP/cache/lmd-tiny-"* ]] && [ -d "$path" ]
	[ "$bytes" -eq "$(du -sB1 "$path" | cut -f1)" ]
	grep -q "1 entry" "$TMP/err"
	mkdir "$TMP/keep" && echo x > "$TMP/keep/file" && ln -s "$TMP/keep" "$path/link"
	lmd-run cache clean --older-than 1
	[ -d "$path" ]
	lmd-run cache clean 2> "$TMP/err"
	grep -q "removed 1 entry" "$TMP/err"
	[ ! -e "$path" ] && [ -e "$TMP/keep/file" ]
	run lmd-run cache nonsense
	[ "$status" -eq 2 ]
}
