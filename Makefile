# Outpost developer targets. `make test` is what CI runs (.ci/run).
GO          ?= go
GOTESTFLAGS ?=
TESTTIMEOUT ?= 12m
BENCHTIME   ?= 1s
FUZZTIME    ?= 10s

.PHONY: build test test-short test-ota bench fuzz lint check-deps clean release screenshots

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

## test-short: the inner loop, with -short: the end-to-end suites that run
## real programs (internal/e2e, cmd/sim) are skipped and the outbox's kill
## -9 test makes 3 kills instead of 50. make test runs everything in full.
## PKG narrows it (make test-short PKG=./edge/...).
PKG ?= ./...
test-short: check-deps
	$(GO) test -short -count=1 -timeout 5m $(GOTESTFLAGS) $(PKG)

## test-ota: the OTA suites alone (docs/OTA.md, Tests), failure matrix
## over real edge builds and kill -9 crash injection included, and the
## cloud's release side (cloud/release, cloud release, the repository
## served by cloud serve, make release built twice); -short skips the
## slow ones, make test runs them.
test-ota:
	$(GO) test -race -count=1 -timeout 10m $(GOTESTFLAGS) ./firmware/... ./edge/ota/... ./internal/mochiutil/... ./cloud/release/...
	$(GO) test -race -count=1 -timeout 10m $(GOTESTFLAGS) -run 'Release' ./cmd/cloud/
	$(GO) test -race -count=1 -timeout 10m $(GOTESTFLAGS) -run 'OTA|Systemd|Supervise|Watchdog|Notifies|SelfProbation|Healthz|Expired' ./cmd/edge/

## release: cross-builds the edge for linux/amd64, linux/arm64 and
## linux/arm/v7 into dist/VERSION, reproducibly (scripts/release.sh: the
## same commit gives the same bytes), each ready for `cloud release sign`.
## make release VERSION=1.4.2 [ARCHES="linux/arm64"] [COMMIT=...]
VERSION ?=
release:
	GO=$(GO) VERSION=$(VERSION) scripts/release.sh

bench: check-deps
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(GOTESTFLAGS) ./...

## bench-edge: the edge on small hardware (docs/SCALING-edge.md): outbox
## vs raw bbolt, the outbox on a 5 and 20 ms fsync, MQTT intake vs plain
## mochi, HTTP batches of 100; prints the ratios in a table at the end.
## EDGE_BENCHTIME sets the events per benchmark.
.PHONY: bench-edge
EDGE_BENCHTIME ?= 20000x
bench-edge: check-deps
	GO=$(GO) BENCHTIME=$(EDGE_BENCHTIME) GOTESTFLAGS="$(GOTESTFLAGS)" scripts/bench-edge.sh

fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

lint:
	@out="$$(gofmt -l .)" || exit 1; \
	if [ -n "$$out" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## screenshots: regenerates the back office's screenshots in
## docs/backoffice/ (PNG, shown by docs/BACKOFFICE.md) by running its
## browser test against a real cloud. Needs Chromium: fails without it.
screenshots:
	mkdir -p docs/backoffice
	OUTPOST_SCREENSHOTS=$(CURDIR)/docs/backoffice OUTPOST_REQUIRE_BROWSER=1 \
		$(GO) test -count=1 -run '^TestBackOfficeInBrowser$$' ./cmd/cloud

## check-deps: fails, printing the install command, when what the tests
## need is missing. Installs nothing.
check-deps:
	@scripts/check-deps.sh

clean:
	rm -rf bin

## demo: the first thing to run. Builds everything, starts a private
## Postgres (or uses OUTPOST_DATABASE_URL), the cloud and 3 stores of 4
## devices; runs about a minute with an uplink outage and an edge crash,
## with live progress; ends with the verifier's verdict and where to look
## next (docs/SIMULATOR.md). DEMOFLAGS passes more `sim run` flags.
DEMOFLAGS ?=
## soak: every fault type in turns for SOAK_DURATION, then the verdict.
## Not part of `make test`. SOAKFLAGS passes more `sim run` flags.
SOAK_DURATION ?= 10m
SOAKFLAGS     ?=

.PHONY: demo soak

demo: build
	bin/sim run --scenario demo $(DEMOFLAGS)

soak: build
	bin/sim run --scenario soak --duration $(SOAK_DURATION) --hold no $(SOAKFLAGS)

## soak-crash: the outbox's kill -9 crash test with CRASH_ITERATIONS kills
## (make test runs 50). Not part of `make test`.
CRASH_ITERATIONS ?= 500
.PHONY: soak-crash
soak-crash:
	OUTPOST_CRASH_ITERATIONS=$(CRASH_ITERATIONS) $(GO) test -count=1 -timeout 60m -run '^TestCrashRecovery$$' -v ./edge/outbox/
