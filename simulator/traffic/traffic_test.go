package traffic_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
	"github.com/outpost-edge/outpost/simulator/traffic"
)

var t0 = time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)

func run(d *traffic.Device, n int) []protocol.Event {
	var out []protocol.Event
	for i := range n {
		out = append(out, d.Next(t0.Add(time.Duration(i)*time.Second)))
	}
	return out
}

// TestEventsAreValid checks that every event of every kind passes the
// protocol's validation, and survives the trip a device makes it take
// (JSON or CBOR, decoded by the edge) byte for byte.
func TestEventsAreValid(t *testing.T) {
	for _, kind := range []traffic.Kind{traffic.Till, traffic.Scale, traffic.Sensor} {
		for _, incl := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/tax_included=%v", kind, incl), func(t *testing.T) {
				d := traffic.New(traffic.Options{Seed: 7, Store: "s1", Device: "dev-1", Kind: kind, TaxIncluded: incl, Currency: "USD"})
				evs := run(d, 3000)
				if z, ok := d.Close(t0.Add(time.Hour)); ok {
					evs = append(evs, z)
				}
				types := map[string]int{}
				ids := map[string]bool{}
				for _, ev := range evs {
					types[ev.Type]++
					if ids[ev.ID] {
						t.Fatalf("id %s twice", ev.ID)
					}
					ids[ev.ID] = true
					if err := ev.Validate(); err != nil {
						t.Fatalf("%s %s: %v\n%s", ev.Type, ev.ID, err, mustJSON(t, ev))
					}
					j := mustJSON(t, ev)
					c, err := ev.MarshalCBOR()
					if err != nil {
						t.Fatal(err)
					}
					for _, payload := range [][]byte{j, c} {
						got, err := protocol.DecodeEvent(payload)
						if err != nil {
							t.Fatalf("decode %s: %v", payload, err)
						}
						if got.ID != ev.ID || got.Type != ev.Type || !got.TS.Equal(ev.TS) || !bytes.Equal(got.Body, ev.Body) {
							t.Fatalf("round trip changed the event:\n%s\n%s", j, mustJSON(t, got))
						}
					}
				}
				t.Logf("types: %v", types)
				want := map[traffic.Kind][]string{
					traffic.Till:   {pos.TypeSaleCompleted, pos.TypeSaleVoided, pos.TypeReturnCompleted, pos.TypeInventoryAdjusted, pos.TypeTillClosed},
					traffic.Scale:  {traffic.TypeScaleWeighed, pos.TypeInventoryAdjusted, pos.TypeInventoryCounted},
					traffic.Sensor: {pos.TypeTelemetryReading},
				}[kind]
				for _, typ := range want {
					if types[typ] == 0 {
						t.Errorf("no %s in 3000 events", typ)
					}
				}
			})
		}
	}
}

func mustJSON(t *testing.T, ev protocol.Event) []byte {
	t.Helper()
	b, err := ev.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDeterministic checks that a seed and a device name fix the traffic.
func TestDeterministic(t *testing.T) {
	o := traffic.Options{Seed: 42, Store: "s1", Device: "till-1", Kind: traffic.Till}
	a, b := run(traffic.New(o), 500), run(traffic.New(o), 500)
	for i := range a {
		if a[i].ID != b[i].ID || a[i].Type != b[i].Type || !bytes.Equal(a[i].Body, b[i].Body) {
			t.Fatalf("event %d differs between two runs of one seed", i)
		}
	}
	o.Seed = 43
	c := run(traffic.New(o), 500)
	same := 0
	for i := range a {
		if bytes.Equal(a[i].Body, c[i].Body) {
			same++
		}
	}
	if same == len(a) {
		t.Error("another seed made the same traffic")
	}
}

// TestZReportIsTrue recomputes a till's Z report from the events it sent
// and compares it with the till.closed it ends with.
func TestZReportIsTrue(t *testing.T) {
	d := traffic.New(traffic.Options{Seed: 3, Store: "s9", Device: "till-4", Kind: traffic.Till, Currency: "EUR", TaxIncluded: true})
	evs := run(d, 2000)
	ev, ok := d.Close(t0.Add(time.Hour))
	if !ok {
		t.Fatal("a till made no Z report")
	}
	if _, again := d.Close(t0.Add(time.Hour)); again {
		t.Error("a second Z report")
	}
	var z pos.TillClosed
	if err := pos.Decode(ev.Type, ev.Body, &z); err != nil {
		t.Fatal(err)
	}
	var want pos.TillClosed
	tenders := map[string]int64{}
	for _, e := range evs {
		switch e.Type {
		case pos.TypeSaleCompleted, pos.TypeReturnCompleted:
			var tx pos.Transaction
			if err := pos.Decode(e.Type, e.Body, &tx); err != nil {
				t.Fatal(err)
			}
			sign := int64(1)
			tally := &want.Sales
			if e.Type == pos.TypeReturnCompleted {
				sign, tally = -1, &want.Returns
			}
			tally.Count++
			tally.Total += tx.Total
			for _, tn := range tx.Tenders {
				tenders[tn.Type] += sign * tn.Amount
			}
			tenders["cash"] -= tx.Change
		case pos.TypeSaleVoided:
			var v pos.Void
			if err := pos.Decode(e.Type, e.Body, &v); err != nil {
				t.Fatal(err)
			}
			want.Voids.Count++
			want.Voids.Total += v.Total
			for _, tn := range v.Tenders {
				tenders[tn.Type] -= tn.Amount
			}
		}
	}
	if z.Sales != want.Sales || z.Returns != want.Returns || z.Voids != want.Voids {
		t.Errorf("Z report %+v %+v %+v, events add up to %+v %+v %+v", z.Sales, z.Returns, z.Voids, want.Sales, want.Returns, want.Voids)
	}
	if z.Net != want.Sales.Total-want.Returns.Total-want.Voids.Total {
		t.Errorf("net %d", z.Net)
	}
	for _, tt := range z.Tenders {
		if tenders[tt.Type] != tt.Amount {
			t.Errorf("tender %s: Z says %d, events add up to %d", tt.Type, tt.Amount, tenders[tt.Type])
		}
		delete(tenders, tt.Type)
	}
	for typ, amt := range tenders {
		if amt != 0 {
			t.Errorf("tender %s (%d) missing from the Z report", typ, amt)
		}
	}
	if want.Voids.Count == 0 || want.Returns.Count == 0 {
		t.Errorf("2000 till events had %d voids and %d returns", want.Voids.Count, want.Returns.Count)
	}
}

func TestSkew(t *testing.T) {
	d := traffic.New(traffic.Options{Seed: 1, Store: "s1", Device: "sensor-1", Kind: traffic.Sensor, Skew: -49 * time.Hour})
	ev := d.Next(t0)
	if want := t0.Add(-49 * time.Hour); !ev.TS.Equal(want) {
		t.Errorf("ts %v, want %v", ev.TS, want)
	}
}

// TestDuplicateTransactions: with DuplicateTxn a till sends some sales
// again under new event ids; its Z report counts each sale once, and
// folding its events with the duplicates dropped matches the Z.
func TestDuplicateTransactions(t *testing.T) {
	d := traffic.New(traffic.Options{Seed: 3, Store: "s1", Device: "till-1", Kind: traffic.Till, Currency: "EUR", DuplicateTxn: 0.1})
	evs := run(d, 600)
	seen := map[string]string{} // txn -> event id
	dups := 0
	sums := pos.TillTotals{}
	for _, ev := range evs {
		if ev.Type == pos.TypeSaleCompleted {
			var s pos.Transaction
			if err := pos.Decode(ev.Type, ev.Body, &s); err != nil {
				t.Fatal(err)
			}
			if id, ok := seen[s.Txn]; ok {
				if id == ev.ID {
					t.Fatalf("duplicate of txn %s under the same event id", s.Txn)
				}
				dups++
				continue
			}
			seen[s.Txn] = ev.ID
		}
		sums.Add(ev.Type, ev.Body)
	}
	if dups == 0 {
		t.Fatal("no duplicate transaction in 600 events at 10%")
	}
	z, _ := d.Close(t0.Add(time.Hour))
	var zc pos.TillClosed
	if err := pos.Decode(z.Type, z.Body, &zc); err != nil {
		t.Fatal(err)
	}
	if diffs := pos.Reconcile(&zc, sums.Of(&zc)); len(diffs) > 0 {
		t.Fatalf("Z report against the events without duplicates: %v", diffs)
	}
}
