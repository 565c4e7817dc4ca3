package ota

import (
	"net/http"
	"time"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/protocol"
)

// EdgeAuth is an http.RoundTripper that signs every request to the
// cloud's release repository with the edge's key (a fresh
// firmware.RepoAuthorization each time, so a resumed download never
// carries an expired one). Give it to HTTPSource and Downloader through
// NewEdgeClient.
type EdgeAuth struct {
	Edge    string
	Signer  *protocol.Signer
	Cluster string // the id of the cloud key the edge pinned
	Base    http.RoundTripper
	Now     func() time.Time
}

// RoundTrip implements http.RoundTripper.
func (a *EdgeAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	base := a.Base
	if base == nil {
		base = http.DefaultTransport
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", firmware.RepoAuthorization(a.Signer, a.Edge, a.Cluster, now()))
	return base.RoundTrip(r)
}

// NewEdgeClient is an HTTP client whose requests are signed by a.
func NewEdgeClient(a *EdgeAuth) *http.Client { return &http.Client{Transport: a} }
