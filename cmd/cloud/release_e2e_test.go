package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/keyfile"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// cutTransport records each request's Range header and status, and cuts
// the body of the first artifact response after cut bytes (a dropped
// connection mid-download).
type cutTransport struct {
	base http.RoundTripper
	cut  int64

	mu     sync.Mutex
	cutOne bool
	seen   []string
}

func (c *cutTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if strings.Contains(r.URL.Path, "/targets/") {
		c.seen = append(c.seen, r.Header.Get("Range")+" "+resp.Status)
		if !c.cutOne {
			c.cutOne = true
			resp.Body = &cutBody{r: resp.Body, left: c.cut}
		}
	}
	return resp, nil
}

type cutBody struct {
	r    io.ReadCloser
	left int64
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errors.New("connection cut by the test")
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}
func (b *cutBody) Close() error { return b.r.Close() }

// TestReleaseServedToEnrolledEdges: keys init, sign and publish through
// the CLI; cloud serve --release-dir serves the repository; an enrolled
// edge's refresh over HTTP sees the target, the download resumes with
// Range after a cut connection, and the verified artifact installs. No
// header, a foreign edge, and a revoked edge are refused with reasons.
func TestReleaseServedToEnrolledEdges(t *testing.T) {
	url, conn, stream := mustEdgeDB(t, 0)
	d := t.TempDir()
	keys, online, repo := filepath.Join(d, "keys"), filepath.Join(d, "online"), filepath.Join(d, "repo")
	if out, code := runCLI(t, "release", "keys", "init", "--keys", keys, "--release-online-keys", online); code != 0 {
		t.Fatal(out)
	}
	body := make([]byte, 3<<20)
	rand.Read(body)
	art := filepath.Join(d, "edge-linux-amd64")
	if err := os.WriteFile(art, body, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, "release", "sign", art, "--keys", keys, "--version", "2.0.0", "--channel", "stable"); code != 0 {
		t.Fatal(out)
	}
	if out, code := runCLI(t, "release", "publish", "--keys", keys, "--release-online-keys", online, "--release-dir", repo, art); code != 0 {
		t.Fatal(out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	m, _ := startServe(t, ctx, logs, "--database-url", url, "--log-level", "warn", "--release-dir", repo, "--release-online-keys", online)
	cloudKey, err := keyfile.Load(filepath.Join(m.Config.DataDir, "cloud.key"))
	if err != nil {
		t.Fatal(err)
	}
	cluster := string(protocol.KeyIDOf(cloudKey.Public().(ed25519.PublicKey)))
	base := "http://" + m.APIAddr() + "/v1/ota/repo/"

	root1, _ := os.ReadFile(filepath.Join(keys, "1.root.json"))
	edgeDir := filepath.Join(d, "edge")
	if err := ota.InitTrust(filepath.Join(edgeDir, "trust"), root1); err != nil {
		t.Fatal(err)
	}
	tr, err := ota.OpenTrust(filepath.Join(edgeDir, "trust"), firmware.Options{})
	if err != nil {
		t.Fatal(err)
	}
	auth := &ota.EdgeAuth{Edge: "shop-1", Signer: stream.Signer, Cluster: cluster}
	v, err := tr.Refresh(ctx, &ota.HTTPSource{Base: base, Client: ota.NewEdgeClient(auth)})
	if err != nil {
		t.Fatalf("refresh over HTTP: %v\n%s", err, logs.String())
	}
	tg, err := tr.Installable(v, "edge-2.0.0-linux-amd64", firmware.Running{Version: "1.0.0", Arch: "linux/amd64"})
	if err != nil {
		t.Fatal(err)
	}

	cut := &cutTransport{base: auth, cut: 1 << 20}
	dl := &ota.Downloader{Dir: filepath.Join(edgeDir, "downloads"), Client: &http.Client{Transport: cut}, MaxAttempts: 4,
		Sleep: func(context.Context, time.Duration) error { return nil }}
	path, err := dl.Fetch(ctx, base+"targets/"+tg.Name, tg)
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	cut.mu.Lock()
	seen := append([]string{}, cut.seen...)
	cut.mu.Unlock()
	if len(seen) != 2 || !strings.HasPrefix(seen[0], " 200") || !strings.HasPrefix(seen[1], "bytes=") || !strings.HasSuffix(seen[1], "206 Partial Content") {
		t.Fatalf("artifact requests (Range, status): %q; want a full GET cut short, then a Range resume answered 206", seen)
	}
	lay := &ota.Layout{Dir: filepath.Join(edgeDir, "ota")}
	if err := lay.Install(path, tg, ota.InstallOptions{Probation: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if cur, _ := lay.Current(); cur != "2.0.0" {
		t.Fatalf("current %q", cur)
	}
	if got, _ := os.ReadFile(lay.CurrentBinary()); !bytes.Equal(got, body) {
		t.Fatal("installed binary differs from the published artifact")
	}

	// Refusals, each with its reason.
	get := func(c *http.Client, name string) (int, string) {
		t.Helper()
		resp, err := c.Get(base + name)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, why := get(http.DefaultClient, "timestamp.json"); code != 401 || !strings.Contains(why, "Outpost-Edge") {
		t.Fatalf("no header: %d %s", code, why)
	}
	stranger := ota.NewEdgeClient(&ota.EdgeAuth{Edge: "shop-9", Signer: protocoltest.NewSigner(t), Cluster: cluster})
	if code, why := get(stranger, "timestamp.json"); code != 403 || !strings.Contains(why, "shop-9 is not enrolled") {
		t.Fatalf("unenrolled edge: %d %s", code, why)
	}
	impostor := ota.NewEdgeClient(&ota.EdgeAuth{Edge: "shop-1", Signer: protocoltest.NewSigner(t), Cluster: cluster})
	if code, why := get(impostor, "timestamp.json"); code != 401 || !strings.Contains(why, "shop-1") {
		t.Fatalf("shop-1 with another key: %d %s", code, why)
	}
	otherCloud := ota.NewEdgeClient(&ota.EdgeAuth{Edge: "shop-1", Signer: stream.Signer, Cluster: "another-cloud"})
	if code, why := get(otherCloud, "timestamp.json"); code != 401 || !strings.Contains(why, "does not verify") {
		t.Fatalf("token for another cloud: %d %s", code, why)
	}
	stale := ota.NewEdgeClient(&ota.EdgeAuth{Edge: "shop-1", Signer: stream.Signer, Cluster: cluster, Now: func() time.Time { return time.Now().Add(-time.Hour) }})
	if code, why := get(stale, "timestamp.json"); code != 401 || !strings.Contains(why, "expired") {
		t.Fatalf("expired token: %d %s", code, why)
	}
	for _, name := range []string{"../cloud/cloud.key", ".lock", "targets/.upload-1"} {
		if code, _ := get(ota.NewEdgeClient(auth), name); code != 404 {
			t.Fatalf("%s: %d, want 404", name, code)
		}
	}
	if err := ledger.New(conn, ledger.Options{}).RevokeEdge(ctx, "shop-1"); err != nil {
		t.Fatal(err)
	}
	_, err = tr.Refresh(ctx, &ota.HTTPSource{Base: base, Client: ota.NewEdgeClient(auth)})
	if err == nil || !strings.Contains(err.Error(), "shop-1 is revoked") {
		t.Fatalf("revoked edge's refresh: %v", err)
	}
	resp, err := http.Get("http://" + m.APIAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(mb), `outpost_release_metadata_expiry_seconds{role="timestamp"}`) {
		t.Fatalf("metrics have no release expiry:\n%s", mb)
	}
}
