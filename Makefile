# popek's front door. `make demo` and `make test` are all a fresh Debian 12
# machine needs; both install their dependencies first.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc)
CMAKE_GEN  := -G Ninja

.PHONY: all deps build build-asan build-fuzz fuzz test unit e2e demo bench clean

all: build

deps:
	./scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	cmake -S . -B $(ASAN_BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DPOPEK_SANITIZE=ON -DPOPEK_BENCH=OFF \
	  -DPOPEK_LINUX_GUEST=OFF -DPOPEK_OPT_BUILD_DIR=$(abspath $(BUILD))
	cmake --build $(ASAN_BUILD) -j $(JOBS)

# The libFuzzer targets (clang) in a build directory of their own.
build-fuzz: deps
	cmake -S . -B $(FUZZ_BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DPOPEK_FUZZ=ON -DPOPEK_BENCH=OFF -DBUILD_TESTING=OFF \
	  -DPOPEK_LINUX_GUEST=OFF
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_targets

# Five minutes per fuzz target.
fuzz: build-fuzz
	FUZZ_BUILD=$(FUZZ_BUILD) ./fuzz/run.sh 300

# Every test, against the ASan/UBSan build of popek, then 20 s per fuzz target.
test: build build-asan build-fuzz
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j 2
	FUZZ_BUILD=$(FUZZ_BUILD) ./fuzz/run.sh 20

unit: build-asan
	cd $(ASAN_BUILD) && ctest --output-on-failure -L unit

e2e: build-asan
	cd $(ASAN_BUILD) && ctest --output-on-failure -L e2e

# The probe on KVM, then the stock Debian kernel on popek's emulation engine
# (a shell on its console when run from a terminal).
demo: build
	./scripts/demo.sh $(BUILD)
	./scripts/demo-linux.sh $(BUILD)

bench: build
	./bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
