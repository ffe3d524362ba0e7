#!/usr/bin/env bats
# lmd-run tokenize / detokenize: the command-line interface, against each family's reference ids.
load lib

setup() { setup_tmp; }
teardown() { teardown_tmp; }

tok_dir() {  # tok_dir FAMILY: the directory holding FAMILY's tokenizer files
	case $1 in
	lmd-tiny) if [ -d "$ROOT/share/models/lmd-tiny" ]; then echo "$ROOT/share/models/lmd-tiny"; else echo "$SHARED/models/lmd-tiny"; fi ;;
	*) echo "$SHARED/tokenizers/$1" ;;
	esac
}

# Every line of reference/tokenizers/FAMILY.jsonl through the command line: ids, then back to text.
check_family() {
	need_shared
	command -v jq >/dev/null || skip "jq is not installed"
	local fam=$1 dir n=0
	dir=$(tok_dir "$fam")
	while IFS= read -r line; do
		printf '%s' "$line" | jq -j .text > "$TMP/in"
		want=$(printf '%s' "$line" | jq -r '.ids | map(tostring) | join(" ")')
		got=$(lmd-run tokenize "$dir" < "$TMP/in")
		[ "$got" = "$want" ] || { echo "$fam: $(cat "$TMP/in" | head -c 80): got '$got', want '$want'"; return 1; }
		echo "$got" | lmd-run detokenize "$dir" > "$TMP/out"
		cmp -s "$TMP/in" "$TMP/out" || { echo "$fam: detokenize differs for '$(head -c 80 "$TMP/in")'"; return 1; }
		n=$((n + 1))
	done < "$SHARED/reference/tokenizers/$fam.jsonl"
	[ "$n" -ge 40 ]
}

@test "tokenize matches the Llama 2 reference (sentencepiece)" { check_family llama2; }
@test "tokenize matches the InternLM2 reference (sentencepiece, renamed added tokens)" { check_family internlm2; }
@test "tokenize matches the Qwen2 reference (tokenizer.json, byte level)" { check_family qwen2; }
@test "tokenize matches the Llama 3 reference (tiktoken)" { check_family llama3; }
@test "tokenize matches the lmd-tiny reference" { check_family lmd-tiny; }

@test "tokenize prints ids separated by spaces, no BOS unless --add-special" {
	need_shared
	run bash -c "printf 'Hello world' | lmd-run tokenize '$SHARED/tokenizers/llama2'"
	[ "$status" -eq 0 ]
	[ "$output" = "15043 3186" ]
	run bash -c "printf 'Hello world' | lmd-run tokenize --add-special '$SHARED/tokenizers/llama2'"
	[ "$output" = "1 15043 3186" ]
	run bash -c "printf 'Hello world' | lmd-run tokenize '$SHARED/tokenizers/llama3' --add-special"
	[ "$output" = "128000 9906 1917" ]
	run bash -c "printf 'Hello world' | lmd-run tokenize --add-special '$SHARED/tokenizers/qwen2'"
	[ "$output" = "9707 1879" ]
}

@test "tokenize --json prints ids and pieces" {
	need_shared
	run bash -c "printf 'Hello world<|im_end|>' | lmd-run tokenize --json '$SHARED/tokenizers/qwen2'"
	[ "$status" -eq 0 ]
	[ "$output" = '{"ids": [9707, 1879, 151645], "pieces": ["Hello", "Ġworld", "<|im_end|>"]}' ]
	run bash -c "printf 'Hello world' | lmd-run tokenize --json '$SHARED/tokenizers/llama2'"
	[ "$output" = '{"ids": [15043, 3186], "pieces": ["▁Hello", "▁world"]}' ]
}

@test "added tokens written in the text are matched" {
	need_shared
	run bash -c "printf '<|im_start|>user\nHi<|im_end|>' | lmd-run tokenize '$SHARED/tokenizers/internlm2'"
	[ "$output" = "92543 1008 364 13195 92542" ]
	run bash -c "printf '<|begin_of_text|><|eot_id|>' | lmd-run tokenize '$SHARED/tokenizers/llama3'"
	[ "$output" = "128000 128009" ]
}

@test "detokenize reads spaces, commas or JSON and can skip special tokens" {
	need_shared
	local d=$SHARED/tokenizers/qwen2
	run bash -c "echo '9707 1879 151645' | lmd-run detokenize '$d'"
	[ "$output" = "Hello world<|im_end|>" ]
	run bash -c "echo '[9707, 1879, 151645]' | lmd-run detokenize --skip-special '$d'"
	[ "$output" = "Hello world" ]
	run bash -c "echo '{\"ids\": [9707,1879]}' | lmd-run detokenize '$d'"
	[ "$output" = "Hello world" ]
	run bash -c "echo '1 15043 3186 2' | lmd-run detokenize --skip-special '$SHARED/tokenizers/llama2'"
	[ "$output" = "Hello world" ]
	run bash -c "echo '12 x' | lmd-run detokenize '$d'"
	[ "$status" -eq 2 ]
	run bash -c "echo '999999' | lmd-run detokenize '$d'"
	[ "$status" -eq 2 ]
}

@test "detokenize --stream equals one-shot decoding, split characters included" {
	need_shared
	# byte pieces of one emoji, split across tokens, then text
	for d in llama2 internlm2 qwen2 llama3; do
		dir=$SHARED/tokenizers/$d
		printf '😀😁 two emoji \xf0\x9f\x98 cut' | lmd-run tokenize "$dir" > "$TMP/ids"
		lmd-run detokenize "$dir" < "$TMP/ids" > "$TMP/a"
		lmd-run detokenize --stream "$dir" < "$TMP/ids" > "$TMP/b"
		cmp "$TMP/a" "$TMP/b"
	done
}

@test "invalid UTF-8 is tokenized without crashing" {
	need_shared
	for d in llama2 internlm2 qwen2 llama3; do
		run bash -c "printf 'a\xff\xfe\xc3 \xed\xa0\x80b\xe4\xbd' | lmd-run tokenize '$SHARED/tokenizers/$d'"
		[ "$status" -eq 0 ]
		[ -n "$output" ]
	done
	# byte level keeps every byte
	run bash -c "printf 'a\xffb' | lmd-run tokenize '$SHARED/tokenizers/qwen2' | lmd-run detokenize '$SHARED/tokenizers/qwen2' | od -An -tx1"
	[ "$(echo $output)" = "61 ef bf bd 62" ]
}

@test "a corrupt tokenizer file gives exit 3 naming the file" {
	printf '\x0a\x7fgarbage' > "$TMP/tokenizer.model"
	run bash -c "echo hi | lmd-run tokenize '$TMP'"
	[ "$status" -eq 3 ]
	[[ "$output" == *"$TMP/tokenizer.model"* ]]
	rm "$TMP/tokenizer.model"
	echo '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [' > "$TMP/tokenizer.json"
	run bash -c "echo hi | lmd-run tokenize '$TMP'"
	[ "$status" -eq 3 ]
	[[ "$output" == *"$TMP/tokenizer.json"* ]]
	rm "$TMP/tokenizer.json"
	run bash -c "echo hi | lmd-run tokenize '$TMP'"
	[ "$status" -eq 3 ]
	run bash -c "echo hi | lmd-run tokenize '$TMP/nope'"
	[ "$status" -eq 3 ]
}

@test "usage errors exit 2" {
	run lmd-run tokenize
	[ "$status" -eq 2 ]
	run lmd-run tokenize --bogus x
	[ "$status" -eq 2 ]
	run lmd-run frobnicate
	[ "$status" -eq 2 ]
	run lmd-run tokenize --render x
	[ "$status" -eq 2 ]
}

@test "the chat template is chosen from the model files and renders the Jinja prompt" {
	need_shared
	printf '[{"role": "user", "content": "Hi"}]' > "$TMP/m.json"
	run lmd-run tokenize --chat "$TMP/m.json" --render "$SHARED/tokenizers/internlm2"
	[ "$output" = "$(printf '<s><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant')" ]
	run lmd-run tokenize --chat "$TMP/m.json" "$SHARED/tokenizers/internlm2"
	[ "$output" = "1 92543 1008 364 13195 92542 364 92543 525 11353 364" ]
	run lmd-run tokenize --chat "$TMP/m.json" --chat-template qwen2 --render "$SHARED/tokenizers/qwen2"
	[ "$output" = "$(printf '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant')" ]
	run lmd-run tokenize --chat "$TMP/m.json" --chat-template nosuch "$SHARED/tokenizers/qwen2"
	[ "$status" -eq 2 ]
}

@test "an lmd model directory is read like an HF one, and its recorded chat template is used" {
	local tiny=$ROOT/share/models/lmd-tiny
	[ -d "$tiny" ] || { need_shared; tiny=$SHARED/models/lmd-tiny; }
	lmd-convert --chat-template qwen2 "$tiny" "$TMP/m"
	run bash -c "printf 'Hello world' | lmd-run tokenize '$TMP/m'"
	[ "$output" = "485 293 4010 1109" ]
	printf '[{"role": "user", "content": "Hi"}]' > "$TMP/c.json"
	run lmd-run tokenize --chat "$TMP/c.json" --render "$TMP/m"
	[ "$output" = "$(printf '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant')" ]
	run lmd-run tokenize --chat "$TMP/c.json" --render "$tiny"
	[ "$output" = "Hi" ]
}
