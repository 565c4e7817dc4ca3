// Package firmware is the edge's OTA trust: it decides whether a release
// may be installed, and nothing else (no downloads, no process control).
//
// Metadata is TUF (The Update Framework, through go-tuf/v2's metadata and
// trustedmetadata packages): root and targets are signed offline by the
// release signers, snapshot and timestamp online by the cloud, each role
// with its own keys and threshold. A new root must be signed by the
// threshold of the old root and of itself. go-tuf's own updater is not used:
// it reads the whole artifact into memory and fixes its reference time to
// the local clock. Trust runs the same client workflow over trustedmetadata
// with a Source (HTTP, a directory, an offline bundle) and leaves artifacts
// to a streaming Verifier.
//
// Invariants:
//   - Every target carries Custom metadata (version, release counter,
//     channel, min_version, arch); a target without it is not installable.
//   - The anti-rollback floor (State.Floor) never goes down, and a target
//     whose release is not above it is refused (the release at the floor
//     is the committed one). TUF's version checks cover the
//     metadata, not what the targets are, so the floor is ours.
//   - The reference time of a refresh is the later of the local clock and
//     the newest reference time at which metadata was verified, fixed at
//     the start of the refresh; a clock set back cannot revive expired
//     metadata. Expired metadata refuses new installs (ErrExpired); it has
//     no say over the release that is already running.
//   - Every file this package persists is written through the WriteFile
//     it is given, which must be atomic and durable (temp file, fsync,
//     rename, fsync of the directory): the edge gives
//     internal/durable.WriteFile, through edge/ota.
//   - An offline bundle goes through exactly the checks of an online
//     refresh, against the same cached metadata.
package firmware
