#!/usr/bin/env bash
# make demo: convert the bundled lmd-tiny and tell a story on the CPU.
set -eu
B=${BUILD:-build}
model=$B/demo/lmd-tiny
mkdir -p "$B/demo"
[ -f "$model/index.msgpack" ] || $B/bin/lmd-convert -q --force share/models/lmd-tiny "$model"
if $B/bin/lmd-run generate --help >/dev/null 2>&1; then
	exec $B/bin/lmd-run generate "$model" --device cpu --prompt "${PROMPT:-Once upon a time}" \
		--max-tokens "${TOKENS:-200}" --temperature 0.8 --top-p 0.95 --seed 1 --verbose
fi
$B/bin/lmd-convert --info "$model"
echo "demo: the CPU engine (lmd-run generate) is not built yet; the model above converted fine" >&2
