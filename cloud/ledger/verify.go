package ledger

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"

	"github.com/outpost-edge/outpost/protocol"
)

// Phase 1 of a commit, outside any transaction: each input's checkpoint
// signature against its edge's keys and its chain within itself. What fails
// here is quarantined; what passes is only left to be met with the stored
// head, in the transaction (commit.go).

// verified is an input whose checkpoint and internal chain are good: it
// only remains to see how it meets the stored head.
type verified struct {
	idx    int // in the batch
	seg    *protocol.Segment
	stream protocol.Stream
	cp     protocol.Checkpoint
	recs   []protocol.Record
	links  []protocol.Hash // links[i] is the link hash of record seg.First+i
}

// verifyAll verifies every input, in parallel, and returns those that
// passed. It fills out for those that did not.
func (l *Ledger) verifyAll(batch []Input, keys map[string]*Keys, out []Outcome) []*verified {
	res := make([]*verified, len(batch))
	if len(batch) == 1 || l.opts.Verifiers == 1 {
		for i := range batch {
			res[i] = verifyOne(i, &batch[i], keys, &out[i])
		}
	} else {
		var wg sync.WaitGroup
		sem := make(chan struct{}, l.opts.Verifiers)
		for i := range batch {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				res[i] = verifyOne(i, &batch[i], keys, &out[i])
			})
		}
		wg.Wait()
	}
	var work []*verified
	for _, v := range res {
		if v != nil {
			work = append(work, v)
		}
	}
	return work
}

// keyProbe remembers why the key lookup failed, which VerifyCheckpoint
// folds into ErrBadSignature, so that the nack can say unknown or revoked.
type keyProbe struct {
	keys *Keys
	err  error
}

func (p *keyProbe) PublicKey(kid protocol.KeyID) (ed25519.PublicKey, error) {
	k, err := p.keys.PublicKey(kid)
	p.err = err
	return k, err
}

func verifyOne(idx int, in *Input, keys map[string]*Keys, o *Outcome) *verified {
	seg := in.Segment
	if seg == nil {
		why := "no segment"
		if in.Problem != "" {
			why = "the segment does not decode: " + in.Problem
		}
		*o = quarantined(protocol.Stream{Edge: in.TopicEdge}, protocol.NackMalformed, why)
		return nil
	}
	s := seg.Stream()
	if n := uint64(len(seg.Records)); n == 0 || seg.First == 0 || seg.Last != seg.First+n-1 {
		*o = quarantined(s, protocol.NackMalformed,
			fmt.Sprintf("segment first %d and last %d do not match its %d records", seg.First, seg.Last, n))
		return nil
	}
	if seg.Edge != in.TopicEdge {
		*o = quarantined(s, protocol.NackSignature,
			fmt.Sprintf("segment of edge %q arrived on the topic of edge %q", seg.Edge, in.TopicEdge))
		return nil
	}
	k := keys[seg.Edge]
	if k == nil {
		*o = quarantined(s, protocol.NackUnknown, fmt.Sprintf("edge %q is not registered", seg.Edge))
		return nil
	}
	probe := &keyProbe{keys: k}
	cp, err := protocol.VerifyCheckpoint(seg.Checkpoint, probe)
	if err != nil {
		code := protocol.NackSignature
		switch {
		case errors.Is(probe.err, ErrRevoked):
			code = protocol.NackRevoked
		case errors.Is(probe.err, ErrUnknownKey):
			code = protocol.NackUnknown
		case errors.Is(err, protocol.ErrMalformed), errors.Is(err, protocol.ErrTooLarge):
			code = protocol.NackMalformed
		}
		*o = quarantined(s, code, err.Error())
		return nil
	}
	r0, _ := protocol.DecodeRecord(seg.Records[0]) // a bad record 0 is VerifyChain's to report
	from := protocol.ChainState{Stream: s, Seq: seg.First - 1, Head: r0.Prev}
	want := protocol.ChainState{Stream: cp.Stream(), Seq: cp.Seq, Head: cp.Head}
	_, recs, err := protocol.VerifyChain(from, seg.Records, &want)
	if err != nil {
		*o = quarantined(s, protocol.NackChain, err.Error())
		return nil
	}
	links := make([]protocol.Hash, len(recs))
	for i := range len(recs) - 1 {
		links[i] = recs[i+1].Prev // VerifyChain checked that it is record i's link hash
	}
	links[len(recs)-1] = cp.Head
	return &verified{idx: idx, seg: seg, stream: s, cp: cp, recs: recs, links: links}
}

func quarantined(s protocol.Stream, code protocol.NackCode, reason string) Outcome {
	return Outcome{Kind: KindQuarantined, Watermark: Watermark{Stream: s}, Code: code, Reason: reason}
}
