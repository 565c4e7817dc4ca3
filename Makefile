# Outpost developer targets. `make test` is what CI runs (.ci/run).
GO          ?= go
GOTESTFLAGS ?=
TESTTIMEOUT ?= 12m
BENCHTIME   ?= 1s
FUZZTIME    ?= 10s

.PHONY: build test bench fuzz lint check-deps clean

build:
	@if [ -d cmd ] && [ -n "$$($(GO) list ./cmd/... 2>/dev/null)" ]; then \
		mkdir -p bin && $(GO) build -o bin/ ./cmd/... ; \
	else \
		echo "build: no packages under cmd/ yet"; \
	fi

## test: the whole suite with the race detector. Needs the PostgreSQL
## server binaries (see check-deps) or OUTPOST_TEST_DATABASE_URL.
test: check-deps
	$(GO) test -race -count=1 -timeout $(TESTTIMEOUT) $(GOTESTFLAGS) ./...

bench: check-deps
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(GOTESTFLAGS) ./...

fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

lint:
	@out="$$(gofmt -l .)" || exit 1; \
	if [ -n "$$out" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## check-deps: fails, printing the install command, when what the tests
## need is missing. Installs nothing.
check-deps:
	@scripts/check-deps.sh

clean:
	rm -rf bin
