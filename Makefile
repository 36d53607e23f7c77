# popek's front door. `make demo` and `make test` are all a fresh Debian 12
# machine needs; both install their dependencies first.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_GEN  := -G Ninja

.PHONY: all deps build build-asan test unit e2e demo bench clean

all: build

deps:
	./scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	cmake -S . -B $(ASAN_BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DPOPEK_SANITIZE=ON -DPOPEK_BENCH=OFF
	cmake --build $(ASAN_BUILD) -j $(JOBS)

# Every test, against the ASan/UBSan build of popek.
test: build build-asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j 2

unit: build-asan
	cd $(ASAN_BUILD) && ctest --output-on-failure -L unit

e2e: build-asan
	cd $(ASAN_BUILD) && ctest --output-on-failure -L e2e

demo: build
	./scripts/demo.sh $(BUILD)

bench: build
	./bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
