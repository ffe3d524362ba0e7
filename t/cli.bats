#!/usr/bin/env bats
# What every tool does the same way (common/cli.c): lost output, flag spellings, one-line errors (issue 16).
load lib

setup() { setup_tmp; }
teardown() { teardown_tmp; }

TINY=$ROOT/share/models/lmd-tiny

# Every tool, and every subcommand of those with "Commands:" in their --help.
commands() {
	local bin sub
	for bin in "$BUILD"/bin/lmd-*; do
		echo "$(basename "$bin")"
		for sub in $("$bin" --help | awk '/^Commands:/{on=1; next} on && /^  [a-z]/{print $1} on && /^$/{on=0}'); do
			echo "$(basename "$bin") $sub"
		done
	done
}

@test "lost standard output exits 3 with one message, --help included, in every tool and subcommand" {
	local c n=0
	while read -r c; do
		run $c --help
		[ "$status" -eq 0 ]
		$c --help > /dev/full 2> "$TMP/err" && { echo "$c --help > /dev/full: exit 0"; false; } || [ $? -eq 3 ]
		[ "$(cat "$TMP/err")" = "$c: cannot write standard output: No space left on device" ]
		n=$((n + 1))
	done < <(commands)
	[ "$n" -ge 8 ]
	expect3() { "$@" > /dev/full 2> "$TMP/err" && false || [ $? -eq 3 ]; echo "$*"; cat "$TMP/err"; [[ "$(tail -1 "$TMP/err")" == "${1}"*": cannot write standard output: No space left on device" ]]; }
	expect3 lmd-run generate "$TINY" --device cpu --prompt Hi --max-tokens 4
	echo '{"prompt": "Hi", "max_tokens": 4}' > "$TMP/in.jsonl"
	expect3 lmd-run generate "$TINY" --device cpu < "$TMP/in.jsonl"
	echo Hi > "$TMP/chat.txt"
	expect3 lmd-run chat "$TINY" --device cpu --max-tokens 4 < "$TMP/chat.txt"
	expect3 lmd-run tokenize "$TINY" < "$TMP/chat.txt"
	expect3 lmd-bench ppl "$TINY" --device cpu --text "$ROOT/share/data/wikitext2.txt" --windows 1 --seqlen 32
	expect3 lmd-convert --info "$TINY"
}

@test "a closed pipe with SIGPIPE ignored is lost output: exit 3" {
	run bash -c "trap '' PIPE; lmd-run generate '$TINY' --device cpu --prompt Hi --max-tokens 64 --ignore-eos | true; exit \${PIPESTATUS[0]}"
	echo "$output"
	[ "$status" -eq 3 ]
	[[ $output == *"cannot write standard output"* ]]
}

@test "error messages are one clean line: a missing template, a symlink loop, a missing directory, control characters" {
	run lmd-run generate "$TINY" --chat-template nosuch --prompt hi
	echo "$output"
	[ "$status" -eq 2 ]
	[ "$(grep -c "no chat template 'nosuch'" <<< "$output")" -eq 1 ]
	[[ $(head -1 <<< "$output") == "lmd-run generate: no chat template 'nosuch': cannot find 'templates/nosuch.tmpl' "* ]]
	ln -s loop2 "$TMP/loop1"; ln -s loop1 "$TMP/loop2"
	run lmd-convert "$TMP/loop1" "$TMP/out"
	[ "$status" -eq 3 ]
	[[ $output == *"Too many levels of symbolic links" ]]
	run lmd-run generate "$TMP/none" --prompt hi
	[ "$status" -eq 3 ]
	[[ $output == *"'$TMP/none': No such file or directory" ]]
	run lmd-run generate "$TMP/a
b" --prompt hi
	[ "$status" -eq 3 ]
	[ "${#lines[@]}" -eq 1 ]
	[[ $output == *'a\nb'* ]]
}

@test "numbers out of range say so, naming the option or field" {
	run lmd-run generate "$TINY" --max-tokens 100000000 --prompt x
	[ "$status" -eq 2 ]
	[[ $output == *"--max-tokens: 100000000 is out of range (1 to "* ]]
	run lmd-run generate "$TINY" --max-tokens 12x --prompt x
	[[ $output == *"--max-tokens: '12x' is not a whole number"* ]]
	printf '{"prompt": "a", "max_tokens": 1e8}\n{"prompt": "a", "max_tokens": 2.5}\n{"prompt": "a", "max_tokens": 2.0}\n' |
		lmd-run generate "$TINY" --device cpu > "$TMP/out.jsonl" || true
	jq -e -s '.[0].error | test("max_tokens.* is 100000000, out of range")' "$TMP/out.jsonl"
	jq -e -s '.[1].error | test("whole number")' "$TMP/out.jsonl"
	jq -e -s '.[2].completion_tokens == 2' "$TMP/out.jsonl"
}

@test "config.json: a missing size is 'missing'; tensors beyond num_hidden_layers are refused" {
	gen-model --layers 3 "$TMP/hf"
	jq '.num_hidden_layers = 2' "$TMP/hf/config.json" > "$TMP/c" && cp "$TMP/c" "$TMP/hf/config.json"
	run lmd-convert "$TMP/hf" "$TMP/out"
	echo "$output"
	[ "$status" -eq 3 ]
	[[ $output == *"model.layers.2."*"'num_hidden_layers' is 2" ]]
	for f in hidden_size intermediate_size num_attention_heads vocab_size num_hidden_layers; do
		jq "del(.$f)" "$TMP/c" > "$TMP/hf/config.json"
		run lmd-convert "$TMP/hf" "$TMP/out"
		echo "$output"
		[ "$status" -eq 3 ]
		[[ $output == *"field '$f' is missing" ]]
	done
}

@test "NaN or inf weights: convert warns naming the tensor; generate and ppl say the logits are not finite" {
	cp -r "$TINY" "$TMP/hf"
	python3 - "$TMP/hf/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
name = 'model.layers.1.mlp.down_proj.weight'
lo, hi = h[name]['data_offsets']
bad = {'F16': b'\x00\x7e\x00\x7c', 'BF16': b'\xc0\x7f\x80\x7f', 'F32': b'\x00\x00\xc0\x7f\x00\x00\x80\x7f'}[h[name]['dtype']]
b[8 + n + lo:8 + n + lo + len(bad)] = bad   # NaN, +inf
open(p, 'wb').write(b)
PY
	run lmd-convert "$TMP/hf" "$TMP/out"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ $output == *"warning: tensor 'layers.1.w2' has 2 values that are NaN or infinite"* ]]
	run lmd-run generate "$TMP/out" --device cpu --prompt "Once upon" --max-tokens 4
	echo "$output"
	[ "$status" -ne 0 ]
	[[ $output == *"the logits are not finite"* ]]
	echo '{"prompt": "Once", "max_tokens": 4, "temperature": 0.7}' | lmd-run generate "$TMP/out" --device cpu > "$TMP/o.jsonl" || true
	jq -e '.error | test("logits are not finite")' "$TMP/o.jsonl"
	run lmd-bench ppl "$TMP/out" --device cpu --text "$ROOT/share/data/wikitext2.txt" --windows 1 --seqlen 32
	echo "$output"
	[ "$status" -eq 3 ]
	[[ $output == *"the logits are not finite"* ]]
}

@test "long steps show one progress line (done/total, time left) on stderr at a terminal only" {
	command -v script >/dev/null || skip "no script(1)"
	script -qec "lmd-calib '$TINY' --device cpu --calib-samples 4 --calib-seqlen 64 -o '$TMP/s.calib'" /dev/null > "$TMP/tty"
	grep -q $'\r''lmd-calib: windows 4/4' "$TMP/tty"
	script -qec "lmd-bench ppl '$TINY' --device cpu --text '$ROOT/share/data/wikitext2.txt' --windows 2 --seqlen 32 -o '$TMP/p'" /dev/null > "$TMP/tty"
	grep -q $'\r''lmd-bench ppl: windows 2/2' "$TMP/tty"
	script -qec "lmd-convert '$TINY' '$TMP/c'" /dev/null > "$TMP/tty"
	grep -q $'\r''lmd-convert: tensors [0-9]*/[0-9]*' "$TMP/tty"
	lmd-calib "$TINY" --device cpu --calib-samples 4 --calib-seqlen 64 -o "$TMP/s2.calib" 2> "$TMP/err"
	! grep -q 'windows 4/4' "$TMP/err" || false
}

@test "every --help example runs as shown, from the source tree (the examples' files made by the others first)" {
	cd "$TMP"
	ln -s "$ROOT/share" share
	export LMD_CACHE=$TMP/cache
	local c ex todo=() left round
	while read -r c; do
		ex=$($c --help | awk '/^Example:/ {getline; sub(/^  /, ""); print; exit}')
		# one that talks to a server needs a server on its URL: left to the command's own tests
		if [[ $ex == *http://* ]]; then
			echo "# not run here (needs a server): $ex" >&3
			continue
		fi
		# a server runs until told to stop: it must come up and drain on SIGTERM (timeout's status 124)
		if [[ $ex == "lmd-run serve "* ]]; then
			run timeout -s TERM 30 bash -c "$ex" < /dev/null
			echo "$output" | tail -3
			[ "$status" -eq 124 ] && [[ $output == *"listening on"* ]] && [[ $output != *"cannot"* ]] || {
				echo "fails: $ex"; false; }
			continue
		fi
		[ -z "$ex" ] || todo+=("$ex")
	done < <(commands)
	[ "${#todo[@]}" -ge 8 ]
	for round in 1 2 3; do  # an example may need another's output (lmd-kvparams the statistics of lmd-calib)
		left=()
		for ex in "${todo[@]}"; do
			bash -c "set -o pipefail; $ex" > /dev/null 2>&1 < /dev/null || left+=("$ex")
		done
		[ "${#left[@]}" -gt 0 ] || break
		todo=("${left[@]}")
	done
	for ex in "${left[@]}"; do echo "fails: $ex"; bash -c "$ex" 2>&1 < /dev/null | tail -3; done
	[ "${#left[@]}" -eq 0 ]
}
