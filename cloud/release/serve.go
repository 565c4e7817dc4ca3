package release

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/protocol"
)

// Errors a KeyStore returns for an edge that may not read the repository.
var (
	ErrUnknownEdge = errors.New("unknown edge")
	ErrRevokedEdge = errors.New("edge revoked")
)

// KeyStore finds an edge's active keys. It returns an error wrapping
// ErrUnknownEdge or ErrRevokedEdge for an edge that is not enrolled or is
// revoked (cmd/cloud adapts the ledger's).
type KeyStore interface {
	EdgeKeys(ctx context.Context, edge string) (protocol.Keys, error)
}

// Server serves the repository to enrolled edges: every request carries
// an Authorization header signed by the edge's key (firmware.
// RepoAuthorization), checked against the keys the ledger holds for it.
// Metadata and artifacts are served with http.ServeContent (Range,
// If-Range, HEAD).
type Server struct {
	Repo    *Repo
	Keys    KeyStore
	Cluster string // the id of the cloud's key, which edges pin
	Prefix  string // the URL path the repository is served under, such as /v1/ota/repo/
	Now     func() time.Time
	Logger  *slog.Logger
}

var servable = regexp.MustCompile(`^(?:[1-9][0-9]{0,18}\.(?:root|snapshot|targets)\.json|timestamp\.json|snapshot\.json|targets\.json|targets/[A-Za-z0-9._/-]{1,255})$`)

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "the release repository is read-only: GET or HEAD", http.StatusMethodNotAllowed)
		return
	}
	edge, status, err := s.authorize(r)
	if err != nil {
		if status >= 500 {
			s.logger().Error("release repository: edge key lookup failed", "edge", edge, "err", err)
			http.Error(w, "the cloud could not check the edge's key; retry later", status)
			return
		}
		s.logger().Info("release repository: refused", "edge", edge, "status", status, "reason", err.Error())
		http.Error(w, err.Error(), status)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, s.Prefix)
	// Names of the repository only: no temp file (.upload-*), no lock.
	if !servable.MatchString(name) || !fs.ValidPath(name) || strings.Contains("/"+name, "/.") {
		http.Error(w, fmt.Sprintf("%q is not a file of the release repository", name), http.StatusNotFound)
		return
	}
	f, err := os.Open(filepath.Join(s.Repo.Dir, filepath.FromSlash(name)))
	if errors.Is(err, fs.ErrNotExist) {
		http.Error(w, fmt.Sprintf("%s is not in the release repository", name), http.StatusNotFound)
		return
	}
	if err != nil {
		s.logger().Error("release repository: open", "file", name, "err", err)
		http.Error(w, "the release repository could not be read", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.Error(w, fmt.Sprintf("%s is not in the release repository", name), http.StatusNotFound)
		return
	}
	// Metadata changes (timestamp.json every few hours); artifacts and
	// versioned metadata never do.
	if strings.HasPrefix(name, "targets/") || name[0] >= '1' && name[0] <= '9' {
		w.Header().Set("Cache-Control", "private, max-age=86400, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	if strings.HasSuffix(name, ".json") {
		w.Header().Set("Content-Type", "application/json")
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	http.ServeContent(w, r, "", st.ModTime(), f)
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// authorize returns the edge and, for a refusal, the status and reason.
func (s *Server) authorize(r *http.Request) (string, int, error) {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	edge, tok, err := firmware.ParseRepoAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return edge, http.StatusUnauthorized, fmt.Errorf("release repository: %w", err)
	}
	keys, err := s.Keys.EdgeKeys(r.Context(), edge)
	switch {
	case errors.Is(err, ErrUnknownEdge):
		return edge, http.StatusForbidden, fmt.Errorf("release repository: edge %s is not enrolled: enroll it (edge enroll) or register it (cloud edges add)", edge)
	case errors.Is(err, ErrRevokedEdge):
		return edge, http.StatusForbidden, fmt.Errorf("release repository: edge %s is revoked: it gets no releases", edge)
	case err != nil:
		return edge, http.StatusServiceUnavailable, err
	}
	if err := firmware.CheckRepoToken(tok, edge, s.Cluster, keys, now()); err != nil {
		return edge, http.StatusUnauthorized, fmt.Errorf("release repository: edge %s: %w", edge, err)
	}
	return edge, 0, nil
}
