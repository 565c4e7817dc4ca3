package intake_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httputil"
	"testing"

	"github.com/outpost-edge/outpost/edge/intake/intaketest"
)

// An unknown device and a listed device with a bad secret get the same
// answer, byte for byte, over HTTP and in the MQTT CONNACK: nobody can find
// out which device ids exist by trying them.
func TestUnknownDeviceAndBadSecretLookAlike(t *testing.T) {
	h := intaketest.MustStart(t, newFake(t), nil)
	httpAnswer := func(user string) []byte {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, h.HTTPURL()+"/v1/events", bytes.NewReader(eventJSON("p1", "sale.note")))
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(user, "not-the-secret")
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		res.Header.Del("Date")
		b, err := httputil.DumpResponse(res, true)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		return b
	}
	unknown, bad := httpAnswer("no-such-device"), httpAnswer("dev-1")
	if !bytes.Equal(unknown, bad) {
		t.Fatalf("HTTP answers differ:\nunknown device:\n%s\nbad secret:\n%s", unknown, bad)
	}
	if !bytes.Contains(bad, []byte("401")) {
		t.Fatalf("not a 401:\n%s", bad)
	}
	for _, v := range []byte{4, 5} {
		_, a := dialRaw(t, h.MQTTAddr(), v, "c1", "no-such-device", "not-the-secret")
		_, b := dialRaw(t, h.MQTTAddr(), v, "c2", "dev-1", "not-the-secret")
		if a.ReasonCode != b.ReasonCode || a.Properties.ReasonString != b.Properties.ReasonString {
			t.Fatalf("MQTT %d CONNACKs differ: unknown device %#x %q, bad secret %#x %q", v, a.ReasonCode, a.Properties.ReasonString, b.ReasonCode, b.Properties.ReasonString)
		}
	}
}
