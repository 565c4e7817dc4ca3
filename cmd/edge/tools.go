package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outpost-edge/outpost/edge/intake"
	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/internal/flagenv"
	"github.com/outpost-edge/outpost/protocol"
)

// runTool runs enroll, key, devices, outbox and status.
func runTool(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	name := args[0]
	rest := args[1:]
	if name == "key" || name == "devices" || name == "outbox" {
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			return usagef("edge %s needs a subcommand; see edge --help", name)
		}
		name += " " + rest[0]
		rest = rest[1:]
	}
	fs := flag.NewFlagSet("edge "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	// Each command defines only the flags it reads, so that its --help
	// lists only those.
	var dataDir, cfg, devices string
	var id, secret, cloud, token, status *string
	var from, to *uint64
	asJSON := new(bool)
	jsonFlag := func() { fs.BoolVar(asJSON, "json", false, "print JSON") }
	devicesFlag := func() {
		fs.StringVar(&devices, "devices", "", "the device credentials file (default <data-dir>/devices.json)")
	}
	if name != "status" {
		dataDirFlag(fs, &dataDir)
	}
	var file string
	if strings.HasPrefix(name, "outbox ") {
		fs.StringVar(&file, "file", "", "the outbox file (default <data-dir>/outbox.db; one kept after a restore is <data-dir>/"+outbox.StuckPrefix+"<epoch>"+outbox.StuckSuffix+")")
	}
	fs.StringVar(&cfg, "config", "", "optional config file of 'name = value' lines")
	switch name {
	case "key show", "outbox verify", "outbox inspect":
		jsonFlag()
	case "enroll":
		cloud = fs.String("cloud", "", "the cloud's API URL, such as http://cloud.example:18080")
		token = fs.String("token", "", "the one-time enrollment token from 'cloud tokens create --edge ID'")
	case "key rotate":
		cloud = fs.String("cloud", "", "the cloud's API URL (default: the enrolled one)")
		token = fs.String("token", "", "an admin API token ('cloud tokens create --admin')")
	case "devices add":
		id = fs.String("id", "", "the device id")
		secret = fs.String("secret", "", "the device's secret (default: generate one)")
		devicesFlag()
	case "devices list":
		devicesFlag()
		jsonFlag()
	case "devices remove":
		id = fs.String("id", "", "the device id")
		devicesFlag()
	case "outbox compact":
	case "outbox export":
		from = fs.Uint64("from", 0, "first seq (default: the oldest stored)")
		to = fs.Uint64("to", 0, "last seq (default: the newest)")
	case "status":
		status = fs.String("status-listen", "127.0.0.1:8082", "the daemon's --status-listen address")
		jsonFlag()
	default:
		return usagef("unknown command `edge %s`; see edge --help", name)
	}
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", "Usage: edge "+name+" [flags]")
	if err := flagenv.Parse(fs, rest, "OUTPOST_", "config"); err != nil {
		return err
	}
	if devices == "" {
		devices = filepath.Join(dataDir, "devices.json")
	}
	if file == "" {
		file = outboxPath(dataDir)
	}
	out := func(v any) error {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	switch name {
	case "key show":
		s, created, err := loadSigner(dataDir)
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(stderr, "created a new edge key at %s\n", keyPath(dataDir))
		}
		if *asJSON {
			return out(map[string]string{"public_key": hex.EncodeToString(s.Public()), "kid": string(s.KeyID())})
		}
		fmt.Fprintf(stdout, "public key: %s\nkid:        %s\n", hex.EncodeToString(s.Public()), s.KeyID())
		return nil
	case "key rotate":
		return rotateKey(ctx, dataDir, *cloud, *token, stdout)
	case "enroll":
		return enroll(ctx, dataDir, *cloud, *token, stdout)
	case "devices add":
		if *id == "" {
			return usagef("edge devices add needs --id")
		}
		sec, err := intake.AddDevice(devices, *id, *secret)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", sec)
		fmt.Fprintf(stderr, "added device %s. Its secret (above) is shown once; the device logs in with user name %q and this secret.\n", *id, *id)
		return nil
	case "devices list":
		list, err := intake.ListDevices(devices)
		if err != nil {
			return err
		}
		if *asJSON {
			return out(list)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DEVICE\tADDED")
		for _, d := range list {
			fmt.Fprintf(tw, "%s\t%s\n", d.ID, d.Created.Format(time.RFC3339))
		}
		return tw.Flush()
	case "devices remove":
		if *id == "" {
			return usagef("edge devices remove needs --id")
		}
		if err := intake.RemoveDevice(devices, *id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed device %s; it can no longer connect\n", *id)
		return nil
	case "outbox verify":
		// Every key the edge has signed with: a backlog from before a
		// rotation verifies under the key it was signed with.
		path := file
		if err := outboxExists(path); err != nil {
			return err
		}
		keys, err := verifyKeys(dataDir)
		if err != nil {
			return err
		}
		rep, err := outbox.VerifyKeys(path, keys)
		if err != nil && !errors.Is(err, outbox.ErrCorrupt) {
			return err // it could not be read: no report to show
		}
		if *asJSON {
			_ = out(rep)
		} else {
			fmt.Fprintf(stdout, "stream %s: records %d..%d (acknowledged up to %d), %d checked, %d tombstones, %d checkpoints verified\n",
				rep.Stream, rep.Base+1, rep.Head, rep.HWM, rep.Records, rep.Tombstones, rep.Checkpoints)
		}
		if err != nil {
			if rep.FirstBad == 0 {
				return err
			}
			if strings.Contains(rep.Problem, "unknown key id") {
				// Not corruption, most likely: a key replaced by hand.
				return fmt.Errorf("first bad seq %d: %s: the checkpoint names a key that is neither %s nor in the key history %s; "+
					"if the edge key was replaced by hand, add the old public key there (edge key rotate keeps it for you): %w",
					rep.FirstBad, rep.Problem, keyPath(dataDir), keyHistoryPath(dataDir), err)
			}
			return fmt.Errorf("first bad seq %d: %s: %w", rep.FirstBad, rep.Problem, err)
		}
		fmt.Fprintln(stdout, "ok: chain and checkpoints verify")
		return nil
	case "outbox inspect":
		if err := outboxExists(file); err != nil {
			return err
		}
		info, err := outbox.Inspect(file)
		if err != nil {
			return err
		}
		if *asJSON {
			return out(info)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "file\t%s (%d bytes)\n", info.Path, info.FileBytes)
		fmt.Fprintf(tw, "stream\t%s (created %s)\n", info.Stream, info.Created.Format(time.RFC3339))
		fmt.Fprintf(tw, "seqs\tstored %d..%d, acknowledged up to %d\n", info.Base+1, info.Head, info.HWM)
		fmt.Fprintf(tw, "backlog\t%d records, %d bytes, oldest unsent %s ago\n", info.Backlog, info.BacklogBytes, info.OldestUnsentAge.Round(time.Second))
		fmt.Fprintf(tw, "ledger\t%d of %d bytes\n", info.LedgerBytes, info.LedgerQuota)
		fmt.Fprintf(tw, "telemetry\t%d of %d bytes, %d shed\n", info.TelemetryBytes, info.TelemetryQuota, info.Shed)
		fmt.Fprintf(tw, "checkpoints\t%d\n", info.Checkpoints)
		return tw.Flush()
	case "outbox export":
		if err := outboxExists(file); err != nil {
			return err
		}
		return outbox.Export(file, *from, *to, stdout)
	case "outbox compact":
		if err := outboxExists(file); err != nil {
			return err
		}
		rep, err := outbox.Compact(file)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "compacted %s: %d bytes before, %d after; %d bytes went back to the volume\n",
			rep.Path, rep.BytesBefore, rep.BytesAfter, rep.BytesBefore-rep.BytesAfter)
		return nil
	case "status":
		return printStatus(ctx, *status, *asJSON, stdout)
	}
	return usagef("unknown command `edge %s`; see edge --help", name)
}

// outboxExists says plainly when there is no outbox to work on, rather
// than letting a tool report it as a bad file.
func outboxExists(path string) error {
	_, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no outbox at %s: nothing to check; the edge creates it on its first `edge run` (is --data-dir right?)", path)
	}
	return err
}

// enroll sends this edge's public key with a one-time token to the cloud,
// and stores the edge id and the cloud key it returns.
func enroll(ctx context.Context, dataDir, cloud, token string, stdout io.Writer) error {
	if cloud == "" || token == "" {
		return usagef("edge enroll needs --cloud URL and --token TOKEN (an admin makes one with `cloud tokens create --edge ID`)")
	}
	s, _, err := loadSigner(dataDir)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{"token": token, "public_key": hex.EncodeToString(s.Public())})
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(cloud, "/")+"/v1/enroll", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("enroll at %s: %w", cloud, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(raw, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(raw))
		}
		return fmt.Errorf("the cloud refused the enrollment (%s): %s", resp.Status, e.Error)
	}
	var r struct {
		Edge           string `json:"edge"`
		CloudPublicKey string `json:"cloud_public_key"`
		CloudKID       string `json:"cloud_kid"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("enroll: unreadable answer from the cloud: %w", err)
	}
	pub, err := parseKeyHex("cloud_public_key", r.CloudPublicKey)
	if err != nil {
		return err
	}
	if string(protocol.KeyIDOf(pub)) != r.CloudKID {
		return fmt.Errorf("enroll: the cloud's key id %q does not match its key (%s)", r.CloudKID, protocol.KeyIDOf(pub))
	}
	if err := saveIdentity(dataDir, identity{Edge: r.Edge, CloudPublicKey: r.CloudPublicKey, CloudKID: r.CloudKID, Cloud: cloud}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "enrolled as edge %s; pinned cloud key %s. Start the daemon with `edge run --cloud-mqtt tcp://<cloud>:18830` (or `--transport nats --cloud-nats nats://<cloud>:14222`).\n", r.Edge, r.CloudKID)
	return nil
}

func printStatus(ctx context.Context, addr string, asJSON bool, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/status", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("is the edge running? no answer at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	var s Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "edge\t%s (epoch %s, version %s)\n", s.Edge, s.Epoch, s.Version)
	fmt.Fprintf(tw, "outbox\tnext seq %d, acknowledged up to %d\n", s.NextSeq, s.AckedHWM)
	fmt.Fprintf(tw, "backlog\t%d records, %d bytes, oldest unsent %s\n", s.Backlog, s.BacklogBytes, s.OldestUnsentAge)
	fmt.Fprintf(tw, "quotas\tledger %d/%d bytes, telemetry %d/%d bytes, %d shed\n", s.LedgerBytes, s.LedgerQuota, s.TelemetryBytes, s.TelemetryQuota, s.Shed)
	fmt.Fprintf(tw, "disk\t%d bytes free, drain-only %v\n", s.DiskFreeBytes, s.DrainOnly)
	for _, f := range s.StuckOutboxes {
		fmt.Fprintf(tw, "ALARM\tstuck outbox %s: the cloud was past it (a restored outbox?); a new epoch took over. Reconcile with `edge outbox export --file %s`, then remove it\n", f, f)
	}
	if u := s.Uplink; u != nil {
		last := "never"
		if !u.LastReceipt.IsZero() {
			last = u.LastReceipt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "uplink\t%s (connected %v), last receipt %s, %d nacks (%d ignored), %d ignored replies\n", u.State, u.Connected, last, u.Nacks, u.IgnoredNacks, u.ForgedReplies+u.ReplayedReplies+u.WrongStream)
		if u.LastError != "" {
			fmt.Fprintf(tw, "\tlast error: %s\n", u.LastError)
		}
	} else {
		fmt.Fprintf(tw, "uplink\tnone configured (offline)\n")
	}
	fmt.Fprintf(tw, "intake\t%d events, %d acked, %d duplicates, %d rejected kept, %d QoS 0\n", s.Intake.Events, s.Intake.Acked, s.Intake.Dups, s.Intake.Rejected, s.Intake.QoS0)
	if s.OTA != nil {
		s.OTA.printSummary(tw)
	}
	return tw.Flush()
}
