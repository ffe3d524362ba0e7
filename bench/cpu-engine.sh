#!/bin/sh
# The CPU engine benchmark (issue 4): decode batch 1 and 8 and a 512-token prefill of lmd-small,
# beside a memory-bandwidth roofline measured in the same run. Writes markdown on stdout:
#   bench/cpu-engine.sh [MODEL] > bench/results/$(date -u +%F)-cpu-engine.md
set -eu
cd "$(dirname "$0")/.."
MODEL=${1:-../shared/models/lmd-small}
BIN=${LMD_BUILD:-build}/t/gen-bench-cpu
[ -x "$BIN" ] || make -s "$BIN"
echo "# CPU engine benchmark"
echo
echo "- date: $(date -u '+%F %T UTC')"
echo "- machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || cat COMMIT 2>/dev/null || echo unknown)"
echo "- load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
for t in 0 1; do
	echo "## $( [ "$t" = 0 ] && echo "all cores" || echo "one thread" )"
	echo
	"$BIN" --threads "$t" "$MODEL"
	echo
done
