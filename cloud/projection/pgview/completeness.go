package pgview

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/protocol"
)

// StreamCompleteness is how far the cloud holds one stream (an outbox life
// of an edge): what is committed, what the edge says it holds, and when
// each was last heard of.
type StreamCompleteness struct {
	Tenant      string
	Edge        string
	Epoch       protocol.Epoch
	Store       string    // the store the edge serves ("" when it is not set)
	Committed   uint64    // committed through this seq
	EdgeSeq     uint64    // the edge's own head as it last said (its latest hello)
	Pending     uint64    // EdgeSeq − Committed: events the edge holds and the cloud has not committed
	LastCommit  time.Time // zero before the first commit
	LastContact time.Time // latest segment or hello
	Ended       bool      // the edge has started a new epoch; this one is over
}

// StoreCompleteness is how complete one store's data is: over the live
// streams of the edges that serve it (edges.store).
type StoreCompleteness struct {
	Tenant      string
	Store       string
	Location    *time.Location
	Edges       []string
	Pending     uint64    // Σ of the streams' Pending
	LastCommit  time.Time // the latest commit of any of its streams
	LastContact time.Time // the least recent last contact of its edges
}

// CompleteThrough reports whether the store's data is complete through
// the business day day (YYYY-MM-DD): it has edges, none of them holds an
// event the cloud has not committed, and each was last heard of after the
// day ended in the store's time zone, so that nothing of that day can
// still be in an outbox unannounced. It is a statement about what the
// edges said, not about tills that have not reached their edge.
func (s *StoreCompleteness) CompleteThrough(day string) bool {
	d, err := time.ParseInLocation(time.DateOnly, day, s.loc())
	if err != nil || len(s.Edges) == 0 || s.Pending > 0 {
		return false
	}
	return !s.LastContact.Before(d.AddDate(0, 0, 1))
}

func (s *StoreCompleteness) loc() *time.Location {
	if s.Location == nil {
		return time.UTC
	}
	return s.Location
}

// Completeness is the completeness report of one tenant ("" for all).
type Completeness struct {
	AsOf    int64 // the ledger position the projection reflects (its checkpoint)
	Streams []StreamCompleteness
	Stores  []StoreCompleteness
}

// ReadCompleteness reads the completeness report of tenant ("" for every
// tenant) from the streams, the edges, the stores and the projection's
// checkpoint, in one snapshot.
func ReadCompleteness(ctx context.Context, db *pgxpool.Pool, tenant string) (*Completeness, error) {
	out := &Completeness{}
	err := pgx.BeginTxFunc(ctx, db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		cp, _, err := ReadCheckpoint(ctx, tx, Name)
		if err != nil {
			return err
		}
		out.AsOf = cp.LastPos
		rows, err := tx.Query(ctx, `SELECT e.tenant, s.edge, s.epoch, coalesce(e.store, ''), s.hwm, s.edge_seq,
				s.last_commit, s.last_seen, s.ended_at IS NOT NULL
			FROM streams s JOIN edges e ON e.id = s.edge
			WHERE $1 = '' OR e.tenant = $1 ORDER BY e.tenant, s.edge, s.first_seen, s.epoch`, tenant)
		if err != nil {
			return err
		}
		var sc StreamCompleteness
		var epoch []byte
		var hwm, edgeSeq int64
		var lastCommit *time.Time
		_, err = pgx.ForEachRow(rows, []any{&sc.Tenant, &sc.Edge, &epoch, &sc.Store, &hwm, &edgeSeq, &lastCommit, &sc.LastContact, &sc.Ended}, func() error {
			copy(sc.Epoch[:], epoch)
			sc.Committed, sc.EdgeSeq, sc.LastCommit, sc.Pending = uint64(hwm), uint64(edgeSeq), deref(lastCommit), 0
			if sc.EdgeSeq > sc.Committed && !sc.Ended {
				sc.Pending = sc.EdgeSeq - sc.Committed
			}
			out.Streams = append(out.Streams, sc)
			return nil
		})
		if err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT tenant, id, time_zone FROM stores WHERE $1 = '' OR tenant = $1 ORDER BY tenant, id`, tenant)
		if err != nil {
			return err
		}
		var st StoreCompleteness
		var zone string
		_, err = pgx.ForEachRow(rows, []any{&st.Tenant, &st.Store, &zone}, func() error {
			loc, _ := time.LoadLocation(zone)
			st.Location = loc
			s := st
			s.Edges = nil
			for _, c := range out.Streams {
				if c.Store != s.Store || c.Tenant != s.Tenant || c.Ended {
					continue
				}
				if len(s.Edges) == 0 || s.Edges[len(s.Edges)-1] != c.Edge {
					s.Edges = append(s.Edges, c.Edge)
				}
				s.Pending += c.Pending
				if c.LastCommit.After(s.LastCommit) {
					s.LastCommit = c.LastCommit
				}
				if s.LastContact.IsZero() || c.LastContact.Before(s.LastContact) {
					s.LastContact = c.LastContact // the edge heard of least recently
				}
			}
			out.Stores = append(out.Stores, s)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("completeness: %w", err)
	}
	return out, nil
}
