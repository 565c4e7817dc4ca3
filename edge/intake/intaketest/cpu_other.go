//go:build !unix

package intaketest

import "time"

// processCPU is not measured here (cpu_unix.go).
func processCPU() time.Duration { return 0 }
