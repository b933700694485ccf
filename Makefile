# Sluice. `make run` starts the whole pipeline on embedded defaults;
# `make test` runs every test.
GO        ?= go
BIN       := bin/sluice
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
TESTFLAGS ?= -race -count=1 -timeout 15m

.PHONY: all build run test test-short vet fmt bench loadgen clean

all: build

build: ## build bin/sluice
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/sluice

run: build ## sluice dev: embedded Kafka, Redis and mock LLM, producer and consumer
	./$(BIN) dev

test: ## every test, race detector on
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) ./...

test-short: ## the fast tests only
	$(GO) test -race -short ./...

vet:
	$(GO) vet ./...

fmt:
	gofmt -s -w $$(git ls-files '*.go')

bench: ## Go benchmarks (see docs/benchmarks.md for the load generator)
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin
