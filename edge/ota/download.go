package ota

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/durable"
)

// Download errors.
var (
	// ErrGaveUp: the server answered in a way retrying cannot fix (a 4xx
	// other than 408 and 429), or MaxAttempts ran out. The download stops
	// and reports; it does not loop.
	ErrGaveUp = errors.New("download gave up")
)

// HTTPError is a refusal by the artifact server.
type HTTPError struct {
	URL    string
	Status int
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("GET %s: %d %s", e.URL, e.Status, http.StatusText(e.Status))
}

// Defaults for Downloader.
const (
	DefaultBackoffMin   = time.Second
	DefaultBackoffMax   = 5 * time.Minute
	DefaultStallTimeout = time.Minute
)

// Downloader fetches artifacts into Dir. An artifact is streamed to disk
// as <Dir>/<sha256>.part (mode 0600, never executable), resumed with an
// HTTP Range request from whatever a previous attempt or a previous
// process left there, read to exactly the signed length and no further,
// and verified against the signed hashes before it is renamed to
// <Dir>/<sha256>.verified. Nothing here makes a file executable; the swap
// does, after verifying again as it copies.
type Downloader struct {
	// Dir holds partial and verified downloads. Required.
	Dir string
	// Client is the HTTP client (http.DefaultClient).
	Client *http.Client
	// RateBytes caps the download in bytes per second (0: no cap).
	RateBytes int
	// Window, when set, restricts downloading to a local-time window: an
	// attempt waits for the window to open and stops (keeping what it has)
	// when it closes.
	Window *Window
	// BackoffMin and BackoffMax bound the exponential backoff between
	// attempts after a transient failure (a network error, a 5xx, 408,
	// 429); each wait is drawn with jitter from [d/2, d).
	BackoffMin, BackoffMax time.Duration
	// MaxAttempts bounds the attempts of one Fetch (0: until ctx ends).
	MaxAttempts int
	// StallTimeout ends an attempt that received nothing for this long.
	StallTimeout time.Duration
	// Now, Sleep and Rand are the clock, the wait and the jitter source,
	// for tests (time.Now, a timer, math/rand/v2).
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	Rand  func() float64
	// Logger (slog.Default).
	Logger *slog.Logger

	// crash, when set (tests only), is called after each durable step.
	crash func(step string)
}

func (d *Downloader) step(name string) {
	if d.crash != nil {
		d.crash(name)
	}
}

func (d *Downloader) defaults() {
	if d.Client == nil {
		d.Client = http.DefaultClient
	}
	if d.BackoffMin <= 0 {
		d.BackoffMin = DefaultBackoffMin
	}
	if d.BackoffMax < d.BackoffMin {
		d.BackoffMax = max(DefaultBackoffMax, d.BackoffMin)
	}
	if d.StallTimeout <= 0 {
		d.StallTimeout = DefaultStallTimeout
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Sleep == nil {
		d.Sleep = sleep
	}
	if d.Rand == nil {
		d.Rand = rand.Float64
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// key names a target's files by its signed hash, so a different artifact
// under the same name never resumes from the wrong bytes.
func key(tg firmware.Target) (string, error) {
	for _, alg := range []string{"sha256", "sha512"} {
		if h, ok := tg.Hashes[alg]; ok && len(h) > 0 {
			return fmt.Sprintf("%x", h), nil
		}
	}
	return "", fmt.Errorf("%w: %s has no sha256 or sha512 hash signed", firmware.ErrArtifact, tg.Name)
}

// Paths of a target's partial and verified downloads.
func (d *Downloader) Paths(tg firmware.Target) (part, verified string, err error) {
	k, err := key(tg)
	if err != nil {
		return "", "", err
	}
	return filepath.Join(d.Dir, k+".part"), filepath.Join(d.Dir, k+".verified"), nil
}

// Fetch downloads tg from url and returns the path of the verified file.
// A verified file already there is re-verified and returned at once. The
// error wraps ErrGaveUp (with an *HTTPError when the server refused),
// firmware.ErrArtifact (the bytes are not the signed ones), or ctx's error.
func (d *Downloader) Fetch(ctx context.Context, url string, tg firmware.Target) (string, error) {
	d.defaults()
	part, done, err := d.Paths(tg)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return "", fmt.Errorf("download dir: %w", err)
	}
	if err := verifyFile(done, tg); err == nil {
		return done, nil
	}
	log := d.Logger.With("target", tg.Name, "url", url)
	refetched := false // whether the one refetch from zero was spent
	backoff := d.BackoffMin
	for attempt := 1; ; attempt++ {
		if err := d.waitWindow(ctx); err != nil {
			return "", err
		}
		var from int64
		err := d.attempt(ctx, url, tg, part, &from)
		if err == nil {
			err = verifyFile(part, tg)
			if err == nil {
				if err := os.Rename(part, done); err != nil {
					return "", fmt.Errorf("download %s: %w", tg.Name, err)
				}
				d.step("verified-renamed")
				if err := durable.SyncDir(d.Dir); err != nil {
					return "", err
				}
				d.step("verified-synced")
				log.Info("downloaded and verified", "bytes", tg.Length, "attempts", attempt)
				return done, nil
			}
			// The bytes are not the signed ones. Throw them away. If they
			// were stitched onto bytes from before (a previous attempt or
			// process), the older part may be what is wrong (the artifact
			// changed on the server, a torn write before a crash): start
			// over, once. Otherwise the server's artifact itself is wrong:
			// report, do not loop.
			_ = os.Remove(part)
			if from == 0 || refetched {
				return "", fmt.Errorf("download %s: %w", tg.Name, err)
			}
			refetched = true
			log.Warn("downloaded bytes do not verify; fetching again from the start", "err", err)
			continue
		}
		if errors.Is(err, ErrGaveUp) || ctx.Err() != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			return "", fmt.Errorf("download %s: %w", tg.Name, err)
		}
		if d.MaxAttempts > 0 && attempt >= d.MaxAttempts {
			return "", fmt.Errorf("download %s: %w after %d attempts: %v", tg.Name, ErrGaveUp, attempt, err)
		}
		wait := time.Duration(float64(backoff) * (0.5 + d.Rand()/2))
		log.Warn("download attempt failed; retrying", "attempt", attempt, "err", err, "wait", wait)
		if err := d.Sleep(ctx, wait); err != nil {
			return "", err
		}
		backoff = min(backoff*2, d.BackoffMax)
	}
}

// waitWindow sleeps until the download window is open.
func (d *Downloader) waitWindow(ctx context.Context) error {
	if d.Window == nil {
		return nil
	}
	now := d.Now()
	if open := d.Window.Next(now); open.After(now) {
		d.Logger.Info("waiting for the download window", "window", d.Window.String(), "opens", open)
		return d.Sleep(ctx, open.Sub(now))
	}
	return nil
}

// attempt is one GET that appends to part what it lacks. A nil error
// means part has the signed length (not yet that it verifies); *from is
// set to how many of its bytes were there from before.
func (d *Downloader) attempt(ctx context.Context, url string, tg firmware.Target, part string, from *int64) error {
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrGaveUp, err)
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrGaveUp, err)
	}
	if have > tg.Length { // not ours, or a previous bug: start over
		if err := truncate(f, 0); err != nil {
			return err
		}
		have = 0
	}
	*from = have
	if have == tg.Length {
		return nil
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if d.Window != nil {
		if closes := d.Window.Closes(d.Now()); !closes.IsZero() {
			var c2 context.CancelFunc
			ctx, c2 = context.WithTimeout(ctx, closes.Sub(d.Now()))
			defer c2()
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrGaveUp, err)
	}
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	resp, err := d.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
		start, err := contentRangeStart(resp.Header.Get("Content-Range"))
		if err != nil || start != have {
			// A range we did not ask for: take nothing from it, fetch whole.
			if err := truncate(f, 0); err != nil {
				return err
			}
			return fmt.Errorf("server answered range %d- with %q", have, resp.Header.Get("Content-Range"))
		}
	case resp.StatusCode == http.StatusOK:
		if have > 0 { // the server ignores ranges: start from zero
			if err := truncate(f, 0); err != nil {
				return err
			}
			have, *from = 0, 0
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		// What we have cannot be continued; start over next attempt.
		if err := truncate(f, 0); err != nil {
			return err
		}
		return fmt.Errorf("server refused range %d-", have)
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return &HTTPError{URL: url, Status: resp.StatusCode}
	default:
		return fmt.Errorf("%w: %w", ErrGaveUp, &HTTPError{URL: url, Status: resp.StatusCode})
	}

	// Exactly the bytes still missing, and not one more: a server that
	// sends forever fills no more than the signed length.
	var body io.Reader = io.LimitReader(resp.Body, tg.Length-have)
	stall := time.AfterFunc(d.StallTimeout, cancel)
	defer stall.Stop()
	body = &progressReader{r: body, onRead: func() { stall.Reset(d.StallTimeout) }}
	if d.RateBytes > 0 {
		body = newRateReader(ctx, body, d.RateBytes)
	}
	n, copyErr := io.Copy(f, body)
	d.step("part-copied")
	// Keep what arrived durable, so a restart resumes from it.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", part, err)
	}
	d.step("part-synced")
	if copyErr != nil {
		return fmt.Errorf("after %d bytes: %w", have+n, copyErr)
	}
	if have+n < tg.Length {
		return fmt.Errorf("server closed after %d of %d bytes", have+n, tg.Length)
	}
	return nil
}

func truncate(f *os.File, n int64) error {
	if err := f.Truncate(n); err != nil {
		return fmt.Errorf("%w: truncate %s: %v", ErrGaveUp, f.Name(), err)
	}
	if _, err := f.Seek(n, io.SeekStart); err != nil {
		return fmt.Errorf("%w: %v", ErrGaveUp, err)
	}
	return nil
}

// contentRangeStart parses "bytes START-END/SIZE".
func contentRangeStart(v string) (int64, error) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, fmt.Errorf("content-range %q", v)
	}
	start, _, ok := strings.Cut(rest, "-")
	if !ok || start == "" || strings.Trim(start, "0123456789") != "" {
		return 0, fmt.Errorf("content-range %q", v)
	}
	return strconv.ParseInt(start, 10, 64)
}

// verifyFile streams path through the target's verifier.
func verifyFile(path string, tg firmware.Target) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return tg.VerifyArtifact(f)
}

type progressReader struct {
	r      io.Reader
	onRead func()
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.onRead()
	}
	return n, err
}

// rateReader paces reads through a token bucket of bytes.
type rateReader struct {
	ctx   context.Context
	r     io.Reader
	lim   *rate.Limiter
	chunk int
}

func newRateReader(ctx context.Context, r io.Reader, bytesPerSec int) *rateReader {
	// The burst is also the largest read, so WaitN can always pass; small
	// enough that a thin link is paced smoothly.
	burst := min(max(bytesPerSec/4, 1), 32<<10)
	return &rateReader{ctx: ctx, r: r, lim: rate.NewLimiter(rate.Limit(bytesPerSec), burst), chunk: burst}
}

func (rr *rateReader) Read(b []byte) (int, error) {
	if len(b) > rr.chunk {
		b = b[:rr.chunk]
	}
	n, err := rr.r.Read(b)
	if n > 0 {
		if werr := rr.lim.WaitN(rr.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}
