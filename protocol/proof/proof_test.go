package proof_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/proof"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// fixture is a stream of an edge and what the cloud knows about it.
type fixture struct {
	edge  *protocol.Signer
	cloud *protocol.Signer
	s     *protocoltest.Stream
	parts proof.Parts
}

// vectorEpoch is the fixed epoch of the fixtures (and the doc's vector).
var vectorEpoch = protocol.Epoch{0x0e, 0x90, 0xc4, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d}

// t0 is the fixtures' commit time.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)

// newFixture makes n records of edge "edge-vec", signed by the fixed
// key "vector-edge", and the parts of a proof of record seq whose
// covering checkpoint is at cpSeq. Everything is deterministic.
func newFixture(tb testing.TB, n int, seq, cpSeq uint64) *fixture {
	tb.Helper()
	return newFixtureKeys(tb, "vector-edge", "vector-cloud", n, seq, cpSeq)
}

// newFixtureKeys is newFixture with the edge and cloud keys named.
func newFixtureKeys(tb testing.TB, edgeKey, cloudKey string, n int, seq, cpSeq uint64) *fixture {
	tb.Helper()
	f := &fixture{edge: protocoltest.Signer(tb, edgeKey), cloud: protocoltest.Signer(tb, cloudKey)}
	f.s = &protocoltest.Stream{Stream: protocol.Stream{Edge: "edge-vec", Epoch: vectorEpoch}, Signer: f.edge}
	for i := range n {
		body, err := protocol.NewBody(map[string]any{"n": i + 1})
		if err != nil {
			tb.Fatal(err)
		}
		f.s.AddEvent("till-1", protocol.Event{ID: "ev-" + string(rune('a'+i)), Type: "sale.completed",
			TS: protocoltest.T0.Add(time.Duration(i) * time.Second), Body: body})
	}
	f.parts = proof.Parts{
		Record: f.s.Raws[seq-1], Chain: f.s.Raws[seq:cpSeq], Checkpoint: f.s.Checkpoint(cpSeq), EdgeKey: f.edge.Public(),
		Statement: protocol.ProofStatement{
			Edge: "edge-vec", Epoch: vectorEpoch, Seq: seq, Hash: f.s.Links[seq-1], Pos: 4200 + int64(seq),
			CommittedAt: t0.UnixMicro(), CheckpointSeq: cpSeq, CheckpointAt: t0.Add(time.Millisecond).UnixMicro(),
			EdgeKID: f.edge.KeyID(), EdgeKey: f.edge.Public(),
			KeyValidFrom: t0.Add(-24 * time.Hour).UnixMicro(), At: t0.Add(time.Hour).UnixMicro(),
		},
	}
	return f
}

// build signs and assembles the fixture's proof, failing tb on error.
func (f *fixture) build(tb testing.TB) []byte {
	tb.Helper()
	b, _, err := proof.Build(f.parts, f.cloud)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestVerifyValid(t *testing.T) {
	for _, tc := range []struct {
		name          string
		n, seq, cpSeq uint64
	}{
		{"checkpoint at the record", 3, 3, 3},
		{"checkpoint later", 5, 2, 5},
		{"first record", 4, 1, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, int(tc.n), tc.seq, tc.cpSeq)
			b := f.build(t)
			res, err := proof.Verify(b, proof.Options{CloudKey: f.cloud.Public()})
			if err != nil {
				t.Fatal(err)
			}
			if res.Record.Seq != tc.seq || res.Checkpoint.Seq != tc.cpSeq || res.ChainLen != int(tc.cpSeq-tc.seq) || !res.Pinned {
				t.Fatalf("result %+v", res)
			}
			text := res.Text()
			for _, want := range []string{
				"record seq " + itoa(tc.seq) + " of edge edge-vec epoch " + vectorEpoch.String(),
				"type sale.completed", "signed by edge key " + string(f.edge.KeyID()),
				"committed by cloud key " + string(f.cloud.KeyID()), "at ledger position " + itoa(4200+tc.seq),
				"is the pinned key",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("text does not say %q:\n%s", want, text)
				}
			}
			unpinned, err := proof.Verify(b, proof.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if unpinned.Pinned || !strings.Contains(unpinned.Text(), "not pinned") {
				t.Errorf("unpinned result does not say so:\n%s", unpinned.Text())
			}
		})
	}
}

// TestUnpinnedForgeryProvesNothing: without --cloud-key the file's own keys
// are all there is, and anyone can make both: a forger's edge key and cloud
// key make a proof, for the real edge's name, that passes every check. The
// output must then not say "OK" nor that the edge signed the record (the
// edge key is tied to the edge only by the unpinned cloud key's statement);
// it must say that the file proves nothing until the key is pinned.
func TestUnpinnedForgeryProvesNothing(t *testing.T) {
	forged := newFixtureKeys(t, "forger-edge", "forger-cloud", 3, 2, 3)
	b := forged.build(t)
	res, err := proof.Verify(b, proof.Options{})
	if err != nil {
		t.Fatalf("the forged file should pass the unpinned checks (that is the point): %v", err)
	}
	text := res.Text()
	if strings.HasPrefix(text, "OK") || strings.Contains(text, "shows the edge signed") {
		t.Errorf("an unpinned result reads as proven:\n%s", text)
	}
	for _, want := range []string{"UNPINNED", "proves nothing", "--cloud-key"} {
		if !strings.Contains(text, want) {
			t.Errorf("the unpinned text does not say %q:\n%s", want, text)
		}
	}
	real := newFixture(t, 3, 2, 3)
	if _, err := proof.Verify(b, proof.Options{CloudKey: real.cloud.Public()}); !errors.Is(err, proof.ErrInvalid) {
		t.Fatalf("the forged file verifies against the real pinned cloud key: %v", err)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// TestEveryFlippedByteFails changes each byte of a valid proof in turn
// (each of its 8 bits, and all of them at once) and checks that the result
// never verifies, pinned or not.
func TestEveryFlippedByteFails(t *testing.T) {
	f := newFixture(t, 3, 2, 3)
	b := f.build(t)
	masks := []byte{0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff}
	if testing.Short() {
		masks = []byte{0x01, 0x80, 0xff}
	}
	mut := bytes.Clone(b)
	for i := range b {
		for _, m := range masks {
			mut[i] = b[i] ^ m
			if res, err := proof.Verify(mut, proof.Options{}); err == nil {
				t.Fatalf("byte %d of %d xor %#02x: still verifies (%s)", i, len(b), m, res.Text())
			} else if !errors.Is(err, proof.ErrInvalid) {
				t.Fatalf("byte %d xor %#02x: error %v does not wrap ErrInvalid", i, m, err)
			}
		}
		mut[i] = b[i]
	}
	t.Logf("%d bytes × %d flips refused", len(b), len(masks))
}

// shed replaces record seq of f's stream with its tombstone, as an edge
// does under disk pressure, and rebuilds the proof's parts; the chain still
// links through it.
func (f *fixture) shed(tb testing.TB, seq uint64) {
	tb.Helper()
	ts, err := protocol.Tombstone(f.s.Raws[seq-1])
	if err != nil {
		tb.Fatal(err)
	}
	f.s.Raws[seq-1] = ts.Encode()
	st := f.parts.Statement
	f.parts.Record, f.parts.Chain = f.s.Raws[st.Seq-1], f.s.Raws[st.Seq:st.CheckpointSeq]
}

// TestEveryFlippedByteFailsThroughTombstones: a tombstone's fields besides
// prev and shed are signed by no edge; the statement's records digest makes
// them fail too, in the chain and as the proven record.
func TestEveryFlippedByteFailsThroughTombstones(t *testing.T) {
	for _, shed := range []uint64{2, 3} {
		f := newFixture(t, 4, 2, 4)
		f.shed(t, shed)
		b := f.build(t)
		res, err := proof.Verify(b, proof.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if tomb := res.Record.IsTombstone(); tomb != (shed == 2) || tomb != strings.Contains(res.Text(), "a tombstone") {
			t.Fatalf("shed %d: tombstone %v, text:\n%s", shed, tomb, res.Text())
		}
		mut := bytes.Clone(b)
		for i := range b {
			for _, m := range []byte{0x01, 0x20, 0x80} {
				mut[i] = b[i] ^ m
				if _, err := proof.Verify(mut, proof.Options{}); err == nil {
					t.Fatalf("shed %d: byte %d of %d xor %#02x still verifies", shed, i, len(b), m)
				}
			}
			mut[i] = b[i]
		}
	}
}

func TestTruncatedAndExtendedFail(t *testing.T) {
	f := newFixture(t, 3, 2, 3)
	b := f.build(t)
	for n := range len(b) {
		if _, err := proof.Verify(b[:n], proof.Options{}); err == nil {
			t.Fatalf("the first %d of %d bytes verify", n, len(b))
		}
	}
	if _, err := proof.Verify(append(bytes.Clone(b), 0), proof.Options{}); err == nil {
		t.Fatal("the file with a byte appended verifies")
	}
}

// TestRefusals builds files that are well-formed but wrong in one way each,
// with real signatures, and checks the error names what is wrong.
func TestRefusals(t *testing.T) {
	other := protocoltest.Signer(t, "another-cloud")
	for _, tc := range []struct {
		name   string
		change func(f *fixture)
		file   func(f *fixture, pf *proof.File)
		pin    bool
		want   string
	}{
		{name: "pinned key differs", change: func(f *fixture) { f.cloud = other }, pin: true, want: "not made by the cloud you trust"},
		{name: "key revoked before the checkpoint", change: func(f *fixture) {
			f.parts.Statement.KeyValidUntil = f.parts.Statement.CheckpointAt
		}, want: "was revoked at"},
		{name: "key registered after the checkpoint", change: func(f *fixture) {
			f.parts.Statement.KeyValidFrom = f.parts.Statement.CheckpointAt + 1
		}, want: "was registered at"},
		{name: "statement about another record", file: func(f *fixture, pf *proof.File) {
			st := f.parts.Statement
			st.Seq, st.Hash = 1, f.s.Links[0]
			pf.Statement = f.cloud.SignProofStatement(st)
		}, want: "not this record"},
		{name: "receipt short of the record", file: func(f *fixture, pf *proof.File) {
			pf.Receipt = f.cloud.SignReceipt(protocol.Receipt{Edge: "edge-vec", Epoch: vectorEpoch, HWM: 1, Head: f.s.Links[0],
				CommittedAt: f.parts.Statement.CommittedAt / 1000})
		}, want: "receipt is for"},
		{name: "a nack for a receipt", file: func(f *fixture, pf *proof.File) {
			pf.Receipt = f.cloud.SignNack(protocol.Nack{Edge: "edge-vec", Epoch: vectorEpoch, HWM: 2, Code: protocol.NackGap})
		}, want: "nack"},
		{name: "receipt signed by another key", file: func(f *fixture, pf *proof.File) {
			pf.Receipt = other.SignReceipt(protocol.Receipt{Edge: "edge-vec", Epoch: vectorEpoch, HWM: 2, Head: f.s.Links[1]})
		}, want: "receipt (signed by the cloud"},
		{name: "checkpoint by another edge key", file: func(f *fixture, pf *proof.File) {
			pf.Checkpoint = f.s.SignedBy(other).Checkpoint(3)
		}, want: "checkpoint (signed by the edge"},
		{name: "edge key swapped for the checkpoint's signer", file: func(f *fixture, pf *proof.File) {
			pf.Checkpoint, pf.EdgeKey = f.s.SignedBy(other).Checkpoint(3), other.Public()
		}, want: "registers key"},
		{name: "a chain record missing", file: func(f *fixture, pf *proof.File) { pf.Chain = nil }, want: "hash chain"},
		{name: "small-order edge key", file: func(f *fixture, pf *proof.File) {
			pf.EdgeKey = append([]byte{1}, make([]byte, 31)...)
		}, want: "edge_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 3, 2, 3)
			pinned := f.cloud.Public()
			if tc.change != nil {
				tc.change(f)
			}
			var b []byte
			if tc.file != nil {
				pf, err := proof.Decode(f.build(t))
				if err != nil {
					t.Fatal(err)
				}
				tc.file(f, &pf)
				b = proof.Encode(pf)
			} else {
				// Build refuses what does not verify; assemble by hand.
				b = assemble(f)
			}
			o := proof.Options{}
			if tc.pin {
				o.CloudKey = pinned
			}
			_, err := proof.Verify(b, o)
			if err == nil || !errors.Is(err, proof.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrInvalid saying %q", err, tc.want)
			}
		})
	}
}

// assemble is Build without its self-check.
func assemble(f *fixture) []byte {
	st := f.parts.Statement
	st.Records = proof.RecordsDigest(f.parts.Record, f.parts.Chain)
	return proof.Encode(proof.File{
		V: proof.Version, Record: f.parts.Record, Chain: f.parts.Chain, Checkpoint: f.parts.Checkpoint, EdgeKey: f.parts.EdgeKey,
		Statement: f.cloud.SignProofStatement(st),
		Receipt: f.cloud.SignReceipt(protocol.Receipt{Edge: st.Edge, Epoch: st.Epoch, HWM: st.Seq, Head: st.Hash,
			CommittedAt: st.CommittedAt / 1000}),
		CloudKey: f.cloud.Public(),
	})
}

func TestBuildRefusesAlteredRecord(t *testing.T) {
	f := newFixture(t, 3, 2, 3)
	rec := bytes.Clone(f.parts.Record)
	rec[len(rec)-1] ^= 1
	f.parts.Record = rec
	if _, _, err := proof.Build(f.parts, f.cloud); err == nil {
		t.Fatal("Build made a proof of an altered record")
	}
}

func TestDecodeRefusesOtherEncodings(t *testing.T) {
	f := newFixture(t, 3, 2, 3)
	pf, err := proof.Decode(f.build(t))
	if err != nil {
		t.Fatal(err)
	}
	// The same content with an unknown extra key, and non-deterministically
	// encoded (a map in another key order).
	type extra struct {
		proof.File
		X int `cbor:"x"`
	}
	withExtra, err := cbor.Marshal(extra{File: pf, X: 1})
	if err != nil {
		t.Fatal(err)
	}
	// SortNone writes a struct's fields in declaration order: v last.
	type reorderedFile struct {
		Record     []byte   `cbor:"record"`
		Chain      [][]byte `cbor:"chain"`
		Checkpoint []byte   `cbor:"checkpoint"`
		EdgeKey    []byte   `cbor:"edge_key"`
		Statement  []byte   `cbor:"statement"`
		Receipt    []byte   `cbor:"receipt"`
		CloudKey   []byte   `cbor:"cloud_key"`
		V          uint64   `cbor:"v"`
	}
	unsorted, err := cbor.EncOptions{Sort: cbor.SortNone}.EncMode()
	if err != nil {
		t.Fatal(err)
	}
	reordered, err := unsorted.Marshal(reorderedFile{pf.Record, pf.Chain, pf.Checkpoint, pf.EdgeKey, pf.Statement, pf.Receipt, pf.CloudKey, pf.V})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"extra key": withExtra, "other key order": reordered} {
		if bytes.Equal(b, proof.Encode(pf)) {
			t.Fatalf("%s: encoding is the canonical one; the test is broken", name)
		}
		if _, err := proof.Decode(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// TestDocVector checks the proof file shown in docs/PROTOCOL.md: it
// verifies with the vector cloud key pinned, and it is the file this
// package builds from the vector inputs (so the doc follows the format).
func TestDocVector(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "PROTOCOL.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- proof-vector -->\n```text\n(.*?)\n```").FindSubmatch(doc)
	want := newFixture(t, 3, 2, 3).build(t)
	if m == nil {
		t.Fatalf("PROTOCOL.md has no <!-- proof-vector --> block; it should show\n%s", wrapHex(want))
	}
	b, err := hex.DecodeString(strings.Join(strings.Fields(string(m[1])), ""))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("the vector is not what the code builds; PROTOCOL.md should show\n%s", wrapHex(want))
	}
	res, err := proof.Verify(b, proof.Options{CloudKey: protocoltest.Signer(t, "vector-cloud").Public()})
	if err != nil {
		t.Fatalf("the vector does not verify: %v", err)
	}
	tm := regexp.MustCompile("(?s)<!-- proof-vector-text -->\n```text\n(.*?)\n```").FindSubmatch(doc)
	if tm == nil || string(tm[1])+"\n" != res.Text() {
		t.Fatalf("PROTOCOL.md should show, after <!-- proof-vector-text -->,\n%s", res.Text())
	}
}

func wrapHex(b []byte) string {
	h := hex.EncodeToString(b)
	var out []string
	for len(h) > 64 {
		out = append(out, h[:64])
		h = h[64:]
	}
	return strings.Join(append(out, h), "\n")
}

// FuzzVerify: no input makes Verify panic, and whatever verifies is
// canonical (re-encodes to itself).
func FuzzVerify(f *testing.F) {
	fx := newFixture(f, 3, 2, 3)
	b := fx.build(f)
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := proof.Verify(data, proof.Options{})
		if err != nil {
			if !errors.Is(err, proof.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		pf, err := proof.Decode(data)
		if err != nil || !bytes.Equal(proof.Encode(pf), data) {
			t.Fatalf("verified but not canonical: %v", err)
		}
		_ = res.Text()
	})
}
