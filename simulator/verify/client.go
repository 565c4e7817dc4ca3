package verify

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// Client reads a ledger from the cloud's HTTP API: GET /v1/streams, GET
// /v1/edges and GET /v1/streams/{edge}/{epoch}/records, which needs an
// admin token.
type Client struct {
	URL   string // the API's base URL, such as http://127.0.0.1:18080
	Token string // an admin API token
	HTTP  *http.Client
	// PageSize is how many seqs one records request spans (default 1000).
	PageSize int
	// Since, when not zero, leaves out the streams the cloud first saw
	// before it: those of earlier runs on the same database.
	Since time.Time
}

func (c *Client) get(ctx context.Context, path string, v any) error {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 60 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.URL, "/")+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// StreamInfo is a stream as GET /v1/streams shows it.
type StreamInfo struct {
	Edge       string         `json:"edge"`
	Epoch      protocol.Epoch `json:"epoch"`
	HWM        uint64         `json:"hwm"`
	EdgeSeq    uint64         `json:"edge_seq"`
	Lag        uint64         `json:"lag"`
	LastCommit *time.Time     `json:"last_commit"`
	FirstSeen  time.Time      `json:"first_seen"`
}

// Streams returns every stream's watermark.
func (c *Client) Streams(ctx context.Context) ([]StreamInfo, error) {
	var body struct {
		Streams []StreamInfo `json:"streams"`
	}
	err := c.get(ctx, "/v1/streams", &body)
	return body.Streams, err
}

// Keys returns every edge's keys, revoked ones included.
func (c *Client) Keys(ctx context.Context) (map[string]protocol.KeyMap, error) {
	var body struct {
		Edges []struct {
			ID   string `json:"id"`
			Keys []struct {
				KID       protocol.KeyID `json:"kid"`
				PublicKey string         `json:"public_key"`
			} `json:"keys"`
		} `json:"edges"`
	}
	if err := c.get(ctx, "/v1/edges", &body); err != nil {
		return nil, err
	}
	out := map[string]protocol.KeyMap{}
	for _, e := range body.Edges {
		km := protocol.KeyMap{}
		for _, k := range e.Keys {
			b, err := hex.DecodeString(k.PublicKey)
			if err != nil || len(b) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("edge %s: key %s: public key %q is not 32 bytes of hex", e.ID, k.KID, k.PublicKey)
			}
			km[k.KID] = ed25519.PublicKey(b)
		}
		out[e.ID] = km
	}
	return out, nil
}

// Ledger reads every stream's rows and checkpoints, and the edges' keys.
func (c *Client) Ledger(ctx context.Context) (*Ledger, error) {
	infos, err := c.Streams(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := c.Keys(ctx)
	if err != nil {
		return nil, err
	}
	l := &Ledger{Keys: keys}
	for _, si := range infos {
		if si.FirstSeen.Before(c.Since) {
			l.Earlier++
			continue
		}
		s, err := c.Stream(ctx, protocol.Stream{Edge: si.Edge, Epoch: si.Epoch})
		if err != nil {
			return nil, err
		}
		l.Streams = append(l.Streams, s)
	}
	return l, nil
}

type recordPage struct {
	HWM     uint64 `json:"hwm"`
	Records []struct {
		Seq         uint64    `json:"seq"`
		Pos         int64     `json:"pos"`
		CommittedAt time.Time `json:"committed_at"`
		Raw         []byte    `json:"raw"`
	} `json:"records"`
	Checkpoints []struct {
		Seq       uint64 `json:"seq"`
		Signature []byte `json:"signature"`
	} `json:"checkpoints"`
	Next uint64 `json:"next"`
}

// Stream reads one stream, page by page.
func (c *Client) Stream(ctx context.Context, s protocol.Stream) (Stream, error) {
	size := c.PageSize
	if size <= 0 {
		size = 1000
	}
	out := Stream{Stream: s}
	seen := map[uint64]bool{}
	for from := uint64(1); from != 0; {
		var p recordPage
		q := url.Values{"from": {fmt.Sprint(from)}, "limit": {fmt.Sprint(size)}}
		path := fmt.Sprintf("/v1/streams/%s/%s/records?%s", url.PathEscape(s.Edge), s.Epoch, q.Encode())
		if err := c.get(ctx, path, &p); err != nil {
			return out, err
		}
		out.HWM = p.HWM
		for _, r := range p.Records {
			out.Rows = append(out.Rows, Row{Seq: r.Seq, Pos: r.Pos, CommittedAt: r.CommittedAt, Raw: r.Raw})
		}
		for _, cp := range p.Checkpoints {
			if !seen[cp.Seq] {
				seen[cp.Seq] = true
				out.Checkpoints = append(out.Checkpoints, Checkpoint{Seq: cp.Seq, Signature: cp.Signature})
			}
		}
		if p.Next != 0 && p.Next <= from {
			return out, fmt.Errorf("stream %s: the API's next page %d does not move on from %d", s, p.Next, from)
		}
		from = p.Next
	}
	return out, nil
}
