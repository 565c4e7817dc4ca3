package ota_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/firmware/firmwaretest"
)

// A refresh over HTTP from a repository served on loopback, through a root
// rotation, and an oversized file refused.
func TestHTTPSource(t *testing.T) {
	r := firmwaretest.New(t, firmwaretest.Options{})
	r.AddTarget("edge-1.1.0", []byte("1.1.0"), firmware.Custom{Version: "1.1.0", Release: 2, Channel: "stable"})
	r.RotateRoot("timestamp", 1, 1)
	r.Publish()
	srv := httptest.NewServer(http.FileServer(http.Dir(r.Dir)))
	t.Cleanup(srv.Close)
	tr := r.Trust(t, func() time.Time { return r.Now.Add(time.Minute) })
	v, err := tr.Refresh(context.Background(), &ota.HTTPSource{Base: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if v.Root.Version != 2 {
		t.Fatalf("root %d", v.Root.Version)
	}
	if _, err := (&ota.HTTPSource{Base: srv.URL}).Fetch(context.Background(), "timestamp.json", 10); !errors.Is(err, firmware.ErrUntrusted) {
		t.Fatalf("oversized: %v", err)
	}
	if _, err := (&ota.HTTPSource{Base: srv.URL}).Fetch(context.Background(), "9.root.json", 1<<20); !errors.Is(err, firmware.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
}
