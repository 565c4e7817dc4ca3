package firmware_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

func TestRepoAuthorization(t *testing.T) {
	s := protocoltest.NewSigner(t)
	keys := protocol.NewKeyMap(s.Public())
	now := time.Now()
	h := firmware.RepoAuthorization(s, "shop-1", "kid1", now)
	edge, tok, err := firmware.ParseRepoAuthorization(h)
	if err != nil || edge != "shop-1" {
		t.Fatalf("parse: %q %v", edge, err)
	}
	if err := firmware.CheckRepoToken(tok, "shop-1", "kid1", keys, now); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		edge, cluster string
		at            time.Time
		want          error
	}{
		"another edge":      {"shop-2", "kid1", now, protocol.ErrBadSignature},
		"another cloud":     {"shop-1", "kid2", now, protocol.ErrBadSignature},
		"expired":           {"shop-1", "kid1", now.Add(firmware.RepoTokenLife), firmware.ErrRepoAuthExpired},
		"from the far past": {"shop-1", "kid1", now.Add(-time.Hour), firmware.ErrRepoAuthExpired},
	} {
		if err := firmware.CheckRepoToken(tok, c.edge, c.cluster, keys, c.at); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	// A broker token (audience mqtt:kid1) is not a repository token.
	bt := s.BrokerToken(protocol.BrokerAudience(protocol.BrokerMQTT, "kid1"), "shop-1", uint64(now.Add(time.Minute).UnixMilli()))
	_, tok, err = firmware.ParseRepoAuthorization("Outpost-Edge shop-1 " + bt)
	if err != nil {
		t.Fatal(err)
	}
	if err := firmware.CheckRepoToken(tok, "shop-1", "kid1", keys, now); !errors.Is(err, protocol.ErrBadSignature) {
		t.Fatalf("broker token accepted: %v", err)
	}
	for _, h := range []string{"", "Bearer x", "Outpost-Edge shop-1", "Outpost-Edge ../x v2.a.1.b", "Outpost-Edge shop-1 v1.a.1.b"} {
		if _, _, err := firmware.ParseRepoAuthorization(h); err == nil {
			t.Errorf("%q parsed", h)
		}
	}
}

func FuzzParseRepoAuthorization(f *testing.F) {
	s := protocoltest.NewSigner(f)
	f.Add(firmware.RepoAuthorization(s, "shop-1", "kid1", time.Unix(1700000000, 0)))
	f.Add("Outpost-Edge a v2.k.18446744073709551615.AAAA")
	f.Fuzz(func(t *testing.T, h string) {
		edge, tok, err := firmware.ParseRepoAuthorization(h)
		if err != nil {
			return
		}
		if edge == "" || strings.ContainsAny(edge, " /") {
			t.Fatalf("edge %q accepted", edge)
		}
		// Never panics, whatever the counter.
		_ = firmware.CheckRepoToken(tok, edge, "kid1", protocol.NewKeyMap(s.Public()), time.Now())
	})
}
