#!/usr/bin/env bats
# The source layout keeps its promises (README "Layout", lmd(7) SOURCE LAYOUT): only cmd/ prints to
# stdout or exits, a subcommand is found from its name, common/ stays a few rooms, includes go one way.
load lib

@test "no file under common/ or formats/ exits, dies, or prints to stdout (LMD_BUG may abort)" {
	cd "$ROOT"
	run grep -nE '(^|[^_a-z])(exit|_exit|lmd_die|lmd_usage|printf|puts|putchar)[[:space:]]*\(|fwrite\([^;]*stdout|fputs\([^;]*stdout|fputc\([^;]*stdout' \
		common formats -r --include='*.c' --include='*.h' --include='*.inc'
	# what remains must be a declaration or a comment, never a call
	local calls
	calls=$(printf '%s\n' "$output" | grep -vE '^[^:]+:[0-9]+:[[:space:]]*(\*|/\*|//)' | grep -vE 'f?printf\(stderr' || true)
	[ -z "$calls" ] || { echo "$calls"; false; }
}

@test "every subcommand of lmd-run and lmd-bench lives in cmd/TOOL/NAME.c" {
	local bad=0 tool sub
	for tool in lmd-run lmd-bench; do
		for sub in $("$tool" --help | awk '/^Commands:/{on=1; next} on && /^  [a-z]/{print $1} on && /^$/{on=0}'); do
			[ -f "$ROOT/cmd/$tool/$sub.c" ] || { echo "$tool $sub: no cmd/$tool/$sub.c"; bad=1; }
		done
	done
	[ "$bad" -eq 0 ]
}

@test "common/ holds at most 20 entries at its top, and each room has its header" {
	cd "$ROOT/common"
	local n
	n=$(ls | wc -l)
	[ "$n" -le 20 ] || { echo "common/ has $n entries"; false; }
	for room in */; do
		room=${room%/}
		[ -f "$room/$room.h" ] || { echo "common/$room has no $room.h saying what it owns"; false; }
	done
}

@test "includes between common/ rooms, formats/ and the basics go one way, with no circle" {
	cd "$ROOT"
	# rank: a file may include only headers of its own room or of a lower rank
	run python3 - <<'PY'
import glob, os, re, sys
rank = {"formats": 1, "common/tok": 2, "common/convert": 2, "common/engine": 3, "common/quant": 4, "common/serve": 4}
def room(p):
    d = os.path.dirname(p)
    return d if d in rank else ("common" if d == "common" else d)
def rk(r):
    return 0 if r == "common" else rank.get(r, 9)
bad = 0
files = [f for g in ("common/**/*.[ch]", "common/**/*.inc", "formats/*.[ch]") for f in glob.glob(g, recursive=True)]
graph = {}
for f in files:
    for inc in re.findall(r'#include "([^"]+)"', open(f).read()):
        for cand in (os.path.join(os.path.dirname(f), inc), "common/" + inc, "formats/" + inc):
            if os.path.exists(cand):
                t = os.path.normpath(cand)
                graph.setdefault(f, set()).add(t)
                if rk(room(t)) > rk(room(f)) or (rk(room(t)) == rk(room(f)) and room(t) != room(f)):
                    print(f"{f} includes {t}: against the direction"); bad = 1
                break
state = {}
def visit(u, path):
    state[u] = 1
    for v in graph.get(u, ()):
        if state.get(v) == 1:
            print("include circle: " + " -> ".join(path[path.index(v):] + [v])); return 1
        if not state.get(v) and visit(v, path + [v]):
            return 1
    state[u] = 2
    return 0
for f in files:
    if not state.get(f):
        bad |= visit(f, [f])
sys.exit(bad)
PY
	echo "$output"
	[ "$status" -eq 0 ]
}
