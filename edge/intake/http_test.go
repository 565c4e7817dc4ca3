package intake_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/outpost-edge/outpost/edge/intake"
	"github.com/outpost-edge/outpost/edge/intake/intaketest"
	"github.com/outpost-edge/outpost/protocol"
)

type httpResp struct {
	Status int
	Header http.Header
	Body   struct {
		Results []struct {
			Index     int    `json:"index"`
			ID        string `json:"id"`
			Seq       uint64 `json:"seq"`
			Duplicate bool   `json:"duplicate"`
			Error     string `json:"error"`
		} `json:"results"`
		Error    string `json:"error"`
		Reason   string `json:"reason"`
		WhatToDo string `json:"what_to_do"`
		Errors   []struct {
			Index *int   `json:"index"`
			ID    string `json:"id"`
			Field string `json:"field"`
			Error string `json:"error"`
		} `json:"errors"`
		Rejected []string `json:"rejected"`
	}
}

func post(tb testing.TB, h *intaketest.Harness, user, pass, ctype string, body []byte) httpResp {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, h.HTTPURL()+"/v1/events", bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	req.Header.Set("Content-Type", ctype)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatal(err)
	}
	out := httpResp{Status: res.StatusCode, Header: res.Header}
	if err := json.Unmarshal(b, &out.Body); err != nil {
		tb.Fatalf("status %d, body %q: %v", res.StatusCode, b, err)
	}
	if res.StatusCode >= 400 && (out.Body.Error == "" || out.Body.WhatToDo == "") {
		tb.Errorf("status %d without error and what_to_do: %s", res.StatusCode, b)
	}
	return out
}

const ctJSON = "application/json"

func TestHTTPIntake(t *testing.T) {
	f := newFake(t)
	f.Fail = func(_ string, ev protocol.Event) error {
		switch {
		case strings.HasPrefix(ev.ID, "quota"):
			return intaketest.QuotaError{}
		case strings.HasPrefix(ev.ID, "disk"):
			return intaketest.DiskFullError{}
		}
		return nil
	}
	h := intaketest.MustStart(t, f, nil)
	user, pass := "dev-1", h.Secret("dev-1")

	t.Run("201 then 200 for a repeat", func(t *testing.T) {
		batch := []byte(`[` + string(eventJSON("h1", "sale.note")) + `,` + string(eventJSON("h2", "sale.note")) + `]`)
		r := post(t, h, user, pass, ctJSON, batch)
		if r.Status != http.StatusCreated || len(r.Body.Results) != 2 || r.Body.Results[0].Seq == 0 || r.Body.Results[1].Seq <= r.Body.Results[0].Seq {
			t.Fatalf("%d %+v", r.Status, r.Body)
		}
		again := post(t, h, user, pass, ctJSON, batch)
		if again.Status != http.StatusOK || !again.Body.Results[0].Duplicate || again.Body.Results[1].Seq != r.Body.Results[1].Seq {
			t.Fatalf("repeat: %d %+v", again.Status, again.Body)
		}
	})

	t.Run("201 CBOR", func(t *testing.T) {
		ev := protocol.Event{ID: "cb1", Type: "sale.note", TS: time.UnixMilli(1767225600000).UTC()}
		b, err := cbor.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if r := post(t, h, user, pass, "application/cbor", b); r.Status != http.StatusCreated {
			t.Fatalf("%d %+v", r.Status, r.Body)
		}
		if r := post(t, h, user, pass, ctJSON, b); r.Status != http.StatusBadRequest {
			t.Fatalf("CBOR labelled JSON: %d", r.Status)
		}
	})

	t.Run("400 per item, nothing stored", func(t *testing.T) {
		before := len(f.Records())
		batch := []byte(`[` + string(eventJSON("v1", "sale.note")) + `,{"id":"v2","type":"sale.note"},{"id":"v3","type":"BAD","ts":1}]`)
		r := post(t, h, user, pass, ctJSON, batch)
		if r.Status != http.StatusBadRequest || len(r.Body.Errors) != 2 || r.Body.Reason != "invalid" {
			t.Fatalf("%d %+v", r.Status, r.Body)
		}
		e := r.Body.Errors
		if *e[0].Index != 1 || e[0].ID != "v2" || e[0].Field != "ts" || *e[1].Index != 2 || e[1].Field != "type" {
			t.Fatalf("errors %+v", e)
		}
		after := f.Records()[before:]
		if len(after) != 2 || len(r.Body.Rejected) != 2 {
			t.Fatalf("stored %+v, rejected %v; want only the two rejected records", after, r.Body.Rejected)
		}
		for _, rec := range after {
			if rec.Event.Type != protocol.TypeIntakeRejected {
				t.Fatalf("stored %s from a refused request", rec.Event.ID)
			}
		}
		if r := post(t, h, user, pass, ctJSON, []byte("{nope")); r.Status != http.StatusBadRequest || len(r.Body.Errors) != 1 {
			t.Fatalf("malformed: %d %+v", r.Status, r.Body)
		}
	})

	t.Run("401", func(t *testing.T) {
		for _, c := range []struct{ user, pass string }{{"", ""}, {"dev-1", "wrong-secret-0123456789"}, {"dev-9", "x"}, {"../etc", "x"}} {
			r := post(t, h, c.user, c.pass, ctJSON, eventJSON("a1", "sale.note"))
			if r.Status != http.StatusUnauthorized || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic") {
				t.Fatalf("%q: %d", c.user, r.Status)
			}
		}
	})

	t.Run("413", func(t *testing.T) {
		big := bytes.Repeat([]byte(" "), protocol.MaxBatchBytes+1)
		big[0] = '['
		if r := post(t, h, user, pass, ctJSON, big); r.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("%d %+v", r.Status, r.Body)
		}
		one := []byte(`{"id":"big","type":"sale.note","ts":1,"body":{"s":"` + strings.Repeat("x", protocol.MaxEventBytes) + `"}}`)
		if r := post(t, h, user, pass, ctJSON, one); r.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("one big event: %d %+v", r.Status, r.Body)
		}
	})

	t.Run("415", func(t *testing.T) {
		if r := post(t, h, user, pass, "text/plain", eventJSON("t1", "sale.note")); r.Status != http.StatusUnsupportedMediaType {
			t.Fatalf("%d", r.Status)
		}
	})

	t.Run("507 quota and 503 disk full", func(t *testing.T) {
		r := post(t, h, user, pass, ctJSON, []byte(`[`+string(eventJSON("ok-q", "sale.note"))+`,`+string(eventJSON("quota-1", "sale.note"))+`]`))
		if r.Status != http.StatusInsufficientStorage || r.Body.Reason != "quota" || r.Body.Results[1].Error == "" || r.Body.Results[0].Seq == 0 {
			t.Fatalf("%d %+v", r.Status, r.Body)
		}
		r = post(t, h, user, pass, ctJSON, eventJSON("disk-1", "sale.note"))
		if r.Status != http.StatusServiceUnavailable || r.Body.Reason != "disk_full" || r.Header.Get("Retry-After") == "" {
			t.Fatalf("%d %+v", r.Status, r.Body)
		}
	})

	t.Run("405", func(t *testing.T) {
		res, err := http.Get(h.HTTPURL() + "/v1/events")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("%d", res.StatusCode)
		}
	})
}

func TestHTTP429(t *testing.T) {
	f := newFake(t)
	h := intaketest.MustStart(t, f, func(s *intake.Server) { s.MaxInflightAppends = 1 })
	user, pass := "dev-1", h.Secret("dev-1")
	f.Hold()
	first := make(chan httpResp, 1)
	go func() { first <- post(t, h, user, pass, ctJSON, eventJSON("slow", "sale.note")) }()
	checkFor(t, waitLimit, func() error {
		if h.Server.Metrics().Inflight.Load() != 1 {
			return errors.New("first request not in flight")
		}
		return nil
	})
	r := post(t, h, user, pass, ctJSON, eventJSON("second", "sale.note"))
	if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" || r.Body.Reason != "busy" {
		t.Fatalf("%d %+v", r.Status, r.Body)
	}
	f.Release()
	if r := <-first; r.Status != http.StatusCreated {
		t.Fatalf("first: %d", r.Status)
	}
	if r := post(t, h, user, pass, ctJSON, eventJSON("second", "sale.note")); r.Status != http.StatusCreated {
		t.Fatalf("after release: %d", r.Status)
	}
	if n := h.Server.Metrics().Refused(intake.ReasonBusy); n != 1 {
		t.Fatalf("Refused(busy) = %d", n)
	}
}

func ExampleServer_Handler() {
	// A device POSTs one event or an array, JSON or CBOR, with HTTP Basic
	// authentication (device id, secret):
	//
	//	curl -u till-1:$SECRET -H 'Content-Type: application/json' \
	//	     -d '{"id":"s-1","type":"sale.note","ts":1767225600000}' \
	//	     http://edge:8080/v1/events
	//
	// 201 {"results":[{"index":0,"id":"s-1","seq":42}]}
	fmt.Println(intake.EventsPath)
	// Output: /v1/events
}
