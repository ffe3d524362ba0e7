# Shared setup for the bats files: load it with `load lib`.
# LMD_BUILD picks the build folder; SHARED is ../shared when present (tests using it skip without it).
ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
BUILD=$ROOT/${LMD_BUILD:-build}
PATH=$BUILD/bin:$BUILD/t:$PATH
SHARED=${LMD_SHARED:-$ROOT/../shared}
export ROOT BUILD PATH SHARED

need_shared() {
	[ -d "$SHARED/models" ] || skip "../shared is not present"
}

# A fresh scratch directory per test.
setup_tmp() {
	TMP=$(mktemp -d "${BATS_TMPDIR:-/tmp}/lmd.XXXXXX")
}
teardown_tmp() {
	[ -n "${TMP:-}" ] && rm -rf "$TMP"
}

# A python3 with the msgpack module in $PY, or skip.
need_msgpack() {
	for PY in python3 /usr/bin/python3; do
		"$PY" -c 'import msgpack' 2>/dev/null && return 0
	done
	skip "no python3 with msgpack"
}

# The servers' tests: lmd-tiny, and the test-only npm packages (t/node, installed by make deps).
TINY=$ROOT/share/models/lmd-tiny
NODE_DIR=$ROOT/t/node
need_npm() {
	[ -d "$NODE_DIR/node_modules/$1" ] || skip "the $1 npm package is not installed (make deps)"
}

# lmd-run serve on lmd-tiny ($TINY) with the given flags, in the background on 127.0.0.1 (port 0: the
# kernel's free port, read from the log): sets SERVER_PID, PORT and BASE; its log is $TMP/server.log.
start_server() {
	lmd-run serve "$TINY" --device cpu --server-port 0 "$@" 2>"$TMP/server.log" &
	SERVER_PID=$!
	local i
	for ((i = 0; i < 300; i++)); do
		PORT=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$TMP/server.log")
		if [ -n "$PORT" ] && curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; then
			BASE=http://127.0.0.1:$PORT
			return 0
		fi
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$TMP/server.log"
	return 1
}

# SIGTERM: the server drains and exits 0.
stop_server() {
	kill -TERM "$SERVER_PID"
	local rc=0
	wait "$SERVER_PID" || rc=$?
	SERVER_PID=
	[ "$rc" -eq 0 ] || { cat "$TMP/server.log"; return 1; }
}

# teardown: a server still running is killed.
kill_server() {
	if [ -n "${SERVER_PID:-}" ]; then
		kill -KILL "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	SERVER_PID=
}
