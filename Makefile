# Sluice. `make run` starts the whole pipeline on embedded defaults;
# `make test` runs every test.
GO        ?= go
BIN       := bin/sluice
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
TESTFLAGS ?= -race -count=1 -timeout 15m
# Fuzz targets, as package:Name (Go fuzzes one target per run), and how
# long `make test` fuzzes each.
FUZZ_TARGETS := ./shared/envelope:FuzzDecodeRequest ./shared/envelope:FuzzDecodeReply \
	./shared/callback:FuzzPolicyCheck ./producer:FuzzPostChat \
	./shared/pii:FuzzMask ./shared/pii:FuzzStreamMask ./consumer/llm/faq:FuzzBest
FUZZTIME ?= 3s
# Flags of `make loadgen`, e.g. LOADGEN_ARGS='--users 200 --duration 20s --mode async'.
LOADGEN_ARGS ?= --users 50 --duration 10s

.PHONY: all build run test test-short fuzz-short vet fmt bench bench-cpu bench-floor bench-lanes loadgen lab verify-k8s clean

all: build

build: ## build bin/sluice
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/sluice

run: build ## sluice dev: embedded Kafka, Redis and mock LLM, producer and consumer
	./$(BIN) dev

test: ## every test, race detector on, then each fuzz target briefly
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) $$($(GO) list ./... | grep -v '/tests$$')
	@# The end-to-end and multi-process tests last, alone: some of them
	@# measure what the door admits while answers are fast, which 2 cores
	@# shared with the other packages' tests do not give.
	$(GO) test $(TESTFLAGS) ./tests
	@$(MAKE) --no-print-directory fuzz-short

# A failing input is written to the package's testdata/fuzz/<Name>/: commit
# it with the fix, and it is a regression test of every `go test` after.
fuzz-short: ## each fuzz target for FUZZTIME (make fuzz-short FUZZTIME=1m)
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) "$${t%%:*}"; \
	done

test-short: ## the fast tests only
	$(GO) test -race -short ./...

vet:
	$(GO) vet ./...

fmt:
	gofmt -s -w $$(git ls-files '*.go')

bench: ## Go benchmarks of the hot functions (make bench-cpu measures the processes)
	$(GO) test -run '^$$' -bench . -benchmem ./...

# CPU time and system calls per answered request of each process (issue 15,
# docs/benchmarks.md "CPU per answer"): sluice bench starts the broker, a
# producer and a consumer as separate processes and drives 600/s and 2000/s
# open loop, 3 runs each; on a quiet machine only. BENCH_ARGS adds flags,
# e.g. BENCH_ARGS='--rates 600 --runs 5 --profile-dir bin/prof --json'.
BENCH_ARGS ?=
bench-cpu: build ## sluice bench: CPU µs and syscalls per answer at fixed rates
	./$(BIN) bench $(BENCH_ARGS)

# The floor of issue 15 (docs/benchmarks.md "The floor"): CPU and syscalls
# per operation of the minimal exchanges one answer makes (HTTP POST, Kafka
# produce and consume, Redis round trip, the pacing alone), each side a
# process of its own, at the same rates, and their sum for one answer
# against the 150 µs target. BENCH_ARGS adds flags as for bench-cpu.
bench-floor: build ## sluice bench --floor: the least one answer's exchanges cost
	./$(BIN) bench --floor $(BENCH_ARGS)

# What a bots' backlog does to the storefront, two lanes against one (issue
# 13, docs/benchmarks.md "Two lanes"): sluice bench --lanes deploys the
# broker and mock LLM (300 ms), one producer and one consumer as separate
# processes per run, and runs the interactive load alone, with 50,000 bulk
# requests queued on two lanes, and the same on one lane, twice each (about
# 10 minutes). LANES_ARGS adds flags, e.g. LANES_ARGS='--scenarios two --runs 1'.
LANES_ARGS ?=
bench-lanes: build ## sluice bench --lanes: interactive latency and bulk throughput, two lanes vs one
	./$(BIN) bench --lanes --out bin/lanes $(LANES_ARGS)

# Against `make run` in another terminal: the API on 127.0.0.1:8080 and the
# dev token secret are loadgen's defaults (docs/benchmarks.md).
loadgen: build ## sluice loadgen against `make run`; flags in LOADGEN_ARGS
	./$(BIN) loadgen $(LOADGEN_ARGS)

# The autoscaling lab (docs/autoscaling.md): the built-in 30x flash sale
# against consumer processes scaled by the HPA; plot, CSV and summary in
# LAB_OUT. LAB_ARGS adds flags (--signal lag, --sim, --profile FILE...).
LAB_OUT ?= bin/lab
lab: build ## sluice lab: the HPA loop on a flash sale; outputs in LAB_OUT
	./$(BIN) lab --out $(LAB_OUT) $(LAB_ARGS)

# Server-side dry run of the deploy files on a real kube-apiserver and etcd
# (docs/kubernetes.md). The first run builds kube-apiserver and caches it;
# SLUICE_K8S_RENDERED adds directories of YAML to check.
verify-k8s: ## dry-run the Kubernetes objects on a real kube-apiserver
	tests/k8s/verify.sh

clean:
	rm -rf bin
