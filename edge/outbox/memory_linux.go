package outbox

import (
	"syscall"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// allocSlots returns n zeroed dedup slots in an anonymous mapping of their
// own, outside the Go heap. The slots hold no pointers, so the garbage
// collector need not see them; kept on the heap, they would count as live
// heap and let the collector wait for as much garbage again before it runs
// (GOGC=100): for a backlog of a million pairs, 12 MiB of table would let
// the heap hold 12 MiB more garbage. When the mapping fails they come from
// the heap. The pages are populated up front: the slots are spread by a
// hash, so every page is soon written, and faulting each in costs more.
func allocSlots(n int) ([]uint64, []byte) {
	size := n * 8
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_POPULATE)
	if err != nil {
		return make([]uint64, n), nil
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(mem))), n), mem
}

func freeSlots(mem []byte) {
	if mem != nil {
		syscall.Munmap(mem)
	}
}

// releaseMapped drops the pages of bbolt's file mapping from the process's
// resident set. bbolt maps the file shared and read-only and writes with
// pwrite, so every mapped page is a clean view of the page cache: dropping
// it loses nothing, and the next read of it faults it back in from the page
// cache (or the disk). tx must be open: bbolt moves the mapping only in a
// write transaction's commit, after every read transaction has ended, so
// while tx is open the mapping covers tx.Size() bytes at Info().Data.
// Unmapping costs about a microsecond a page on a small VM, and a call
// costs tens, so callers batch (readMapped).
func releaseMapped(db *bolt.DB, tx *bolt.Tx) {
	if size := tx.Size(); size > 0 {
		syscall.Syscall(syscall.SYS_MADVISE, db.Info().Data, uintptr(size), syscall.MADV_DONTNEED)
	}
}
