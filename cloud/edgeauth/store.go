package edgeauth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// Store is what the Authenticator needs from the fleet's database.
type Store interface {
	// EdgeKeys returns the keys of edge. Errors wrap ErrUnknownEdge or
	// ErrRevoked when the edge may be refused from the negative cache.
	EdgeKeys(ctx context.Context, edge string) (protocol.Keys, error)
	// UseCounter spends counter for a login of edge with key kid: errors
	// wrap ErrReplay when counter is not above the highest spent, and
	// ErrRevoked or ErrUnknownEdge.
	UseCounter(ctx context.Context, edge string, kid protocol.KeyID, counter uint64) error
	// RecentRevocations returns the revocations of the last window.
	RecentRevocations(ctx context.Context, window time.Duration) ([]Revocation, error)
}

// Revocation is the revocation of an edge (KID empty) or of one key.
type Revocation struct {
	ID   int64
	Edge string
	KID  protocol.KeyID
}

// CounterChecksKeys is implemented by a Store whose UseCounter itself
// refuses a revoked or unknown edge or key (LedgerStore: in the same UPDATE
// that spends the counter). With it, the Authenticator may verify a token
// against keys it looked up shortly before (Options.KeysTTL): a key or edge
// revoked since is still refused, by UseCounter.
type CounterChecksKeys interface {
	CounterChecksKeys() bool
}

// LedgerStore is the Store of a cloud: the fleet tables in Postgres, shared
// by every replica.
func LedgerStore(l *ledger.Ledger) Store { return ledgerStore{l} }

type ledgerStore struct{ l *ledger.Ledger }

func (s ledgerStore) EdgeKeys(ctx context.Context, edge string) (protocol.Keys, error) {
	k, err := s.l.EdgeKeys(ctx, edge)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return nil, fmt.Errorf("edge %s is not registered: %w", edge, ErrUnknownEdge)
	case err != nil:
		return nil, err
	case k.Revoked():
		return nil, fmt.Errorf("edge %s: %w", edge, ErrRevoked)
	}
	return k, nil
}

// CounterChecksKeys: UseBrokerCounter's UPDATE requires the edge and the
// key to be active.
func (ledgerStore) CounterChecksKeys() bool { return true }

func (s ledgerStore) UseCounter(ctx context.Context, edge string, kid protocol.KeyID, counter uint64) error {
	err := s.l.UseBrokerCounter(ctx, edge, kid, counter)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ledger.ErrCounterUsed):
		return fmt.Errorf("%w: %w", err, ErrReplay)
	case errors.Is(err, ledger.ErrRevoked):
		return fmt.Errorf("%w: %w", err, ErrRevoked)
	case errors.Is(err, ledger.ErrNotFound):
		return fmt.Errorf("%w: %w", err, ErrUnknownEdge)
	case errors.Is(err, ledger.ErrUnknownKey):
		return fmt.Errorf("%w: %w", err, protocol.ErrBadSignature)
	}
	return err
}

func (s ledgerStore) RecentRevocations(ctx context.Context, window time.Duration) ([]Revocation, error) {
	rs, err := s.l.RecentRevocations(ctx, window)
	if err != nil {
		return nil, err
	}
	out := make([]Revocation, len(rs))
	for i, r := range rs {
		out[i] = Revocation{ID: r.ID, Edge: r.Edge, KID: r.KID}
	}
	return out, nil
}

// KeysStore is a Store for one process without a database (tests, and
// brokers started with only a key lookup): keys come from keys, an error
// from it counts as an unknown edge, counters are remembered in memory, and
// there are no revocations to watch.
func KeysStore(keys func(ctx context.Context, edge string) (protocol.Keys, error)) Store {
	return &keysStore{keys: keys, counters: map[string]uint64{}}
}

type keysStore struct {
	keys     func(ctx context.Context, edge string) (protocol.Keys, error)
	mu       sync.Mutex
	counters map[string]uint64
}

func (s *keysStore) EdgeKeys(ctx context.Context, edge string) (protocol.Keys, error) {
	k, err := s.keys(ctx, edge)
	if err != nil {
		return nil, fmt.Errorf("edge %s: %w: %w", edge, err, ErrUnknownEdge)
	}
	return k, nil
}

func (s *keysStore) UseCounter(_ context.Context, edge string, _ protocol.KeyID, counter uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if hi := s.counters[edge]; counter <= hi {
		return fmt.Errorf("broker login of %s: counter %d is not above %d, the highest accepted: %w", edge, counter, hi, ErrReplay)
	}
	s.counters[edge] = counter
	return nil
}

func (s *keysStore) RecentRevocations(context.Context, time.Duration) ([]Revocation, error) {
	return nil, nil
}
