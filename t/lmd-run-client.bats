#!/usr/bin/env bats
# lmd-run client against t/mock-oai.js, a scripted server of the OpenAI wire format (../shared/docs/peers.md):
# streaming, history kept on the client, the chat commands, errors as one line each.
load lib

setup() { setup_tmp; }
teardown() { stop_mock; stop_serve; teardown_tmp; }

# The JSON body of the Nth generation request the mock logged (1-based; -1 the last).
body() { jq -s -c "[.[] | select(.path == \"/v1/chat/completions\")][$1].body | fromjson" "$TMP/log"; }

@test "a conversation: answers stream to stdout, the history goes back each turn, the model is the server's first" {
	start_mock --log "$TMP/log"
	run bash -c "printf 'hello there\nand a second\n' | timeout 30 lmd-run client '$MOCK_URL/v1' 2>'$TMP/err'"
	echo "$output"; cat "$TMP/err"
	[ "$status" -eq 0 ]
	[ "${lines[0]}" = "you said: hello there (turn 1, system: none)" ]
	[ "${lines[1]}" = "you said: and a second (turn 2, system: none)" ]
	[ ! -s "$TMP/err" ]
	[ "$(body -1 | jq -r .model)" = mock-a ]
	[ "$(body -1 | jq -c .messages)" = '[{"role":"user","content":"hello there"},{"role":"assistant","content":"you said: hello there (turn 1, system: none)"},{"role":"user","content":"and a second"}]' ]
	[ "$(body -1 | jq -c '[.stream, .stream_options.include_usage]')" = '[true,true]' ]
}

@test "the same text when every event arrives in random pieces (mid-line, mid-character)" {
	start_mock --split
	run bash -c "printf 'h\xc3\xa9llo w\xc3\xb6rld \xe2\x82\xac\nagain\n' | timeout 30 lmd-run client '$MOCK_URL'"
	[ "$status" -eq 0 ]
	[ "${lines[0]}" = "you said: héllo wörld € (turn 1, system: none)" ]
	[ "${lines[1]}" = "you said: again (turn 2, system: none)" ]
}

@test "tokens are printed as they arrive, not at the end" {
	start_mock --delay 300
	# 9 tokens 0.3 s apart: the first byte comes long before the last
	run bash -c "printf 'one two three\n' | timeout 30 lmd-run client '$MOCK_URL' | { IFS= read -r -n 1 c; a=\$(date +%s%N); cat >/dev/null; b=\$(date +%s%N); echo \$(( (b - a) / 1000000 )); }"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$output" -gt 1500 ]
}

@test "/system, /reset and unknown commands as in lmd-run chat; a backslash continues a line" {
	start_mock --log "$TMP/log"
	run bash -c "printf 'one\n/system be brief\ntwo\nthree\n/reset\nfour \\\\\nfive\n/bogus\n/exit\nnever\n' | timeout 30 lmd-run client '$MOCK_URL' --system first 2>'$TMP/err'"
	echo "$output"; cat "$TMP/err"
	[ "$status" -eq 0 ]
	[ "${lines[0]}" = "you said: one (turn 1, system: first)" ]
	[ "${lines[1]}" = "you said: two (turn 1, system: be brief)" ]
	[ "${lines[2]}" = "you said: three (turn 2, system: be brief)" ]
	[ "${lines[3]}" = "you said: four five (turn 1, system: be brief)" ]
	[ "${#lines[@]}" -eq 4 ]
	grep -q '(system prompt set; conversation reset)' "$TMP/err"
	grep -q '(conversation reset)' "$TMP/err"
	grep -q 'commands: /reset, /system TEXT, /exit' "$TMP/err"
	[ "$(body -1 | jq -c .messages[1])" = '{"role":"user","content":"four \nfive"}' ]
}

@test "options become request fields; --model picks the model; a cut answer is said to be cut" {
	start_mock --log "$TMP/log"
	run bash -c "printf 'a b c d e f\n' | timeout 30 lmd-run client '$MOCK_URL' --model mock-b --max-tokens 3 --temperature 0 --top-p 0.5 --top-k 7 --min-p 0.1 --repetition-penalty 1.1 --seed 9 --stop x --stop 'y z' --ignore-eos 2>'$TMP/err'"
	echo "$output"; cat "$TMP/err"
	[ "$status" -eq 0 ]
	[ "$output" = "you said: a" ]
	grep -q 'token limit' "$TMP/err"
	[ "$(jq -s length "$TMP/log")" -eq 1 ]   # no /v1/models with --model
	[ "$(body -1 | jq -c '[.model, .max_tokens, .temperature, .top_p, .top_k, .min_p, .repetition_penalty, .seed, .stop, .ignore_eos]')" = "$(jq -c . <<<'["mock-b",3,0,0.5,7,0.1,1.1,9,["x","y z"],true]')" ]
}

@test "server down, wrong key, unknown model: one clear line, exit 1" {
	run timeout 30 lmd-run client http://127.0.0.1:1 </dev/null
	[ "$status" -eq 1 ]
	[ "${#lines[@]}" -eq 1 ]
	[[ "$output" == "lmd-run client: cannot reach 'http://127.0.0.1:1/v1/models': "* ]]
	start_mock --api-key sesame
	run timeout 30 lmd-run client "$MOCK_URL" </dev/null
	[ "$status" -eq 1 ]
	[ "$output" = "lmd-run client: HTTP 401: mock: invalid API key" ]
	run bash -c "echo hi | timeout 30 lmd-run client '$MOCK_URL' --api-key sesame"
	[ "$status" -eq 0 ]
	[ "$output" = "you said: hi (turn 1, system: none)" ]
	run bash -c "echo hi | OPENAI_API_KEY=sesame timeout 30 lmd-run client '$MOCK_URL'"
	[ "$status" -eq 0 ]
	run bash -c "echo hi | timeout 30 lmd-run client '$MOCK_URL' --api-key sesame --model nope"
	[ "$status" -eq 1 ]
	[ "$output" = "lmd-run client: HTTP 404: the model 'nope' does not exist" ]
}

@test "a 400 error object, a cut connection, an error event: reported, the message forgotten, the chat goes on" {
	start_mock --log "$TMP/log"
	run bash -c "printf 'please fail\nplease cut\nplease error\nhello\n' | timeout 30 lmd-run client '$MOCK_URL' 2>'$TMP/err'"
	echo "$output"; cat "$TMP/err"
	[ "$status" -eq 1 ]
	[ "$(sed -n 1p "$TMP/err")" = "lmd-run client: HTTP 400: mock: you asked for a bad request" ]
	[[ "$(sed -n 2p "$TMP/err")" == "lmd-run client: the answer of '$MOCK_URL/v1/chat/completions' was cut: "* ]]
	[ "$(sed -n 3p "$TMP/err")" = "lmd-run client: the server reported an error: mock: the engine failed mid-stream" ]
	[ "$(wc -l <"$TMP/err")" -eq 3 ]
	[ "${lines[-1]}" = "you said: hello (turn 1, system: none)" ]
	[ "$(body -1 | jq -c .messages)" = '[{"role":"user","content":"hello"}]' ]
}

@test "Ctrl-C stops an answer; what arrived stays in the conversation" {
	start_mock --delay 200 --log "$TMP/log"
	( printf 'one two three four five six\n'; sleep 3; printf 'next\n' ) | timeout 30 lmd-run client "$MOCK_URL" >"$TMP/out" 2>"$TMP/err" &
	local pid=$! i
	for i in $(seq 1 100); do  # the first tokens are out: the answer is under way
		[ -s "$TMP/out" ] && break
		sleep 0.1
	done
	kill -INT "$pid"
	wait "$pid"
	cat "$TMP/out" "$TMP/err"
	grep -q '^(stopped)$' "$TMP/err"
	[ "$(tail -n 1 "$TMP/out")" = "you said: next (turn 2, system: none)" ]
	local partial
	partial=$(body -1 | jq -r .messages[1].content)
	local full="you said: one two three four five six (turn 1, system: none)"
	[ -n "$partial" ] && [ "$partial" != "$full" ] && [[ "$full" == "$partial"* ]]
}

@test "against lmd-run serve on lmd-tiny: each greedy answer is lmd-run generate's for the same messages" {
	local tiny=$ROOT/share/models/lmd-tiny
	start_serve "$tiny"
	run bash -c "printf 'Once upon a time\nThe king said\n' | timeout 120 lmd-run client '$SERVE_URL/v1' --temperature 0 --max-tokens 12 2>'$TMP/err'"
	echo "$output"; cat "$TMP/err"
	[ "$status" -eq 0 ]
	local first second
	first=$(echo '{"messages": [{"role": "user", "content": "Once upon a time"}]}' |
		lmd-run generate "$tiny" --device cpu --temperature 0 --max-tokens 12 | jq -r .text)
	second=$(jq -cn --arg a "$first" '{messages: [{role: "user", content: "Once upon a time"}, {role: "assistant", content: $a}, {role: "user", content: "The king said"}]}' |
		lmd-run generate "$tiny" --device cpu --temperature 0 --max-tokens 12 | jq -r .text)
	[ "$output" = "$(printf '%s\n%s\n' "$first" "$second")" ]   # the answers, each ended by a line break
}
