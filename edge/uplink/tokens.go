package uplink

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/internal/durable"
	"github.com/outpost-edge/outpost/protocol"
)

// Tokens makes the edge's broker tokens (protocol.BrokerToken, v2): each
// with a counter above every one used before, max(now in Unix ms, last + 1),
// written durably to a file before the token is handed out, so that the
// cloud, which accepts a counter only once and only above the highest it
// has seen, never sees one go back, whatever the clock does. A wrong clock
// does not stop the edge from logging in: after a step back the counter
// just keeps counting from the last one used.
type Tokens struct {
	signer  *protocol.Signer
	edge    string
	cluster string
	path    string // "" keeps the counter in memory only
	now     func() time.Time

	mu   sync.Mutex
	last uint64
}

// TokenOptions configure Tokens.
type TokenOptions struct {
	Signer *protocol.Signer // the edge key; required
	Edge   string
	// Cluster is the cloud's part of the audience: the id of the cloud key
	// the edge pinned at enrollment.
	Cluster string
	// Path is the counter file (cmd/edge: <data-dir>/broker-counter). Empty
	// keeps the counter in memory, for tests: a restart may then reuse a
	// counter if the clock went back.
	Path string
	Now  func() time.Time
}

// OpenTokens reads the counter file, if there is one.
func OpenTokens(o TokenOptions) (*Tokens, error) {
	if o.Signer == nil {
		return nil, errors.New("broker tokens: the edge key is required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	t := &Tokens{signer: o.Signer, edge: o.Edge, cluster: o.Cluster, path: o.Path, now: o.Now}
	if o.Path == "" {
		return t, nil
	}
	b, err := os.ReadFile(o.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return t, nil
	case err != nil:
		return nil, fmt.Errorf("broker login counter: %w", err)
	}
	t.last, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("broker login counter %s: %q is not a number (it holds the last login counter used; "+
			"if it is lost, remove it and the edge counts from its clock, which must then be later than its last login)", o.Path, b)
	}
	return t, nil
}

// Last is the last counter used (0 for none).
func (t *Tokens) Last() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last
}

// Token returns a fresh token for broker (protocol.BrokerMQTT or
// protocol.BrokerNATS). It fails only when the counter cannot be stored.
func (t *Tokens) Token(broker string) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.last + 1
	if ms := t.now().UnixMilli(); ms > 0 && uint64(ms) > n {
		n = uint64(ms)
	}
	if t.path != "" {
		if err := durable.WriteFile(t.path, []byte(strconv.FormatUint(n, 10)+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("broker login counter: %w", err)
		}
	}
	t.last = n
	return t.signer.BrokerToken(protocol.BrokerAudience(broker, t.cluster), t.edge, n), nil
}

// TokenSource is what the transports need to log in with broker tokens.
type TokenSource interface {
	Token(broker string) (string, error)
}

// Refusal explains a refused broker login for the edge's log and status:
// the broker's own answer ("not Authorized") says nothing more.
func (t *Tokens) Refusal(broker string) string {
	return fmt.Sprintf("the cloud refused the login of edge %s with key %s for %q (login counter %d). "+
		"The edge's clock is not the cause (broker tokens need none). Likely: the edge or key is not registered or was revoked "+
		"(`cloud edges list`), the edge pins another cloud key (`cloud key show`), the counter is not above the last one the cloud "+
		"accepted (a data dir restored from a backup: see docs/OPERATIONS.md), or too many failed logins from this address; "+
		"the cloud's log names the reason", t.edge, t.signer.KeyID(), protocol.BrokerAudience(broker, t.cluster), t.Last())
}
