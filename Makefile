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
	$(GO) test -race -count=1 -timeout 10m $(GOTESTFLAGS) ./simulator/ota/
	$(GO) test -race -count=1 -timeout 10m $(GOTESTFLAGS) -run 'OTA' ./cmd/sim/

## release: cross-builds the edge for linux/amd64, linux/arm64 and
## linux/arm/v7 into dist/VERSION, reproducibly (scripts/release.sh: the
## same commit gives the same bytes), each ready for `cloud release sign`.
## make release VERSION=1.4.2 [ARCHES="linux/arm64"] [COMMIT=...]
VERSION ?=
release:
	GO=$(GO) VERSION=$(VERSION) scripts/release.sh

bench: check-deps
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(GOTESTFLAGS) ./...

## bench-edge: the edge on small hardware (docs/SCALING.md, "The edge on small hardware"): outbox
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
## DEMO_TRANSPORT: the edges' uplink in the demo, mqtt (default) or nats
## (the cloud's embedded nats-server with JetStream): make demo DEMO_TRANSPORT=nats.
DEMO_TRANSPORT ?= mqtt
## soak: every fault type in turns for SOAK_DURATION, then the verdict.
## Not part of `make test`. SOAKFLAGS passes more `sim run` flags.
SOAK_DURATION ?= 10m
SOAKFLAGS     ?=

.PHONY: demo soak

demo: build
	bin/sim run --scenario demo --transport $(DEMO_TRANSPORT) $(DEMOFLAGS)

soak: build
	bin/sim run --scenario soak --duration $(SOAK_DURATION) --hold no $(SOAKFLAGS)

## demo-ota: `sim run --scenario ota` in full (docs/SIMULATOR.md, "The OTA
## scenario"): OTA_STORES edges under edge supervise, a good release rolled
## out in stages to all, then a bad one (OTA_BAD: panic, hang or
## late-health) with a fifth of the edges offline, with live progress and
## the verdict. Not part of `make test` (TestOTAScenario, its short form,
## is). OTAFLAGS passes more `sim run` flags.
OTA_STORES ?= 20
OTA_BAD    ?= late-health
OTAFLAGS   ?=
.PHONY: demo-ota
demo-ota: build
	bin/sim run --scenario ota --stores $(OTA_STORES) --bad $(OTA_BAD) $(OTAFLAGS)

## soak-crash: the outbox's kill -9 crash test with CRASH_ITERATIONS kills
## (make test runs 50). Not part of `make test`.
CRASH_ITERATIONS ?= 500
.PHONY: soak-crash
soak-crash:
	OUTPOST_CRASH_ITERATIONS=$(CRASH_ITERATIONS) $(GO) test -count=1 -timeout 60m -run '^TestCrashRecovery$$' -v ./edge/outbox/

## bench-fleet: `sim load` in every scenario at full size (docs/SCALING.md):
## a reconnect storm (FLEET_EDGES edges, each with a backlog of
## FLEET_BACKLOG events, connecting within 10s) over the embedded MQTT
## broker, the embedded nats-server, a private Mosquitto (when mosquitto is
## on PATH) and a 3-node JetStream cluster; then steady traffic (2 events/s
## per edge for FLEET_DURATION) and saturation over MQTT and NATS. Each run
## starts its own Postgres and cloud, measures the COPY ceiling first, and
## prints its figures as ratios to it; the JSON reports go to
## FLEET_DIR/<scenario>.json. Not part of `make test` (its short form,
## TestLoadShort, is). FLEETFLAGS passes more `sim load` flags.
FLEET_EDGES    ?= 1000
FLEET_BACKLOG  ?= 10000
FLEET_DURATION ?= 60s
FLEET_DIR      ?= bin/bench-fleet
FLEETFLAGS     ?=
.PHONY: bench-fleet
bench-fleet: build
	@mkdir -p $(FLEET_DIR)
	@fail=0; for s in storm:mqtt:embedded storm:nats:embedded storm:mqtt:mosquitto storm:nats:nats-cluster \
		steady:mqtt:embedded steady:nats:embedded saturate:mqtt:embedded saturate:nats:embedded; do \
		sc=$${s%%:*}; rest=$${s#*:}; tr=$${rest%%:*}; br=$${rest#*:}; \
		if [ $$br = mosquitto ] && ! command -v mosquitto >/dev/null; then echo "== $$s: skipped, no mosquitto on PATH"; continue; fi; \
		echo "== $$sc over $$tr ($$br broker)"; \
		args="--scenario $$sc --transport $$tr --broker $$br --edges $(FLEET_EDGES) --report $(FLEET_DIR)/$$sc-$$tr-$$br.json"; \
		case $$sc in storm) args="$$args --backlog $(FLEET_BACKLOG)";; steady|saturate) args="$$args --duration $(FLEET_DURATION)";; esac; \
		log=$(FLEET_DIR)/$$sc-$$tr-$$br.log; \
		bin/sim load $$args $(FLEETFLAGS) >$$log 2>&1 || { fail=1; tail -n 20 $$log; }; \
		sed -n '/^load: COPY ceiling/p; /^load report/,/verdict/p' $$log; \
	done; exit $$fail
