#!/usr/bin/env bats
# The chat page on lmd-run serve in a real browser: Debian's chromium driven by playwright-core
# (t/node/web-chat.mjs, installed by make deps), headless, with a fresh profile. The model's answers
# are scripted (LMD_TEST_SCRIPT, t/README) so that they stream slowly enough to stop and hold <script>.
load lib

setup() {
	setup_tmp
	need_npm playwright-core
	CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
	[ -x "$CHROMIUM" ] || skip "no chromium (make deps installs Debian's)"
	export CHROMIUM LMD_TEST=1 LMD_TEST_SCRIPT=$TMP/script.json
}

teardown() {
	kill_server
	teardown_tmp
}

web() { timeout 180 node "$NODE_DIR/web-chat.mjs" "$BASE" "$@"; }

@test "the page: streamed answers, stop, a second turn, <script> shown as text, a new chat" {
	node "$NODE_DIR/web-chat.mjs" script chat >"$LMD_TEST_SCRIPT"
	start_server
	run curl -sf "$BASE/"
	[[ "$output" == *"<title>lmd chat</title>"* ]]
	run web chat
	echo "$output"
	[ "$status" -eq 0 ]
	stop_server
}

@test "the page asks for the API key on 401, and says so when the server is gone" {
	node "$NODE_DIR/web-chat.mjs" script key >"$LMD_TEST_SCRIPT"
	start_server --api-keys sekret
	run web key sekret
	echo "$output"
	[ "$status" -eq 0 ]
	stop_server
	# the first /v1/models answer (401) held back until an answer streamed with the right key
	node "$NODE_DIR/web-chat.mjs" script stale >"$LMD_TEST_SCRIPT"
	start_server --api-keys sekret
	run web stale sekret
	echo "$output"
	[ "$status" -eq 0 ]
	stop_server
	start_server
	run web down "$SERVER_PID"
	echo "$output"
	[ "$status" -eq 0 ]
}
