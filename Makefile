# streamrun: build, run, test, bench. `make help` lists the targets.

CC      ?= cc
WARN     = -Wall -Wextra -Werror
CSTD     = -std=c11 -D_GNU_SOURCE
# Asked of pkg-config when make reads this file: the targets that install
# the packages first (run, test) build through a second make, started after
# `deps`, which reads it again.
LUAJIT_CFLAGS := $(shell pkg-config --cflags luajit 2>/dev/null)
LUAJIT_LIBS   := $(shell pkg-config --libs luajit 2>/dev/null)
# Named in each compile, so a missing LuaJIT says what to do.
NEED_LUAJIT = $(if $(LUAJIT_LIBS),,$(error pkg-config finds no LuaJIT: run `make deps`, as make run and make test do))
CFLAGS  ?= -O2 -g
ALL_CFLAGS = $(CSTD) $(WARN) $(CFLAGS) -fPIC $(LUAJIT_CFLAGS)
LIBS     = -lev -lmsgpackc -lrdkafka -lm -lmicrohttpd -lpthread
SAN      = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

# The runtime library: everything but the CLI and main (sr_lua is in it:
# each worker's VM is made there).
HOST_SRC = runtime/sr_main.c runtime/sr_cli.c
LIB_SRC  = $(filter-out $(HOST_SRC),$(wildcard runtime/*.c))
HEADERS  = $(wildcard runtime/*.h)
LIB_OBJ  = $(LIB_SRC:runtime/%.c=build/obj/%.o)
HOST_OBJ = $(HOST_SRC:runtime/%.c=build/obj/%.o)
ASAN_OBJ = $(LIB_SRC:runtime/%.c=build/asan/%.o)
# Tests link the library and the host's parts but main.
TEST_OBJ = $(ASAN_OBJ) build/asan/sr_cli.o
CTESTS   = $(patsubst spec/c/%.c,build/test/%,$(wildcard spec/c/test_*.c))

.PHONY: all deps run test test-c test-lua bench clean help
.SECONDARY: $(TEST_OBJ)

all: build/streamrun build/libstreamrun.so

help:
	@echo "make          build build/streamrun and build/libstreamrun.so"
	@echo "make run      install what is missing, build, run jobs/wordcount.lua for a few seconds"
	@echo "make test     every test (C units under ASan/UBSan, Busted specs, end to end, fuzz targets briefly)"
	@echo "make fuzz     the libFuzzer targets, FUZZ_SECONDS (default 20) each"
	@echo "make bench    the benchmarks beside their baselines (make bench-quick: under a minute)"
	@echo "make soak     the crash loop with hundreds of kills"

deps:
	@sh vendor/install.sh
	@mkdir -p build && touch build/.deps-checked

build/obj/%.o: runtime/%.c $(HEADERS)
	$(NEED_LUAJIT)@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

build/asan/%.o: runtime/%.c $(HEADERS)
	$(NEED_LUAJIT)@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SAN) -c $< -o $@

# -rdynamic exports the runtime's symbols so the embedded LuaJIT finds them
# through ffi.C; Busted outside the binary loads build/libstreamrun.so.
build/streamrun: $(LIB_OBJ) $(HOST_OBJ)
	$(CC) $(ALL_CFLAGS) -rdynamic -o $@ $^ $(LUAJIT_LIBS) $(LIBS) -ldl

build/libstreamrun.so: $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) -shared -o $@ $^ $(LIBS)

build/test/%: spec/c/%.c $(TEST_OBJ) spec/c/sr_test.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SAN) -Iruntime -o $@ $< $(TEST_OBJ) $(LUAJIT_LIBS) $(LIBS) -lcmocka

run: deps
	@$(MAKE) --no-print-directory all
	./build/streamrun run jobs/wordcount.lua --duration 3s

test: deps
	@$(MAKE) --no-print-directory all $(CTESTS) fuzz-build
	@FUZZ_TARGETS="$(FUZZ_BIN)" FUZZ_SECONDS=$(TEST_FUZZ_SECONDS) FUZZ_SEED=1 sh spec/run_all.sh $(CTESTS)

test-c: $(CTESTS)
	@sh spec/run_all.sh --c-only $(CTESTS)

test-lua: all
	@sh spec/run_all.sh --lua-only

# Fuzzing with libFuzzer (Debian's clang): the checkpoint and write-ahead log
# decoders under ASan/UBSan, from seeds the runtime's own writers make
# (spec/fuzz/gen_seeds.c). `make fuzz` runs each target FUZZ_SECONDS with a
# random seed; `make test` each TEST_FUZZ_SECONDS with seed 1, one test each.
.PHONY: fuzz fuzz-build
FUZZ_CC           ?= clang
FUZZ_SECONDS      ?= 20
TEST_FUZZ_SECONDS ?= 10
FUZZ_CFLAGS  = $(CSTD) $(WARN) -O1 -g $(LUAJIT_CFLAGS) -fno-omit-frame-pointer
FUZZ_OBJ     = $(LIB_SRC:runtime/%.c=build/fuzz/obj/%.o)
FUZZ_BIN     = build/fuzz/fuzz_checkpoint build/fuzz/fuzz_wal build/fuzz/fuzz_json
.SECONDARY: $(FUZZ_OBJ)

# UBSan checks stay recoverable here so spec/fuzz/ubsan.supp can name known
# bugs; UBSAN_OPTIONS=halt_on_error=1 makes every other report fatal.
build/fuzz/obj/%.o: runtime/%.c $(HEADERS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fPIC -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@

build/fuzz/fuzz_%: spec/fuzz/fuzz_%.c spec/fuzz/fuzz_common.h $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -Iruntime -o $@ $< $(FUZZ_OBJ) $(LUAJIT_LIBS) $(LIBS)

build/fuzz/gen_seeds: spec/fuzz/gen_seeds.c $(LIB_OBJ)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Iruntime -o $@ $< $(LIB_OBJ) $(LUAJIT_LIBS) $(LIBS)

build/fuzz/seeds/.done: build/fuzz/gen_seeds $(wildcard spec/fuzz/json_seeds/*)
	rm -rf build/fuzz/seeds
	mkdir -p build/fuzz/seeds/checkpoint build/fuzz/seeds/wal build/fuzz/seeds/json
	build/fuzz/gen_seeds build/fuzz/seeds/checkpoint build/fuzz/seeds/wal
	cp spec/fuzz/json_seeds/* build/fuzz/seeds/json/
	touch $@

fuzz-build: $(FUZZ_BIN) build/fuzz/seeds/.done

fuzz: fuzz-build
	@FUZZ_TARGETS="$(FUZZ_BIN)" FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_SEED=0 sh spec/run_all.sh --fuzz-only

clean:
	rm -rf build

# Benchmarks (SPEC section 13, spec/bench/run.lua): inputs are generated into
# build/bench-data/ and reused; the table also goes to build/bench.json.
.PHONY: bench-quick

build/wc_baseline: spec/bench/wc_baseline.c
	@mkdir -p $(@D)
	$(CC) -O2 -o $@ $<

bench: all build/wc_baseline
	@luajit spec/bench/run.lua

bench-quick: all build/wc_baseline
	@luajit spec/bench/run.lua --quick

# The crash loop of spec/e2e/crash_spec.lua at length: 500 kills of its
# text_file job and 200 of its listen_text job (`make test` runs 50 and 20),
# with a new seed each time, printed with the counts (STREAMRUN_CRASH_SEED=N
# repeats one; STREAMRUN_CRASH_KEEP=1 keeps a failing run's directory).
.PHONY: soak
soak: all
	@STREAMRUN_CRASH_KILLS=500 STREAMRUN_CRASH_LISTEN_KILLS=200 \
	  STREAMRUN_CRASH_DIR_KILLS=200 STREAMRUN_CRASH_TAIL_KILLS=200 \
	  STREAMRUN_CRASH_SEED=$${STREAMRUN_CRASH_SEED:-$$(date +%s)} \
	  busted spec/e2e/crash_spec.lua spec/e2e/text_dir_resume_spec.lua spec/e2e/tail_resume_spec.lua
