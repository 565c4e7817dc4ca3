// Package oracle is the simulator's own record of what its devices sent
// and which events the edges acknowledged. It is what the verifier holds
// the cloud's ledger against: every acknowledged event must be there
// exactly once, and nothing that was never sent may be.
//
// An event is known by (device, id), the idempotency key the edge
// deduplicates on. Sending the same key again (a retransmit, a duplicate
// publish) adds to Sends and keeps the first send time, which is where the
// publish-to-commit latency is measured from.
package oracle

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// Entry is one event as the devices know it.
type Entry struct {
	Edge      string        `json:"edge"`
	Device    string        `json:"device"`
	ID        string        `json:"id"`
	Type      string        `json:"type"`
	TS        int64         `json:"ts"`        // the device's clock, Unix ms
	BodyHash  protocol.Hash `json:"body_hash"` // SHA-256 of the body's canonical CBOR
	FirstSent time.Time     `json:"first_sent"`
	Acked     time.Time     `json:"acked,omitzero"` // the first acknowledgement; zero when none came
	Sends     int           `json:"sends"`
}

// IsAcked reports whether an edge acknowledged the event.
func (e *Entry) IsAcked() bool { return !e.Acked.IsZero() }

// Key is an event's idempotency key.
type Key struct{ Device, ID string }

// Counts sums up an oracle.
type Counts struct {
	Events int `json:"events"` // distinct (device, id) sent
	Acked  int `json:"acked"`  // of them, acknowledged
	Sends  int `json:"sends"`  // publishes, retransmits and duplicates included
}

// Oracle records sends and acknowledgements. It is safe for concurrent use.
type Oracle struct {
	mu     sync.Mutex
	byKey  map[Key]*Entry
	counts Counts
}

// New returns an empty oracle.
func New() *Oracle { return &Oracle{byKey: map[Key]*Entry{}} }

// Sent notes that device, attached to edge, sent ev at time at.
func (o *Oracle) Sent(edge, device string, ev protocol.Event, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.counts.Sends++
	k := Key{device, ev.ID}
	if e, ok := o.byKey[k]; ok {
		e.Sends++
		return
	}
	o.counts.Events++
	o.byKey[k] = &Entry{Edge: edge, Device: device, ID: ev.ID, Type: ev.Type, TS: ev.TS.UnixMilli(),
		BodyHash: sha256.Sum256(ev.Body), FirstSent: at.Round(0), Sends: 1}
}

// Acked notes the edge's acknowledgement of (device, id) at time at. An
// acknowledgement of an event never sent is a bug in the caller.
func (o *Oracle) Acked(device, id string, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.byKey[Key{device, id}]
	if !ok {
		panic(fmt.Sprintf("oracle: ack of %s/%s, which was never sent", device, id))
	}
	if e.Acked.IsZero() {
		e.Acked = at.Round(0)
		o.counts.Acked++
	}
}

// Counts returns the totals so far.
func (o *Oracle) Counts() Counts {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts
}

// Entries returns a copy of every entry, by device then first send.
func (o *Oracle) Entries() []Entry {
	o.mu.Lock()
	out := make([]Entry, 0, len(o.byKey))
	for _, e := range o.byKey {
		out = append(out, *e)
	}
	o.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Device != out[j].Device {
			return out[i].Device < out[j].Device
		}
		return out[i].FirstSent.Before(out[j].FirstSent)
	})
	return out
}

// Write writes entries as JSON lines.
func Write(w io.Writer, entries []Entry) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for i := range entries {
		if err := enc.Encode(&entries[i]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// Read reads what Write wrote.
func Read(r io.Reader) ([]Entry, error) {
	var out []Entry
	dec := json.NewDecoder(bufio.NewReader(r))
	for {
		var e Entry
		err := dec.Decode(&e)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("oracle entry %d: %w", len(out)+1, err)
		}
		out = append(out, e)
	}
}

// Save writes entries to path (JSON lines), replacing it atomically.
func Save(path string, entries []Entry) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := Write(f, entries); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Load reads a file Save wrote.
func Load(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	es, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return es, nil
}
