//go:build !unix

package outbox_test

import "time"

// processCPU is not measured here (cpu_unix_test.go).
func processCPU() time.Duration { return 0 }
