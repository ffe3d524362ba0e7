#!/usr/bin/env bats
# Tool calling through lmd-run serve: the official openai client (t/node/serve-tools.mjs) runs the
# seeds' add/multiply loop, streamed and not, against lmd-tiny under the qwen template, whose answers
# are scripted (LMD_TEST_SCRIPT: no instruct model exists offline; see t/README).
load lib

setup() {
	setup_tmp
	need_npm openai
}

teardown() {
	kill_server
	teardown_tmp
}

tools() { timeout 120 node "$NODE_DIR/serve-tools.mjs" "$BASE" "$TINY" "$@"; }

@test "the openai client's add/multiply loop, streamed and not; forced, malformed and bad tool requests" {
	node "$NODE_DIR/serve-tools.mjs" script >"$TMP/script.json"
	export LMD_TEST=1 LMD_TEST_SCRIPT=$TMP/script.json
	start_server --chat-template qwen
	for check in loop loop-stream forced malformed bad-requests; do
		run tools "$check"
		echo "$output"
		[ "$status" -eq 0 ]
	done
	stop_server
}

@test "streamed calls: the arguments come in pieces that concatenate to JSON, for each parser" {
	export LMD_TEST=1
	for parser in qwen:qwen internlm:internlm2 llama3:llama3_1; do
		node "$NODE_DIR/serve-tools.mjs" script-pieces "${parser%%:*}" >"$TMP/script.json"
		LMD_TEST_SCRIPT=$TMP/script.json start_server --chat-template "${parser#*:}"
		run tools pieces
		echo "$parser: $output"
		[ "$status" -eq 0 ]
		stop_server
	done
}

@test "LMD_TEST_SCRIPT is refused without LMD_TEST; --tool-call-parser takes the three names" {
	echo '["x"]' >"$TMP/script.json"
	LMD_TEST_SCRIPT=$TMP/script.json run lmd-run serve "$TINY" --server-port 0
	[ "$status" -eq 2 ]
	[[ "$output" == *"LMD_TEST_SCRIPT is a test hook"* ]]
	run lmd-run serve "$TINY" --tool-call-parser hermes
	[ "$status" -eq 2 ]
	[[ "$output" == *"--tool-call-parser"* ]]
}

@test "--tool-call-parser llama3 on a template without tools parses the JSON answer" {
	printf '%s\n' '["{\"name\": \"add\", \"parameters\": {\"a\": 1, \"b\": 2}}", "no call here"]' >"$TMP/script.json"
	export LMD_TEST=1 LMD_TEST_SCRIPT=$TMP/script.json
	start_server --tool-call-parser llama3
	local req='{"messages": [{"role": "user", "content": "add"}], "tools": [{"type": "function", "function": {"name": "add"}}]}'
	run curl -sf "$BASE/v1/chat/completions" -d "$req"
	echo "$output"
	[ "$(jq -r '.choices[0].finish_reason' <<<"$output")" = tool_calls ]
	[ "$(jq -r '.choices[0].message.tool_calls[0].function.arguments' <<<"$output")" = '{"a": 1, "b": 2}' ]
	[ "$(jq -r '.choices[0].message.content' <<<"$output")" = null ]
	run curl -sf "$BASE/v1/chat/completions" -d "$req"
	[ "$(jq -r '.choices[0].message.content' <<<"$output")" = "no call here" ]
	stop_server
}
