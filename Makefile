# deltaedit: `make demo` and `make test` do all set-up on a fresh Debian 12 machine.
JOBS ?= 2
BUILD ?= build
CMAKE_FLAGS ?=
# ccache (installed by scripts/install-deps.sh) with paths taken relative to the checkout, so
# every clone on a machine shares its objects.
ifneq ($(shell command -v ccache 2>/dev/null),)
LAUNCHER := -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache
export CCACHE_BASEDIR := $(CURDIR)
endif

PREFIX ?= /usr/local

.PHONY: all deps venv build build-all test demo install sanitize fuzz ci bench readme-ops format clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(LAUNCHER) $(CMAKE_FLAGS) >/dev/null

# The CLI only (what `make demo` needs).
build: deps $(BUILD)/CMakeCache.txt
	@cmake --build $(BUILD) -j$(JOBS) --target cli

# Everything: CLI, tests, benchmarks.
build-all: deps $(BUILD)/CMakeCache.txt
	@cmake --build $(BUILD) -j$(JOBS)

# deltaedit, deltaedit-torch and the shipped model pair under $(PREFIX) (bin/, share/deltaedit/zoo).
install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

# The interop judges' Python venv (requirements-interop.txt), kept outside the clone.
venv: deps
	@scripts/venv.sh

test: build-all venv
	@cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

demo: build
	@scripts/demo.sh $(BUILD)/deltaedit

# Unit tests under AddressSanitizer + UndefinedBehaviorSanitizer (clang, without libtorch).
sanitize: deps
	@CC=clang CXX=clang++ cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DDELTAEDIT_SANITIZE=ON \
	  -DDELTAEDIT_WITH_TORCH=OFF -DDELTAEDIT_BENCH=OFF $(LAUNCHER) >/dev/null
	@cmake --build build-asan -j$(JOBS)
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j$(JOBS)

# libFuzzer targets on their seed corpora, FUZZ_SECONDS each.
FUZZ_SECONDS ?= 60
fuzz: deps
	@CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDELTAEDIT_SANITIZE=ON \
	  -DDELTAEDIT_FUZZ=ON -DDELTAEDIT_WITH_TORCH=OFF -DDELTAEDIT_TESTS=OFF -DDELTAEDIT_BENCH=OFF $(LAUNCHER) >/dev/null
	@cmake --build build-fuzz -j$(JOBS)
	@scripts/run-fuzzers.sh build-fuzz $(FUZZ_SECONDS)

bench: build-all
	@bench/run.sh $(BUILD)

# README's operations table is rendered from the ops' schema (a test checks it).
readme-ops: build
	@$(BUILD)/deltaedit ops --markdown > $(BUILD)/ops-table.md
	@awk -v table=$(BUILD)/ops-table.md '/^<!-- ops table: generated/ {print; while ((getline l < table) > 0) print l; skip=1; next} /^<!-- end of ops table -->/ {skip=0} !skip' README.md > $(BUILD)/README.new && mv $(BUILD)/README.new README.md

format:
	@clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf $(BUILD) build-asan build-fuzz
