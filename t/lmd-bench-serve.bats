#!/usr/bin/env bats
# lmd-bench serve against t/mock-oai.js, a scripted server of the OpenAI wire format whose token delays are
# known: the metrics of vLLM's bench serve, prompt lengths, datasets, pacing, failures, output formats.
load lib

setup() { setup_tmp; }
teardown() {
	local p
	# nginx's master stops its workers on SIGTERM (a SIGKILL would orphan them, holding bats' pipes open)
	if [ -n "${NGINX_PID:-}" ]; then
		kill -TERM "$NGINX_PID" 2>/dev/null
		wait "$NGINX_PID" 2>/dev/null
	fi
	for p in ${SERVERS:-}; do
		kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	stop_mock
	stop_serve
	teardown_tmp
}

# lmd-bench serve ARGS with its log lines in $TMP/err, bounded in time.
bench() { timeout 60 lmd-bench serve "$@" 2>"$TMP/err"; }

gens() { jq -s -c "[.[] | select(.path == \"/v1/completions\" or .path == \"/v1/chat/completions\") | .body | fromjson]" "$TMP/log"; }

@test "random prompts of exact token counts, outputs of the asked length, and every metric" {
	start_mock --log "$TMP/log"
	run bench "$MOCK_URL" --num-prompts 20 --random-input-len 30 --random-output-len 8 -f json
	echo "$output"
	[ "$status" -eq 0 ]
	local r=$(echo "$output" | jq -c '.[0]')
	[ "$(jq -c '[.completed, .failed, .num_prompts, .max_concurrency, .total_input_tokens, .total_output_tokens]' <<<"$r")" = '[20,0,20,20,600,160]' ]
	[ "$(jq -r '[.model, .endpoint, .dataset, .request_rate] | join(" ")' <<<"$r")" = "mock-a /v1/completions random inf" ]
	for m in ttft tpot itl e2el; do
		jq -e ".${m}_mean_ms > 0 and .${m}_p50_ms > 0 and .${m}_p50_ms <= .${m}_p90_ms and .${m}_p90_ms <= .${m}_p99_ms" <<<"$r"
	done
	jq -e '(.request_throughput * .duration_s / 20 - 1 | fabs) < 0.02 and (.output_tok_s * .duration_s / 160 - 1 | fabs) < 0.02' <<<"$r"
	# 21 generations (a first test request, then 20), each streamed, asking for usage, 8 tokens and no early stop
	[ "$(gens | jq -c 'map([.model, .stream, .stream_options.include_usage, .max_tokens, .ignore_eos, .temperature]) | unique')" = '[["mock-a",true,true,8,true,0]]' ]
	[ "$(gens | jq 'length')" -eq 21 ]
	[ "$(gens | jq '[.[].prompt | split(" ") | length] | unique | .[]')" -eq 30 ]
	[ "$(gens | jq '[.[].prompt] | unique | length')" -eq 20 ]
}

@test "TTFT, TPOT, ITL and E2E latency measure the server's delays (50 ms a token, one request at a time)" {
	start_mock --delay 50
	run bench "$MOCK_URL" --num-prompts 6 --random-input-len 5 --random-output-len 6 --max-concurrency 1 -f json
	echo "$output"
	[ "$status" -eq 0 ]
	# the mock sleeps 50 ms before each of the 6 tokens: TTFT ~50, TPOT and ITL ~50, E2E ~300
	echo "$output" | jq -e '.[0] | .ttft_mean_ms > 45 and .ttft_mean_ms < 150 and .tpot_mean_ms > 45 and .tpot_mean_ms < 100
		and .itl_p50_ms > 45 and .itl_p50_ms < 100 and .e2el_mean_ms > 290 and .e2el_mean_ms < 600
		and (.itl_mean_ms - .tpot_mean_ms | fabs) < 1'
}

@test "the chat endpoint, and the tokenizer found at /tokenize (vLLM's) when /v1/encode is missing" {
	start_mock --tokenizer tokenize --log "$TMP/log"
	run bench "$MOCK_URL/v1" --endpoint /v1/chat/completions --num-prompts 5 --random-input-len 12 --random-output-len 4 -f json
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(echo "$output" | jq -c '.[0] | [.completed, .total_input_tokens, .total_output_tokens, .endpoint]')" = '[5,60,20,"/v1/chat/completions"]' ]
	[ "$(gens | jq '[.[].messages[0].content | split(" ") | length] | unique | .[]')" -eq 12 ]
	grep -q '"path":"/tokenize"' "$TMP/log"
}

@test "without a tokenizer endpoint the prompt lengths are estimated, and said to be" {
	start_mock --tokenizer none
	run bench "$MOCK_URL" --num-prompts 3 --random-input-len 40 --random-output-len 2
	echo "$output"
	[ "$status" -eq 0 ]
	grep -q "no /v1/encode or /tokenize: prompt lengths are estimated" "$TMP/err"
}

@test "--max-concurrency: one row per value, never more requests in flight; --request-rate paces arrivals" {
	start_mock --delay 20 --log "$TMP/log"
	run bench "$MOCK_URL" --num-prompts 12 --random-input-len 4 --random-output-len 5 --max-concurrency 1,3 -f csv
	echo "$output"
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 3 ]
	[[ "${lines[0]}" == date,commit,url,model,endpoint,dataset,request_rate,num_prompts,max_concurrency,completed,* ]]
	[ "$(echo "$output" | cut -d, -f9 | tail -n 2 | tr '\n' ' ')" = "1 3 " ]
	[ "$(jq -s '[.[] | select(.path == "/v1/completions") | .inflight] | max' "$TMP/log")" -le 3 ]
	# Poisson arrivals at 20 a second: 40 requests take about 2 s (sd 0.3 s); all at once they take far less
	run bench "$MOCK_URL" --num-prompts 40 --random-input-len 4 --random-output-len 2 --request-rate 20 --seed 3 -f json
	[ "$status" -eq 0 ]
	echo "$output" | jq -e '.[0] | .duration_s > 1 and .duration_s < 4 and .request_rate == "20"'
	run bench "$MOCK_URL" --num-prompts 40 --random-input-len 4 --random-output-len 2 -f json
	echo "$output" | jq -e '.[0].duration_s < 0.8'
}

@test "ShareGPT JSON with vLLM's filter, shuffled by the seed; CSV prompt,output_len in file order" {
	start_mock --log "$TMP/log"
	local long=$(printf 'w%.0s ' $(seq 1 1030))
	cat >"$TMP/sg.json" <<JSON
[{"id": "a", "conversations": [{"from": "human", "value": "one two three four"}, {"from": "gpt", "value": "a b c d e"}]},
 {"id": "short prompt", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "a b c d e"}]},
 {"id": "short answer", "conversations": [{"from": "human", "value": "one two three four"}, {"from": "gpt", "value": "yes"}]},
 {"id": "one turn", "conversations": [{"from": "human", "value": "one two three four five"}]},
 {"id": "long", "conversations": [{"from": "human", "value": "$long"}, {"from": "gpt", "value": "a b c d e"}]},
 {"id": "b", "conversations": [{"from": "human", "value": "five six seven eight nine"}, {"from": "gpt", "value": "a b c d e f g"}, {"from": "human", "value": "x"}]}]
JSON
	run bench "$MOCK_URL" --dataset "$TMP/sg.json" --num-prompts 4 -f json
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(echo "$output" | jq -c '.[0] | [.completed, .dataset, .total_output_tokens]')" = '[4,"sg.json",24]' ]
	[ "$(gens | jq -c '[.[1:][] | [.prompt, .max_tokens]] | sort | unique')" = '[["five six seven eight nine",7],["one two three four",5]]' ]
	printf 'prompt,output_len\n"a, quoted ""prompt""",3\nplain words here,5\n' >"$TMP/p.csv"
	: >"$TMP/log"
	run bench "$MOCK_URL" --dataset "$TMP/p.csv" --num-prompts 3 --max-concurrency 1 -f json
	[ "$status" -eq 0 ]
	[ "$(gens | jq -c '[.[1:][] | [.prompt, .max_tokens]]')" = '[["a, quoted \"prompt\"",3],["plain words here",5],["a, quoted \"prompt\"",3]]' ]
}

@test "cut connections fail only their requests: the run completes and counts them" {
	start_mock --cut-every 5
	run bench "$MOCK_URL" --num-prompts 20 --random-input-len 4 --random-output-len 3 -f json
	echo "$output"
	[ "$status" -eq 0 ]
	cat "$TMP/err"
	[ "$(echo "$output" | jq -c '.[0] | [.completed, .failed, .total_output_tokens]')" = '[16,4,48]' ]
	grep -q "max concurrency 20: 4 of 20 requests failed; the first: the answer of '$MOCK_URL/v1/completions' was cut" "$TMP/err"
}

@test "bad input: one clear line and the exit status of lmd(7)" {
	run timeout 30 lmd-bench serve http://127.0.0.1:1 --num-prompts 2
	[ "$status" -eq 1 ]
	[[ "$output" == "lmd-bench serve: cannot reach 'http://127.0.0.1:1/v1/models': "* ]]
	start_mock --api-key k
	run timeout 30 lmd-bench serve "$MOCK_URL" --num-prompts 2
	[ "$status" -eq 1 ]
	[ "$output" = "lmd-bench serve: HTTP 401: mock: invalid API key" ]
	run timeout 30 lmd-bench serve "$MOCK_URL" --api-key k --model nope --num-prompts 2 --random-input-len 3
	[ "$status" -eq 1 ]
	[[ "$output" == *"the first test request to '$MOCK_URL/v1/completions': HTTP 404: the model 'nope' does not exist" ]]
	printf 'p,o\nfine,3\nbad,x\n' >"$TMP/bad.csv"
	run timeout 30 lmd-bench serve "$MOCK_URL" --api-key k --dataset "$TMP/bad.csv"
	[ "$status" -eq 3 ]
	[[ "$output" == *"'$TMP/bad.csv': row 3: expected prompt,output_len"* ]]
	run timeout 30 lmd-bench serve "$MOCK_URL" --api-key k --dataset "$TMP/missing.json"
	[ "$status" -eq 3 ]
	run lmd-bench serve "$MOCK_URL" --request-rate fast
	[ "$status" -eq 2 ]
	run lmd-bench serve "$MOCK_URL" -f xml
	[ "$status" -eq 2 ]
}

@test "md like lmd-bench gen's tables; -f png draws a PNG with gnuplot, -f gnuplot writes its script" {
	start_mock
	run bench "$MOCK_URL" --num-prompts 4 --random-input-len 4 --random-output-len 3 --max-concurrency 1,2 -f md -q
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 4 ]
	[[ "${lines[0]}" == "| date | commit | url |"* ]]
	[[ "${lines[1]}" == "|---|---|"* ]]
	# -f gnuplot: the plot's script with its data, for a machine with gnuplot; the figures on stderr
	bench "$MOCK_URL" --num-prompts 6 --random-input-len 4 --random-output-len 3 --max-concurrency 1,3 -f gnuplot \
		-o "$TMP/p.gp"
	grep -q "^set terminal pngcairo" "$TMP/p.gp"
	[ "$(grep -c '^e$' "$TMP/p.gp")" -eq 4 ]  # tokens/s, total tokens/s, and a TTFT CDF a concurrency
	[ "$(grep -c '^|' "$TMP/err")" -eq 4 ]
	command -v gnuplot >/dev/null || skip "gnuplot is not installed"
	gnuplot "$TMP/p.gp" >"$TMP/gp.png"
	[ "$(head -c 4 "$TMP/gp.png" | od -An -c | tr -d ' ')" = "211PNG" ]
	rm "$TMP/p.gp" "$TMP/gp.png"
	run bench "$MOCK_URL" --num-prompts 8 --random-input-len 4 --random-output-len 3 --max-concurrency 1,2,4 -f png -o "$TMP/p.png" -q
	[ "$status" -eq 0 ]
	[ "$(head -c 4 "$TMP/p.png" | od -An -c | tr -d ' ')" = "211PNG" ]
	[ "$(ls "$TMP")" = "$(ls "$TMP" | grep -v tmp)" ]
}

@test "against lmd-run serve on lmd-tiny: exact prompt lengths through /v1/encode, every output as long as asked" {
	start_serve "$ROOT/share/models/lmd-tiny"
	run bench "$SERVE_URL" --num-prompts 12 --random-input-len 24 --random-output-len 10 --max-concurrency 1,4 -f json
	echo "$output"; cat "$TMP/err"
	[ "$status" -eq 0 ]
	# usage.prompt_tokens counts the BOS the server adds before each prompt of 24 tokens (or, where words
	# cannot make 24, the nearest count)
	echo "$output" | jq -e 'length == 2 and all(.[]; .completed == 12 and .failed == 0 and .total_output_tokens == 120
		and .total_input_tokens >= 288 and .total_input_tokens <= 312 and .ttft_p50_ms > 0 and .tpot_p50_ms > 0)'
	run bench "$SERVE_URL" --endpoint /v1/chat/completions --num-prompts 4 --random-input-len 8 --random-output-len 6 -f json
	[ "$status" -eq 0 ]
	echo "$output" | jq -e '.[0] | .completed == 4 and .total_output_tokens == 24'
}

@test "behind nginx (share/nginx/lmd.conf, least_conn), 3 servers, one killed mid-run: only its requests in flight fail" {
	command -v nginx >/dev/null || skip "nginx is not installed"
	local i ports=() urls=() port
	SERVERS=
	for i in 1 2 3; do
		start_serve "$ROOT/share/models/lmd-tiny" --threads 1
		SERVERS="$SERVERS $SERVE_PID"
		urls+=("$SERVE_URL")
		SERVE_PID=
		mv "$TMP/serve.log" "$TMP/serve$i.log"
	done
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	mkdir -p "$TMP/nginx"
	chmod 755 "$TMP"
	# the recipe with this test's servers and port
	awk -v a="${urls[0]#http://}" -v b="${urls[1]#http://}" -v c="${urls[2]#http://}" -v port="$port" '
		/server 127.0.0.1:23333/ { print "\t\tserver " a " max_fails=1 fail_timeout=10s;"; print "\t\tserver " b " max_fails=1 fail_timeout=10s;"; print "\t\tserver " c " max_fails=1 fail_timeout=10s;"; next }
		/server 127.0.0.1:23334/ { next }
		/listen 127.0.0.1:8000/ { print "\t\tlisten 127.0.0.1:" port ";"; next }
		{ print }' "$ROOT/share/nginx/lmd.conf" >"$TMP/nginx/lmd.conf"
	nginx -p "$TMP/nginx" -c "$TMP/nginx/lmd.conf" </dev/null >/dev/null 2>"$TMP/nginx.log" 3>&- &
	NGINX_PID=$!
	for i in $(seq 1 100); do
		curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
		sleep 0.1
	done
	timeout 120 lmd-bench serve "http://127.0.0.1:$port" --num-prompts 120 --random-input-len 16 --random-output-len 64 \
		--max-concurrency 6 -f json >"$TMP/out.json" 2>"$TMP/err" &
	local bench=$!
	for i in $(seq 1 300); do  # the run is under way on the third server: it has requests running
		curl -s "${urls[2]}/metrics" | grep -q '^lmd:num_requests_running{[^}]*} [1-9]' && break
		sleep 0.05
	done
	kill -KILL ${SERVERS##* }   # the third server dies with its requests in flight
	wait "$bench"
	cat "$TMP/out.json" "$TMP/err"
	# the run completes: every new request went to a live server, only the dead one's in flight failed
	jq -e '.[0] | .completed + .failed == 120 and .failed >= 1 and .failed <= 6' "$TMP/out.json"
}

# The coefficient of variation of the gaps between the generation requests in $TMP/log (the first
# request, the lone probe, left out), and their mean in ms.
gaps() {
	jq -s '[.[] | select(.path == "/v1/completions") | .t] | .[1:] | [range(1; length) as $i | .[$i] - .[$i - 1]]
		| (add / length) as $m | [((map((. - $m) * (. - $m)) | add / length | sqrt) / $m), $m]' -c "$TMP/log"
}

@test "--burstiness: gamma gaps of mean 1/rate, burstier below 1 and steadier above (CV 1/sqrt(B))" {
	start_mock --delay 1 --log "$TMP/log"
	local b cv
	for b in 0.25 16; do
		: >"$TMP/log"
		run bench "$MOCK_URL" --num-prompts 60 --random-input-len 4 --random-output-len 1 --request-rate 20 \
			--burstiness "$b" --seed 3 -f json
		[ "$status" -eq 0 ]
		echo "$output" | jq -e ".[0] | .burstiness == $b and .completed == 60"
		cv=$(gaps)
		echo "burstiness $b: [cv, mean ms] $cv"
		jq -e ".[1] > 30 and .[1] < 80" <<<"$cv"
		if [ "$b" = 16 ]; then jq -e '.[0] < 0.5' <<<"$cv"; else jq -e '.[0] > 1.3' <<<"$cv"; fi
	done
	run lmd-bench serve "$MOCK_URL" --burstiness 0
	[ "$status" -eq 2 ]
}

@test "--goodput: requests a second that meet every SLO, as vLLM spells it, in every format" {
	start_mock --delay 50
	# 6 tokens 50 ms apart: TTFT ~50 ms, TPOT ~50 ms, E2E ~300 ms
	local args=(--num-prompts 4 --random-input-len 4 --random-output-len 6 --max-concurrency 1)
	run bench --goodput ttft:2000 tpot:1000 e2el:5000 "$MOCK_URL" "${args[@]}" -f json
	[ "$status" -eq 0 ]
	echo "$output" | jq -e '.[0] | .goodput_slo == "ttft:2000 tpot:1000 e2el:5000" and .request_goodput > 0
		and (.request_goodput - .request_throughput | fabs) < 0.01'
	run bench "$MOCK_URL" "${args[@]}" --goodput ttft:2000 --goodput tpot:10 -f json
	echo "$output" | jq -e '.[0] | .goodput_slo == "ttft:2000 tpot:10" and .request_goodput == 0'
	run bench "$MOCK_URL" "${args[@]}" --goodput e2el:10 -f csv
	[[ "$(head -1 <<<"$output")" == *",burstiness,goodput_slo,request_goodput" ]]
	[[ "$(tail -1 <<<"$output")" == *",1,e2el:10,0.000" ]]
	run bench "$MOCK_URL" "${args[@]}" --goodput e2el:10 -f md
	[[ "$output" == *"| request_goodput |"* ]]
	run lmd-bench serve "$MOCK_URL" --goodput itl:5
	[ "$status" -eq 2 ]
	[[ "$output" == *"--goodput: 'itl:5' is not ttft:MS, tpot:MS or e2el:MS"* ]]
}
