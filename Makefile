# lmd: one non-recursive Makefile.
#
# Define NO_CUDA=1 to build without nvcc: the "cuda" device then reports that no GPU exists.
# Define CUDA_ARCH to choose the real GPU targets (default 90; PTX for the newest is always added).
# Define PREFIX (default /usr/local) for `make install`.
# Define WERROR= (empty) to drop -Werror for a local build.

PREFIX   ?= /usr/local
CC       ?= cc
CFLAGS   ?= -O2 -g
WERROR   ?= -Werror
# What the code needs, kept even when CFLAGS is given on the command line (make asan, make fuzz)
LMD_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-format-truncation $(WERROR) -pthread -fno-strict-aliasing
CPPFLAGS += -I. -Icommon -Iformats -Igpu -I$(BUILD) -DLMD_SHARE='"$(PREFIX)/share/lmd"'
LDLIBS   += -ljansson -lmsgpackc -lcsv -lpcre2-8 -lutf8proc -lreadline -lmicrohttpd -lcurl -lm -lpthread
BUILD    ?= build
Q        ?= @
ifdef V
  Q :=
endif

NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
ifdef NO_CUDA
  NVCC :=
endif
CORE_SRCS := $(wildcard common/*.c common/*/*.c formats/*.c)
ifeq ($(NVCC),)
  GPU_OBJS := $(BUILD)/gpu/stub.o
  CUDA_NOTE := off (NO_CUDA or no nvcc)
else
  CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
  CUDA_ARCH ?= 90
  NVCCFLAGS ?= -O3 -std=c++17 -I. -Icommon -Iformats -Igpu --expt-relaxed-constexpr
  NVCCFLAGS += $(foreach a,$(CUDA_ARCH),-gencode arch=compute_$(a),code=sm_$(a)) \
               -gencode arch=compute_$(lastword $(CUDA_ARCH)),code=compute_$(lastword $(CUDA_ARCH)) \
               -Xcompiler -Wall,-Wextra$(if $(WERROR),$(comma)-Werror)
  GPU_OBJS := $(patsubst %.cu,$(BUILD)/%.o,$(wildcard gpu/*.cu))
  LDLIBS   += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublas -lcublasLt -lstdc++
  CUDA_NOTE := on ($(NVCC), sm_$(CUDA_ARCH))
endif
comma := ,

CORE_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(CORE_SRCS)) $(GPU_OBJS)
# cmd/: a tool is cmd/lmd-X.c (its main) plus its subcommands cmd/lmd-X/*.c; cmd/*.c besides are the
# option-table, usage and die plumbing the tools share.
TOOLS     := $(patsubst cmd/%.c,$(BUILD)/bin/%,$(wildcard cmd/lmd-*.c))
objs_of    = $(patsubst %.c,$(BUILD)/%.o,$(1))
CMD_OBJS  := $(patsubst %.c,$(BUILD)/%.o,$(filter-out cmd/lmd-%,$(wildcard cmd/*.c)))
UNITS     := $(patsubst t/unit/%.c,$(BUILD)/t/%,$(wildcard t/unit/test-*.c))
TESTBINS  := $(patsubst t/%.c,$(BUILD)/t/%,$(wildcard t/gen-*.c))
FUZZERS   := $(patsubst t/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard t/fuzz/fuzz-*.c))

.SECONDARY:
.SECONDEXPANSION:
.PHONY: FORCE all test asan fuzz deps install clean demo gpu-check seed-table man
all: $(TOOLS) $(UNITS) $(TESTBINS)
	@echo "lmd: built $(words $(TOOLS)) tools; CUDA $(CUDA_NOTE)"

# The library is remade from scratch whenever CUDA is switched on or off (NO_CUDA) in the same build folder.
$(BUILD)/cuda-flavor: FORCE
	@mkdir -p $(@D)
	@echo '$(CUDA_NOTE)' | cmp -s - $@ || echo '$(CUDA_NOTE)' >$@

$(BUILD)/liblmd.a: $(CORE_OBJS) $(BUILD)/cuda-flavor
	@mkdir -p $(@D)
	$(Q)rm -f $@ && $(AR) rcs $@ $(CORE_OBJS)

$(BUILD)/libcmd.a: $(CMD_OBJS)
	@mkdir -p $(@D)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/bin/%: $(BUILD)/cmd/%.o $$(call objs_of,$$(wildcard cmd/$$*/*.c)) $(BUILD)/libcmd.a $(BUILD)/liblmd.a
	@mkdir -p $(@D)
	@echo "  LD    $@"
	$(Q)$(CC) $(LMD_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/t/%: $(BUILD)/t/unit/%.o $(BUILD)/libcmd.a $(BUILD)/liblmd.a
	@mkdir -p $(@D)
	@echo "  LD    $@"
	$(Q)$(CC) $(LMD_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/t/gen-%: $(BUILD)/t/gen-%.o $(BUILD)/libcmd.a $(BUILD)/liblmd.a
	@mkdir -p $(@D)
	@echo "  LD    $@"
	$(Q)$(CC) $(LMD_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	@echo "  CC    $<"
	$(Q)$(CC) $(CPPFLAGS) $(LMD_CFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(@D)
	@echo "  NVCC  $<"
	$(Q)$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# The git commit, for benchmark result files; rewritten only when it changes. A copy of the tree
# without .git (the GPU machine's) names it in a file COMMIT.
COMMIT_ID ?= $(shell git rev-parse --short HEAD 2>/dev/null || cat COMMIT 2>/dev/null || echo unknown)
$(BUILD)/commit.h: FORCE
	@mkdir -p $(@D); c='#define LMD_COMMIT "$(COMMIT_ID)"'; \
	  [ "$$(cat $@ 2>/dev/null)" = "$$c" ] || echo "$$c" > $@
$(BUILD)/cmd/lmd-bench/report.o: $(BUILD)/commit.h
FORCE:

# The tests: bats files under t/, counted by t/run (last line: "N passed, N failed").
test: all
	t/run

# The same tests with AddressSanitizer and UndefinedBehaviorSanitizer, in build-asan/.
asan:
	$(MAKE) BUILD=build-asan NO_CUDA=1 CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all
	ASAN_OPTIONS=detect_leaks=1 LMD_BUILD=build-asan t/run

# libFuzzer targets (clang), each run for FUZZ_SECONDS (default 20).
FUZZ_SECONDS ?= 20
# The parsers the fuzzers reach; the vectorized CPU kernels (GCC target attributes) stay out of clang's way.
FUZZ_OBJS := $(filter-out $(BUILD)/gpu/% $(BUILD)/common/engine/backend-cpu.o,$(CORE_OBJS))
$(BUILD)/libfuzz.a: $(FUZZ_OBJS)
	$(Q)$(AR) rcs $@ $^
fuzz:
	$(MAKE) BUILD=build-fuzz NO_CUDA=1 CC=clang WERROR= CFLAGS="-O1 -g -Wno-unknown-warning-option -fsanitize=fuzzer-no-link,address,undefined" build-fuzz/libfuzz.a
	@mkdir -p build-fuzz/fuzz
	@set -e; for f in t/fuzz/fuzz-*.c; do n=$$(basename $$f .c); \
	  clang $(CPPFLAGS) -std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=fuzzer,address,undefined $$f build-fuzz/libfuzz.a $(LDLIBS) -o build-fuzz/fuzz/$$n; \
	  mkdir -p build-fuzz/corpus/$$n; cp -n t/fuzz/corpus/$$n/* build-fuzz/corpus/$$n/ 2>/dev/null || true; \
	  echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
	  build-fuzz/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=build-fuzz/ build-fuzz/corpus/$$n \
	    >build-fuzz/$$n.log 2>&1 || { tail -n 30 build-fuzz/$$n.log; exit 1; }; tail -n 1 build-fuzz/$$n.log; done

# apt-get the Debian packages the build and the tests need: as root directly, else through sudo.
# libmicrohttpd: lmd-run serve's HTTP server. Node and npm (Debian's, unless npm is already there) run the
# tests' pinned npm packages (t/node/package.json and its lock: the official openai client), installed into
# t/node/node_modules, which git ignores.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEPS := build-essential jq python3-msgpack libjansson-dev libmsgpack-dev libcsv-dev libpcre2-dev libutf8proc-dev libreadline-dev libcurl4-openssl-dev bats mandoc clang libclang-rt-14-dev libmicrohttpd-dev curl chromium gnuplot-nox nginx-light
deps:
	$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEPS)
	command -v npm >/dev/null || $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
	cd t/node && npm ci --no-audit --no-fund --loglevel=error

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man7 $(DESTDIR)$(PREFIX)/share/lmd
	install -m 755 $(TOOLS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 man/*.7 $(DESTDIR)$(PREFIX)/share/man/man7/
	cp -r share/. $(DESTDIR)$(PREFIX)/share/lmd/

# The main job: convert the bundled lmd-tiny and tell a story on the CPU.
demo: all
	@BUILD=$(BUILD) share/demo.sh

# On a machine with an NVIDIA GPU: op tests, reference checks and benchmarks, results in $(OUT) (bench/gpu-check.sh).
gpu-check:
	bench/gpu-check.sh $(GPU_CHECK)

# On a machine with an NVIDIA GPU: the seeds' table (issue 14) into bench/results/<date>-seed-table.md and .csv
# (bench/seed-table.sh; PROMPTS=FILE adds speed on your own prompts).
seed-table:
	bench/seed-table.sh

# Rewrite the man pages' OPTIONS sections from the tools' option tables (t/man.bats checks them).
man: all
	man/update $(BUILD)

clean:
	rm -rf build build-asan build-fuzz
