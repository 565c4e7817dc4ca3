package protocol_test

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"filippo.io/edwards25519"
	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/outpost-edge/outpost/protocol"
)

// small-order and otherwise untrustworthy public keys, as the attacks used.
var badKeys = map[string]string{
	"identity 01 00…00":              "01" + strings.Repeat("00", 31),
	"all zeros (order 4)":            strings.Repeat("00", 32),
	"order 2 (0, -1)":                "ec" + strings.Repeat("ff", 30) + "7f",
	"non-canonical identity (y=p+1)": "ee" + strings.Repeat("ff", 30) + "7f",
	"x=0 with the sign bit set":      "01" + strings.Repeat("00", 30) + "80",
	"not on the curve":               "02" + strings.Repeat("00", 31),
}

func TestValidatePublicKey(t *testing.T) {
	for name, h := range badKeys {
		t.Run(name, func(t *testing.T) {
			b, _ := hex.DecodeString(h)
			if err := protocol.ValidatePublicKey(b); !errors.Is(err, protocol.ErrBadKey) {
				t.Fatalf("ValidatePublicKey(%s) = %v; want ErrBadKey", h, err)
			}
			if _, err := protocol.ParsePublicKey(h); !errors.Is(err, protocol.ErrBadKey) {
				t.Fatalf("ParsePublicKey(%s) = %v; want ErrBadKey", h, err)
			}
		})
	}
	t.Run("non-canonical point of large order", func(t *testing.T) {
		// y+p for a small y that is a point of large order: the same point
		// as y, but a second encoding of it.
		for y := byte(2); y < 19; y++ {
			enc := make([]byte, 32)
			enc[0] = y
			p, err := new(edwards25519.Point).SetBytes(enc)
			if err != nil || new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
				continue
			}
			if err := protocol.ValidatePublicKey(enc); err != nil {
				t.Fatalf("canonical y=%d refused: %v", y, err)
			}
			nc, _ := hex.DecodeString("ed" + strings.Repeat("ff", 30) + "7f") // p
			nc[0] += y
			if err := protocol.ValidatePublicKey(nc); !errors.Is(err, protocol.ErrBadKey) {
				t.Fatalf("non-canonical encoding %x of y=%d accepted: %v", nc, y, err)
			}
			return
		}
		t.Fatal("no small y of large order found")
	})
	t.Run("good", func(t *testing.T) {
		pub, _, err := protocol.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if err := protocol.ValidatePublicKey(pub); err != nil {
			t.Fatal(err)
		}
		got, err := protocol.ParsePublicKey(hex.EncodeToString(pub))
		if err != nil || !got.Equal(pub) {
			t.Fatalf("ParsePublicKey = %x, %v", got, err)
		}
	})
	t.Run("wrong length", func(t *testing.T) {
		if _, err := protocol.ParsePublicKey("abcd"); !errors.Is(err, protocol.ErrBadKey) || !strings.Contains(err.Error(), "64 hex digits") {
			t.Fatalf("err %v", err)
		}
	})
}

// fixedSigner "signs" with a fixed signature, as an attacker without a
// private key does.
type fixedSigner []byte

func (fixedSigner) Algorithm() cose.Algorithm                { return cose.AlgorithmEdDSA }
func (f fixedSigner) Sign(io.Reader, []byte) ([]byte, error) { return f, nil }

// With the identity as the key, R = identity and S = 0 verify for every
// message under cofactorless Ed25519: a checkpoint or receipt forged
// without any private key. Verification refuses the key itself.
func TestForgedSignatureUnderSmallOrderKeyRefused(t *testing.T) {
	ident, _ := hex.DecodeString(badKeys["identity 01 00…00"])
	sig := append(append([]byte{}, ident...), make([]byte, 32)...)
	if !ed25519.Verify(ident, []byte("anything"), sig) {
		t.Fatal("the forgery does not verify under crypto/ed25519; the test is not testing the attack")
	}
	kid := protocol.KeyIDOf(ident)
	keys := protocol.KeyMap{kid: ident}
	forge := func(ct string, payload any) []byte {
		hdr := cose.Headers{Protected: cose.ProtectedHeader{
			cose.HeaderLabelAlgorithm: cose.AlgorithmEdDSA, cose.HeaderLabelContentType: ct, cose.HeaderLabelKeyID: []byte(kid),
		}}
		b, err := cose.Sign1(nil, fixedSigner(sig), hdr, mustCBOR(t, payload), nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cp := forge(protocol.ContentTypeCheckpoint, protocol.Checkpoint{Edge: "e1", Epoch: protocol.Epoch{1}, Seq: 3, KID: kid})
	if _, err := protocol.VerifyCheckpoint(cp, keys); !errors.Is(err, protocol.ErrBadSignature) {
		t.Fatalf("forged checkpoint: %v; want ErrBadSignature", err)
	}
	rc := forge(protocol.ContentTypeReceipt, protocol.Receipt{Edge: "e1", Epoch: protocol.Epoch{1}, HWM: 3, KID: kid})
	if _, err := protocol.VerifyReply(rc, keys); !errors.Is(err, protocol.ErrBadSignature) {
		t.Fatalf("forged receipt: %v; want ErrBadSignature", err)
	}
}

func mustCBOR(t *testing.T, v any) []byte {
	t.Helper()
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := em.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzParsePublicKey: whatever it accepts is a valid key, and its hex form
// parses back to the same key.
func FuzzParsePublicKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		pub, err := protocol.ParsePublicKey(s)
		if err != nil {
			if !errors.Is(err, protocol.ErrBadKey) {
				t.Fatalf("error %v does not wrap ErrBadKey", err)
			}
			return
		}
		if err := protocol.ValidatePublicKey(pub); err != nil {
			t.Fatalf("accepted %q, which does not validate: %v", s, err)
		}
		again, err := protocol.ParsePublicKey(hex.EncodeToString(pub))
		if err != nil || !again.Equal(pub) {
			t.Fatalf("hex of %q parses to %x, %v", s, again, err)
		}
	})
}
