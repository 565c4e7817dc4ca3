package verify_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
	"github.com/outpost-edge/outpost/simulator/oracle"
	"github.com/outpost-edge/outpost/simulator/traffic"
	"github.com/outpost-edge/outpost/simulator/verify"
)

var t0 = time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)

// fakeEdge builds a stream the way an edge's outbox does: seqs from 1,
// each record chained to the one before, a signed checkpoint per commit.
type fakeEdge struct {
	t     *testing.T
	chain *protocoltest.Stream
	cps   []verify.Checkpoint
	clock time.Time
}

func newFakeEdge(t *testing.T, id string) *fakeEdge {
	t.Helper()
	return &fakeEdge{t: t, chain: protocoltest.NewStream(t, id, protocoltest.NewSigner(t)), clock: t0}
}

// append adds the record of ev from device, one millisecond after the
// last in edge time.
func (f *fakeEdge) append(device string, ev protocol.Event) {
	r := protocol.NewRecord(f.chain.Stream, device, ev)
	f.clock = f.clock.Add(time.Millisecond)
	r.EdgeTime = protocol.HLCFromTime(f.clock)
	f.chain.Add(r)
}

// commit signs a checkpoint at the head, as every group commit does.
func (f *fakeEdge) commit() {
	n := f.chain.Last()
	if n == 0 || len(f.cps) > 0 && f.cps[len(f.cps)-1].Seq == n {
		return
	}
	f.cps = append(f.cps, verify.Checkpoint{Seq: n, Signature: f.chain.Checkpoint(n)})
}

// stored returns the stream as the cloud stores it, committed one
// millisecond a record after at.
func (f *fakeEdge) stored(at time.Time) verify.Stream {
	s := verify.Stream{Stream: f.chain.Stream, HWM: f.chain.Last(), Checkpoints: append([]verify.Checkpoint(nil), f.cps...)}
	for i, raw := range f.chain.Raws {
		s.Rows = append(s.Rows, verify.Row{Seq: uint64(i + 1), Pos: int64(1000 + i), CommittedAt: at.Add(time.Duration(i) * time.Millisecond),
			Raw: append([]byte(nil), raw...)})
	}
	return s
}

// world is a small fleet's worth of traffic: one edge, a till, a scale and
// a sensor, every event sent, acknowledged and stored, checkpoints every
// few records.
type world struct {
	t      *testing.T
	edge   *fakeEdge
	oracle *oracle.Oracle
	till   *traffic.Device
	evs    map[string]protocol.Event // by id
	devOf  map[string]string
	keys   protocol.KeyMap // the edge's registered keys
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, edge: newFakeEdge(t, "shop-1"), oracle: oracle.New(), evs: map[string]protocol.Event{}, devOf: map[string]string{}}
	w.keys = protocol.NewKeyMap(w.edge.chain.Signer.Public())
	w.till = traffic.New(traffic.Options{Seed: 1, Store: "shop-1", Device: "till-1", Kind: traffic.Till})
	devs := []*traffic.Device{
		w.till,
		traffic.New(traffic.Options{Seed: 1, Store: "shop-1", Device: "scale-1", Kind: traffic.Scale}),
		traffic.New(traffic.Options{Seed: 1, Store: "shop-1", Device: "sensor-1", Kind: traffic.Sensor, Skew: 26 * time.Hour}),
	}
	for i := range 60 {
		d := devs[i%len(devs)]
		w.send(d.ID(), d.Next(t0.Add(time.Duration(i)*time.Second)))
		if i%7 == 6 {
			w.edge.commit()
		}
	}
	z, _ := w.till.Close(t0.Add(time.Hour))
	w.send("till-1", z)
	w.edge.commit()
	return w
}

// send has the device send ev, the edge store it and acknowledge it.
func (w *world) send(device string, ev protocol.Event) {
	at := t0.Add(time.Duration(len(w.evs)) * time.Second)
	w.oracle.Sent("shop-1", device, ev, at)
	w.edge.append(device, ev)
	w.oracle.Acked(device, ev.ID, at.Add(2*time.Millisecond))
	w.evs[ev.ID] = ev
	w.devOf[ev.ID] = device
}

func (w *world) ledger(streams ...verify.Stream) *verify.Ledger {
	if len(streams) == 0 {
		streams = []verify.Stream{w.edge.stored(t0.Add(time.Minute))}
	}
	return &verify.Ledger{Streams: streams, Keys: map[string]protocol.KeyMap{"shop-1": w.keys}}
}

func (w *world) check(l *verify.Ledger) *verify.Verdict {
	w.t.Helper()
	v := verify.Check(l, w.oracle.Entries(), verify.Options{})
	for _, d := range v.Discrepancies {
		w.t.Log(d)
	}
	return v
}

// wantOnly fails t unless v found exactly the kinds in want, as often.
func wantOnly(t *testing.T, v *verify.Verdict, want map[verify.Kind]int) {
	t.Helper()
	if v.OK != (len(want) == 0) {
		t.Errorf("verdict OK %v with %d failures", v.OK, v.Failures())
	}
	for _, k := range verify.Kinds {
		if v.Counts[k] != want[k] {
			t.Errorf("%s: found %d, want %d", k, v.Counts[k], want[k])
		}
	}
}

func TestCleanLedger(t *testing.T) {
	w := newWorld(t)
	v := w.check(w.ledger())
	wantOnly(t, v, nil)
	if v.Sent != 61 || v.Acked != 61 || v.Present != 61 || v.Events != 61 || v.Records != 61 || v.Streams != 1 {
		t.Errorf("counts: %+v", v)
	}
	if v.Checkpoints != len(w.edge.cps) || v.TillsExact != 1 {
		t.Errorf("%d checkpoints verified of %d, %d exact Z reports", v.Checkpoints, len(w.edge.cps), v.TillsExact)
	}
	if v.Latency.N != 61 || v.Latency.Max <= 0 || v.Latency.P50 > v.Latency.P99 {
		t.Errorf("latency %+v", v.Latency)
	}
	if at, ok := v.CommittedAt(w.edge.chain.Stream, 61); !ok || !at.After(v.FirstCommit) || !at.Equal(v.LastCommit) {
		t.Errorf("commit time of the head: %v %v", at, ok)
	}
}

func TestLoss(t *testing.T) {
	w := newWorld(t)
	// The device sent and the edge acknowledged an event it then never
	// stored: the chain is whole, and only the oracle can tell.
	ev := protocol.Event{ID: "till-1-lost", Type: pos.TypeInventoryCounted, TS: t0, Body: mustBody(t, pos.InventoryCounted{Store: "shop-1", SKU: "4011", Qty: 5})}
	w.oracle.Sent("shop-1", "till-1", ev, t0)
	w.oracle.Acked("till-1", ev.ID, t0)
	v := w.check(w.ledger())
	wantOnly(t, v, map[verify.Kind]int{verify.Lost: 1})
	if d := v.Discrepancies[0]; d.Device != "till-1" || d.ID != "till-1-lost" {
		t.Errorf("discrepancy %v", d)
	}
	// Sent but never acknowledged: absent is allowed.
	w2 := newWorld(t)
	w2.oracle.Sent("shop-1", "till-1", ev, t0)
	wantOnly(t, w2.check(w2.ledger()), nil)
}

func TestDuplicate(t *testing.T) {
	w := newWorld(t)
	// The edge stored an event twice under two seqs, chained and signed:
	// a dedup bug that no signature can catch.
	var id string
	for k := range w.evs {
		if strings.HasPrefix(k, "scale-1-") {
			id = k
			break
		}
	}
	w.edge.append(w.devOf[id], w.evs[id])
	w.edge.commit()
	v := w.check(w.ledger())
	wantOnly(t, v, map[verify.Kind]int{verify.Duplicate: 1})
	if v.Present != 60 {
		t.Errorf("present %d, want 60: the doubled event is not present exactly once", v.Present)
	}
}

func TestDuplicateRow(t *testing.T) {
	w := newWorld(t)
	s := w.edge.stored(t0)
	dup := s.Rows[10]
	dup.Pos = 5000
	s.Rows = append(s.Rows, dup)
	wantOnly(t, w.check(w.ledger(s)), map[verify.Kind]int{verify.DuplicateRow: 1, verify.Duplicate: 1})
}

func TestGap(t *testing.T) {
	w := newWorld(t)
	s := w.edge.stored(t0)
	gone, _ := protocol.DecodeRecord(s.Rows[20].Raw)
	s.Rows = append(s.Rows[:20:20], s.Rows[21:]...)
	v := w.check(w.ledger(s))
	kinds := map[verify.Kind]int{verify.Gap: 1, verify.Lost: 1}
	if gone.Type == pos.TypeSaleCompleted || gone.Type == pos.TypeSaleVoided || gone.Type == pos.TypeReturnCompleted {
		kinds[verify.ZReport] = 1
	}
	wantOnly(t, v, kinds)
	for _, d := range v.Discrepancies {
		if d.Kind == verify.Gap && (d.Seq != 21 || !strings.Contains(d.Detail, "seq 21 is missing")) {
			t.Errorf("gap: %v", d)
		}
	}

	// A stream whose watermark says more than is stored.
	s = w.edge.stored(t0)
	s.Rows = s.Rows[:58]
	v = w.check(w.ledger(s))
	if v.Counts[verify.Gap] != 1 || v.Counts[verify.Lost] != 3 {
		t.Errorf("tail cut off: %v", v.Counts)
	}
}

func TestForgedRow(t *testing.T) {
	t.Run("altered bytes", func(t *testing.T) {
		w := newWorld(t)
		s := w.edge.stored(t0)
		// Someone with write access to the database changes a sale's total
		// and re-encodes the record in place: same seq, same prev.
		i := -1
		for j, row := range s.Rows {
			if r, _ := protocol.DecodeRecord(row.Raw); r.Type == pos.TypeSaleCompleted {
				i = j
				break
			}
		}
		r, _ := protocol.DecodeRecord(s.Rows[i].Raw)
		var tx pos.Transaction
		if err := pos.Decode(r.Type, r.Body, &tx); err != nil {
			t.Fatal(err)
		}
		tx.Tenders[0].Amount += 1000
		tx.Total += 1000
		tx.Lines[0].UnitPrice += 1000
		r.Body = []byte(mustBody(t, tx))
		s.Rows[i].Raw = r.Encode()
		v := w.check(w.ledger(s))
		if v.Counts[verify.Chain] != 1 || v.Counts[verify.Altered] != 1 || v.OK {
			t.Fatalf("counts %v", v.Counts)
		}
		for _, d := range v.Discrepancies {
			if d.Kind == verify.Chain && (d.Seq != uint64(i+1) || !strings.Contains(d.Detail, "altered")) {
				t.Errorf("chain discrepancy names %v, want seq %d altered", d, i+1)
			}
		}
	})
	t.Run("appended under another key", func(t *testing.T) {
		w := newWorld(t)
		// A forger appends a record with a checkpoint signed by a key
		// that is not the edge's.
		ev := protocol.Event{ID: "till-1-forged", Type: pos.TypeInventoryAdjusted, TS: t0, Body: mustBody(t, pos.InventoryAdjusted{Store: "shop-1", SKU: "4011", QtyDelta: -100000, Reason: "shrink"})}
		w.edge.append("till-1", ev)
		w.edge.chain.Signer = protocoltest.NewSigner(t)
		w.edge.commit()
		wantOnly(t, w.check(w.ledger()), map[verify.Kind]int{verify.Signature: 1, verify.Unexpected: 1})
	})
	t.Run("appended without a checkpoint, above the watermark", func(t *testing.T) {
		w := newWorld(t)
		s := w.edge.stored(t0)
		ev := protocol.Event{ID: "till-1-ghost", Type: pos.TypeInventoryCounted, TS: t0, Body: mustBody(t, pos.InventoryCounted{Store: "shop-1", SKU: "4011", Qty: 1})}
		w.edge.append("till-1", ev)
		s.Rows = append(s.Rows, verify.Row{Seq: 62, Pos: 9999, CommittedAt: t0, Raw: w.edge.chain.Raws[61]})
		wantOnly(t, w.check(w.ledger(s)), map[verify.Kind]int{verify.Watermark: 1, verify.Uncovered: 1, verify.Unexpected: 1})
	})
	t.Run("checkpoint of another stream", func(t *testing.T) {
		w := newWorld(t)
		s := w.edge.stored(t0)
		other := newFakeEdge(t, "shop-1")
		other.chain.Signer = w.edge.chain.Signer
		for range 7 {
			other.append("till-1", protocol.Event{ID: "x", Type: "x.y", TS: t0})
		}
		other.commit()
		s.Checkpoints[0] = other.cps[0] // same seq, same key, another epoch
		wantOnly(t, w.check(w.ledger(s)), map[verify.Kind]int{verify.Signature: 1})
	})
}

func TestShedTelemetry(t *testing.T) {
	w := newWorld(t)
	// Shed the readings (to tombstones) as an outbox over its telemetry
	// quota does: counted, not lost.
	shed := 0
	for i, raw := range w.edge.chain.Raws {
		r, _ := protocol.DecodeRecord(raw)
		if r.Class == protocol.ClassTelemetry && i < 30 {
			tomb, err := protocol.Tombstone(raw)
			if err != nil {
				t.Fatal(err)
			}
			w.edge.chain.Raws[i] = tomb.Encode()
			shed++
		}
	}
	v := w.check(w.ledger())
	wantOnly(t, v, nil)
	if shed == 0 || v.Shed != shed || v.ShedAcked != shed || v.Present != 61 {
		t.Errorf("shed %d: verdict shed %d, shed acked %d, present %d", shed, v.Shed, v.ShedAcked, v.Present)
	}

	// A sale shed is a loss of ledger data.
	w = newWorld(t)
	for i, raw := range w.edge.chain.Raws {
		if r, _ := protocol.DecodeRecord(raw); r.Type == pos.TypeSaleCompleted {
			tomb, _ := protocol.Tombstone(raw)
			w.edge.chain.Raws[i] = tomb.Encode()
			break
		}
	}
	wantOnly(t, w.check(w.ledger()), map[verify.Kind]int{verify.LedgerShed: 1, verify.ZReport: 1})
}

func TestUnexpectedAndRejected(t *testing.T) {
	w := newWorld(t)
	w.edge.append("till-1", protocol.Event{ID: "till-1-never-sent", Type: "note.taken", TS: t0})
	body := mustBody(t, map[string]any{"reason": "invalid", "error": "body.total: is 5; want 6"})
	w.edge.append("till-1", protocol.Event{ID: "rej-0123", Type: protocol.TypeIntakeRejected, TS: t0, Body: body})
	w.edge.commit()
	v := w.check(w.ledger())
	wantOnly(t, v, map[verify.Kind]int{verify.Unexpected: 1, verify.Rejected: 1})
}

func TestAlteredByTheEdge(t *testing.T) {
	w := newWorld(t)
	// An edge that signs what it did not get: another device clock.
	ev := w.till.Next(t0)
	w.oracle.Sent("shop-1", "till-1", ev, t0)
	w.oracle.Acked("till-1", ev.ID, t0)
	ev.TS = ev.TS.Add(time.Hour)
	w.edge.append("till-1", ev)
	w.edge.commit()
	v := w.check(w.ledger())
	if v.Counts[verify.Altered] != 1 || !strings.Contains(fmt.Sprint(v.Discrepancies), "device time") {
		t.Errorf("%v %v", v.Counts, v.Discrepancies)
	}
}

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	l := verify.Percentiles(ds)
	if l.N != 100 || l.P50 != 50*time.Millisecond || l.P95 != 95*time.Millisecond || l.P99 != 99*time.Millisecond || l.Max != 100*time.Millisecond {
		t.Errorf("%+v", l)
	}
	if l := verify.Percentiles(nil); l.N != 0 {
		t.Errorf("%+v", l)
	}
}

func mustBody(t *testing.T, v any) protocol.Body {
	t.Helper()
	b, err := protocol.NewBody(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEdgeOwnEvents: the edge's own records (device _edge, such as the
// updater's ota.* events) are no device's events: not unexpected, counted
// by type, and left out of the device events; an ota.* event under a
// device's name that the device never sent still is unexpected.
func TestEdgeOwnEvents(t *testing.T) {
	w := newWorld(t)
	for i, typ := range []string{"ota.installed", "ota.rolled_back", "ota.committed"} {
		body := mustBody(t, map[string]any{"version": "1.1.0", "release": 1})
		w.edge.append(protocol.EdgeDevice, protocol.Event{ID: fmt.Sprintf("ota-%d", i), Type: typ, TS: t0, Body: body})
	}
	w.edge.append("till-1", protocol.Event{ID: "forged-commit", Type: "ota.committed", TS: t0})
	w.edge.commit()
	// Another edge's _edge may use the same ids: they are its own.
	other := newFakeEdge(t, "shop-2")
	other.append(protocol.EdgeDevice, protocol.Event{ID: "ota-2", Type: "ota.committed", TS: t0, Body: mustBody(t, map[string]any{"version": "1.1.0", "release": 1})})
	other.commit()
	l := w.ledger(w.edge.stored(t0.Add(time.Minute)), other.stored(t0.Add(time.Minute)))
	l.Keys["shop-2"] = protocol.NewKeyMap(other.chain.Signer.Public())
	v := w.check(l)
	wantOnly(t, v, map[verify.Kind]int{verify.Unexpected: 1})
	if v.EdgeEvents["ota.committed"] != 2 || v.EdgeEvents["ota.rolled_back"] != 1 || v.EdgeEvents["ota.installed"] != 1 || len(v.EdgeEvents) != 3 {
		t.Errorf("edge events %v, want two ota.committed (one per edge) and one of each other kind", v.EdgeEvents)
	}
	// The same edge's id twice is doubled.
	w.edge.append(protocol.EdgeDevice, protocol.Event{ID: "ota-0", Type: "ota.installed", TS: t0})
	w.edge.commit()
	if v := w.check(w.ledger()); v.Counts[verify.Duplicate] != 1 {
		t.Errorf("an edge's own event stored twice: %v", v.Counts)
	}
	if v.Events != 62 {
		t.Errorf("device events %d, want 62 (61 sent and the forged one)", v.Events)
	}
}
