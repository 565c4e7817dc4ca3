package projection

import "github.com/outpost-edge/outpost/protocol/pos"

// View is the rows of the read models as they stand before a batch. Fold
// reads only the keys the batch touches, so a View backed by a database
// needs to fetch only those (one lookup per key per batch).
type View interface {
	Sales(SalesKey) (Sales, bool)
	SKU(SKUKey) (SKUSales, bool)
	Hour(HourKey) (HourSales, bool)
	Tender(TenderKey) (Tenders, bool)
	OnHand(StockKey) (int64, bool)
	Telemetry(TelemetryKey) (Telemetry, bool)
	Till(pos.TillKey) (Till, bool)
	Txn(TxnKey) (Txn, bool)
}

// Tables are the keyed rows of every read model. A Delta holds the rows a
// batch touched; a State holds all of them.
type Tables struct {
	Sales     map[SalesKey]Sales
	SKU       map[SKUKey]SKUSales
	Hour      map[HourKey]HourSales
	Tenders   map[TenderKey]Tenders
	OnHand    map[StockKey]int64
	Telemetry map[TelemetryKey]Telemetry
	Tills     map[pos.TillKey]Till
	Txns      map[TxnKey]Txn
}

func newTables() Tables {
	return Tables{
		Sales:     map[SalesKey]Sales{},
		SKU:       map[SKUKey]SKUSales{},
		Hour:      map[HourKey]HourSales{},
		Tenders:   map[TenderKey]Tenders{},
		OnHand:    map[StockKey]int64{},
		Telemetry: map[TelemetryKey]Telemetry{},
		Tills:     map[pos.TillKey]Till{},
		Txns:      map[TxnKey]Txn{},
	}
}

// Logs are the append-only rows, in pos order.
type Logs struct {
	Movements    []Movement
	Anomalies    []Anomaly
	Restatements []Restatement
}

// Delta is what one batch changes: the new value of every key it touched
// (to upsert) and the rows it appends. LastPos is the position of the last
// record folded, for the projection's checkpoint.
type Delta struct {
	Tables
	Logs
	LastPos int64
}

// State is every row of the read models, in memory. It is a View, and
// Apply moves it past a batch. The zero State is not usable; use NewState.
type State struct {
	Tables
	Logs
	LastPos int64
}

// NewState returns an empty State.
func NewState() *State { return &State{Tables: newTables()} }

var _ View = (*State)(nil)

func (s *State) Sales(k SalesKey) (Sales, bool)     { v, ok := s.Tables.Sales[k]; return v, ok }
func (s *State) SKU(k SKUKey) (SKUSales, bool)      { v, ok := s.Tables.SKU[k]; return v, ok }
func (s *State) Hour(k HourKey) (HourSales, bool)   { v, ok := s.Tables.Hour[k]; return v, ok }
func (s *State) Tender(k TenderKey) (Tenders, bool) { v, ok := s.Tables.Tenders[k]; return v, ok }
func (s *State) OnHand(k StockKey) (int64, bool)    { v, ok := s.Tables.OnHand[k]; return v, ok }
func (s *State) Telemetry(k TelemetryKey) (Telemetry, bool) {
	v, ok := s.Tables.Telemetry[k]
	return v, ok
}
func (s *State) Till(k pos.TillKey) (Till, bool) { v, ok := s.Tills[k]; return v, ok }
func (s *State) Txn(k TxnKey) (Txn, bool)        { v, ok := s.Txns[k]; return v, ok }

// Apply upserts the rows of d and appends its logs.
func (s *State) Apply(d *Delta) {
	upsert(s.Tables.Sales, d.Tables.Sales)
	upsert(s.Tables.SKU, d.Tables.SKU)
	upsert(s.Tables.Hour, d.Tables.Hour)
	upsert(s.Tables.Tenders, d.Tables.Tenders)
	upsert(s.Tables.OnHand, d.Tables.OnHand)
	upsert(s.Tables.Telemetry, d.Tables.Telemetry)
	for k, v := range d.Tills {
		s.Tills[k] = v.clone()
	}
	upsert(s.Txns, d.Txns)
	s.Movements = append(s.Movements, d.Movements...)
	s.Anomalies = append(s.Anomalies, d.Anomalies...)
	s.Restatements = append(s.Restatements, d.Restatements...)
	if d.LastPos > s.LastPos {
		s.LastPos = d.LastPos
	}
}

func upsert[K comparable, V any](dst, src map[K]V) {
	for k, v := range src {
		dst[k] = v
	}
}

// get reads a key from the batch's own rows first, then from the prior view.
func get[K comparable, V any](own map[K]V, k K, prior func(K) (V, bool)) (V, bool) {
	if v, ok := own[k]; ok {
		return v, true
	}
	return prior(k)
}
