// Package intaketest holds test support for package intake and for the
// programs that embed it: an in-memory Appender that simulates group commit,
// a credentials-file writer, a server harness on free ports, and the ack
// latency benchmark, which cmd-level benchmarks can run against the real
// outbox by passing their own Appender.
package intaketest

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/intake"
	"github.com/outpost-edge/outpost/protocol"
	"golang.org/x/crypto/bcrypt"
)

// QuotaError is an appender error meaning the ledger quota is full.
type QuotaError struct{}

func (QuotaError) Error() string { return "ledger quota full" }
func (QuotaError) Quota() bool   { return true }

// DiskFullError is an appender error meaning the disk is full.
type DiskFullError struct{}

func (DiskFullError) Error() string  { return "disk full: drain only" }
func (DiskFullError) DiskFull() bool { return true }

// Record is an event a FakeAppender stored.
type Record struct {
	Seq    uint64
	Device string
	Event  protocol.Event
}

// FakeAppender is an in-memory intake.Appender that behaves like a group
// committing outbox: appends arriving while a commit is in progress wait
// and share the next one, and done is called from the commit goroutine
// after the commit's simulated fsync. It deduplicates (device, id) forever.
type FakeAppender struct {
	// Delay is each commit's simulated fsync time.
	Delay time.Duration
	// SyncFile, when set, is fsynced once per commit (a real fsync cost).
	SyncFile *os.File
	// Fail, when set, can refuse single events (return QuotaError{} etc.).
	Fail func(device string, ev protocol.Event) error
	// FailAll, when set, fails whole appends with its result.
	FailAll func() error

	kick chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	pending []fakeCall
	gate    chan struct{} // non-nil while held
	closed  bool
	seq     uint64
	seen    map[string]uint64
	records []Record
	calls   int
	commits int
	sizes   []int // events per commit
}

type fakeCall struct {
	device string
	events []protocol.Event
	done   func([]intake.Result, error)
}

var _ intake.Appender = (*FakeAppender)(nil)

// NewFakeAppender starts a FakeAppender; Close stops it.
func NewFakeAppender() *FakeAppender {
	f := &FakeAppender{kick: make(chan struct{}, 1), stop: make(chan struct{}), seen: map[string]uint64{}}
	f.wg.Add(1)
	go f.loop()
	return f
}

// Append implements intake.Appender.
func (f *FakeAppender) Append(device string, events []protocol.Event, done func([]intake.Result, error)) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		go done(nil, errors.New("fake appender closed"))
		return
	}
	f.calls++
	f.pending = append(f.pending, fakeCall{device, events, done})
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// Hold makes commits wait, before their fsync, until Release.
func (f *FakeAppender) Hold() {
	f.mu.Lock()
	if f.gate == nil {
		f.gate = make(chan struct{})
	}
	f.mu.Unlock()
}

// Release lets held commits complete.
func (f *FakeAppender) Release() {
	f.mu.Lock()
	if f.gate != nil {
		close(f.gate)
		f.gate = nil
	}
	f.mu.Unlock()
}

// Close fails appends still pending and stops the commit goroutine.
func (f *FakeAppender) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	f.mu.Unlock()
	close(f.stop)
	f.wg.Wait()
	f.mu.Lock()
	rest := f.pending
	f.pending = nil
	f.mu.Unlock()
	for _, c := range rest {
		c.done(nil, errors.New("fake appender closed"))
	}
}

// Calls returns the number of Append calls so far.
func (f *FakeAppender) Calls() int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls }

// Commits returns the number of commits so far.
func (f *FakeAppender) Commits() int { f.mu.Lock(); defer f.mu.Unlock(); return f.commits }

// EventsPerCommit returns the mean number of events per commit.
func (f *FakeAppender) EventsPerCommit() float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, s := range f.sizes {
		n += s
	}
	if len(f.sizes) == 0 {
		return 0
	}
	return float64(n) / float64(len(f.sizes))
}

// Records returns a copy of the stored records, in seq order.
func (f *FakeAppender) Records() []Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Record(nil), f.records...)
}

// RecordsOfType returns the stored records of one event type.
func (f *FakeAppender) RecordsOfType(typ string) []Record {
	var out []Record
	for _, r := range f.Records() {
		if r.Event.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

func (f *FakeAppender) loop() {
	defer f.wg.Done()
	for {
		select {
		case <-f.kick:
		case <-f.stop:
			return
		}
		for {
			f.mu.Lock()
			batch, gate := f.pending, f.gate
			f.pending = nil
			f.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			if gate != nil {
				select {
				case <-gate:
				case <-f.stop:
					f.mu.Lock()
					f.pending = append(batch, f.pending...)
					f.mu.Unlock()
					return
				}
			}
			f.commit(batch)
		}
	}
}

func (f *FakeAppender) commit(batch []fakeCall) {
	if f.Delay > 0 {
		time.Sleep(f.Delay) // the simulated fsync
	}
	if f.SyncFile != nil {
		f.SyncFile.Write([]byte{0})
		f.SyncFile.Sync()
	}
	type out struct {
		res []intake.Result
		err error
	}
	outs := make([]out, len(batch))
	f.mu.Lock()
	n := 0
	for i, c := range batch {
		if f.FailAll != nil {
			if err := f.FailAll(); err != nil {
				outs[i].err = err
				continue
			}
		}
		res := make([]intake.Result, len(c.events))
		for j, ev := range c.events {
			if f.Fail != nil {
				if err := f.Fail(c.device, ev); err != nil {
					res[j].Err = err
					continue
				}
			}
			key := c.device + "\x00" + ev.ID
			if s, ok := f.seen[key]; ok {
				res[j] = intake.Result{Seq: s, Duplicate: true}
				continue
			}
			f.seq++
			f.seen[key] = f.seq
			f.records = append(f.records, Record{Seq: f.seq, Device: c.device, Event: ev})
			res[j] = intake.Result{Seq: f.seq}
			n++
		}
		outs[i].res = res
	}
	f.commits++
	f.sizes = append(f.sizes, n)
	f.mu.Unlock()
	for i, c := range batch {
		c.done(outs[i].res, outs[i].err)
	}
}

// WriteCredentials writes a credentials file at path for the devices and
// secrets given, with bcrypt at its minimum cost so that tests stay fast.
// (intake.AddDevice writes argon2id; both verify the same way.)
func WriteCredentials(tb testing.TB, path string, secrets map[string]string) {
	tb.Helper()
	type entry struct {
		ID      string    `json:"id"`
		Hash    string    `json:"hash"`
		Created time.Time `json:"created"`
	}
	f := struct {
		Version int     `json:"version"`
		Devices []entry `json:"devices"`
	}{Version: 1}
	for id, s := range secrets {
		h, err := bcrypt.GenerateFromPassword([]byte(s), bcrypt.MinCost)
		if err != nil {
			tb.Fatal(err)
		}
		f.Devices = append(f.Devices, entry{ID: id, Hash: string(h), Created: time.Now().UTC()})
	}
	b, err := json.Marshal(f)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// Harness is a started intake.Server on free ports with devices "dev-1",
// "dev-2" and "dev-3" (secret: the device id + "-secret-0123456789").
type Harness struct {
	Server    *intake.Server
	CredsPath string
	Secrets   map[string]string
}

// Secret returns device's secret.
func (h *Harness) Secret(device string) string { return h.Secrets[device] }

// MQTTAddr returns the broker's address.
func (h *Harness) MQTTAddr() string { return h.Server.MQTTAddrActual() }

// HTTPURL returns the HTTP intake's base URL.
func (h *Harness) HTTPURL() string { return "http://" + h.Server.HTTPAddrActual() }

// MustStart starts an intake.Server with app on 127.0.0.1 free ports (MQTT
// and HTTP). configure, when not nil, adjusts the server before Start. The
// server is closed by tb.Cleanup.
func MustStart(tb testing.TB, app intake.Appender, configure func(*intake.Server)) *Harness {
	tb.Helper()
	dir := tb.TempDir()
	h := &Harness{CredsPath: filepath.Join(dir, "devices.json"), Secrets: map[string]string{}}
	for _, d := range []string{"dev-1", "dev-2", "dev-3"} {
		h.Secrets[d] = d + "-secret-0123456789"
	}
	WriteCredentials(tb, h.CredsPath, h.Secrets)
	creds, err := intake.OpenCredentials(h.CredsPath)
	if err != nil {
		tb.Fatal(err)
	}
	s := intake.New(app, creds)
	s.MQTTAddr = "127.0.0.1:0"
	s.HTTPAddr = "127.0.0.1:0"
	s.Logger = quietLogger()
	if configure != nil {
		configure(s)
	}
	if err := s.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	h.Server = s
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close intake: %v", err)
		}
	})
	return h
}

func quietLogger() *slog.Logger {
	if os.Getenv("OUTPOST_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
