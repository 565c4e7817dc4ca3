package proofcli_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/cli"
	"github.com/outpost-edge/outpost/internal/proofcli"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/proof"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// mustProof returns a proof of record 1 of a two-record stream and the
// cloud key that signed it.
func mustProof(t *testing.T) ([]byte, string) {
	t.Helper()
	edge, cloud := protocoltest.NewSigner(t), protocoltest.NewSigner(t)
	s := protocoltest.NewStream(t, "edge-cli", edge).AddN(t, 2)
	now := time.Now()
	b, _, err := proof.Build(proof.Parts{
		Record: s.Raws[0], Chain: s.Raws[1:2], Checkpoint: s.Checkpoint(2), EdgeKey: edge.Public(),
		Statement: protocol.ProofStatement{Edge: "edge-cli", Epoch: s.Stream.Epoch, Seq: 1, Hash: s.Links[0], Pos: 1,
			CommittedAt: now.UnixMicro(), CheckpointSeq: 2, CheckpointAt: now.UnixMicro(), EdgeKID: edge.KeyID(),
			EdgeKey: edge.Public(), KeyValidFrom: now.Add(-time.Hour).UnixMicro(), At: now.UnixMicro()},
	}, cloud)
	if err != nil {
		t.Fatal(err)
	}
	return b, hex.EncodeToString(cloud.Public())
}

func TestRun(t *testing.T) {
	b, pin := mustProof(t)
	path := filepath.Join(t.TempDir(), "p.outpost-proof")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(stdin []byte, args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		err := proofcli.Run("outpost-verify", args, bytes.NewReader(stdin), &out, &errb)
		return out.String(), errb.String(), err
	}
	if out, _, err := run(nil, "--cloud-key", pin, path); err != nil || !strings.Contains(out, "OK: record seq 1 of edge edge-cli") {
		t.Fatalf("file: %v\n%s", err, out)
	}
	if out, _, err := run(b, "-"); err != nil || !strings.Contains(out, "not pinned") {
		t.Fatalf("stdin, unpinned: %v\n%s", err, out)
	}
	out, _, err := run(nil, "--json", "--cloud-key", pin, path)
	var sum proof.Summary
	if err != nil || json.Unmarshal([]byte(out), &sum) != nil || !sum.OK || sum.Seq != 1 || sum.Edge != "edge-cli" || !sum.CloudPinned || sum.CheckpointSeq != 2 {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	bad := bytes.Clone(b)
	bad[len(bad)/3] ^= 0x40
	if out, _, err := run(bad, "--cloud-key", pin, "-"); !errors.Is(err, proofcli.ErrNotVerified) || out != "" {
		t.Fatalf("altered: err %v, stdout %q", err, out)
	}
	if _, _, err := run(nil, "--cloud-key", "nope", path); !cli.IsUsage(err) || !strings.Contains(err.Error(), "--cloud-key") {
		t.Fatalf("bad key: %v", err)
	}
	if _, _, err := run(nil, path, path); !cli.IsUsage(err) {
		t.Fatalf("two files: %v", err)
	}
	if _, _, err := run(nil, filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "read proof file") {
		t.Fatalf("missing file: %v", err)
	}
}

// A file over the size a proof may have is read only as far as one byte
// past that size, so its refusal must not state that short count as the
// file's size (before, a 1 GiB file was "33554433 bytes").
func TestRunHugeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "huge.bin")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 1<<30); err != nil { // sparse: nothing written
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	err := proofcli.Run("outpost-verify", []string{path}, nil, &out, &errb)
	if !errors.Is(err, proofcli.ErrNotVerified) {
		t.Fatalf("got %v, want ErrNotVerified", err)
	}
	if msg := err.Error(); strings.Contains(msg, "33554433") || !strings.Contains(msg, "more than") || !strings.Contains(msg, "/proof") {
		t.Fatalf("refusal %q: want it to say the file is more than the limit and where proofs come from", msg)
	}
}
