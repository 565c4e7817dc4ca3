// Package projection holds the back office's read models as pure folds over
// committed ledger records: sales summary, sales by SKU, sales by hour,
// tenders, inventory on hand with its movements, telemetry per minute, till
// reconciliation against every Z report (till.closed), and anomalies such
// as duplicate transactions. docs/REPORTS.md defines every figure.
//
// Fold takes the rows a batch touches as they stood before it (a View) and
// the batch's records in ledger (pos) order, and returns a Delta: the new
// value of every key the batch touched, once per key, plus the append-only
// rows (inventory movements, anomalies, restatements) the batch adds.
// Records are folded one at a time, in pos order, on top of the prior rows,
// so the result does not depend on how the ledger was cut into batches:
// folding a sequence in one batch equals folding it in any split (the
// rebuild-equals-incremental invariant; TestSplitEqualsWhole checks it).
//
// Invariants:
//   - No I/O, no clock, no randomness: the output is a function of the
//     prior rows, the records and the Stores lookup.
//   - Money is int64 minor units, quantities int64 thousandths; never a
//     float. Telemetry values (measurements, not money) are float64, summed
//     in pos order so that the sum too is independent of batching.
//   - The business day is the one the body declares (business_day), never
//     a device clock; the hour of the by-hour report is the edge's HLC time
//     in the store's IANA time zone.
//   - A transaction (sale, return or void) whose (store, terminal, business
//     day, txn) was already counted under another record is not counted
//     again; it is listed as an anomaly with both ledger positions.
//
// Package pgview keeps these read models in Postgres (the tables of
// migration 0007), folds every commit batch into them inside the commit
// transaction (a ledger.Projection, with the checkpoint row), and rebuilds
// and checks them from the ledger (`cloud projections rebuild|check`);
// projectiontest builds the test ledgers.
//
// The reports are served by cloud/api (/v1/reports/*, through the typed
// queries in cloud/ledger/reports.go), and the simulator compares them with
// the figures it computes from the ledger's own POS bodies.
package projection
