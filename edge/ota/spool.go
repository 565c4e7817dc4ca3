package ota

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/durable"
)

// Spool carries Events from the processes that make them (edge supervise,
// edge ota) to the one that owns the outbox (edge run), which appends them
// as ota.* ledger events. It is a file of JSON lines: Add appends one line
// and fsyncs, Drain hands every line to the outbox and then removes the
// file, both under a flock of Path.lock, so no event is lost between them.
// A crash after the outbox append and before the removal hands the same
// events again; their ids are fixed when added, so the outbox's dedup
// drops the copies.
type Spool struct {
	Path string
}

// maxSpoolBytes bounds the spool: past it, the oldest are the ones kept
// (the first failures of a loop are the ones worth reading), and Add
// refuses more.
const maxSpoolBytes = 1 << 20

// Add appends e, giving it an id when it has none. An event whose id is
// already spooled is not added again.
func (s Spool) Add(e Event) error {
	if e.At.IsZero() {
		return fmt.Errorf("spool %s: event %s has no time", s.Path, e.Kind)
	}
	if e.ID == "" {
		e.ID = eventID(e)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o755); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	unlock, err := firmware.LockFile(s.Path + ".lock")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer unlock()
	f, err := os.OpenFile(s.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > maxSpoolBytes {
		return fmt.Errorf("spool %s is over %d bytes: the edge has not drained it (is edge run starting?)", s.Path, maxSpoolBytes)
	}
	if s.has(e.ID) {
		return nil // recorded again after a crash (Layout.Record): one is enough
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("spool: fsync: %w", err)
	}
	return durable.SyncDir(filepath.Dir(s.Path))
}

// has reports whether an event with id is spooled (under the lock).
func (s Spool) has(id string) bool {
	b, err := os.ReadFile(s.Path)
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), maxSpoolBytes)
	for sc.Scan() {
		var e struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.ID == id {
			return true
		}
	}
	return false
}

// eventID is unique per event and at most 64 bytes: kind, version and the
// time in nanoseconds.
func eventID(e Event) string {
	id := strings.TrimPrefix(e.Kind, "ota.") + "-" + e.Version + "-" + strconv.FormatInt(e.At.UnixNano(), 36)
	if len(id) > 64 {
		id = id[len(id)-64:]
	}
	return id
}

// Drain passes every spooled event to deliver and, once deliver has
// returned nil (the events are durable elsewhere), removes them. A line
// that does not parse (a torn last write) is skipped.
func (s Spool) Drain(deliver func([]Event) error) error {
	unlock, err := firmware.LockFile(s.Path + ".lock")
	if errors.Is(err, fs.ErrNotExist) {
		return nil // no directory yet: nothing was ever spooled
	}
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer unlock()
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) || len(b) == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	var evs []Event
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), maxSpoolBytes)
	for sc.Scan() {
		var e Event
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.ID != "" && e.Kind != "" {
			evs = append(evs, e)
		}
	}
	if len(evs) > 0 {
		if err := deliver(evs); err != nil {
			return err
		}
	}
	if err := os.Remove(s.Path); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return durable.SyncDir(filepath.Dir(s.Path))
}
