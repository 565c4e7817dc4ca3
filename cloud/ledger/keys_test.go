package ledger_test

import (
	"context"
	"crypto/ed25519"
	"io"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

type fixedSig []byte

func (fixedSig) Algorithm() cose.Algorithm                { return cose.AlgorithmEdDSA }
func (f fixedSig) Sign(io.Reader, []byte) ([]byte, error) { return f, nil }

// The attack: rows were committed for an edge registered with the key
// 01 00…00 (the identity), under which R = identity, S = 0 verifies for any
// message. Such a key can no longer be registered; one already in the
// database (written before this version) verifies nothing: the forged
// segment is quarantined, and no row is committed.
func TestSmallOrderKeyCommitsNothing(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	conn := MustConn(t, url)
	l := ledger.New(conn, ledger.Options{})
	ident := make([]byte, 32)
	ident[0] = 1
	kid := protocol.KeyIDOf(ident)
	if _, err := l.AddEdge(ctx, "legacy", ed25519.PublicKey(ident)); err == nil {
		t.Fatal("AddEdge accepted the identity as a key")
	}
	if _, err := conn.Exec(ctx, `INSERT INTO edges (id) VALUES ('legacy')`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO edge_keys (kid, edge, pubkey) VALUES ($1, 'legacy', $2)`, string(kid), ident); err != nil {
		t.Fatal(err)
	}
	c := makeChain(t, protocol.Stream{Edge: "legacy", Epoch: newEpoch(t)}, 3, time.Now())
	seg := c.SignedBy(newTestEdge(t, "x").Signer).Segment(1, 3)
	em, _ := cbor.CoreDetEncOptions().EncMode()
	payload, err := em.Marshal(protocol.Checkpoint{Edge: "legacy", Epoch: c.Stream.Epoch, Seq: 3, Head: c.Links[2], EdgeTime: c.Times[2], KID: kid})
	if err != nil {
		t.Fatal(err)
	}
	forgedSig := append(append([]byte{}, ident...), make([]byte, 32)...)
	if !ed25519.Verify(ident, []byte("any message"), forgedSig) {
		t.Fatal("the forgery does not verify under crypto/ed25519: the test tests nothing")
	}
	seg.Checkpoint, err = cose.Sign1(nil, fixedSig(forgedSig), cose.Headers{Protected: cose.ProtectedHeader{
		cose.HeaderLabelAlgorithm: cose.AlgorithmEdDSA, cose.HeaderLabelContentType: protocol.ContentTypeCheckpoint,
		cose.HeaderLabelKeyID: []byte(kid)}}, payload, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := MustCommit(t, l, inputs(seg)...)
	if out[0].Kind != ledger.KindQuarantined || out[0].Code != protocol.NackSignature {
		t.Fatalf("outcome %+v; want quarantined (signature)", out[0])
	}
	if n := count(t, conn, `SELECT count(*) FROM ledger`); n != 0 {
		t.Fatalf("%d rows committed under a small-order key", n)
	}
}
