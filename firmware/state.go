package firmware

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"
)

// State is the trust state the edge keeps beside the metadata: the
// anti-rollback floor and the newest reference time at which metadata was
// verified. Both only ever go up; a write that would lower either is
// ignored. The file is replaced atomically and fsynced (by the WriteFile
// given to OpenState), so after a power cut it holds the old state or the
// new one.
type State struct {
	path  string
	write WriteFile

	mu sync.Mutex
	st persistedState
}

type persistedState struct {
	// Floor is the release counter below which nothing installs. It rises
	// when a release is committed (after its probation).
	Floor uint64 `json:"floor"`
	// Verified is the reference time of the newest successful refresh. A
	// clock set back (a dead RTC battery, a bad NTP answer) cannot make
	// metadata that was already expired then look fresh again.
	Verified time.Time `json:"verified"`
}

// stateFile is the state's file name inside the trust directory.
const stateFile = "state.json"

// OpenState reads the state at path; a missing file is the zero state (a
// newly provisioned edge). An unreadable file is an ErrState error: the
// caller must refuse installs rather than guess a floor of zero.
//
// Several processes may hold a State on the same file (the supervisor
// commits, `edge ota check` refreshes): every read goes to the file, and
// every write is a read-merge-write under an advisory lock on path.lock,
// keeping the larger of each field, so no process can lower what another
// raised.
//
// write persists the state (see WriteFile).
func OpenState(path string, write WriteFile) (*State, error) {
	if write == nil {
		return nil, errNoWriteFile
	}
	s := &State{path: path, write: write}
	st, err := readState(path)
	if err != nil {
		return nil, err
	}
	s.st = st
	return s, nil
}

func readState(path string) (persistedState, error) {
	var st persistedState
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("%w: %s: %v", ErrState, path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return st, fmt.Errorf("%w: %s: %v; see docs/OTA.md, \"Recovering a gateway by hand\"", ErrState, path, err)
	}
	return st, nil
}

// current is the state on disk merged with what this process has seen (a
// file that became unreadable leaves the last good values, which are never
// above the truth).
func (s *State) current() persistedState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, err := readState(s.path); err == nil {
		s.st = merge(s.st, st)
	}
	return s.st
}

func merge(a, b persistedState) persistedState {
	if b.Floor > a.Floor {
		a.Floor = b.Floor
	}
	if b.Verified.After(a.Verified) {
		a.Verified = b.Verified
	}
	return a
}

// Floor is the anti-rollback floor.
func (s *State) Floor() uint64 { return s.current().Floor }

// Verified is the reference time of the newest successful refresh (zero
// before the first).
func (s *State) Verified() time.Time { return s.current().Verified }

// RaiseFloor sets the floor to release if that is higher, durably. A lower
// release leaves the floor where it is: the floor never goes down.
func (s *State) RaiseFloor(release uint64) error {
	return s.update(persistedState{Floor: release})
}

// advanceVerified records t as the newest verified reference time if it is
// later than the one stored.
func (s *State) advanceVerified(t time.Time) error {
	return s.update(persistedState{Verified: t.UTC()})
}

// update merges next into the state on disk, under the lock, and writes
// the result if it changed anything.
func (s *State) update(next persistedState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := LockFile(s.path + ".lock")
	if err != nil {
		return fmt.Errorf("lock trust state: %w", err)
	}
	defer unlock()
	disk, err := readState(s.path)
	if err != nil {
		return err
	}
	merged := merge(merge(disk, s.st), next)
	if merged == disk {
		s.st = merged
		return nil
	}
	b, err := json.Marshal(merged)
	if err != nil {
		return err
	}
	if err := s.write(s.path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save trust state: %w", err)
	}
	s.st = merged
	return nil
}
