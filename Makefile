# imrecall — make help lists the targets.
GO      ?= go
BIN     := bin/imrecall
PKGS    := ./...

.PHONY: help build demo test test-race lint tidy fuzz chaos bench bench-e2e bench-scale bench-scale-purge bench-limiter clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/imrecall
	$(GO) build -o $(BIN) ./cmd/imrecall

demo: build ## the main job on the embedded default: purge a spammer (embedded Redis + emulator, no set-up)
	./$(BIN) demo

test: build ## run every test (starts private redis-servers on free ports; needs redis-server on PATH)
	$(GO) test -count=1 -p 1 -timeout 20m $(PKGS)

test-race: ## run every test with the race detector
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

chaos: build ## chaos suite, 50,000 messages: SIGKILLed workers, a Redis restart, faults, a throttle burst, Redis latency, interrupted planners (≈2 min; make test runs 20,000)
	IMRECALL_CHAOS_MESSAGES=50000 $(GO) test -count=1 -timeout 30m -run '^TestChaos$$' -v ./cmd/imrecall/

# Every parser of outside input, each fuzzed for FUZZTIME (CI runs them bounded).
FUZZTIME ?= 10s
FUZZ_TARGETS := ./msgindex:FuzzParseCallback ./api:FuzzDecodeJobRequest ./api:FuzzDecodeScheduleRequest ./producer:FuzzReadList ./producer:FuzzParseJSONLine ./tasks:FuzzDecode ./tim:FuzzDecodeResponse

fuzz: ## fuzz callback bodies, API requests, list files, task payloads and IM API responses, FUZZTIME each
	@set -e; for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg; done

tidy: ## go mod tidy
	$(GO) mod tidy

bench: bench-e2e bench-scale bench-scale-purge ## the end-to-end benchmarks of docs/BENCHMARKS.md (≈30 min; bench-limiter is separate)

bench-e2e: build ## purge user of 100,000 group + 5,000 one-to-one messages, with 1 and 4 worker processes (≈3 min)
	./$(BIN) bench e2e --workers 1,4

# Issue 17's scale bench: list files of SIZES messages, the emulator and the limiter both at SCALE_CAP calls/s.
SIZES     ?= 100000,1000000
SCALE_CAP ?= 5000

bench-scale: build ## list files of SIZES messages (10^5, 10^6; SIZES=...,10000000 for 10^7) at cap SCALE_CAP: Redis B/msg, peak RSS
	./$(BIN) bench scale --sizes $(SIZES) --cap $(SCALE_CAP) --workers 2

bench-scale-purge: build ## group purges of 10,000, 100,000 and 1,000,000 messages with 4 workers at the real cap: time and memory (≈13 min)
	./$(BIN) bench e2e --scale 10000,100000,1000000 --workers 4

bench-limiter: build ## P = 1,2,4 processes at the emulator's strict cap, 20 s each, three limiters compared (≈4 min)
	./$(BIN) bench limiter --procs 1,2,4 --duration 20s
	./$(BIN) bench limiter --modes imrecall --procs 2 --duration 20s --apis group_msg_recall,admin_msgwithdraw

clean: ## remove build output
	rm -rf bin
