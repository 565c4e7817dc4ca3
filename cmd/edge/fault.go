package main

import (
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
//     times (it fails its health check late in the probation window).
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

// healthFault applies the outbox faults. Its result runs before each
// health check (nil: none).
func healthFault(ob *outbox.Outbox) func() error {
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
		}
	}
	return nil
}
