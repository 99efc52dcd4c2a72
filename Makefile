# eventlog — the front door. `make help` lists the targets.
GO            ?= go
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
PKGS          := ./...
TEST_TIMEOUT  ?= 15m
INTEROP_GO    := interop/go
# The standard library's JSON v2 implementation behind the v1 API: same results,
# about 1.5x faster replay (see the README's benchmark figures).
GOEXPERIMENT  ?= jsonv2
export GOEXPERIMENT

.PHONY: help run test test-short bench lint build up clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

run: ## build ./bin/eventlog and run it with no servers needed
	$(GO) build -o bin/eventlog ./cmd/eventlog
	./bin/eventlog dev

test: ## run every test (PostgreSQL tests need EVENTLOG_TEST_POSTGRES_DSN, else they skip)
	$(GO) vet $(PKGS)
	$(GO) test -race -timeout $(TEST_TIMEOUT) $(PKGS)
	@# The interop tests of a second Go Kafka client, a module of their own; their
	@# result depends on the eventlog they build, which the test cache does not see.
	cd $(INTEROP_GO) && $(GO) vet ./... && $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

test-short: ## unit tests only, no race detector
	$(GO) test -short $(PKGS)

bench: ## run the benchmarks and print their figures
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

lint: ## go vet and staticcheck (pinned)
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)

build: ## build the binaries into ./bin
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/...

up: ## Kafka, PostgreSQL, writer and projector in containers (needs Docker)
	docker compose up -d --wait

clean: ## remove build output and the embedded mode's data
	rm -rf bin .eventlog
