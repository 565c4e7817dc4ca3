package ota

import (
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/durable"
)

// The edge's trust files (the root, the cached metadata, state.json with
// the floor) are persisted by internal/durable, the one implementation of
// atomic, durable writes in the tree (firmware may not import it; see
// firmware.WriteFile).

// OpenState opens the trust state at path (firmware.OpenState).
func OpenState(path string) (*firmware.State, error) {
	return firmware.OpenState(path, durable.WriteFile)
}

// InitTrust provisions a trust directory with the release root
// (firmware.Init).
func InitTrust(dir string, root []byte) error {
	return firmware.Init(dir, root, durable.WriteFile)
}

// OpenTrust opens a trust directory made by InitTrust (firmware.Open).
func OpenTrust(dir string, opts firmware.Options) (*firmware.Trust, error) {
	opts.WriteFile = durable.WriteFile
	return firmware.Open(dir, &opts)
}
