package ota_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/firmware"
)

func artifact(t *testing.T, n int) ([]byte, firmware.Target) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	sum := sha256.Sum256(b)
	return b, firmware.Target{Name: "edge-1.2.0", Length: int64(n), Hashes: map[string][]byte{"sha256": sum[:]},
		Custom: firmware.Custom{Version: "1.2.0", Release: 3, Channel: "stable"}}
}

// server is an artifact server on loopback whose behaviour a test sets per
// request; it records what it was asked and how much body it sent.
type server struct {
	*httptest.Server
	mu     sync.Mutex
	ranges []string
	sent   []int64 // body bytes per request
	handle func(n int, w http.ResponseWriter, r *http.Request)
}

type countingWriter struct {
	http.ResponseWriter
	n *int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	*c.n += int64(n)
	return n, err
}

func (c countingWriter) Flush() { c.ResponseWriter.(http.Flusher).Flush() }

func newServer(t *testing.T, handle func(n int, w http.ResponseWriter, r *http.Request)) *server {
	s := &server{handle: handle}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		n := len(s.ranges)
		s.ranges = append(s.ranges, r.Header.Get("Range"))
		s.sent = append(s.sent, 0)
		s.mu.Unlock()
		var sent int64
		defer func() {
			s.mu.Lock()
			s.sent[n] = sent
			s.mu.Unlock()
		}()
		s.handle(n, countingWriter{w, &sent}, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) requests() ([]string, []int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...), append([]int64(nil), s.sent...)
}

func serve(body []byte) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "edge", time.Time{}, bytes.NewReader(body))
	}
}

// downloader has fake sleeps (recorded, instant) and fixed jitter.
func downloader(t *testing.T, dir string) (*ota.Downloader, *[]time.Duration) {
	var sleeps []time.Duration
	return &ota.Downloader{
		Dir:   dir,
		Sleep: func(ctx context.Context, d time.Duration) error { sleeps = append(sleeps, d); return ctx.Err() },
		Rand:  func() float64 { return 0.5 },
	}, &sleeps
}

func TestFetchVerifies(t *testing.T) {
	body, tg := artifact(t, 100<<10)
	s := newServer(t, serve(body))
	d, _ := downloader(t, t.TempDir())
	p, err := d.Fetch(context.Background(), s.URL+"/edge", tg)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got, body) {
		t.Fatal("downloaded bytes differ")
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("verified download has mode %v; nothing is executable before the swap", fi.Mode())
	}
	// Asked again, the verified file is reused without a request.
	if _, err := d.Fetch(context.Background(), s.URL+"/edge", tg); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.requests(); len(r) != 1 {
		t.Fatalf("%d requests, want 1", len(r))
	}
}

// A download cut short resumes in a new process (a new Downloader on the
// same directory) with a Range request, refetching nothing it had.
func TestFetchResumesAcrossRestarts(t *testing.T) {
	body, tg := artifact(t, 256<<10)
	s := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 0 {
			w.Header().Set("Content-Length", "262144")
			w.WriteHeader(http.StatusOK)
			w.Write(body[:100<<10])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the link drops
		}
		serve(body)(n, w, r)
	})
	dir := t.TempDir()
	d1, _ := downloader(t, dir)
	d1.MaxAttempts = 1
	if _, err := d1.Fetch(context.Background(), s.URL+"/edge", tg); !errors.Is(err, ota.ErrGaveUp) {
		t.Fatalf("first process: %v", err)
	}
	part, _, _ := d1.Paths(tg)
	fi, err := os.Stat(part)
	if err != nil || fi.Size() == 0 || fi.Size() > 100<<10 {
		t.Fatalf("partial download after the cut: %v, %v", fi, err)
	}
	have := fi.Size()

	d2, _ := downloader(t, dir)
	p, err := d2.Fetch(context.Background(), s.URL+"/edge", tg)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got, body) {
		t.Fatal("resumed download differs")
	}
	ranges, sent := s.requests()
	if len(ranges) != 2 || ranges[1] != "bytes="+strconv.FormatInt(have, 10)+"-" {
		t.Fatalf("requests' ranges %q, want the second from %d", ranges, have)
	}
	if sent[1] != tg.Length-have {
		t.Fatalf("resumed request sent %d bytes, want the %d missing", sent[1], tg.Length-have)
	}
}

// countingTransport counts the response body bytes the client read.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil {
		resp.Body = &countingBody{resp.Body, &c.n}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingBody) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func endless(prefix []byte) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		if _, err := w.Write(prefix); err != nil {
			return
		}
		junk := bytes.Repeat([]byte("A"), 32<<10)
		for r.Context().Err() == nil {
			if _, err := w.Write(junk); err != nil {
				return
			}
		}
	}
}

// A server that sends forever fills no more than the signed length.
func TestFetchEndlessServerCapped(t *testing.T) {
	t.Run("junk", func(t *testing.T) {
		_, tg := artifact(t, 64<<10)
		s := newServer(t, endless(nil))
		ct := &countingTransport{}
		d, _ := downloader(t, t.TempDir())
		d.Client = &http.Client{Transport: ct}
		if _, err := d.Fetch(context.Background(), s.URL+"/edge", tg); !errors.Is(err, firmware.ErrArtifact) {
			t.Fatalf("got %v, want ErrArtifact", err)
		}
		if n := ct.n.Load(); n > tg.Length {
			t.Fatalf("read %d body bytes of a %d-byte target", n, tg.Length)
		}
		if ents, _ := os.ReadDir(d.Dir); len(ents) != 0 {
			t.Fatalf("left %v behind", ents)
		}
	})
	t.Run("artifact then junk", func(t *testing.T) {
		body, tg := artifact(t, 64<<10)
		s := newServer(t, endless(body))
		ct := &countingTransport{}
		d, _ := downloader(t, t.TempDir())
		d.Client = &http.Client{Transport: ct}
		if _, err := d.Fetch(context.Background(), s.URL+"/edge", tg); err != nil {
			t.Fatal(err)
		}
		if n := ct.n.Load(); n != tg.Length {
			t.Fatalf("read %d body bytes, want exactly the signed %d", n, tg.Length)
		}
	})
}

// A 4xx gives up at once and reports; it does not loop.
func TestFetchClientErrorGivesUp(t *testing.T) {
	for _, status := range []int{http.StatusNotFound, http.StatusForbidden, http.StatusGone} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			_, tg := artifact(t, 1024)
			s := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { http.Error(w, "no", status) })
			d, sleeps := downloader(t, t.TempDir())
			_, err := d.Fetch(context.Background(), s.URL+"/edge", tg)
			var he *ota.HTTPError
			if !errors.Is(err, ota.ErrGaveUp) || !errors.As(err, &he) || he.Status != status {
				t.Fatalf("got %v, want ErrGaveUp with status %d", err, status)
			}
			if r, _ := s.requests(); len(r) != 1 || len(*sleeps) != 0 {
				t.Fatalf("%d requests and %d waits, want 1 and none", len(r), len(*sleeps))
			}
		})
	}
}

// Tampered bytes are refused and nothing is kept; a fresh download is not
// fetched again (the server's artifact is wrong, not our copy).
func TestFetchTamperedRefused(t *testing.T) {
	body, tg := artifact(t, 32<<10)
	evil := bytes.Clone(body)
	evil[1000] ^= 1
	s := newServer(t, serve(evil))
	d, _ := downloader(t, t.TempDir())
	if _, err := d.Fetch(context.Background(), s.URL+"/edge", tg); !errors.Is(err, firmware.ErrArtifact) {
		t.Fatalf("got %v, want ErrArtifact", err)
	}
	if ents, _ := os.ReadDir(d.Dir); len(ents) != 0 {
		t.Fatalf("left %v behind", ents)
	}
	if r, _ := s.requests(); len(r) != 1 {
		t.Fatalf("%d requests, want 1", len(r))
	}
}

// A partial download from before that does not match (the bytes on disk
// were torn, or the server's changed) is fetched again from zero, once.
func TestFetchBadPartialRefetchedOnce(t *testing.T) {
	body, tg := artifact(t, 32<<10)
	s := newServer(t, serve(body))
	d, _ := downloader(t, t.TempDir())
	part, _, _ := d.Paths(tg)
	os.MkdirAll(d.Dir, 0o700)
	os.WriteFile(part, bytes.Repeat([]byte{0}, 4096), 0o600) // zeros, as after a crash
	if _, err := d.Fetch(context.Background(), s.URL+"/edge", tg); err != nil {
		t.Fatal(err)
	}
	ranges, _ := s.requests()
	if len(ranges) != 2 || ranges[0] != "bytes=4096-" || ranges[1] != "" {
		t.Fatalf("ranges %q", ranges)
	}
}

func TestFetchServerIgnoringRange(t *testing.T) {
	body, tg := artifact(t, 32<<10)
	s := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.Write(body) })
	d, _ := downloader(t, t.TempDir())
	part, _, _ := d.Paths(tg)
	os.MkdirAll(d.Dir, 0o700)
	os.WriteFile(part, body[:5000], 0o600)
	if _, err := d.Fetch(context.Background(), s.URL+"/edge", tg); err != nil {
		t.Fatal(err)
	}
}

// Transient failures back off exponentially, with jitter.
func TestFetchBacksOff(t *testing.T) {
	body, tg := artifact(t, 1024)
	s := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch n {
		case 0, 1:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case 2:
			http.Error(w, "slow down", http.StatusTooManyRequests)
		default:
			serve(body)(n, w, r)
		}
	})
	d, sleeps := downloader(t, t.TempDir())
	d.BackoffMin, d.BackoffMax = time.Second, 3*time.Second
	if _, err := d.Fetch(context.Background(), s.URL+"/edge", tg); err != nil {
		t.Fatal(err)
	}
	// Rand is 0.5: each wait is 3/4 of the backoff, which doubles to the max.
	want := []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 2250 * time.Millisecond}
	if len(*sleeps) != len(want) {
		t.Fatalf("waits %v, want %v", *sleeps, want)
	}
	for i := range want {
		if (*sleeps)[i] != want[i] {
			t.Fatalf("waits %v, want %v", *sleeps, want)
		}
	}
}

func TestFetchWaitsForWindow(t *testing.T) {
	body, tg := artifact(t, 1024)
	s := newServer(t, serve(body))
	d, sleeps := downloader(t, t.TempDir())
	w, err := ota.ParseWindow("02:00-05:00")
	if err != nil {
		t.Fatal(err)
	}
	d.Window = w
	d.Now = func() time.Time { return time.Date(2026, 12, 1, 1, 15, 0, 0, time.Local) }
	if _, err := d.Fetch(context.Background(), s.URL+"/edge", tg); err != nil {
		t.Fatal(err)
	}
	if len(*sleeps) != 1 || (*sleeps)[0] != 45*time.Minute {
		t.Fatalf("waits %v, want one of 45m (until 02:00)", *sleeps)
	}
}

func TestWindow(t *testing.T) {
	day := func(h, m int) time.Time { return time.Date(2026, 12, 1, h, m, 0, 0, time.UTC) }
	for _, tc := range []struct {
		window       string
		at           time.Time
		next, closes time.Time
	}{
		{"02:00-05:00", day(1, 0), day(2, 0), time.Time{}},
		{"02:00-05:00", day(3, 0), day(3, 0), day(5, 0)},
		{"02:00-05:00", day(5, 0), day(2, 0).AddDate(0, 0, 1), time.Time{}},
		{"22:00-04:00", day(23, 0), day(23, 0), day(4, 0).AddDate(0, 0, 1)},
		{"22:00-04:00", day(1, 0), day(1, 0), day(4, 0)},
		{"22:00-04:00", day(12, 0), day(22, 0), time.Time{}},
	} {
		w, err := ota.ParseWindow(tc.window)
		if err != nil {
			t.Fatal(err)
		}
		if got := w.Next(tc.at); !got.Equal(tc.next) {
			t.Errorf("%s at %s: next %s, want %s", tc.window, tc.at, got, tc.next)
		}
		if got := w.Closes(tc.at); !got.Equal(tc.closes) {
			t.Errorf("%s at %s: closes %s, want %s", tc.window, tc.at, got, tc.closes)
		}
	}
	for _, bad := range []string{"", "2-5", "02:00-02:00", "24:00-01:00", "02:60-03:00", "2:00-05:00", "02:00-05:00x"} {
		if _, err := ota.ParseWindow(bad); err == nil {
			t.Errorf("ParseWindow(%q) accepted", bad)
		}
	}
}

func TestFetchNoHashRefused(t *testing.T) {
	_, tg := artifact(t, 10)
	tg.Hashes = nil
	d, _ := downloader(t, filepath.Join(t.TempDir(), "dl"))
	if _, err := d.Fetch(context.Background(), "http://127.0.0.1:1/", tg); !errors.Is(err, firmware.ErrArtifact) {
		t.Fatalf("got %v", err)
	}
}
