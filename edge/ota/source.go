package ota

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"github.com/outpost-edge/outpost/firmware"
)

// HTTPSource reads TUF metadata from a repository served over HTTP (Base
// is its URL, such as https://cloud.example/v1/ota/repo/).
type HTTPSource struct {
	Base   string
	Client *http.Client // http.DefaultClient
}

var _ firmware.Source = (*HTTPSource)(nil)

// Fetch implements firmware.Source: 404 is firmware.ErrNotFound, any other
// status but 200 an error, and a body longer than max is refused.
func (h *HTTPSource) Fetch(ctx context.Context, name string, max int64) ([]byte, error) {
	u, err := url.JoinPath(strings.TrimSuffix(h.Base, "/")+"/", name)
	if err != nil {
		return nil, fmt.Errorf("repository url %q: %w", h.Base, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	c := h.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, fmt.Errorf("%s: %w", u, firmware.ErrNotFound)
	default:
		// The cloud's repository says why it refused (an unenrolled or
		// revoked edge, an expired token) in a short body.
		why, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		r := strings.TrimSpace(strings.Map(func(c rune) rune {
			if unicode.IsPrint(c) {
				return c
			}
			return '?'
		}, string(why)))
		if r != "" && resp.StatusCode/100 == 4 {
			return nil, fmt.Errorf("%w: %s", &HTTPError{URL: u, Status: resp.StatusCode}, r)
		}
		return nil, &HTTPError{URL: u, Status: resp.StatusCode}
	}
	if resp.ContentLength > max {
		return nil, fmt.Errorf("%w: %s is %d bytes, at most %d", firmware.ErrUntrusted, u, resp.ContentLength, max)
	}
	return firmware.ReadCapped(resp.Body, name, max)
}
