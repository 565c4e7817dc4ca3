package ingest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/outpost-edge/outpost/cloud/ingest"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// publisher is a CommandPublisher that is never called here: it only
// travels to Options.Commands.
type publisher struct{ name string }

func (publisher) PublishCommand(context.Context, string, []byte) error { return nil }

// revokedLedger refuses every hello, as the ledger does a revoked edge's.
type revokedLedger struct{ fakeLedger }

func (*revokedLedger) NoteHello(context.Context, protocol.Hello) (ledger.Watermark, error) {
	return ledger.Watermark{}, ledger.ErrRevoked
}

// AnswerHello hands Options.Commands the hello's edge, its cmd and the
// transport it came by, once the hello is answered; a hello it refuses
// (malformed, naming another edge, of a revoked edge) gets no commands.
func TestAnswerHelloDeliversCommands(t *testing.T) {
	type call struct {
		edge string
		cmd  uint64
		pub  ingest.CommandPublisher
	}
	var calls []call
	commands := func(_ context.Context, edge string, cmd uint64, pub ingest.CommandPublisher) error {
		calls = append(calls, call{edge, cmd, pub})
		return errors.New("logged, not returned")
	}
	svc, _ := start(t, &fakeLedger{hwm: map[protocol.Stream]uint64{}}, func(o *ingest.Options) { o.Commands = commands })
	ep := protocol.Epoch{1}
	pub := publisher{"mqtt"}
	ctx := context.Background()

	rc, deliver, err := svc.AnswerHello(ctx, "e1", protocol.EncodeHello(protocol.Hello{Edge: "e1", Epoch: ep, Cmd: 7}), pub)
	if err != nil || rc == nil || deliver == nil {
		t.Fatalf("AnswerHello: %v, receipt %v, deliver %v", err, rc != nil, deliver != nil)
	}
	if len(calls) != 0 {
		t.Fatal("commands were sent before the receipt")
	}
	deliver(ctx)
	if len(calls) != 1 || calls[0].edge != "e1" || calls[0].cmd != 7 || calls[0].pub != pub {
		t.Fatalf("Commands got %+v, want e1, cmd 7, the transport", calls)
	}
	for name, hello := range map[string]struct {
		topic   string
		payload []byte
	}{
		"malformed":         {"e1", []byte("not a hello")},
		"another edge's":    {"e2", protocol.EncodeHello(protocol.Hello{Edge: "e1", Epoch: ep, Cmd: 7})},
		"without transport": {"e1", nil},
	} {
		var p ingest.CommandPublisher = pub
		payload := hello.payload
		if payload == nil {
			p, payload = nil, protocol.EncodeHello(protocol.Hello{Edge: "e1", Epoch: ep})
		}
		if _, deliver, _ := svc.AnswerHello(ctx, hello.topic, payload, p); deliver != nil {
			t.Errorf("%s hello: commands would be sent", name)
		}
	}
	revoked, _ := start(t, &revokedLedger{}, func(o *ingest.Options) { o.Commands = commands })
	if _, deliver, err := revoked.AnswerHello(ctx, "e1", protocol.EncodeHello(protocol.Hello{Edge: "e1", Epoch: ep}), pub); err == nil || deliver != nil {
		t.Errorf("a revoked edge's hello: %v, deliver %v; want refused, no commands", err, deliver != nil)
	}
}
