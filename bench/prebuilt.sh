#!/bin/bash
# bench/prebuilt.sh OUT.tar.xz: the programs gpu-check runs (build/bin/lmd-*, build/t/gen-model and test-*) and
# the shared libraries they need beyond libc and CUDA's, flat in one tar.xz, for gpu-check.sh's PREBUILT on a
# machine without the -dev packages (the CUDA libraries are that machine's own).
set -eu
cd "$(dirname "$0")/.."
out=$(realpath -m "$1")
progs=(build/bin/lmd-* build/t/gen-model build/t/test-*)
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
cp "${progs[@]}" "$t"/
ldd "${progs[@]}" | awk '$3 ~ /^\// {print $3}' | sort -u |
	grep -Ev '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*|libcuda[^/]*|libcublas[^/]*|libcudart)\.so' |
	while read -r l; do cp -L "$l" "$t"/; done
strip --strip-debug "$t"/lmd-* "$t"/gen-model "$t"/test-* 2>/dev/null || true
tar -cJf "$out" -C "$t" .
ls -la "$out"
