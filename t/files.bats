#!/usr/bin/env bats
# Outputs (common/file.c) across the tools: only ever replace what lmd created (issue 16).
load lib

setup() { setup_tmp; }
teardown() { teardown_tmp; }

TINY=$ROOT/share/models/lmd-tiny

calib() { lmd-calib "$TINY" --device cpu --calib-samples 1 --calib-seqlen 32 "$@"; }

@test "-o into an existing device or FIFO writes into it and keeps it (kvparams, calib)" {
	calib -o "$TMP/s.calib"
	mknod "$TMP/null" c 1 3 2>/dev/null || skip "cannot mknod"
	lmd-kvparams "$TMP/s.calib" -o "$TMP/null"
	[ -c "$TMP/null" ]
	calib -o "$TMP/null"
	[ -c "$TMP/null" ]
	mkfifo "$TMP/fifo"
	cat "$TMP/fifo" > "$TMP/got" &
	lmd-kvparams "$TMP/s.calib" -o "$TMP/fifo"
	wait
	[ -p "$TMP/fifo" ]
	[ "$(head -1 "$TMP/got" | cut -d, -f1-5)" = "layer,kv,head,scale,zero" ]
	[ -z "$(compgen -G "$TMP/*.tmp.*")" ]
}

@test "-o through a symbolic link replaces the link's target and keeps the link; a dangling link is refused" {
	calib -o "$TMP/s.calib"
	echo old > "$TMP/target.csv"
	ln -s target.csv "$TMP/link.csv"
	lmd-kvparams "$TMP/s.calib" -o "$TMP/link.csv"
	[ -L "$TMP/link.csv" ]
	grep -q '^layer,kv,head' "$TMP/target.csv"
	ln -s nowhere "$TMP/dangling"
	run lmd-kvparams "$TMP/s.calib" -o "$TMP/dangling"
	[ "$status" -eq 3 ]
	[[ $output == *dangling* ]]
	[ ! -e "$TMP/nowhere" ]
}

@test "--force never follows a symbolic link DST: the link's target keeps its files" {
	mkdir -p "$TMP/d/p"
	echo keep > "$TMP/d/p/precious"
	ln -s p "$TMP/d/l"
	run lmd-convert --force "$TINY" "$TMP/d/l"
	[ "$status" -eq 2 ]
	[[ $output == *"symbolic link"* ]]
	[ "$(cat "$TMP/d/p/precious")" = keep ]
	[ -L "$TMP/d/l" ]
	# a real DST holding a link to elsewhere: replacing DST removes the link, not what it points to
	lmd-convert "$TINY" "$TMP/out"
	ln -s "$TMP/d/p" "$TMP/out/inner"
	lmd-convert --force "$TINY" "$TMP/out"
	[ "$(cat "$TMP/d/p/precious")" = keep ]
	[ ! -e "$TMP/out/inner" ]
}

@test "SRC and DST the same, DST inside SRC, or SRC inside DST are refused, even with --force" {
	cp -r "$TINY" "$TMP/m"
	local before
	before=$(ls -R "$TMP/m" | md5sum)
	for dst in "$TMP/m" "$TMP/m/" "$TMP/m/." "$TMP/m/sub" "$TMP/./m/../m"; do
		run lmd-convert --force "$TMP/m" "$dst"
		echo "$dst: $output"
		[ "$status" -eq 2 ]
	done
	ln -s m "$TMP/alias"
	run lmd-convert --force "$TMP/alias" "$TMP/m"
	[ "$status" -eq 2 ]
	run lmd-convert --force "$TMP/m" "$TMP"
	[ "$status" -eq 2 ]
	run lmd-awq "$TMP/m" --method rtn --force -o "$TMP/m"
	[ "$status" -eq 2 ]
	[ "$(ls -R "$TMP/m" | md5sum)" = "$before" ]
}

@test "-o - for a directory output is refused" {
	run lmd-awq "$TINY" --method rtn -o -
	[ "$status" -eq 2 ]
	[[ $output == *"'-'"* ]]
	[ ! -e ./- ] && [ ! -e "$TMP/-" ]
}

@test "an output that cannot be created is refused before the work starts" {
	echo x > "$TMP/exists"
	start=$SECONDS
	run lmd-awq "$TINY" --calib-samples 64 --calib-seqlen 256 -o "$TMP/exists"
	[ "$status" -eq 2 ]
	[[ $output == *"already exists"* ]]
	run lmd-awq "$TINY" --calib-samples 64 --calib-seqlen 256 -o "$TMP/no/such/dir"
	[ "$status" -eq 3 ]
	run lmd-calib "$TINY" --device cpu --calib-samples 64 --calib-seqlen 256 -o "$TMP/no/such/file"
	[ "$status" -eq 3 ]
	run lmd-bench gen "$TINY" --device cpu -o "$TMP/no/such/file"
	[ "$status" -eq 3 ]
	mkdir "$TMP/adir"
	run lmd-kvparams /dev/null -o "$TMP/adir"
	[ "$status" -ne 0 ]
	[ $((SECONDS - start)) -lt 10 ]
}

# Start "$@" in the background and send signal $1 once a temporary "$2.tmp.*" shows up; none may be left.
kill_at_tmp() {
	local sig=$1 out=$2; shift 2
	# background jobs of a script start with SIGINT ignored: give the command the default action back
	python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
		"$@" 2>/dev/null &
	local pid=$! i st=0
	for i in $(seq 500); do compgen -G "$out.tmp.*" >/dev/null && break; sleep 0.01; done
	compgen -G "$out.tmp.*" >/dev/null
	kill -"$sig" $pid
	wait $pid || st=$?
	[ "$st" -gt 128 ]
	[ -z "$(compgen -G "$out.tmp.*")" ]
	[ ! -e "$out" ]
}

@test "SIGINT or SIGTERM removes the temporary output (a file, a directory, the HF->lmd cache's)" {
	kill_at_tmp INT "$TMP/s.calib" lmd-calib "$TINY" --device cpu --calib-samples 64 --calib-seqlen 256 -o "$TMP/s.calib"
	kill_at_tmp TERM "$TMP/s.calib" lmd-calib "$TINY" --device cpu --calib-samples 64 --calib-seqlen 256 -o "$TMP/s.calib"
	gen-model --fast --hidden 1024 --inter 2816 --layers 4 --heads 8 --kv-heads 8 "$TMP/big"
	kill_at_tmp TERM "$TMP/out" lmd-convert --dtype fp32 "$TMP/big" "$TMP/out"
	cp "$TINY"/tokenizer* "$TMP/big/"
	mkdir "$TMP/cache"
	export LMD_CACHE=$TMP/cache
	kill_at_tmp INT "$TMP/cache/big-*" lmd-run generate "$TMP/big" --prompt a --max-tokens 1
}

@test "a later run removes the temporaries of a process that is gone, not a live one's nor other names" {
	sh -c 'exit 0' & local dead=$!; wait $dead
	mkdir -p "$TMP/stale.tmp.$dead/x" "$TMP/stale.tmp.$$" "$TMP/cache/foo-1.tmp.$dead"
	ln -s "$TMP/keep" "$TMP/stale.tmp.$dead/x/link"
	mkdir "$TMP/keep" && echo x > "$TMP/keep/file"
	echo x > "$TMP/other.tmp.$dead"
	lmd-convert "$TINY" "$TMP/stale"
	[ ! -e "$TMP/stale.tmp.$dead" ] && [ -d "$TMP/stale.tmp.$$" ] && [ -e "$TMP/other.tmp.$dead" ]
	[ -e "$TMP/keep/file" ]
	LMD_CACHE=$TMP/cache lmd-run generate "$TINY" --device cpu --prompt a --max-tokens 1 >/dev/null
	[ ! -e "$TMP/cache/foo-1.tmp.$dead" ]
}
