package main

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// startEdge runs `edge run` in-process with args until it is ready. stop
// ends Run, then Close, and returns their errors; it runs at the test's end
// if the test did not call it.
func startEdge(t *testing.T, args ...string) (m *Main, logs *bytes.Buffer, stop func() error) {
	t.Helper()
	logs = &bytes.Buffer{}
	m = NewMain(logs, logs)
	if err := m.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case <-m.Ready:
	case err := <-done:
		cancel()
		t.Fatalf("edge stopped: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second): // a hang guard, not a timing check
		cancel()
		t.Fatal("edge not ready within 30s")
	}
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = errors.Join(<-done, m.Close())
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return m, logs, stop
}
