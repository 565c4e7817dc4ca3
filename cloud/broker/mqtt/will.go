package mqtt

import (
	"log/slog"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// willHook holds wills to the ACL. mochi publishes a will without the ACL
// check it applies to every publish, so an edge could otherwise leave a
// will on another edge's seg or rcpt topic, drop its connection, and have
// the broker deliver it as if that edge had sent it. A will the edge could
// not publish itself is dropped when the session is established (after
// authentication, before the CONNACK), and the login goes on without it: a
// will is optional in MQTT, and an edge needs none (every session starts
// with a hello).
type willHook struct {
	mochi.HookBase
	log *slog.Logger
}

func (h *willHook) ID() string { return "outpost-will-acl" }

func (h *willHook) Provides(b byte) bool { return b == mochi.OnSessionEstablish }

func (h *willHook) OnSessionEstablish(cl *mochi.Client, _ packets.Packet) {
	w := cl.Properties.Will
	if w.Flag == 0 && w.TopicName == "" {
		return
	}
	user := string(cl.Properties.Username)
	if allowed(user, w.TopicName, true) {
		return
	}
	h.log.Warn("dropped a will on a topic this login may not publish to", "user", user, "topic", w.TopicName)
	cl.Properties.Will = mochi.Will{}
}
