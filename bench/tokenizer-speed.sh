#!/usr/bin/env bash
# Encoding speed of each tokenizer family on WikiText-2 test (one text, one core), best of N runs,
# measured by `lmd-run tokenize --stats` (encoding only: loading the tokenizer is not counted).
# Usage: bench/tokenizer-speed.sh [RUNS] > bench/results/DATE-tokenizer-speed.md
set -eu
cd "$(dirname "$0")/.."
runs=${1:-5}
shared=${LMD_SHARED:-../shared}
text=$shared/data/wikitext-2-raw/wiki.test.raw
[ -f "$text" ] || { echo "no $text" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$shared/tokenizers/llama2/tokenizer.json" "$tmp/"   # Llama 2 through tokenizer.json alone
echo "# Tokenizer encoding speed"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores (one used)"
echo "- commit: $(git rev-parse --short HEAD)"
echo "- load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared; busy runs are slower)"
echo "- text: WikiText-2 test (wiki.test.raw, $(wc -c < "$text") bytes), encoded as one text, no BOS"
echo "- method: bench/tokenizer-speed.sh, best of $runs runs of \`lmd-run tokenize --stats\` (encoding time only)"
echo
echo "| tokenizer | file | tokens | seconds | MB/s |"
echo "|---|---|---:|---:|---:|"
for row in "Llama 2|sentencepiece tokenizer.model|$shared/tokenizers/llama2" \
	   "Llama 2|tokenizer.json|$tmp" \
	   "InternLM2|sentencepiece tokenizer.model|$shared/tokenizers/internlm2" \
	   "Qwen2|tokenizer.json (byte level)|$shared/tokenizers/qwen2" \
	   "Llama 3|tiktoken rank file|$shared/tokenizers/llama3" \
	   "lmd-tiny|sentencepiece tokenizer.model|share/models/lmd-tiny"; do
	IFS='|' read -r name file dir <<<"$row"
	best=
	for _ in $(seq "$runs"); do
		line=$(build/bin/lmd-run tokenize --stats "$dir" < "$text" 2>&1 >/dev/null)
		# "lmd-run tokenize: B bytes, T tokens, S s, R MB/s"
		set -- $line
		tokens=$5 secs=$7 rate=$9
		if [ -z "$best" ] || awk "BEGIN{exit !($rate > $best)}"; then best=$rate; bt=$tokens; bs=$secs; fi
	done
	echo "| $name | $file | $bt | $bs | $best |"
done
