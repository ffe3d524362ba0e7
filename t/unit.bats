#!/usr/bin/env bats
# Runs every C unit test program (build/t/test-*). Exit 77 means skip (no GPU).
load lib

@test "unit test programs pass" {
	shopt -s nullglob
	local any=0 failed=0
	for t in "$BUILD"/t/test-*; do
		any=1
		run "$t"
		if [ "$status" -ne 0 ] && [ "$status" -ne 77 ]; then
			echo "$t: exit $status"; echo "$output" | tail -20; failed=1
		fi
	done
	[ "$any" -eq 1 ]
	[ "$failed" -eq 0 ]
}
