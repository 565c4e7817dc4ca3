package web

import (
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/cloud/rollout"
	"github.com/outpost-edge/outpost/protocol"
)

// The API's wire forms (docs/API.md) that the pages read.

type keyJSON struct {
	KID       string     `json:"kid"`
	PublicKey string     `json:"public_key"`
	Status    string     `json:"status"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at"`
}

type edgeJSON struct {
	ID        string     `json:"id"`
	Status    string     `json:"status"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at"`
	Keys      []keyJSON  `json:"keys"`
	Agent     string     `json:"agent"`    // the edge's own word, from its hello; html/template escapes it
	AgentAt   *time.Time `json:"agent_at"` // when it first named that agent
}

type streamJSON struct {
	Edge       string          `json:"edge"`
	Epoch      protocol.Epoch  `json:"epoch"`
	HWM        uint64          `json:"hwm"`
	Head       protocol.Hash   `json:"head"`
	LastCommit *time.Time      `json:"last_commit"`
	EdgeSeq    uint64          `json:"edge_seq"`
	Lag        uint64          `json:"lag"`
	FirstSeen  time.Time       `json:"first_seen"`
	LastSeen   time.Time       `json:"last_seen"`
	PrevEpoch  *protocol.Epoch `json:"prev_epoch"`
	NextEpoch  *protocol.Epoch `json:"next_epoch"`
	EndedAt    *time.Time      `json:"ended_at"`
	EndedAtSeq *uint64         `json:"ended_at_seq"`
	LagHistory []lagSample     `json:"lag_history"`
}

func (s *server) edges(r *http.Request, sess *session) ([]edgeJSON, error) {
	var b struct {
		Edges []edgeJSON `json:"edges"`
	}
	if err := s.getJSON(r, sess, "/v1/edges", nil, &b); err != nil {
		return nil, err
	}
	sort.Slice(b.Edges, func(i, j int) bool { return b.Edges[i].ID < b.Edges[j].ID })
	return b.Edges, nil
}

func (s *server) streams(r *http.Request, sess *session) ([]streamJSON, error) {
	var b struct {
		Streams []streamJSON `json:"streams"`
	}
	if err := s.getJSON(r, sess, "/v1/streams", nil, &b); err != nil {
		return nil, err
	}
	return b.Streams, nil
}

// fleetRow is one edge with its streams.
type fleetRow struct {
	Edge    edgeJSON
	Streams []streamRow
}

type streamRow struct {
	streamJSON
	Bar   bar           // the lag as a bar, scaled to the page's largest
	Spark template.HTML // the lag history as a sparkline; "" with fewer than two samples
}

type fleetData struct {
	Rows      []fleetRow
	Total     int    // edges in all
	After     string // this page's cursor
	Next      string // the next page's cursor, "" on the last
	Done      string // what the last action did
	MaxLag    uint64
	LagChart  chart
	Streams   int
	Lagging   int
	CSVEdges  string
	CSVStream string
	Rollouts  []rollout.Status // newest first
}

// fleet shows the edges, a page at a time (keyset by edge id), each with
// its keys, its streams and the admin actions.
func (s *server) fleet(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r, "after", "done"); err != nil {
		return err
	}
	es, err := s.edges(r, sess)
	if err != nil {
		return err
	}
	ss, err := s.streams(r, sess)
	if err != nil {
		return err
	}
	ros, err := s.rollouts(r, sess)
	if err != nil {
		return err
	}
	after := r.URL.Query().Get("after")
	d := fleetData{Rollouts: ros, Total: len(es), After: after, Done: r.URL.Query().Get("done"), Streams: len(ss),
		CSVEdges: "/fleet/edges.csv", CSVStream: "/fleet/streams.csv"}
	byEdge := map[string][]streamJSON{}
	for _, st := range ss {
		byEdge[st.Edge] = append(byEdge[st.Edge], st)
		d.MaxLag = max(d.MaxLag, st.Lag)
		if st.Lag > 0 {
			d.Lagging++
		}
	}
	i := sort.Search(len(es), func(i int) bool { return es[i].ID > after })
	page := es[i:min(len(es), i+s.opts.PageSize)]
	if i+len(page) < len(es) {
		d.Next = page[len(page)-1].ID
	}
	var bars []chartBar
	for _, e := range page {
		row := fleetRow{Edge: e}
		for _, st := range byEdge[e.ID] {
			row.Streams = append(row.Streams, streamRow{streamJSON: st, Bar: barOf(st.Lag, d.MaxLag), Spark: sparkline(st.LagHistory)})
			if st.EndedAt == nil {
				bars = append(bars, chartBar{Label: st.Edge + " " + st.Epoch.String()[:8], Value: int64(st.Lag)})
			}
		}
		d.Rows = append(d.Rows, row)
	}
	d.LagChart = hbars(bars, "records behind")
	s.render(w, r, http.StatusOK, "fleet", sess, "Fleet", d)
	return nil
}

func (s *server) fleetEdgesCSV(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	es, err := s.edges(r, sess)
	if err != nil {
		return err
	}
	rows := make([][]string, 0, len(es))
	for _, e := range es {
		var active, revoked []string
		for _, k := range e.Keys {
			if k.Status == "active" {
				active = append(active, k.KID)
			} else {
				revoked = append(revoked, k.KID)
			}
		}
		rows = append(rows, []string{e.ID, e.Status, csvTime(e.CreatedAt), csvTimep(e.RevokedAt),
			strings.Join(active, " "), strings.Join(revoked, " "), e.Agent})
	}
	return writeCSV(w, "edges.csv", []string{"edge", "status", "created_at", "revoked_at", "active_kids", "revoked_kids", "agent"}, rows)
}

func (s *server) fleetStreamsCSV(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	ss, err := s.streams(r, sess)
	if err != nil {
		return err
	}
	rows := make([][]string, 0, len(ss))
	for _, st := range ss {
		ended := ""
		if st.EndedAtSeq != nil {
			ended = u64(*st.EndedAtSeq)
		}
		rows = append(rows, []string{st.Edge, st.Epoch.String(), u64(st.HWM), u64(st.EdgeSeq), u64(st.Lag), st.Head.String(),
			csvTimep(st.LastCommit), csvTime(st.FirstSeen), csvTime(st.LastSeen), csvTimep(st.EndedAt), ended})
	}
	return writeCSV(w, "streams.csv", []string{"edge", "epoch", "hwm", "edge_seq", "lag", "head",
		"last_commit", "first_seen", "last_seen", "ended_at", "ended_at_seq"}, rows)
}

// done sends the browser back to the fleet page (the same page of it)
// saying what happened: POST, redirect, GET, so a reload repeats nothing.
func done(w http.ResponseWriter, r *http.Request, msg string) {
	q := url.Values{"done": {msg}}
	if a := r.PostForm.Get("after"); a != "" {
		q.Set("after", a)
	}
	http.Redirect(w, r, "/fleet?"+q.Encode(), http.StatusSeeOther)
}

func (s *server) revokeEdge(w http.ResponseWriter, r *http.Request, sess *session) error {
	id := r.PathValue("id")
	if _, err := s.call(r, sess, http.MethodPost, "/v1/edges/"+url.PathEscape(id)+"/revoke", nil, nil); err != nil {
		return err
	}
	done(w, r, "Edge "+id+" is revoked: its keys no longer verify and its broker sessions are closed.")
	return nil
}

func (s *server) rotateKey(w http.ResponseWriter, r *http.Request, sess *session) error {
	id := r.PathValue("id")
	pub := strings.TrimSpace(r.PostForm.Get("public_key"))
	var out struct {
		KID string `json:"kid"`
	}
	resp, err := s.call(r, sess, http.MethodPost, "/v1/edges/"+url.PathEscape(id)+"/keys", nil, map[string]string{"public_key": pub})
	if err != nil {
		return err
	}
	if err := jsonInto(resp, &out); err != nil {
		return err
	}
	done(w, r, "Edge "+id+" has a new key "+out.KID+"; revoke the old one once the edge signs with the new one.")
	return nil
}

func (s *server) revokeKey(w http.ResponseWriter, r *http.Request, sess *session) error {
	id, kid := r.PathValue("id"), r.PathValue("kid")
	if _, err := s.call(r, sess, http.MethodPost, "/v1/edges/"+url.PathEscape(id)+"/keys/"+url.PathEscape(kid)+"/revoke", nil, nil); err != nil {
		return err
	}
	done(w, r, "Key "+kid+" of edge "+id+" is revoked.")
	return nil
}
