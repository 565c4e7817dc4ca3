package mqtt

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-edge/outpost/cloud/edgeauth"
)

func authenticator(o Options) (*edgeauth.Authenticator, error) {
	if o.Auth != nil {
		return o.Auth, nil
	}
	if o.Keys == nil {
		return nil, errors.New("broker: Auth (or Keys) is required")
	}
	return edgeauth.New(edgeauth.Options{Store: edgeauth.KeysStore(o.Keys), Now: o.Now, Logger: o.Logger})
}

// kick closes a revoked edge's session without delivering its will: the
// will is the revoked edge speaking, after the cloud stopped listening.
func (b *Broker) kick(cl *mochi.Client) {
	atomic.StoreUint32(&cl.Properties.Will.Flag, 0)
	if cl.Properties.ProtocolVersion >= 5 {
		_ = b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		return
	}
	cl.Stop(packets.ErrNotAuthorized) // MQTT 3.1.1 has no server DISCONNECT
}

// quietRefusals drops mochi's own line for each refused login (an empty
// message with the error "bad username or password"): edgeauth logs each
// refusal with its reason, rate-limited, and an unauthenticated flood must
// not turn into a flood of log lines.
type quietRefusals struct{ slog.Handler }

func (h quietRefusals) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "" {
		refusal := false
		r.Attrs(func(a slog.Attr) bool {
			if err, ok := a.Value.Any().(error); ok && errors.Is(err, packets.ErrBadUsernameOrPassword) {
				refusal = true
			}
			return !refusal
		})
		if refusal {
			return nil
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietRefusals) WithAttrs(a []slog.Attr) slog.Handler {
	return quietRefusals{h.Handler.WithAttrs(a)}
}
func (h quietRefusals) WithGroup(n string) slog.Handler { return quietRefusals{h.Handler.WithGroup(n)} }
