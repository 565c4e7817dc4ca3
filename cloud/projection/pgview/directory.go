package pgview

import (
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/projection"
)

// Directory is the stores table and the edges' tenants, cached. A lookup
// that misses is fetched from the database inside the commit transaction
// that needs it (Apply does that), so a store added, or an edge enrolled,
// before a commit is always seen by it; there is nothing to invalidate.
// An edge moved to another tenant, or a store's time zone changed, is seen
// after Refresh (or a restart); the rows already folded keep the old
// values until a rebuild.
type Directory struct {
	mu     sync.Mutex
	stores map[string]projection.Store
	edges  map[string]string
	zones  map[string]*time.Location
}

// NewDirectory returns an empty Directory; it fills itself on demand.
func NewDirectory() *Directory {
	return &Directory{stores: map[string]projection.Store{}, edges: map[string]string{}, zones: map[string]*time.Location{}}
}

// Refresh forgets everything cached, so that changed stores and edges are
// read again.
func (d *Directory) Refresh() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stores, d.edges = map[string]projection.Store{}, map[string]string{}
}

// snapshot is a Directory's view for one fold: it implements
// projection.Stores and projection.EdgeTenants, and notes every store and
// edge it was asked for and did not hold, for Apply to fetch.
type snapshot struct {
	d          *Directory
	tried      map[string]bool // ids fetched during this Apply: not missing again
	missStores map[string]bool
	missEdges  map[string]bool
}

func (d *Directory) snapshot(tried map[string]bool) *snapshot {
	return &snapshot{d: d, tried: tried, missStores: map[string]bool{}, missEdges: map[string]bool{}}
}

func (s *snapshot) Store(id string) (projection.Store, bool) {
	s.d.mu.Lock()
	st, ok := s.d.stores[id]
	s.d.mu.Unlock()
	if !ok && !s.tried["s/"+id] {
		s.missStores[id] = true
	}
	return st, ok
}

func (s *snapshot) EdgeTenant(edge string) (string, bool) {
	s.d.mu.Lock()
	t, ok := s.d.edges[edge]
	s.d.mu.Unlock()
	if !ok && !s.tried["e/"+edge] {
		s.missEdges[edge] = true
	}
	return t, ok
}

func (s *snapshot) missing() bool { return len(s.missStores)+len(s.missEdges) > 0 }

// queueFetch queues the reads of the missing stores and edges, which
// then are cached.
func (s *snapshot) queueFetch(rd *reads) {
	var stores, edges []string
	for id := range s.missStores {
		stores = append(stores, id)
		s.tried["s/"+id] = true
	}
	for id := range s.missEdges {
		edges = append(edges, id)
		s.tried["e/"+id] = true
	}
	s.missStores, s.missEdges = map[string]bool{}, map[string]bool{}
	var id, tenant, zone string
	rd.query(`SELECT id, tenant, time_zone FROM stores WHERE id = ANY($1)`, []any{stores}, func(rows pgx.Rows) error {
		_, err := pgx.ForEachRow(rows, []any{&id, &tenant, &zone}, func() error {
			// A zone this machine does not know (an old tzdata) must not
			// stop ingest: its hours are taken in UTC. `cloud stores add`
			// checks the name when the store is added.
			loc, _ := s.d.zone(zone)
			s.d.mu.Lock()
			s.d.stores[id] = projection.Store{Tenant: tenant, Location: loc}
			s.d.mu.Unlock()
			return nil
		})
		if err != nil {
			return fmt.Errorf("read stores: %w", err)
		}
		return nil
	})
	rd.query(`SELECT id, tenant FROM edges WHERE id = ANY($1)`, []any{edges}, func(rows pgx.Rows) error {
		_, err := pgx.ForEachRow(rows, []any{&id, &tenant}, func() error {
			s.d.mu.Lock()
			s.d.edges[id] = tenant
			s.d.mu.Unlock()
			return nil
		})
		if err != nil {
			return fmt.Errorf("read edges: %w", err)
		}
		return nil
	})
}

func (d *Directory) zone(name string) (*time.Location, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if l, ok := d.zones[name]; ok {
		return l, nil
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: %w (set an IANA name such as Europe/Berlin)", name, err)
	}
	d.zones[name] = l
	return l, nil
}
