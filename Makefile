# streamrun: build, run, test, bench. `make help` lists the targets.

CC      ?= cc
WARN     = -Wall -Wextra -Werror
CSTD     = -std=c11 -D_GNU_SOURCE
LUAJIT_CFLAGS := $(shell pkg-config --cflags luajit 2>/dev/null)
LUAJIT_LIBS   := $(shell pkg-config --libs luajit 2>/dev/null)
CFLAGS  ?= -O2 -g
ALL_CFLAGS = $(CSTD) $(WARN) $(CFLAGS) -fPIC $(LUAJIT_CFLAGS)
LIBS     = -lev -lmsgpackc -lm
SAN      = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

# The runtime library: everything but the CLI and the Lua VM host.
HOST_SRC = runtime/sr_main.c runtime/sr_cli.c runtime/sr_lua.c
LIB_SRC  = $(filter-out $(HOST_SRC),$(wildcard runtime/*.c))
HEADERS  = $(wildcard runtime/*.h)
LIB_OBJ  = $(LIB_SRC:runtime/%.c=build/obj/%.o)
HOST_OBJ = $(HOST_SRC:runtime/%.c=build/obj/%.o)
ASAN_OBJ = $(LIB_SRC:runtime/%.c=build/asan/%.o)
# Tests link the library and the host's parts but main.
TEST_OBJ = $(ASAN_OBJ) build/asan/sr_cli.o build/asan/sr_lua.o
CTESTS   = $(patsubst spec/c/%.c,build/test/%,$(wildcard spec/c/test_*.c))

.PHONY: all deps run test test-c test-lua bench clean help
.SECONDARY: $(TEST_OBJ)

all: build/streamrun build/libstreamrun.so

help:
	@echo "make          build build/streamrun and build/libstreamrun.so"
	@echo "make run      install what is missing, build, run jobs/wordcount.lua for a few seconds"
	@echo "make test     every test (C units under ASan/UBSan, Busted specs, end to end)"
	@echo "make bench    the benchmarks"

deps:
	@sh vendor/install.sh

build/obj/%.o: runtime/%.c $(HEADERS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

build/asan/%.o: runtime/%.c $(HEADERS)
	@mkdir -p $(@D)
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

run: deps all
	./build/streamrun run jobs/wordcount.lua --duration 3s

test: deps all $(CTESTS)
	@sh spec/run_all.sh $(CTESTS)

test-c: $(CTESTS)
	@sh spec/run_all.sh --c-only $(CTESTS)

test-lua: all
	@sh spec/run_all.sh --lua-only

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
