#!/usr/bin/env bash
# The edge on small hardware (docs/SCALING.md, "The edge on small hardware"): the outbox against raw
# bbolt puts, the outbox on a slow disk, the MQTT intake against plain
# mochi, and HTTP batches of 100, each measured against its ceiling in the
# same run. It prints the benchmarks' lines, then their ratios and rates in
# one table. BENCHTIME (default 20000x) sets each benchmark's events.
set -euo pipefail

go="${GO:-go}"
benchtime="${BENCHTIME:-20000x}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

run() { # package, benchmark pattern
	"$go" test -run '^$' -bench "$2" -benchtime "$benchtime" $GOTESTFLAGS "$1" | tee -a "$out"
}
GOTESTFLAGS="${GOTESTFLAGS:-}"
run ./edge/outbox 'BenchmarkAppend$|BenchmarkAppendSlowDisk'
run ./edge/intake 'BenchmarkVersusMochi'
run ./cmd/edge 'BenchmarkIntakeVersusMochi|BenchmarkHTTPBatches'

echo
echo "== the edge on small hardware: ratios to the ceiling measured in the same run, and rates"
awk '/^Benchmark/ {
	line = $1
	for (i = 3; i < NF; i++) {
		if ($(i+1) ~ /^(ratio_|events\/s$|events\/commit$|msgs\/s$|mochi_msgs\/s$|raw_puts\/s$|x_fsync_per_event$|ms\/commit$|cpu_ns\/|raw_cpu_ns\/|mochi_cpu_ns\/|p50-µs$|fsync-p50-µs$)/) {
			line = line "  " $(i+1) "=" $i
		}
	}
	print line
}' "$out"
