// Package release is the cloud's side of OTA releases: the release keys
// (offline root and targets keys held by the release signers, online
// snapshot and timestamp keys held by the cloud), offline signing of
// targets metadata, the TUF repository the cloud keeps in a directory
// (publishing, re-signing snapshot and timestamp, expiry warnings), and
// serving it over HTTP to enrolled edges only.
//
// Layout of an offline key directory (KeysInit; it never leaves the
// signers' machine except for the N.root.json and targets files, which
// are public):
//
//	root-<keyid>.key      root keys (PKCS#8 PEM, 0600)
//	targets-<keyid>.key   targets keys
//	N.root.json           every signed root version; root.json the newest
//	targets.json          the newest signed targets (sign extends it)
//
// Layout of an online key directory (given to the cloud):
//
//	snapshot-<keyid>.key, timestamp-<keyid>.key
//
// Layout of the repository directory (Repo), as edges read it:
//
//	N.root.json, N.targets.json, N.snapshot.json, timestamp.json
//	targets/<name>        the artifacts, immutable once published
//
// See docs/OTA.md, "Operating releases".
package release
