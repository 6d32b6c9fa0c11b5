# nnparity - build, test and demo.
#   make          library (build/libnnparity.a, build/libnnparity.so) and CLI (build/nnparity)
#   make demo     set-up, build, record the ViT example, and run `nnparity run` on its port with a bug
#   make check    set-up, build, every test (also under ASan+UBSan); last line is the summary
#   make fuzz     libFuzzer targets (clang), FUZZ_SECONDS each, then the file-system harness
#                 (tests/fs_hostile.py) for FUZZ_SECONDS more; `make fs-hostile` runs only that
#   make bench    benchmarks (bench/README.md)
#   make install  library, headers, CLI, pkg-config and CMake files, man pages, bash completion and
#                 the Python package under PREFIX (/usr/local), staged under DESTDIR if set;
#                 `make uninstall` with the same variables removes them (README.md, "Install")
# CC=clang builds with clang; WERROR=1 turns warnings into errors (CI=true, as CI sets it, does too).

CC      ?= gcc
OPT     ?= -O2
PYTHON  ?= /usr/bin/python3
BUILD   ?= build
WERROR  ?= $(CI)

WARN     = -Wall -Wextra -Wpedantic $(if $(WERROR),-Werror)
# -fopenmp-simd only honours `#pragma omp simd` in the hot loops; no OpenMP runtime is linked.
CFLAGS_ALL = -std=c11 $(OPT) -g -fPIC -fopenmp-simd $(WARN) $(CFLAGS)
CPPFLAGS_ALL = -D_GNU_SOURCE -Iinclude -Isrc $(CPPFLAGS)
LIBS     = -ljansson -lz -lpcre2-8 -lpthread -lm
# The CLI also writes PNG plots (nnparity run --plot FILE.png) and loads the MPI plugin (dlopen).
CLI_LIBS = -lpng -ldl

# The library's layers, lowest first (docs/architecture.md); each directory includes only the
# ones before it, which scripts/check_layers.sh checks in `make check`.
LAYERS   = common kernels dump formats compare diff capture relevance
LIB_SRC  = $(foreach l,$(LAYERS),$(wildcard src/$(l)/*.c))
CLI_SRC  = $(wildcard cli/*.c cli/*/*.c)
UNIT_SRC = $(wildcard tests/unit/test_*.c)
EXAMPLE_SRC = $(wildcard examples/*.c)
# ports written apart from a reference, as test material for pairing (tests/pairs/README.md)
PAIR_SRC = $(wildcard tests/pairs/*.c)

LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  = $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_BIN = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
EXAMPLE_BIN = $(EXAMPLE_SRC:examples/%.c=$(BUILD)/examples/%)
PAIR_BIN = $(PAIR_SRC:tests/pairs/%.c=$(BUILD)/pairs/%)

ASAN_BUILD = $(BUILD)/asan
ASAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

.PHONY: all lib cli examples pairs setup demo check check-clang check-layers test unit unit-asan unit-tsan fuzz fs-hostile bench clean
all: lib cli examples pairs

# The shared library's soname carries the API's major version (include/nnparity.h); the
# unversioned name is a link to it, for -lnnparity and for loading by path.
SOVERSION = $(shell sed -n 's/^\#define NNP_VERSION_MAJOR \([0-9]*\)$$/\1/p' include/nnparity.h)

lib: $(BUILD)/libnnparity.a $(BUILD)/libnnparity.so
cli: $(BUILD)/nnparity
examples: $(EXAMPLE_BIN)
pairs: $(PAIR_BIN)

# -MMD: each object (and program) depends on the headers it includes, listed in a .d file beside it.
DEPFLAGS = -MMD -MP

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) $(DEPFLAGS) -c $< -o $@
# A failing pair's hints (compare/hints.c) run some thirty short loops over a sample, which -O2's
# cost model leaves scalar: -O3 takes the hints a quarter less time (bench/README.md, "Profiles
# and hints"), with the same results (ISO C: no contraction, no reassociation of sums).
# (An OPT or CFLAGS given on the command line still decides.)
$(BUILD)/obj/src/compare/hints.o: OPT = -O3
# The CLI includes its own headers by their path under cli/ ("cli.h", "report/report.h"),
# from any of its directories.
$(CLI_OBJ): CPPFLAGS_ALL += -Icli

$(BUILD)/libnnparity.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libnnparity.so.$(SOVERSION): $(LIB_OBJ) src/libnnparity.map
	$(CC) -shared -Wl,--version-script=src/libnnparity.map -Wl,-soname,libnnparity.so.$(SOVERSION) $(CFLAGS_ALL) $(LIB_OBJ) -o $@ $(LIBS)

$(BUILD)/libnnparity.so: $(BUILD)/libnnparity.so.$(SOVERSION)
	ln -sf libnnparity.so.$(SOVERSION) $@

$(BUILD)/nnparity: $(CLI_OBJ) $(BUILD)/libnnparity.a
	$(CC) $(CFLAGS_ALL) $(CLI_OBJ) $(BUILD)/libnnparity.a -o $@ $(LIBS) $(CLI_LIBS)

# MPI: `nnparity diff --mpi` loads $(BUILD)/libnnparity_mpi.so (src/mpi/), made with mpicc when
# mpicc is found; nnparity and libnnparity never link MPI and build the same without it.
MPICC ?= $(shell command -v mpicc 2>/dev/null)
MPI_PLUGIN = $(if $(MPICC),$(BUILD)/libnnparity_mpi.so)
all: $(MPI_PLUGIN)

$(BUILD)/libnnparity_mpi.so: src/mpi/nnparity_mpi.c
	@mkdir -p $(dir $@)
	$(MPICC) -shared $(CPPFLAGS_ALL) $(CFLAGS_ALL) $(DEPFLAGS) $< -o $@

$(BUILD)/examples/%: examples/%.c $(BUILD)/libnnparity.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) $(DEPFLAGS) $< $(BUILD)/libnnparity.a -o $@ $(LIBS)

$(BUILD)/pairs/%: tests/pairs/%.c $(BUILD)/libnnparity.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) $(DEPFLAGS) $< $(BUILD)/libnnparity.a -o $@ $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libnnparity.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) -Itests/unit $(CFLAGS_ALL) $(DEPFLAGS) $< $(BUILD)/libnnparity.a -o $@ $(LIBS) -lcmocka

# The man pages and the bash completion are made from the built CLI's help text, their one
# source (scripts/gen_docs.py): nnparity.1 and nnparity-CMD.1 for every command it lists.
.PHONY: man completion
man: $(BUILD)/man/nnparity.1
completion: $(BUILD)/completion/nnparity
all: man completion

$(BUILD)/man/nnparity.1: $(BUILD)/nnparity scripts/gen_docs.py
	$(PYTHON) scripts/gen_docs.py man $< $(dir $@)

$(BUILD)/completion/nnparity: $(BUILD)/nnparity scripts/gen_docs.py
	$(PYTHON) scripts/gen_docs.py completion $< $@

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(UNIT_BIN:=.d) $(EXAMPLE_BIN:=.d) $(PAIR_BIN:=.d)

setup:
	@bash scripts/setup.sh

unit: $(UNIT_BIN)

# The C++ wrappers (include/nnparity.hpp) as a unit test, built as C++17 with the same warnings.
unit: $(BUILD)/tests/test_cpp_header
$(BUILD)/tests/test_cpp_header: tests/unit/test_cpp_header.cpp include/nnparity.hpp include/nnparity.h $(BUILD)/libnnparity.a
	@mkdir -p $(dir $@)
	$(CXX) -std=c++17 $(OPT) -g $(WARN) $(CFLAGS) -Iinclude $< $(BUILD)/libnnparity.a -o $@ $(LIBS) -lcmocka

# The same unit tests and CLI, rebuilt with AddressSanitizer and UndefinedBehaviorSanitizer.
unit-asan:
	@$(MAKE) --no-print-directory BUILD=$(ASAN_BUILD) OPT=-O1 CFLAGS="$(ASAN_FLAGS) $(CFLAGS)" unit cli examples pairs

# The threaded unit tests (capture sessions and their sketching helper, the thread pool of
# compare and stats, two dumps opened at once), rebuilt with ThreadSanitizer: no data race
# under many tapping threads.
TSAN_BUILD = $(BUILD)/tsan
TSAN_TESTS = test_capture_threads test_capture test_sketch test_metrics test_stats test_safetensors
unit-tsan:
	@$(MAKE) --no-print-directory BUILD=$(TSAN_BUILD) OPT=-O1 CFLAGS="-fsanitize=thread $(CFLAGS)" \
		$(TSAN_TESTS:%=$(TSAN_BUILD)/tests/%)

# The library and CLI must also build warning-free with clang.
check-clang:
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/clang CC=clang WERROR=1 lib cli

# Each layer includes only the layers below it; the CLI only the public header and its own.
check-layers:
	@bash scripts/check_layers.sh $(LAYERS)

# `make check` as the README gives it (no -j) builds its four builds with a job a core; a -j of
# the caller's is kept.
CHECK_JOBS = $(if $(filter -j%,$(MAKEFLAGS)),,-j$(shell nproc 2>/dev/null || echo 2))

test check: setup
	@$(MAKE) --no-print-directory check-layers
	@$(MAKE) --no-print-directory $(CHECK_JOBS) all unit
	@$(MAKE) --no-print-directory $(CHECK_JOBS) unit-asan
	@$(MAKE) --no-print-directory $(CHECK_JOBS) unit-tsan
	@$(MAKE) --no-print-directory $(CHECK_JOBS) check-clang
	@PYTHON=$(PYTHON) BUILD=$(BUILD) ASAN_BUILD=$(ASAN_BUILD) TSAN_BUILD=$(TSAN_BUILD) \
		bash tests/run_tests.sh

demo: setup all
	@bash examples/demo.sh $(BUILD)

fuzz:
	@$(MAKE) --no-print-directory -C fuzz FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60)
	@$(MAKE) --no-print-directory fs-hostile FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60)

# Every read-side command over hostile file systems (links, FIFOs, devices, files truncated
# while read, racing writers), with the sanitized CLI; `make check` runs its short mode
# (tests/run_tests.sh), this its long one: random runs for FUZZ_SECONDS (fuzz/README.md).
fs-hostile: lib
	@$(MAKE) --no-print-directory BUILD=$(ASAN_BUILD) OPT=-O1 CFLAGS="$(ASAN_FLAGS) $(CFLAGS)" cli
	@$(PYTHON) tests/fs_hostile.py --long --seconds $(or $(FUZZ_SECONDS),60) \
		--bin $(ASAN_BUILD)/nnparity --lib $(BUILD)/libnnparity.so

bench: setup all
	@bash bench/run.sh $(BUILD)

# Where `make install` puts things; each directory can be set on its own. DESTDIR stages the
# whole tree elsewhere (for packaging): files land in $(DESTDIR)$(PREFIX)/..., and the paths
# written into them (pkg-config, CMake, the Python package) are the final ones, under PREFIX.
# PYTHONDIR empty: the site-packages directory the interpreter uses for PREFIX.
# INSTALL_PYTHON=no leaves the Python package out. scripts/install.sh does the work, and
# uninstalls what it installs.
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
LIBDIR      ?= $(PREFIX)/lib
INCLUDEDIR  ?= $(PREFIX)/include
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
PYTHONDIR   ?=
INSTALL_PYTHON ?= yes
INSTALL_ENV = BUILD='$(BUILD)' DESTDIR='$(DESTDIR)' PREFIX='$(PREFIX)' BINDIR='$(BINDIR)' \
	LIBDIR='$(LIBDIR)' INCLUDEDIR='$(INCLUDEDIR)' MANDIR='$(MANDIR)' BASHCOMPDIR='$(BASHCOMPDIR)' \
	PYTHON='$(PYTHON)' PYTHONDIR='$(PYTHONDIR)' INSTALL_PYTHON='$(INSTALL_PYTHON)' CC='$(CC)'

.PHONY: install uninstall
install: lib cli man completion
	@$(INSTALL_ENV) bash scripts/install.sh install

uninstall:
	@$(INSTALL_ENV) bash scripts/install.sh uninstall

clean:
	rm -rf $(BUILD)
