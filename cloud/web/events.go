package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// onlyParams refuses page parameters other than allowed, like the API
// does: a misspelt filter must not quietly show everything.
func onlyParams(r *http.Request, allowed ...string) error {
	for k, vs := range r.URL.Query() {
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return badRequest("Parameter %s: this page takes no parameters.", k)
			}
			return badRequest("Parameter %s is not known on this page; it takes %v.", k, allowed)
		}
		if len(vs) > 1 {
			return badRequest("Parameter %s is given %d times; give it once.", k, len(vs))
		}
	}
	return nil
}

func jsonInto(resp *apiResponse, v any) error {
	if err := json.Unmarshal(resp.body.Bytes(), v); err != nil {
		return fmt.Errorf("decode the API's answer: %w", err)
	}
	return nil
}

// eventFilter is the events list's filters, as the page and the API both
// take them (edge, type, store, business_day, after).
func eventFilter(r *http.Request) url.Values {
	q := url.Values{}
	for _, k := range eventParams {
		if v := r.URL.Query().Get(k); v != "" {
			q.Set(k, v)
		}
	}
	return q
}

// eventParams are the events list's parameters.
var eventParams = []string{"edge", "type", "store", "business_day", "after"}

type eventsData struct {
	Edge, Type string
	Store, Day string // the store and business day of the POS transactions shown (Store-and-day's drill)
	First      string // the first page's link (the filter without after)
	NextURL    string // the next page's link; "" on the last
	After      string
	Events     []ledger.Event
	Next       string // cursor of the next page; "" when this page is not full
	CSV        string
	MaxCSV     int
}

// events lists ledger events in commit order, a page at a time (the API's
// keyset cursor), filtered by edge and type.
func (s *server) events(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r, eventParams...); err != nil {
		return err
	}
	q := eventFilter(r)
	q.Set("limit", strconv.Itoa(s.opts.PageSize))
	var p ledger.Page
	if err := s.getJSON(r, sess, "/v1/events", q, &p); err != nil {
		return err
	}
	q.Del("limit")
	d := eventsData{Edge: q.Get("edge"), Type: q.Get("type"), Store: q.Get("store"), Day: q.Get("business_day"),
		After: q.Get("after"), Events: p.Events, CSV: "/events.csv?" + q.Encode(), MaxCSV: MaxCSVRows}
	f := url.Values{}
	for k, v := range q {
		if k != "after" {
			f[k] = v
		}
	}
	d.First = "/events?" + f.Encode()
	if len(p.Events) == s.opts.PageSize {
		d.Next = strconv.FormatInt(p.Next, 10)
		f.Set("after", d.Next)
		d.NextURL = "/events?" + f.Encode()
	}
	s.render(w, r, http.StatusOK, "events", sess, "Events", d)
	return nil
}

// eventsCSV downloads the events of the filter from the page's cursor on,
// at most MaxCSVRows of them, paging through the API.
func (s *server) eventsCSV(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r, eventParams...); err != nil {
		return err
	}
	q := eventFilter(r)
	var rows [][]string
	for len(rows) < MaxCSVRows {
		q.Set("limit", strconv.Itoa(min(ledger.MaxLimit, MaxCSVRows-len(rows))))
		var p ledger.Page
		if err := s.getJSON(r, sess, "/v1/events", q, &p); err != nil {
			return err
		}
		for _, e := range p.Events {
			rows = append(rows, []string{i64(e.Pos), csvTime(e.CommittedAt), e.Edge, e.Epoch.String(), u64(e.Seq),
				e.Device, e.ID, e.Type, string(e.Class), csvTime(e.TS), csvTime(e.EdgeTime), e.Hash.String(), string(e.Body)})
		}
		if len(p.Events) == 0 || len(p.Events) < ledger.MaxLimit {
			break
		}
		q.Set("after", strconv.FormatInt(p.Next, 10))
	}
	return writeCSV(w, "events.csv", []string{"pos", "committed_at", "edge", "epoch", "seq", "device", "id", "type",
		"class", "device_time", "edge_time", "hash", "body"}, rows)
}

// checkpointView is what the event page shows of the checkpoint that
// covers an event, and what it checked.
type checkpointView struct {
	Seq         uint64
	CommittedAt time.Time
	KID         protocol.KeyID
	KeyStatus   string // of KID at the edge now: active or revoked
	Head        protocol.Hash
	EdgeTime    time.Time
	Signature   []byte
	// Verified says the signature verifies against the edge's registered
	// key KID and the chain runs from the event to the signed head; Problem
	// says what failed when not.
	Verified bool
	Problem  string
	Links    int // records from the event to the checkpoint
}

type eventData struct {
	Event      ledger.Event
	Body       string // the body's JSON, indented
	Raw        []byte // the stored bytes (admins)
	Stream     *streamJSON
	Checkpoint *checkpointView
	NoCP       string // why no checkpoint is shown
	Proof      string // the proof download's path
}

// event shows one ledger event: its decoded record, its place in its
// stream's chain and, for admins (the API's raw-records endpoint is
// theirs), its stored bytes and the signed checkpoint that covers it,
// checked here against the edge's key and the chain.
func (s *server) event(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	pos, err := strconv.ParseInt(r.PathValue("pos"), 10, 64)
	if err != nil || pos < 1 {
		return badRequest("The event's position in the path must be a positive integer (a pos from the events list), got %q.", r.PathValue("pos"))
	}
	var p ledger.Page
	if err := s.getJSON(r, sess, "/v1/events", url.Values{"after": {strconv.FormatInt(pos-1, 10)}, "limit": {"1"}}, &p); err != nil {
		return err
	}
	if len(p.Events) == 0 || p.Events[0].Pos != pos {
		return notFound("No ledger event at position %d (or not one this token may see).", pos)
	}
	e := p.Events[0]
	d := eventData{Event: e, Proof: fmt.Sprintf("/proof/%s/%s/%d", url.PathEscape(e.Edge), e.Epoch, e.Seq)}
	d.Body = showJSON(e.Body)
	ss, err := s.streams(r, sess)
	if err != nil {
		return err
	}
	for i := range ss {
		if ss[i].Edge == e.Edge && ss[i].Epoch == e.Epoch {
			d.Stream = &ss[i]
		}
	}
	if sess.Admin() {
		if err := s.eventProof(r, sess, &d); err != nil {
			return err
		}
	} else {
		d.NoCP = "The stored bytes and the signed checkpoint are shown to admins (they come from GET /v1/streams/{edge}/{epoch}/records, an admin endpoint)."
	}
	s.render(w, r, http.StatusOK, "event", sess, fmt.Sprintf("Event %d", pos), d)
	return nil
}

type recordsJSON struct {
	Records []struct {
		Seq uint64 `json:"seq"`
		Raw []byte `json:"raw"`
	} `json:"records"`
	Checkpoints []struct {
		Seq         uint64    `json:"seq"`
		CommittedAt time.Time `json:"committed_at"`
		Signature   []byte    `json:"signature"`
	} `json:"checkpoints"`
}

// eventProof reads the event's stored bytes and covering checkpoint from
// the API and checks them: the signature against the edge's registered
// keys, and the chain from the event to the signed head.
func (s *server) eventProof(r *http.Request, sess *session, d *eventData) error {
	e := d.Event
	path := fmt.Sprintf("/v1/streams/%s/%s/records", url.PathEscape(e.Edge), e.Epoch)
	var rec recordsJSON
	if err := s.getJSON(r, sess, path, url.Values{"from": {u64(e.Seq)}, "limit": {"1"}}, &rec); err != nil {
		return err
	}
	if len(rec.Records) > 0 && rec.Records[0].Seq == e.Seq {
		d.Raw = rec.Records[0].Raw
	}
	var cp *checkpointView
	for _, c := range rec.Checkpoints {
		if c.Seq >= e.Seq {
			cp = &checkpointView{Seq: c.Seq, CommittedAt: c.CommittedAt, Signature: c.Signature, KID: protocol.CheckpointKeyID(c.Signature)}
			break
		}
	}
	if cp == nil {
		d.NoCP = "No stored checkpoint covers this event yet."
		return nil
	}
	d.Checkpoint = cp
	var edge edgeJSON
	if err := s.getJSON(r, sess, "/v1/edges/"+url.PathEscape(e.Edge), nil, &edge); err != nil {
		return err
	}
	keys := protocol.KeyMap{}
	for _, k := range edge.Keys {
		// A revoked key's old signatures stay what they were: the key was
		// the edge's when it signed. The page shows the key's status.
		if pub, err := protocol.ParsePublicKey(k.PublicKey); err == nil {
			keys[protocol.KeyIDOf(pub)] = pub
		}
		if protocol.KeyID(k.KID) == cp.KID {
			cp.KeyStatus = k.Status
		}
	}
	c, err := protocol.VerifyCheckpoint(cp.Signature, keys)
	if err != nil {
		cp.Problem = "The signature does not verify against the edge's registered keys: " + err.Error()
		return nil
	}
	cp.Head, cp.EdgeTime = c.Head, c.EdgeTime.Time()
	if c.Edge != e.Edge || c.Epoch != e.Epoch || c.Seq != cp.Seq {
		cp.Problem = fmt.Sprintf("The checkpoint stored at seq %d signs %s/%s seq %d instead.", cp.Seq, c.Edge, c.Epoch, c.Seq)
		return nil
	}
	// The chain from the event to the signed head: at most one page of
	// records (ledger.MaxLimit); an edge signs every group commit, so a
	// checkpoint is rarely further.
	n := cp.Seq - e.Seq + 1
	if n > ledger.MaxLimit {
		cp.Problem = fmt.Sprintf("The covering checkpoint is %d records on; the page checks chains of at most %d (download the proof instead).", n, ledger.MaxLimit)
		return nil
	}
	var chain recordsJSON
	if err := s.getJSON(r, sess, path, url.Values{"from": {u64(e.Seq)}, "limit": {u64(n)}}, &chain); err != nil {
		return err
	}
	raws := make([][]byte, 0, len(chain.Records))
	for _, x := range chain.Records {
		raws = append(raws, x.Raw)
	}
	from := protocol.ChainState{Stream: protocol.Stream{Edge: e.Edge, Epoch: e.Epoch}, Seq: e.Seq - 1, Head: e.Prev}
	want := protocol.ChainState{Stream: from.Stream, Seq: c.Seq, Head: c.Head}
	if _, _, err := protocol.VerifyChain(from, raws, &want); err != nil {
		cp.Problem = "The chain from this event to the signed head does not hold: " + err.Error()
		return nil
	}
	cp.Verified, cp.Links = true, len(raws)
	return nil
}

// proof downloads the event's proof file from the API's proof endpoint
// (GET /v1/events/{edge}/{epoch}/{seq}/proof), as the signed-in token: the
// browser has no bearer token to send the API itself.
func (s *server) proof(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	edge, epoch, seq := r.PathValue("edge"), r.PathValue("epoch"), r.PathValue("seq")
	if err := protocol.ValidateName("edge", edge); err != nil {
		return badRequest("The edge in the path: %v.", err)
	}
	if _, err := protocol.ParseEpoch(epoch); err != nil {
		return badRequest("The epoch in the path must be 32 hex digits: %v.", err)
	}
	if _, err := strconv.ParseUint(seq, 10, 63); err != nil {
		return badRequest("The seq in the path must be a positive integer, got %q.", seq)
	}
	resp, err := s.call(r, sess, http.MethodGet, fmt.Sprintf("/v1/events/%s/%s/%s/proof", edge, epoch, seq), nil, nil)
	if err != nil {
		return err
	}
	h := w.Header()
	ct := resp.header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	name := fmt.Sprintf("proof-%s-%s-%s", edge, epoch[:min(8, len(epoch))], seq)
	if cd := resp.header.Get("Content-Disposition"); cd != "" {
		h.Set("Content-Disposition", cd)
	} else {
		h.Set("Content-Disposition", `attachment; filename="`+name+`"`)
	}
	h.Set("Cache-Control", "no-store")
	_, err = w.Write(resp.body.Bytes())
	return err
}

// showJSON indents a body's JSON for people, with <, > and & as they are
// (the template escapes them for HTML; JSON's \u003c is for scripts).
// Numbers stay exactly as they were (json.Number).
func showJSON(b json.RawMessage) string {
	if len(b) == 0 {
		return ""
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return string(b)
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return string(b)
	}
	return strings.TrimSuffix(out.String(), "\n")
}
