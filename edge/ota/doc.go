// Package ota is the edge's updater: it downloads a release that the
// firmware package has judged installable, and swaps it in.
//
// Invariants:
//   - An artifact is streamed to disk, never held in memory, and never more
//     than its signed length is read from the server.
//   - Nothing becomes executable before its bytes have verified against
//     the signed hashes.
//   - A server's refusal (4xx other than 408 and 429) ends the download
//     with ErrGaveUp; it is reported, not retried in a loop.
//   - A download resumes (HTTP Range) from what a previous attempt or
//     process left on disk.
package ota
