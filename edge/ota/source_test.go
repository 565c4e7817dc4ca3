package ota_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
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

// A repository that sends metadata forever (an endless-data attack on
// the metadata, not the artifact) is refused with no more than the cap
// read: timestamp.json has no length signed above it, so the cap is
// firmware's 1 MiB default.
func TestHTTPSourceEndlessMetadataCapped(t *testing.T) {
	r := firmwaretest.New(t, firmwaretest.Options{})
	r.Publish()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !strings.HasSuffix(req.URL.Path, "timestamp.json") {
			http.FileServer(http.Dir(r.Dir)).ServeHTTP(w, req)
			return
		}
		junk := bytes.Repeat([]byte(" "), 32<<10)
		for req.Context().Err() == nil {
			if _, err := w.Write(junk); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	var ct countingTransport
	tr := r.Trust(t, func() time.Time { return r.Now.Add(time.Minute) })
	_, err := tr.Refresh(context.Background(), &ota.HTTPSource{Base: srv.URL, Client: &http.Client{Transport: &ct}})
	if !errors.Is(err, firmware.ErrUntrusted) || !strings.Contains(err.Error(), "timestamp") {
		t.Fatalf("refresh from an endless timestamp: %v", err)
	}
	if n := ct.n.Load(); n > firmware.DefaultMaxMetadataBytes+1 {
		t.Fatalf("read %d bytes of an endless timestamp, cap %d", n, firmware.DefaultMaxMetadataBytes)
	}
}
