package projection

import (
	"reflect"
	"time"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// Version is the version of the read models' definitions. It changes
// whenever a figure is defined differently, so that stored rows folded by an
// older definition are known to need a rebuild.
//
// Version 2: the till reconciliation's ledger net is derived from its sales,
// returns and voids (version 1 stored 0).
const Version = 2

// Record is one committed ledger record as the folds see it: its global
// commit offset and the record the edge signed.
type Record struct {
	Pos int64
	protocol.Record

	// memo keeps the body as Fold decoded it, so that folding the same
	// slice again (a commit folds a batch more than once) decodes it once.
	memo *decoded
}

// decoded is a body as pos.Decode left it: the value, or its error. typ
// and body say which body it is, so that a copy of the Record given
// another body or type does not use it.
type decoded struct {
	typ  string
	body *byte         // the body's first byte
	n    int           // and its length
	v    reflect.Value // a pointer to a copy of the decoded value
	err  error
}

// of reports whether m holds r's body, decoded.
func (m *decoded) of(r *Record) bool {
	return m != nil && (m.v.IsValid() || m.err != nil) && m.typ == r.Type && m.n == len(r.Body) && m.n > 0 && m.body == &r.Body[0]
}

// Store is what the folds need to know about a store.
type Store struct {
	Tenant   string
	Location *time.Location // the store's IANA time zone; UTC when nil
}

// Stores looks a store up by the id POS bodies name it by.
type Stores interface {
	Store(id string) (Store, bool)
}

// EdgeTenants is what a Stores may also know: the tenant each edge belongs
// to. When it does, a body that names a store of another tenant than its
// edge's is not counted anywhere and is listed as an AnomalyForeignStore
// under the edge's tenant; the store's owner never sees it.
type EdgeTenants interface {
	EdgeTenant(edge string) (string, bool)
}

// DefaultTenant is the tenant every edge belongs to until it is moved, and
// the tenant of an anomaly whose edge and store are both unknown.
const DefaultTenant = "default"

// Directory is a Stores that also knows the edges' tenants, held in memory.
type Directory struct {
	Stores StoreMap
	Edges  map[string]string // edge id -> tenant
}

// Store implements Stores.
func (d *Directory) Store(id string) (Store, bool) { s, ok := d.Stores[id]; return s, ok }

// EdgeTenant implements EdgeTenants.
func (d *Directory) EdgeTenant(edge string) (string, bool) { t, ok := d.Edges[edge]; return t, ok }

// StoreMap is a Stores held in memory.
type StoreMap map[string]Store

// Store implements Stores.
func (m StoreMap) Store(id string) (Store, bool) { s, ok := m[id]; return s, ok }

// SalesKey names one row of the sales summary.
type SalesKey struct {
	Tenant, Store, BusinessDay, Currency string
}

// Sales is one row of the sales summary. Money is in minor units, Items in
// thousandths of a unit. docs/REPORTS.md defines each figure.
type Sales struct {
	Transactions   int64
	Items          int64
	GrossSales     int64
	Discounts      int64
	ReturnsCount   int64
	ReturnsAmount  int64
	VoidsCount     int64
	VoidsAmount    int64
	Tax            int64
	NetSales       int64
	TotalCollected int64
}

// SKUKey names one row of sales by SKU.
type SKUKey struct {
	Store, BusinessDay, SKU, Currency string
}

// SKUSales is one row of sales by SKU.
type SKUSales struct {
	QtySold     int64
	QtyReturned int64
	QtyVoided   int64
	Gross       int64
	Discounts   int64
	Returns     int64
	Voids       int64
	Net         int64
}

// HourKey names one row of sales by hour: Hour is 0 to 23 in the store's
// time zone.
type HourKey struct {
	Store, BusinessDay string
	Hour               int
	Currency           string
}

// HourSales is one row of sales by hour.
type HourSales struct {
	Count int64 // sales
	Net   int64 // net sales: sales less returns and voids
}

// TenderKey names one row of the tenders report.
type TenderKey struct {
	Store, BusinessDay, Type, Currency string
}

// Tenders is one row of the tenders report. Net is what the till holds in
// this tender: Amount − Change − Refunds, the figure a Z report lists.
type Tenders struct {
	Count   int64
	Amount  int64
	Change  int64
	Refunds int64
	Net     int64
}

// StockKey names one item's stock in one store.
type StockKey struct {
	Store, SKU string
}

// Movement is one change to stock on hand, appended in pos order. A count
// (Reason "count") sets on hand to Qty; every other movement adds Delta.
type Movement struct {
	Pos    int64
	Store  string
	SKU    string
	Reason string // sale, return, void, count, or an adjustment reason
	Delta  int64  // thousandths, signed; 0 for a count
	Qty    int64  // on hand after this movement
}

// TelemetryKey names one minute of one sensor's metric. Minute is the edge's
// HLC time truncated to the minute, in UTC.
type TelemetryKey struct {
	// Tenant is the store's tenant; for a reading that names no store
	// (an edge's own sensor), the edge's tenant.
	Tenant, Store, Sensor, Metric string
	Minute                        time.Time
}

// Telemetry is one minute of readings.
type Telemetry struct {
	Count         int64
	Min, Max, Sum float64
}

// Reconciliation statuses of a till day.
const (
	StatusOpen     = "open"     // no Z report yet
	StatusMatch    = "match"    // the ledger holds exactly what the Z says
	StatusPending  = "pending"  // the ledger is short of the Z
	StatusMismatch = "mismatch" // the ledger exceeds the Z, or the tender split differs
	StatusRestated = "restated" // events changed the day after it matched
)

// Till is the reconciliation of one till day (pos.TillKey).
type Till struct {
	Ledger   pos.TillClosed  // what the ledger holds, folded with pos.TillTotals
	Z        *pos.TillClosed // the Z report reconciled against: the latest in ledger order
	ZPos     int64           // its position
	ZID      string          // and its event id
	ZCount   int64           // Z reports seen for this day, reprints included
	Status   string
	Reason   []string // why, in words: what is missing or differs
	Matched  bool     // the day has matched its Z at least once
	Restated []int64  // positions of the events that changed it after it matched
}

func (t Till) clone() Till {
	t.Ledger.Tenders = append([]pos.TenderTally(nil), t.Ledger.Tenders...)
	if t.Z != nil {
		z := *t.Z
		t.Z = &z
	}
	t.Reason = append([]string(nil), t.Reason...)
	t.Restated = append([]int64(nil), t.Restated...)
	return t
}

// TxnKey names one transaction: a till's txn id on one business day.
type TxnKey struct {
	Store, Terminal, BusinessDay, Txn string
}

// Txn is a counted transaction, kept so that a duplicate is recognised and
// a void can reverse the sale it cancels.
type Txn struct {
	Pos      int64
	ID       string // the event id
	Type     string
	Currency string
	Tax      int64
	Net      int64 // net sales it added: gross − discounts (ex tax)
	Lines    []TxnLine
	Voided   bool
}

// TxnLine is what one sale line added to sales by SKU.
type TxnLine struct {
	SKU      string
	Qty      int64
	Gross    int64
	Discount int64
}

// Anomaly kinds.
const (
	AnomalyDuplicate    = "duplicate_transaction" // same (store, terminal, day, txn) again
	AnomalyUnknownStore = "unknown_store"         // a POS body names a store Stores does not know
	AnomalyForeignStore = "foreign_store"         // a POS body names a store of another tenant than its edge's
	AnomalyUndecodable  = "undecodable"           // a body of a known type breaks its schema
	AnomalyVoidUnknown  = "void_of_unknown_sale"  // a void names a sale not counted before it
	AnomalyVoidTwice    = "void_of_voided_sale"   // a void names a sale already voided, not a sale, or one in another currency
	AnomalyZSuperseded  = "z_superseded"          // a second, different Z for the same till day
	AnomalyShed         = "shed"                  // a tombstone: the edge shed the record's body
)

// Anomaly is a record the folds did not count as it stands, and why.
type Anomaly struct {
	Tenant  string // the edge's tenant (the store's when the edge's is not known)
	Kind    string
	Pos     int64
	ID      string // the event id
	Type    string
	Store   string
	Other   int64  // the position of the record it conflicts with, if any
	OtherID string // and its event id
	Detail  string
}

// Restatement is an event that changed a till day after it had matched its
// Z report.
type Restatement struct {
	Till   pos.TillKey
	Pos    int64
	ID     string
	Type   string
	Status string   // the day's status after it
	What   []string // the differences from the Z after it
}
