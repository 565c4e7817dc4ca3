package firmware

import (
	"errors"
	"io/fs"
)

// WriteFile persists one file. This package keeps what must survive a
// crash (the trusted root, the cached metadata, the trust state with the
// floor) through the WriteFile it is given, never on its own, and requires
// it to be atomic and durable: after a crash or a power cut at any point
// the file holds its old bytes or its new ones, whole, and once it returns
// nil it holds the new ones (a temp file in the same directory, fsynced,
// renamed over path, then the directory fsynced).
//
// DESIGN.md lets firmware import protocol at most, so the writing lives
// where the rest of the program's durable writes do: the edge gives
// internal/durable.WriteFile, through edge/ota (ota.OpenState,
// ota.InitTrust, ota.OpenTrust). There is one implementation of atomic
// durable writes in the tree.
type WriteFile func(path string, data []byte, perm fs.FileMode) error

// errNoWriteFile: a constructor was given no WriteFile.
var errNoWriteFile = errors.New("firmware: no WriteFile to persist with (give one that writes atomically and durably, such as internal/durable.WriteFile)")
