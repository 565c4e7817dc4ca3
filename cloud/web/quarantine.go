package web

import (
	"net/http"
	"net/url"
	"strconv"
	"time"
)

type quarantineJSON struct {
	ID           int64     `json:"id"`
	Edge         string    `json:"edge"`
	Epoch        string    `json:"epoch"`
	First        uint64    `json:"first"`
	Last         uint64    `json:"last"`
	Code         string    `json:"code"`
	Reason       string    `json:"reason"`
	ReceivedAt   time.Time `json:"received_at"`
	PayloadBytes int       `json:"payload_bytes"`
	Size         int64     `json:"size"`
	Truncated    bool      `json:"truncated"`
	Copies       int64     `json:"copies"`
	LastAt       time.Time `json:"last_at"`
	Payload      []byte    `json:"payload"`
}

type quarantineBody struct {
	Entries []quarantineJSON `json:"entries"`
	Next    int64            `json:"next"`
}

type quarantineData struct {
	Entries []quarantineJSON
	After   string
	Next    string
	CSV     string
	MaxCSV  int
}

// quarantine lists the segments the cloud refused to commit (a bad
// signature, a broken chain, bytes that do not decode) and why, oldest
// first, a page at a time.
func (s *server) quarantine(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r, "after"); err != nil {
		return err
	}
	after := r.URL.Query().Get("after")
	q := url.Values{"limit": {strconv.Itoa(s.opts.PageSize)}}
	if after != "" {
		q.Set("after", after)
	}
	var b quarantineBody
	if err := s.getJSON(r, sess, "/v1/quarantine", q, &b); err != nil {
		return err
	}
	d := quarantineData{Entries: b.Entries, After: after, CSV: "/quarantine.csv", MaxCSV: MaxCSVRows}
	if after != "" {
		d.CSV += "?after=" + url.QueryEscape(after)
	}
	if len(b.Entries) == s.opts.PageSize {
		d.Next = strconv.FormatInt(b.Next, 10)
	}
	s.render(w, r, http.StatusOK, "quarantine", sess, "Quarantine", d)
	return nil
}

func (s *server) quarantineCSV(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r, "after"); err != nil {
		return err
	}
	after := r.URL.Query().Get("after")
	var rows [][]string
	for len(rows) < MaxCSVRows {
		q := url.Values{"limit": {"1000"}}
		if after != "" {
			q.Set("after", after)
		}
		var b quarantineBody
		if err := s.getJSON(r, sess, "/v1/quarantine", q, &b); err != nil {
			return err
		}
		for _, e := range b.Entries {
			rows = append(rows, []string{i64(e.ID), e.Edge, e.Epoch, u64(e.First), u64(e.Last), e.Code, e.Reason,
				csvTime(e.ReceivedAt), csvTime(e.LastAt), i64(e.Size), strconv.Itoa(e.PayloadBytes),
				strconv.FormatBool(e.Truncated), i64(e.Copies)})
		}
		if len(b.Entries) < 1000 {
			break
		}
		after = strconv.FormatInt(b.Next, 10)
	}
	return writeCSV(w, "quarantine.csv", []string{"id", "edge", "epoch", "first", "last", "code", "reason",
		"received_at", "last_at", "size", "payload_bytes", "truncated", "copies"}, rows)
}

// MaxDumpBytes bounds the payload hex dump of a quarantine entry's page.
const MaxDumpBytes = 4096

type quarantineEntryData struct {
	Entry quarantineJSON
	Dump  []byte
	Cut   bool
}

func (s *server) quarantineEntry(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		return badRequest("The quarantine id in the path must be a positive integer (an id from the quarantine list), got %q.", r.PathValue("id"))
	}
	var e quarantineJSON
	if err := s.getJSON(r, sess, "/v1/quarantine/"+strconv.FormatInt(id, 10), nil, &e); err != nil {
		return err
	}
	d := quarantineEntryData{Entry: e, Dump: e.Payload}
	if len(d.Dump) > MaxDumpBytes {
		d.Dump, d.Cut = d.Dump[:MaxDumpBytes], true
	}
	s.render(w, r, http.StatusOK, "quarantine_entry", sess, "Quarantine entry "+strconv.FormatInt(id, 10), d)
	return nil
}
