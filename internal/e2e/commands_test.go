package e2e_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/internal/keyfile"
	"github.com/outpost-edge/outpost/protocol"
)

// TestCommandReachesEdgeLedger: the command channel end to end with the
// real programs, over MQTT and over NATS. A command enqueued with
// cloud/command.Enqueue (signed with the running cloud's own key) while
// `edge run --ota-repo` is connected is pushed to it; one enqueued while
// the edge is down comes with its next hello. The edge's gate accepts
// each, and its ota.command_accepted (device _edge, reason "command N")
// lands in the cloud's ledger once per command, redeliveries or not; the
// hello that follows marks the commands it covers acknowledged.
func TestCommandReachesEdgeLedger(t *testing.T) {
	forTransports(t, []transport{transportMQTT, transportNATS}, func(t *testing.T, o siteOptions) {
		s := newSiteWith(t, o)
		s.o.edgeArgs = []string{"--ota-repo", "http://" + s.api + "/v1/ota/repo"}
		e := s.addEdge("e1")

		k, _, err := keyfile.LoadOrCreate(filepath.Join(s.dir, "cloud", "cloud.key"))
		if err != nil {
			t.Fatal(err)
		}
		signer, err := protocol.NewSigner(k)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		db, err := pgx.Connect(ctx, s.dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close(ctx)
		enqueue := func(rollout string) uint64 {
			t.Helper()
			var seq uint64
			// An ota.cancel for a rollout the edge holds nothing of: the
			// gate accepts it, and nothing else happens.
			body := protocol.EncodeCancel(protocol.Cancel{Rollout: rollout, Reason: "e2e"})
			if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) (err error) {
				seq, err = command.Enqueue(ctx, tx, signer, "e1", protocol.CommandCancel, "", body, time.Now().Add(time.Hour))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			return seq
		}
		accepted := func(seq uint64) (int64, error) {
			var n int64
			err := db.QueryRow(ctx, `SELECT count(*) FROM ledger WHERE edge = 'e1' AND device = $1 AND type = 'ota.command_accepted' AND event_id = $2`,
				protocol.EdgeDevice, "cmd-"+strconv.FormatUint(seq, 10)+"-accepted").Scan(&n)
			return n, err
		}
		waitAccepted := func(seq uint64) {
			t.Helper()
			waitFor(t, fmt.Sprintf("ota.command_accepted of command %d in the ledger", seq), 120*time.Second, func() bool {
				n, err := accepted(seq)
				return err == nil && n == 1
			}, e.proc, s.cloud)
		}

		// The edge says hello at start; a command enqueued after that is
		// pushed (there is no new hello to wait for).
		waitFor(t, "the edge's hello", 60*time.Second, func() bool {
			st, ok := e.edgeStatus()
			return ok && st.NextSeq > 0
		}, e.proc)
		one := enqueue("r-pushed")
		waitAccepted(one)

		// Down, then up: the hello brings the command kept meanwhile.
		e.kill()
		two := enqueue("r-kept")
		e.startEdge()
		waitAccepted(two)

		// Both are acknowledged: the first by the restarted edge's hello
		// (cmd 1) or its ledger, the second by its ota.command_accepted in
		// the ledger, without a hello after it (an idle edge says none).
		waitFor(t, "both commands acknowledged", 120*time.Second, func() bool {
			st, err := command.List(ctx, db, "e1")
			return err == nil && len(st) == 2 && st[0].Seq == one && st[0].AckedAt != nil && st[1].AckedAt != nil
		}, e.proc, s.cloud)
		for _, seq := range []uint64{one, two} {
			if n, err := accepted(seq); err != nil || n != 1 {
				t.Fatalf("command %d: %d ota.command_accepted in the ledger (%v), want 1", seq, n, err)
			}
		}
	})
}
