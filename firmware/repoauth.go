package firmware

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// An edge reads the cloud's release repository over HTTP with a request
// header signed by its own key (the key the cloud registered at
// enrollment), so only enrolled edges that are not revoked download
// releases:
//
//	Authorization: Outpost-Edge <edge> <token>
//
// token is a protocol broker token (v2, Ed25519) for the audience
// "ota:<cluster>" (cluster: the id of the cloud key the edge pinned) whose
// counter is the token's expiry in Unix milliseconds. The cloud accepts it
// until then, and only if the expiry is at most MaxRepoTokenLife ahead of
// its own clock. Unlike a broker login the token is not spent once: one
// download makes many Range requests, and what it reads is signed release
// metadata and artifacts, public to every enrolled edge. A token for the
// brokers ("mqtt:..." or "nats:...") is not one for the repository, nor
// the other way round.

// RepoAuthScheme is the Authorization scheme of repository requests.
const RepoAuthScheme = "Outpost-Edge"

// Lifetimes of repository tokens: the edge makes each one RepoTokenLife
// long; the cloud refuses one whose expiry is further ahead than
// MaxRepoTokenLife (a clock a few minutes apart still works).
const (
	RepoTokenLife    = 2 * time.Minute
	MaxRepoTokenLife = 10 * time.Minute
)

// Errors of CheckRepoAuth, besides protocol.ErrBadSignature.
var (
	// ErrRepoAuthMissing: no Outpost-Edge Authorization header.
	ErrRepoAuthMissing = errors.New("no Outpost-Edge authorization")
	// ErrRepoAuthExpired: the token's expiry has passed, or is further
	// ahead than MaxRepoTokenLife (the edge's clock is off).
	ErrRepoAuthExpired = errors.New("repository token expired or not yet valid")
)

// RepoAudience is the audience of repository tokens for a cloud.
func RepoAudience(cluster string) string { return protocol.BrokerAudience("ota", cluster) }

// RepoAuthorization is the Authorization header value for edge, signed by
// s for the cloud cluster, valid until now+RepoTokenLife.
func RepoAuthorization(s *protocol.Signer, edge, cluster string, now time.Time) string {
	exp := uint64(now.Add(RepoTokenLife).UnixMilli())
	return RepoAuthScheme + " " + edge + " " + s.BrokerToken(RepoAudience(cluster), edge, exp)
}

// ParseRepoAuthorization splits an Authorization header into the edge and
// its parsed token, without verifying the signature.
func ParseRepoAuthorization(h string) (string, protocol.BrokerToken, error) {
	if h == "" {
		return "", protocol.BrokerToken{}, fmt.Errorf("%w: send 'Authorization: %s <edge> <token>' signed with the edge's key (edge ota check does)", ErrRepoAuthMissing, RepoAuthScheme)
	}
	parts := strings.Fields(h)
	if len(parts) != 3 || parts[0] != RepoAuthScheme {
		return "", protocol.BrokerToken{}, fmt.Errorf("%w: the Authorization header is not '%s <edge> <token>'", ErrRepoAuthMissing, RepoAuthScheme)
	}
	if err := protocol.ValidateName("edge", parts[1]); err != nil {
		return "", protocol.BrokerToken{}, fmt.Errorf("%w: %v", ErrRepoAuthMissing, err)
	}
	t, err := protocol.ParseBrokerToken(parts[2])
	if err != nil {
		return "", protocol.BrokerToken{}, err
	}
	return parts[1], t, nil
}

// CheckRepoToken checks t's expiry against now and its signature for
// edge on cluster with keys.
func CheckRepoToken(t protocol.BrokerToken, edge, cluster string, keys protocol.Keys, now time.Time) error {
	exp := time.UnixMilli(int64(min(t.Counter, uint64(1)<<62)))
	if !now.Before(exp) {
		return fmt.Errorf("%w: it expired at %s (now %s): make a new one per request", ErrRepoAuthExpired, exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if exp.Sub(now) > MaxRepoTokenLife {
		return fmt.Errorf("%w: it expires at %s, more than %s after the cloud's clock (%s): check the edge's clock", ErrRepoAuthExpired, exp.UTC().Format(time.RFC3339), MaxRepoTokenLife, now.UTC().Format(time.RFC3339))
	}
	return t.Verify(RepoAudience(cluster), edge, keys)
}
