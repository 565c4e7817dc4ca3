package load

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/simulator/verify"
)

// CheckResult is what reading every stream back found.
type CheckResult struct {
	OK       bool     `json:"ok"`
	Streams  int      `json:"streams"`
	Records  int      `json:"records"`
	Problems []string `json:"problems,omitempty"`
}

// check reads each edge's stream back over the API (GET
// /v1/streams/{edge}/{epoch}/records) and checks that it holds exactly
// seqs 1..head, once each, chained, ending in the edge's own head hash, and
// that the cloud's watermark is the head.
func (r *run) check(ctx context.Context) *CheckResult {
	cl := &verify.Client{URL: r.cfg.Cloud.API, Token: r.cfg.Cloud.AdminToken, HTTP: r.http}
	res := &CheckResult{}
	var mu sync.Mutex
	problem := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(res.Problems) < 20 {
			res.Problems = append(res.Problems, fmt.Sprintf(format, args...))
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, e := range r.edges {
		if e.head == 0 {
			continue // made nothing: the cloud never saw the stream
		}
		g.Go(func() error {
			s, err := cl.Stream(gctx, e.stream)
			if err != nil {
				problem("stream %s: %v", e.stream, err)
				return nil
			}
			mu.Lock()
			res.Streams++
			res.Records += len(s.Rows)
			mu.Unlock()
			if msg := checkStream(s, e.stream, e.head, e.hash); msg != "" {
				problem("stream %s: %s", e.stream, msg)
			}
			return nil
		})
	}
	_ = g.Wait()
	res.OK = len(res.Problems) == 0
	return res
}

// checkStream says what is wrong with a stream read back, or "".
func checkStream(s verify.Stream, st protocol.Stream, head uint64, hash protocol.Hash) string {
	if s.HWM != head {
		return fmt.Sprintf("the cloud's watermark is %d, the edge made %d records", s.HWM, head)
	}
	if uint64(len(s.Rows)) != head {
		seen := map[uint64]int{}
		for _, row := range s.Rows {
			seen[row.Seq]++
		}
		for seq := uint64(1); seq <= head; seq++ {
			switch seen[seq] {
			case 0:
				return fmt.Sprintf("%d rows for %d records: seq %d is missing", len(s.Rows), head, seq)
			case 1:
			default:
				return fmt.Sprintf("%d rows for %d records: seq %d is there %d times", len(s.Rows), head, seq, seen[seq])
			}
		}
		return fmt.Sprintf("%d rows for %d records", len(s.Rows), head)
	}
	raws := make([][]byte, len(s.Rows))
	for i, row := range s.Rows {
		if row.Seq != uint64(i+1) {
			return fmt.Sprintf("row %d is seq %d: rows out of order or doubled", i+1, row.Seq)
		}
		raws[i] = row.Raw
	}
	want := protocol.ChainState{Stream: st, Seq: head, Head: hash}
	if _, _, err := protocol.VerifyChain(protocol.ChainState{Stream: st}, raws, &want); err != nil {
		return fmt.Sprintf("chain: %v", err)
	}
	return ""
}
