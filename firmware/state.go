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
// ignored. The file is replaced atomically and fsynced (WriteFileAtomic),
// so after a power cut it holds the old state or the new one.
type State struct {
	path string

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
func OpenState(path string) (*State, error) {
	s := &State{path: path}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrState, path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s.st); err != nil {
		return nil, fmt.Errorf("%w: %s: %v; see docs/OTA.md, \"Recovering a gateway by hand\"", ErrState, path, err)
	}
	return s, nil
}

// Floor is the anti-rollback floor.
func (s *State) Floor() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Floor
}

// Verified is the reference time of the newest successful refresh (zero
// before the first).
func (s *State) Verified() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Verified
}

// RaiseFloor sets the floor to release if that is higher, durably. A lower
// release leaves the floor where it is: the floor never goes down.
func (s *State) RaiseFloor(release uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if release <= s.st.Floor {
		return nil
	}
	next := s.st
	next.Floor = release
	return s.save(next)
}

// advanceVerified records t as the newest verified reference time if it is
// later than the one stored.
func (s *State) advanceVerified(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !t.After(s.st.Verified) {
		return nil
	}
	next := s.st
	next.Verified = t.UTC()
	return s.save(next)
}

func (s *State) save(next persistedState) error {
	b, err := json.Marshal(next)
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(s.path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save trust state: %w", err)
	}
	s.st = next
	return nil
}
