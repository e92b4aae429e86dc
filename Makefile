# The two commands a user needs (see README.md):
#   make test   installs what is missing, builds, and runs every test
#   make run    installs what is missing, builds, and starts `runnel dev` (ARGS="--listen ...")
# Other targets: build (release build), bench (run the benchmarks), format, regen.
BUILD ?= build

.PHONY: all deps build test bench format check-format regen clean run

all: build

deps:
	@bash deploy/install-deps.sh

build: deps
	cmake -S . -B $(BUILD)/release -DCMAKE_BUILD_TYPE=Release -DRUNNEL_WERROR=ON >/dev/null
	cmake --build $(BUILD)/release -j$$(nproc)

test: deps
	@bash tests/run-all.sh

bench: build
	@bash tests/bench/run-all.sh $(BUILD)/release

format:
	@bash tests/check-format.sh --fix

check-format:
	@bash tests/check-format.sh

regen:
	python3 protocol/gen/generate.py --spec ../shared/kafka-protocol/messages \
	    --own-spec protocol/spec --out protocol/generated

clean:
	rm -rf $(BUILD)

run: build
	./$(BUILD)/release/agent/runnel dev $(ARGS)
