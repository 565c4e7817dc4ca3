// Package outbox is the edge's durable store of records on their way to the
// cloud: a bbolt file that takes device events, makes them records of the
// edge's stream (seq, hash chain, edge_time, a signed checkpoint) and keeps
// them until a receipt from the cloud lets it forget them.
//
// # Use
//
// The intake appends with AppendFunc (or AppendAsync, Append) and
// acknowledges a device only when its callback runs (or the Pending is
// done): by then the record is on disk (fsync). The
// uplink reads with Segment from the cloud's watermark + 1, waits for more
// with Wait, and calls Trim with each verified receipt. State reports the
// backlog, quotas and health. Verify, Inspect and Export are the offline
// tools; they open the file read-only and refuse (ErrLocked) while the
// daemon holds it.
//
// # Group commit
//
// Appends are not written one by one. A builder goroutine takes everything
// queued since the last commit (up to Options.MaxBatch entries, whole calls
// only) and prepares it: seqs without gaps, prev hashes (Record.LinkHash of
// the record before), edge_time from one hybrid logical clock, dedup,
// quotas. It signs one checkpoint per run of records, a run being cut so
// that it fits in a segment of Options.SegmentBytes. A committer goroutine
// writes the batch in one bbolt transaction and one commit (fsync), then
// releases every caller of the batch. The builder prepares the next batch
// while the committer syncs, and requests queue for the one after. Records
// are encoded from templates made by protocol.Record.Encode (see codec.go)
// and stored as those exact bytes; a record's hash is SHA-256 of them.
// bbolt's own db.Batch is not used: it may run a function twice.
//
// # Buckets
//
//	meta         version, edge, epoch, created; head (seq, link hash,
//	             edge_time); base (the last trimmed seq and its link hash);
//	             hwm (the last receipt's watermark, head, commit time, kid);
//	             bytes per class; shed count and shed cursor; quotas as of
//	             the last open (for Inspect)
//	records      seq (8 bytes, big-endian) -> the record's CBOR bytes, or
//	             its tombstone's once shed
//	checkpoints  seq -> signed checkpoint (COSE_Sign1) for the run ending at seq
//	index        seq -> the index blob of the run ending at seq: per record
//	             its edge_time, class, device and event id (store.go)
//
// All keys grow at the end, so every bucket is an append-mostly B-tree.
//
// # Invariants
//
//   - The stored records are exactly base+1..head, and each record's prev
//     is the link hash of the one before (the base hash for the first).
//   - Every stored record is covered by a stored, signed checkpoint at or
//     after its seq (the end of its run), whose head is the chain's link
//     hash there; there is a checkpoint at head. No checkpoint is kept at or
//     below base: a resend starts at hwm+1 and ends on a later one.
//   - base <= hwm <= head. Records above hwm are deleted only by Trim after
//     a receipt, never by a quota.
//   - meta's head and byte counts match the records (Verify checks them).
//   - A (device, id) pair appended inside the dedup window maps to one seq.
//     The window's cutoff moves with real time, not with steps of the wall
//     clock (window.go).
//     The table of pairs lives in memory and is rebuilt at Open from the
//     index blobs, which are kept until their records are trimmed and the
//     window has passed. The table holds hashes; a hit counts only once the
//     index entry (or the batch) confirms the pair, and colliding pairs each
//     keep their own slot (dedup.go), so dedup is exact.
//   - Ledger records are never shed or dropped: when their quota is full new
//     ones get ErrLedgerQuota. Telemetry is shed oldest first when its quota
//     is full: the record is replaced in place by its tombstone
//     (protocol.Tombstone), whose link hash is the shed record's hash, so the
//     chain and every checkpoint still verify. Tombstones count against the
//     telemetry quota; when only tombstones are left, new telemetry gets
//     ErrTelemetryQuota. A commit sheds only records of earlier commits.
//   - A commit that fails changes nothing on disk (bbolt rolls the
//     transaction back) and nothing in memory (the state returns to the last
//     commit, the dedup table is restored).
//
// # A full disk
//
// A commit that fails with ENOSPC (or reaches Options.MaxFileBytes) puts the
// outbox in drain-only mode: appends fail with ErrDiskFull at once, while
// Segment and Trim go on so that the uplink can drain the backlog. Nothing
// is torn: bbolt writes new pages to free space and switches to them only by
// writing its meta page last, so a failed write, fsync or file growth leaves
// the previous commit in place, and the failed transaction is rolled back.
// A Trim that deletes records ends drain-only mode, and so does a retry
// every 10 seconds that commits. A trim itself needs a few free pages; bbolt
// usually has them from earlier commits, and a trim that fails is retried
// with the next receipt.
//
// bbolt never shrinks its file, so a file that grew to fill the volume would
// keep it full after the backlog is sent. Compaction copies the live data
// into a new file and renames it into place (compact.go): online after a
// trim when the file is large and mostly free, offline with Compact (`edge
// outbox compact`). An outbox opened with MaxFileBytes at or below its
// file's size starts drain-only.
//
// # A restored file
//
// An older copy of the file put back (a VM snapshot, a backup) continues
// the stream from an older head while the cloud holds more of it: what is
// appended then gets seqs the cloud has other records at. Diverges
// recognises that from the cloud's receipt, and NewEpoch keeps the file
// under another name for an operator and starts a new file and epoch in
// its place, without closing the outbox (epoch.go).
//
// # Memory
//
// The outbox keeps its resident set small whatever the backlog: under 64 MB
// for the whole process with a million unsent events (BenchmarkBacklogMemory
// reports it after appending them, after reading them all through Segment,
// and after a reopen: 31 to 37 MiB, 45 MiB at the highest, on the 2-core
// reference machine). Three things would grow with the backlog, and none
// does:
//
//   - The dedup table: 8 bytes a slot, 10 to 16 bytes a pair (about 12 MiB
//     for a million), in 64 shards that resize one at a time, outside the
//     Go heap on Linux so that it does not raise the garbage collector's
//     target (dedup.go, memory_linux.go).
//   - bbolt's file mapping: bbolt reads the file through a shared, read-only
//     mmap, and every page read (and, through the kernel's fault-around, its
//     neighbours in the page cache, such as the pages the last commit wrote)
//     stays in the resident set until unmapped. The outbox counts what it
//     reads (commits, Segment, trims, the rebuild at Open) and after every
//     2 MiB drops the mapping's pages with madvise(MADV_DONTNEED). The pages
//     are clean views of the page cache, so nothing is lost; what is read
//     again faults back in from the page cache.
//   - bbolt's free-page scan: with NoFreelistSync, commits do not store the
//     free-page list, and bbolt's Open rebuilds it by reading the whole file.
//     Close stores it, so an Open after a clean Close reads it instead. An
//     Open after a crash still scans, so while it runs the whole file is
//     mapped in; the pages are dropped at the end of Open.
//
// No garbage collector setting is needed: with the table off the heap, the
// live heap is a few MiB, and GOGC's default headroom over it is small. An
// operator who wants a hard ceiling on the Go heap can still set GOMEMLIMIT.
//
// # Concurrency
//
// Two goroutines own the write side: the builder (run) owns the in-memory
// state, the dedup table and the clock, and runs Trim and maintenance while
// no batch is in flight, taking turns with appends so that neither starves;
// the committer owns the write transaction of the batch it is given, and
// is handed at most two batches ahead (pipeline.go explains how a failed
// commit unwinds the one built on top of it). Two mutexes guard what callers touch: qmu the queues
// of appends and trims and the closing flag, mu the published State. They
// are never held together. Readers (Segment, State, Wait) never block the
// write side beyond bbolt's own locking.
package outbox
