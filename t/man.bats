#!/usr/bin/env bats
# Every binary's --help and its man page list the same long options, and the pages lint clean.
load lib

# Long options printed by --help of a tool and of each of its subcommands (a "Commands:" section).
help_opts() {
	local tool=$1 sub
	{
		"$tool" --help
		for sub in $("$tool" --help | awk '/^Commands:/{on=1; next} on && /^  [a-z]/{print $1} on && /^$/{on=0}'); do
			"$tool" "$sub" --help
		done
	} | grep -oE -- '--[a-z0-9][a-z0-9-]*' | sort -u
}

man_opts() {
	sed 's/\\-/-/g' "$1" | grep -oE -- '--[a-z0-9][a-z0-9-]*' | sort -u
}

@test "every tool has a man page listing exactly the options of --help" {
	local bad=0
	for bin in "$BUILD"/bin/lmd-*; do
		local name=$(basename "$bin") page=$ROOT/man/$(basename "$bin").1
		[ -f "$page" ] || { echo "no man page for $name"; bad=1; continue; }
		local d
		d=$(diff <(help_opts "$bin") <(man_opts "$page")) || { echo "$name: --help (<) vs man page (>):"; echo "$d"; bad=1; }
	done
	[ "$bad" -eq 0 ]
}

@test "each page's OPTIONS is made from the option tables of the tool and of every subcommand it has now" {
	run "$ROOT/man/update" --check "$BUILD"
	echo "$output"
	[ "$status" -eq 0 ]
	# and the check sees a difference: a page with one option's text changed is out of date
	local copy
	copy=$(mktemp -d)
	cp -r "$ROOT/man" "$copy/"
	sed -i 's/^8 (default) or 4\.$/8 (default) or 4 or 2./' "$copy/man/lmd-kvparams.1"
	run "$copy/man/update" --check "$BUILD"
	rm -rf "$copy"
	[ "$status" -eq 1 ]
	[[ $output == *"lmd-kvparams.1 is out of date"* ]]
}

@test "man pages have no mandoc warnings" {
	command -v mandoc >/dev/null || skip "mandoc not installed"
	run mandoc -Tlint -W warning "$ROOT"/man/*.[17]
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "every tool answers --help on stdout with exit 0 and --version" {
	for bin in "$BUILD"/bin/lmd-*; do
		run "$bin" --help
		[ "$status" -eq 0 ]
		[[ "$output" == Usage:* ]]
		run "$bin" --version
		[ "$status" -eq 0 ]
	done
}

@test "pages render cleanly: no raw double quotes inside macro arguments, lmd(7) lists every page" {
	run grep -nE '^\.[A-Z]+ .*(\{"|": |\[")' "$ROOT"/man/*.[17]
	echo "$output"
	[ "$status" -eq 1 ]
	local page name
	for page in "$ROOT"/man/*.1; do
		name=$(basename "$page" .1)
		sed -n '/^\.SH SEE ALSO/,$p' "$ROOT/man/lmd.7" | grep -q "^\.BR ${name//-/\\\\-} (1)" || { echo "lmd(7) misses $name(1)"; false; }
	done
	# a reference "PAGE(N), SECTION" names a section (.SH) of that page, a subsection after its section
	run grep -n -A1 '^\.BR lmd (7),$' "$ROOT"/man/*.1
	! grep -E '^\S+-[0-9]+-[A-Z]{2,} [A-Z]{2,}' <<< "$output" || false
}
