package main

import (
	"os"
	"sync/atomic"
	"time"

	"github.com/outpost-edge/outpost/edge/outbox"
)

// otaFault is a fault switch for the OTA tests' release builds, so that
// the bad releases they roll back are real edge binaries. Only a test
// build sets it (-ldflags "-X main.otaFault=panic", or another value
// below); every real build leaves it empty and this does nothing.
//
//   - panic: panics before main;
//   - hang: hangs before main (never ready);
//   - nocommit: the outbox is closed as soon as it is open, so that it
//     cannot commit while everything else (the intake, /v1/status) runs;
//   - unhealthy-late: the same, once /healthz has passed healthyProbes
//     times (it fails its health check late in the probation window);
//   - exit-early: once /healthz has answered healthy healthyProbes times,
//     the process exits with status 0 right after that answer (a release
//     that exits cleanly, but before its probation window ends).
var otaFault string

// healthyProbes is how many health checks an unhealthy-late build passes.
const healthyProbes = 3

func init() {
	switch otaFault {
	case "panic":
		panic("fault switch: panic at start")
	case "hang":
		for {
			time.Sleep(time.Hour)
		}
	}
}

// healthFault applies the health faults: before runs before each health
// check, answered after each healthy /healthz answer has been sent (nil:
// none).
func healthFault(ob *outbox.Outbox) (before func() error, answered func()) {
	switch otaFault {
	case "nocommit":
		_ = ob.Close()
	case "unhealthy-late":
		var n atomic.Int64
		return func() error {
			if n.Add(1) > healthyProbes {
				_ = ob.Close()
			}
			return nil
		}, nil
	case "exit-early":
		var n atomic.Int64
		return nil, func() {
			if n.Add(1) >= healthyProbes {
				os.Exit(0)
			}
		}
	}
	return nil, nil
}
