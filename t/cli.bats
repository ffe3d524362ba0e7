#!/usr/bin/env bats
# What every tool does the same way (common/cli.c): lost output, flag spellings, one-line errors (issue 16).
load lib

setup() { setup_tmp; }
teardown() { teardown_tmp; }

TINY=$ROOT/share/models/lmd-tiny

# Every tool, and every subcommand of those with "Commands:" in their --help.
commands() {
	local bin sub
	for bin in "$BUILD"/bin/lmd-*; do
		echo "$(basename "$bin")"
		for sub in $("$bin" --help | awk '/^Commands:/{on=1; next} on && /^  [a-z]/{print $1} on && /^$/{on=0}'); do
			echo "$(basename "$bin") $sub"
		done
	done
}

@test "lost standard output exits 3 with one message, --help included, in every tool and subcommand" {
	local c n=0
	while read -r c; do
		run $c --help
		[ "$status" -eq 0 ]
		$c --help > /dev/full 2> "$TMP/err" && { echo "$c --help > /dev/full: exit 0"; false; } || [ $? -eq 3 ]
		[ "$(cat "$TMP/err")" = "$c: cannot write standard output: No space left on device" ]
		n=$((n + 1))
	done < <(commands)
	[ "$n" -ge 8 ]
	expect3() { "$@" > /dev/full 2> "$TMP/err" && false || [ $? -eq 3 ]; echo "$*"; cat "$TMP/err"; [[ "$(tail -1 "$TMP/err")" == "${1}"*": cannot write standard output: No space left on device" ]]; }
	expect3 lmd-run generate "$TINY" --device cpu --prompt Hi --max-tokens 4
	echo '{"prompt": "Hi", "max_tokens": 4}' > "$TMP/in.jsonl"
	expect3 lmd-run generate "$TINY" --device cpu < "$TMP/in.jsonl"
	echo Hi > "$TMP/chat.txt"
	expect3 lmd-run chat "$TINY" --device cpu --max-tokens 4 < "$TMP/chat.txt"
	expect3 lmd-run tokenize "$TINY" < "$TMP/chat.txt"
	expect3 lmd-bench ppl "$TINY" --device cpu --text "$ROOT/share/data/wikitext2.txt" --windows 1 --seqlen 32
	expect3 lmd-convert --info "$TINY"
}

@test "a closed pipe with SIGPIPE ignored is lost output: exit 3" {
	run bash -c "trap '' PIPE; lmd-run generate '$TINY' --device cpu --prompt Hi --max-tokens 64 --ignore-eos | true; exit \${PIPESTATUS[0]}"
	echo "$output"
	[ "$status" -eq 3 ]
	[[ $output == *"cannot write standard output"* ]]
}
