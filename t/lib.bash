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

# Start t/mock-oai.js, a scripted OpenAI-compatible server, with ARGS on a free port of 127.0.0.1:
# sets MOCK_URL and MOCK_PID (stop_mock in teardown). Needs node and $TMP.
start_mock() {
	command -v node >/dev/null || skip "node is not installed"
	node "$ROOT/t/mock-oai.js" --port 0 "$@" >"$TMP/mock.port" 2>"$TMP/mock.err" &
	MOCK_PID=$!
	local i
	for i in $(seq 1 100); do
		grep -q '^listening' "$TMP/mock.port" 2>/dev/null && break
		sleep 0.05
	done
	MOCK_URL=http://127.0.0.1:$(awk '/^listening/{print $2}' "$TMP/mock.port")
}
stop_mock() {
	if [ -n "${MOCK_PID:-}" ]; then
		kill "$MOCK_PID" 2>/dev/null
		wait "$MOCK_PID" 2>/dev/null
	fi
	MOCK_PID=
}

# Start `lmd-run serve MODEL ARGS` on the CPU on a free port of 127.0.0.1 (skip while lmd-run has no serve):
# sets SERVE_URL and SERVE_PID once /health answers; stop_serve (SIGTERM, wait) in teardown.
start_serve() {
	lmd-run --help | grep -q '^  serve ' || skip "lmd-run has no serve command"
	local model=$1 i port
	shift
	lmd-run serve "$model" --device cpu --server-port 0 "$@" 2>"$TMP/serve.log" &
	SERVE_PID=$!
	for ((i = 0; i < 300; i++)); do
		port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$TMP/serve.log")
		if [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/health" >/dev/null; then
			SERVE_URL=http://127.0.0.1:$port
			return 0
		fi
		kill -0 "$SERVE_PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$TMP/serve.log"
	return 1
}
stop_serve() {
	if [ -n "${SERVE_PID:-}" ]; then
		kill -TERM "$SERVE_PID" 2>/dev/null
		wait "$SERVE_PID" 2>/dev/null
	fi
	SERVE_PID=
}

# The servers' tests: lmd-tiny, and the test-only npm packages (t/node, installed by make deps).
TINY=$ROOT/share/models/lmd-tiny
NODE_DIR=$ROOT/t/node
need_npm() {
	[ -d "$NODE_DIR/node_modules/$1" ] || skip "the $1 npm package is not installed (make deps)"
}

# lmd-run serve on lmd-tiny ($TINY) with the given flags (start_serve above): sets SERVER_PID, PORT
# and BASE; its log is $TMP/serve.log.
start_server() {
	start_serve "$TINY" "$@" || return 1
	SERVER_PID=$SERVE_PID BASE=$SERVE_URL SERVE_PID=
	PORT=${BASE##*:}
}

# SIGTERM: the server drains and exits 0.
stop_server() {
	kill -TERM "$SERVER_PID"
	local rc=0
	wait "$SERVER_PID" || rc=$?
	SERVER_PID=
	[ "$rc" -eq 0 ] || { cat "$TMP/serve.log"; return 1; }
}

# teardown: a server still running is killed.
kill_server() {
	if [ -n "${SERVER_PID:-}" ]; then
		kill -KILL "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	SERVER_PID=
}
