package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/internal/keyfile"
	"github.com/outpost-edge/outpost/protocol"
)

// The edge's key history. edge.key is the key the daemon signs with; every
// key it signed with before is kept, public half only, in edge-keys.json,
// so that `edge outbox verify` can check a backlog signed before a
// rotation. A rotation in progress keeps its new key in edge.key.next until
// the cloud has registered it.

func keyHistoryPath(dataDir string) string { return filepath.Join(dataDir, "edge-keys.json") }
func nextKeyPath(dataDir string) string    { return filepath.Join(dataDir, "edge.key.next") }

// retiredKey is a key the edge signed with before its current one.
type retiredKey struct {
	KID       protocol.KeyID `json:"kid"`
	PublicKey string         `json:"public_key"` // hex
	RetiredAt time.Time      `json:"retired_at"`
}

type keyHistory struct {
	Retired []retiredKey `json:"retired"`
}

func loadKeyHistory(dataDir string) (keyHistory, error) {
	var h keyHistory
	b, err := os.ReadFile(keyHistoryPath(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return h, nil
	}
	if err != nil {
		return h, err
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return h, fmt.Errorf("%s: %w", keyHistoryPath(dataDir), err)
	}
	return h, nil
}

// saveKeyHistory writes h atomically (temp file, fsync, rename, fsync dir).
func saveKeyHistory(dataDir string, h keyHistory) error {
	b, _ := json.MarshalIndent(h, "", "  ")
	tmp := keyHistoryPath(dataDir) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, keyHistoryPath(dataDir)); err != nil {
		return err
	}
	return syncDir(dataDir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// verifyKeys returns every key the edge has signed with: the current one
// and the retired ones of its history, each validated.
func verifyKeys(dataDir string) (protocol.KeyMap, error) {
	s, _, err := loadSigner(dataDir)
	if err != nil {
		return nil, err
	}
	keys := protocol.NewKeyMap(s.Public())
	h, err := loadKeyHistory(dataDir)
	if err != nil {
		return nil, err
	}
	for _, k := range h.Retired {
		pub, err := parseKeyHex("retired key "+string(k.KID)+" in "+keyHistoryPath(dataDir), k.PublicKey)
		if err != nil {
			return nil, err
		}
		keys[protocol.KeyIDOf(pub)] = pub
	}
	return keys, nil
}

// rotateKey makes a new edge key, registers it with the cloud through the
// API (an admin token), checks that the cloud lists it as active, and only
// then makes it the key the edge signs with; the old key's public half goes
// to the history. Until the switch the edge keeps signing with the old key,
// which the cloud still accepts, so no segment is ever refused for its key.
// Run again after a failure, it picks up the same new key.
func rotateKey(ctx context.Context, dataDir, cloud, token string, stdout io.Writer) error {
	id, err := loadIdentity(dataDir)
	if err != nil {
		return err
	}
	if id.Edge == "" {
		return usagef("edge key rotate: this data dir is not enrolled (no %s); rotate with `cloud edges rotate-key` instead", identityPath(dataDir))
	}
	if cloud == "" {
		cloud = id.Cloud
	}
	if cloud == "" || token == "" {
		return usagef("edge key rotate needs --cloud URL (default: the one enrolled with) and --token ADMIN_TOKEN (cloud tokens create --admin)")
	}
	cur, _, err := loadSigner(dataDir)
	if err != nil {
		return err
	}
	next, created, err := keyfile.LoadOrCreate(nextKeyPath(dataDir))
	if err != nil {
		return err
	}
	pub := next.Public().(ed25519.PublicKey)
	kid := protocol.KeyIDOf(pub)
	if created {
		fmt.Fprintf(stdout, "made a new key %s (%s)\n", kid, nextKeyPath(dataDir))
	} else {
		fmt.Fprintf(stdout, "resuming the rotation to key %s (%s)\n", kid, nextKeyPath(dataDir))
	}

	c := apiClient{base: strings.TrimRight(cloud, "/"), token: token}
	status, body, err := c.do(ctx, http.MethodPost, "/v1/edges/"+url.PathEscape(id.Edge)+"/keys",
		map[string]string{"public_key": hex.EncodeToString(pub)})
	switch {
	case err != nil:
		return fmt.Errorf("register key %s at %s: %w; nothing changed on the edge, run the command again", kid, cloud, err)
	case status == http.StatusCreated:
	case status == http.StatusConflict && strings.Contains(body, "key already registered"):
		// A retry: registered before. The check below says to whom.
	default:
		return fmt.Errorf("the cloud refused key %s (%d): %s; nothing changed on the edge", kid, status, body)
	}

	// Switch only once the cloud lists the key, active, under this edge.
	status, body, err = c.do(ctx, http.MethodGet, "/v1/edges/"+url.PathEscape(id.Edge), nil)
	if err != nil || status != http.StatusOK {
		return fmt.Errorf("check key %s at %s: %d %s %v; nothing changed on the edge, run the command again", kid, cloud, status, body, err)
	}
	var e struct {
		Keys []struct {
			KID    protocol.KeyID `json:"kid"`
			Status string         `json:"status"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		return fmt.Errorf("check key %s: unreadable answer: %w", kid, err)
	}
	known := false
	for _, k := range e.Keys {
		known = known || (k.KID == kid && k.Status == "active")
	}
	if !known {
		return fmt.Errorf("the cloud does not list key %s as an active key of edge %s; nothing changed on the edge", kid, id.Edge)
	}

	// The history first: a crash between the two steps leaves the old key
	// both current and retired, which is harmless.
	h, err := loadKeyHistory(dataDir)
	if err != nil {
		return err
	}
	if kid != cur.KeyID() {
		seen := false
		for _, k := range h.Retired {
			seen = seen || k.KID == cur.KeyID()
		}
		if !seen {
			h.Retired = append(h.Retired, retiredKey{KID: cur.KeyID(), PublicKey: hex.EncodeToString(cur.Public()), RetiredAt: time.Now().UTC()})
			if err := saveKeyHistory(dataDir, h); err != nil {
				return fmt.Errorf("save the key history: %w; nothing switched, run the command again", err)
			}
		}
	}
	if err := os.Rename(nextKeyPath(dataDir), keyPath(dataDir)); err != nil {
		return fmt.Errorf("switch to key %s: %w", kid, err)
	}
	if err := syncDir(dataDir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "edge %s now signs with key %s (the cloud knows it); the old key %s is kept in %s for `edge outbox verify`.\n"+
		"Restart the daemon to sign with the new key. Revoke the old key (cloud edges revoke-key --id %s --kid %s) only once\n"+
		"`edge status` shows the backlog signed before the restart acknowledged (backlog 0).\n",
		id.Edge, kid, cur.KeyID(), keyHistoryPath(dataDir), id.Edge, cur.KeyID())
	return nil
}

// apiClient calls the cloud's API with a bearer token.
type apiClient struct{ base, token string }

func (c apiClient) do(ctx context.Context, method, path string, body any) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return resp.StatusCode, e.Error, nil
		}
	}
	return resp.StatusCode, strings.TrimSpace(string(raw)), nil
}
