#!/usr/bin/env bats
# The README's set-up commands work as written, as root and as a user with sudo (issue 16).
load lib

@test "README's set-up commands are make targets; make deps uses sudo only when not root" {
	local cmds
	cmds=$(sed -n 's/^  \(make [a-z]* && make [a-z]*\)$/\1/p' "$ROOT/README")
	[ "$(wc -l <<< "$cmds")" -eq 2 ]
	! grep -q '^  sudo make' "$ROOT/README" || false
	for t in $(grep -oE 'make [a-z]+' <<< "$cmds" | cut -d' ' -f2 | sort -u); do
		make -C "$ROOT" -n "$t" > /dev/null
	done
	if [ "$(id -u)" = 0 ]; then
		run make -C "$ROOT" -n deps
		[[ $output == *"apt-get install"* && $output != *sudo* ]]
		command -v runuser >/dev/null || skip "no runuser to try a user"
		run runuser -u nobody -- make -C "$ROOT" -n deps
	else
		run make -C "$ROOT" -n deps
	fi
	echo "$output"
	[[ $output == *"sudo apt-get update"* && $output == *"sudo env DEBIAN_FRONTEND=noninteractive apt-get install"* ]]
}

# The row of tool $2 in file $1 (README or lmd(7) with roff dashes undone).
row() { sed 's/\\-/-/g' "$1" | sed -n "s/^ *$2  *//p" | head -1; }

@test "README and lmd(7) list every subcommand there is, and call 'planned' only what is not there yet" {
	local tool f r sub planned bad=0
	for tool in lmd-run lmd-bench; do
		subs=$("$BUILD/bin/$tool" --help | awk '/^Commands:/ {on = 1; next} on && /^  [a-z]/ {print $1} on && /^$/ {on = 0}')
		for f in "$ROOT/README" "$ROOT/man/lmd.7"; do
			r=$(row "$f" "$tool")
			[ -n "$r" ] || { echo "$f: no row for $tool"; bad=1; continue; }
			planned=$(sed -n 's/.*(\([^()]*\): planned)$/\1/p' <<< "$r" | tr ',' ' ')
			for sub in $subs; do
				grep -qw -- "$sub" <<< "${r%(*: planned)}" || { echo "$f: $tool $sub is there but not listed: $r"; bad=1; }
			done
			for sub in $planned; do
				! grep -qx -- "$sub" <<< "$subs" || { echo "$f: $tool $sub is there, yet called planned: $r"; bad=1; }
			done
		done
	done
	[ "$bad" -eq 0 ]
}
