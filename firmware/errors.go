package firmware

import "errors"

// Sentinels. Every error this package returns for a refusal wraps one of
// these, with a message that names the role, target or file involved and
// what an operator can do about it.
var (
	// ErrExpired: a role's metadata is past its expiry at the reference
	// time. New installs are blocked until the repository publishes fresh
	// metadata; the running release is not affected.
	ErrExpired = errors.New("metadata expired")
	// ErrUntrusted: metadata failed a TUF check (signature below threshold,
	// a version that goes backwards, a length or hash that does not match
	// what the role above it signed, a root that does not chain).
	ErrUntrusted = errors.New("metadata not trusted")
	// ErrDowngrade: the target's release counter is below the persisted
	// anti-rollback floor.
	ErrDowngrade = errors.New("release below the anti-rollback floor")
	// ErrTooOld: the running version is below the target's min_version, so
	// the target cannot be installed over it.
	ErrTooOld = errors.New("running version below the target's min_version")
	// ErrUnknownTarget: the name is not in the verified targets.
	ErrUnknownTarget = errors.New("target not in the signed targets")
	// ErrBadCustom: a target's custom metadata is missing or malformed.
	ErrBadCustom = errors.New("bad target custom metadata")
	// ErrArtifact: an artifact's bytes do not match the signed length or
	// hashes.
	ErrArtifact = errors.New("artifact does not match its signed target")
	// ErrNotFound: a Source has no such file. For "N.root.json" it ends the
	// root rotation walk; for any other file it fails the refresh.
	ErrNotFound = errors.New("not found")
	// ErrNoTrust: the trust directory has no root.json; the edge was not
	// provisioned with the release signers' root (see docs/OTA.md).
	ErrNoTrust = errors.New("no trusted root")
	// ErrState: the persisted trust state is unreadable. Installs are
	// refused (fail closed) until an operator repairs it (docs/OTA.md).
	ErrState = errors.New("trust state unreadable")
	// ErrBundle: an offline bundle is malformed.
	ErrBundle = errors.New("bad bundle")
)
