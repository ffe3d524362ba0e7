#!/usr/bin/env bats
# lmd-run chat: multi-turn with the KV cache kept between turns, commands, session length.
load lib

setup() { setup_tmp; }
teardown() { teardown_tmp; }

TINY=$ROOT/share/models/lmd-tiny

@test "a second turn prefills only its new tokens" {
	run bash -c "printf 'Once upon a time\nThe king said\n/exit\n' | lmd-run chat '$TINY' --device cpu --max-tokens 8 --temperature 0 -v 2>&1 >/dev/null"
	[ "$status" -eq 0 ]
	echo "$output"
	local first second
	first=$(echo "$output" | grep -o 'prefilled [0-9]* new tokens ([0-9]* cached)' | sed -n 1p)
	second=$(echo "$output" | grep -o 'prefilled [0-9]* new tokens ([0-9]* cached)' | sed -n 2p)
	[[ "$first" == "prefilled 6 new tokens (0 cached)" ]]      # BOS + "Once upon a time"
	# the cache holds the 6 prompt tokens and 7 of the 8 answer tokens; the 8th and "The king said" are new
	[[ "$second" == "prefilled 4 new tokens (13 cached)" ]]
}

@test "/reset starts over; /system sets a system prompt; unknown commands are explained" {
	run bash -c "printf 'Hello\n/reset\nHello\n/bogus\n/exit\n' | lmd-run chat '$TINY' --device cpu --max-tokens 4 --temperature 0 -v 2>&1 >/dev/null"
	[ "$status" -eq 0 ]
	[ "$(echo "$output" | grep -c '(0 cached)')" -eq 2 ]
	[[ "$output" == *"commands:"* ]]
}

@test "the session length is reported when a turn does not fit" {
	run bash -c "printf '%s\n/exit\n' \"\$(printf 'word %.0s' \$(seq 1 60))\" | lmd-run chat '$TINY' --device cpu --session-len 16 --max-tokens 4"
	[ "$status" -eq 0 ]
	[[ "$output" == *"/reset"* ]]
}
