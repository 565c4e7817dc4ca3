// Package ota is the edge's updater: it downloads a release that the
// firmware package has judged installable (Downloader), and swaps it in
// (Layout).
//
// Invariants:
//   - An artifact is streamed to disk, never held in memory, and never more
//     than its signed length is read from the server.
//   - Nothing becomes executable before its bytes have verified against
//     the signed hashes; the swap verifies again as it copies.
//   - A server's refusal (4xx other than 408 and 429) ends the download
//     with ErrGaveUp; it is reported, not retried in a loop.
//   - A download resumes (HTTP Range) from what a previous attempt or
//     process left on disk.
//   - current always names a complete release: every file is fsynced with
//     its directory before anything relies on it, the pending record is
//     durable before the switch, and the switch is one rename of a symlink.
//     Recover settles what a crash interrupted.
//   - A rolled-back version is pinned as known bad and never installs again
//     by itself; the floor rises only at a commit, before the pending record
//     goes.
//   - A cloud command is acted on only when CommandGate accepts it (signed
//     by the pinned cloud key, for this edge, unexpired, above the last
//     accepted seq), once; what it needs (an assignment) is durable before
//     its seq is, so a crash between them makes the cloud send it again.
//     A redelivery adds no event, and refusals at most one a minute per
//     reason class, so nothing arriving on the broker can fill the outbox.
//   - An assigned install (Assignments, Assigner) is of a target both in
//     the signed targets and in the verified assignment, with its name,
//     version and channel (CheckAssigned); a cancel stops it only before
//     the swap begins.
package ota
