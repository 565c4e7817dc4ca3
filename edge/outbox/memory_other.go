//go:build !linux

package outbox

import bolt "go.etcd.io/bbolt"

// allocSlots returns n zeroed dedup slots from the heap (memory_linux.go
// maps them outside it).
func allocSlots(n int) ([]uint64, []byte) { return make([]uint64, n), nil }

func freeSlots([]byte) {}

// releaseMapped does nothing here (see memory_linux.go).
func releaseMapped(*bolt.DB, *bolt.Tx) {}
