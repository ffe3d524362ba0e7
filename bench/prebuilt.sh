#!/bin/bash
# Make the PREBUILT tar.xz that bench/gpu-check.sh (and gpu-profile.sh) unpack on a GPU machine that
# has CUDA but none of lmd's -dev packages: the tools (build/bin/lmd-*), t/gen-model and the test
# programs (build/t/test-*), and every shared library they load from the system's library folders
# except the C runtime and the CUDA libraries (those come from the GPU machine's own CUDA install,
# through the programs' rpath).
#
#   bench/prebuilt.sh [OUT.tar.xz]      (default .gpu/prebuilt.tar.xz; builds with CUDA first)
#   bench/prebuilt.sh --unpack TAR      on the GPU machine: the programs into build/bin and build/t, the libraries
#                                       into build/lib (once per tar: a second call with the same tar does nothing);
#                                       the caller then puts build/lib on LD_LIBRARY_PATH
#   PROGS="lmd-bench gen-model test-ops ..."   only these programs, to leave room in the device tool's 64 MiB carry
#                                               for a model (the first program is about 3.5 MB of the tar, each
#                                               further one much less: xz stores their common CUDA kernels once)
set -eu
cd "$(dirname "$0")/.."
if [ "${1:-}" = --unpack ]; then
	sum=$(cksum <"$2")
	[ "$(cat build/lib/.prebuilt 2>/dev/null)" = "$sum" ] && exit 0
	mkdir -p build/bin build/t build/lib
	tar -xJf "$2" -C build/lib
	for f in build/lib/*; do
		case ${f#build/lib/} in
		lmd-*) mv "$f" build/bin/ ;;
		gen-* | test-*) mv "$f" build/t/ ;;
		esac
	done
	echo "$sum" >build/lib/.prebuilt
	exit 0
fi
out=${1:-.gpu/prebuilt.tar.xz}
make -j"$(nproc)" all >/dev/null
ldd build/bin/lmd-run | grep -q libcudart || { echo "prebuilt.sh: build/bin/lmd-run was built without CUDA" >&2; exit 1; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
progs=(build/bin/lmd-* build/t/gen-model build/t/gen-load build/t/test-*)
if [ -n "${PROGS:-}" ]; then
	progs=()
	for p in $PROGS; do
		f=build/bin/$p; [ -x "$f" ] || f=build/t/$p
		[ -x "$f" ] || { echo "prebuilt.sh: no program $p in build/bin or build/t" >&2; exit 1; }
		progs+=("$f")
	done
fi
cp "${progs[@]}" "$stage"/
ldd "${progs[@]}" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | while read -r lib; do
	case $(basename "$lib") in
	libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | libcuda.so* | libcudart.so* | \
		libcublas*.so* | libnvidia* | libgcc_s.so* | libstdc++.so*) ;;
	*) cp -L "$lib" "$stage"/ ;;
	esac
done
mkdir -p "$(dirname "$out")"
# a dictionary as large as the programs: each carries the same CUDA kernels, which xz then stores once
tar -cf - -C "$stage" . | xz -T2 --lzma2=preset=6,dict=64MiB >"$out"
echo "$out: $(du -h "$out" | cut -f1), $(ls "$stage" | wc -l) files"
