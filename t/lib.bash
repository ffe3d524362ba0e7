# Shared setup for the bats files: load it with `load lib`.
# LMD_BUILD picks the build folder; SHARED is ../shared when present (tests using it skip without it).
ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
BUILD=$ROOT/${LMD_BUILD:-build}
PATH=$BUILD/bin:$BUILD/t:$PATH
SHARED=${LMD_SHARED:-$ROOT/../shared}
export ROOT BUILD PATH SHARED

need_shared() {
	[ -d "$SHARED/models" ] || skip "../shared is not present"
}

# A fresh scratch directory per test.
setup_tmp() {
	TMP=$(mktemp -d "${BATS_TMPDIR:-/tmp}/lmd.XXXXXX")
}
teardown_tmp() {
	[ -n "${TMP:-}" ] && rm -rf "$TMP"
}

# A python3 with the msgpack module in $PY, or skip.
need_msgpack() {
	for PY in python3 /usr/bin/python3; do
		"$PY" -c 'import msgpack' 2>/dev/null && return 0
	done
	skip "no python3 with msgpack"
}
