package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/cli"
	"github.com/outpost-edge/outpost/internal/durable"
	"github.com/outpost-edge/outpost/internal/flagenv"
	"github.com/outpost-edge/outpost/internal/keyfile"
	"github.com/outpost-edge/outpost/protocol"
)

// otaFlags are the flags every `edge ota` command and `edge supervise`
// share.
type otaFlags struct {
	dataDir, otaDir, cfg string
}

func (o *otaFlags) register(fs *flag.FlagSet) {
	dataDirFlag(fs, &o.dataDir)
	fs.StringVar(&o.otaDir, "ota-dir", "", "the updater's directory: releases/, current, previous, pending.json, trust/ (default <data-dir>/ota)")
	fs.StringVar(&o.cfg, "config", "", "optional config file of 'name = value' lines")
}

// repoClient is the HTTP client for a repository URL: once this data dir
// is enrolled, every request is signed with the edge key for the cloud it
// pinned (the cloud serves its repository to enrolled edges only, docs/OTA.md);
// before that, a plain client (a repository served by anything else).
func (o *otaFlags) repoClient() (*http.Client, error) {
	id, err := loadIdentity(o.dataDir)
	if err != nil || id.Edge == "" {
		return http.DefaultClient, err
	}
	k, err := keyfile.Load(keyPath(o.dataDir))
	if err != nil {
		return nil, fmt.Errorf("the edge key signs repository requests: %w", err)
	}
	s, err := protocol.NewSigner(k)
	if err != nil {
		return nil, err
	}
	return ota.NewEdgeClient(&ota.EdgeAuth{Edge: id.Edge, Signer: s, Cluster: id.CloudKID}), nil
}

func (o *otaFlags) dir() string {
	if o.otaDir != "" {
		return o.otaDir
	}
	return filepath.Join(o.dataDir, "ota")
}

// layout is the updater's directory, recording the commits and rollbacks
// it settles (a guard's rollback, a crash's leftovers) in the spool.
func (o *otaFlags) layout() *ota.Layout {
	sp := otaSpool(o.dir())
	return &ota.Layout{Dir: o.dir(), Record: func(e ota.Event) {
		if err := sp.Add(e); err != nil {
			fmt.Fprintf(os.Stderr, "edge ota: could not record %s for the ledger: %v\n", e.Kind, err)
		}
	}}
}

// lastRefusalFile keeps the last refused install for status.
const lastRefusalFile = "last-refusal.json"

// record spools an audit event for the outbox (and keeps a refusal for
// status); failing to is reported, and does not undo what was done.
func (o *otaFlags) record(sp ota.Spool, e ota.Event) {
	e.At = time.Now().UTC()
	if err := sp.Add(e); err != nil {
		fmt.Fprintf(os.Stderr, "edge ota: could not record %s for the ledger: %v\n", e.Kind, err)
	}
	if e.Kind == "ota.refused" {
		b, _ := json.Marshal(e)
		if err := durable.WriteFile(filepath.Join(o.dir(), lastRefusalFile), b, 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "edge ota: could not keep the refusal for status: %v\n", err)
		}
	}
}

func (o *otaFlags) trustDir() string { return filepath.Join(o.dir(), "trust") }

func (o *otaFlags) trust() (*firmware.Trust, error) {
	return ota.OpenTrust(o.trustDir(), firmware.Options{})
}

// running is what the install checks compare against: the release current
// names (what the supervisor runs), else this binary's version.
func (o *otaFlags) running() firmware.Running {
	v := Version
	if cur, err := o.layout().Current(); err == nil && cur != "" {
		v = cur
	}
	return firmware.Running{Version: v, Arch: runtime.GOOS + "/" + runtime.GOARCH}
}

const otaUsage = `Usage: edge ota <command> [flags]

Commands:
  init --root FILE                      provision the release signers' root (once per gateway)
  adopt [--binary FILE --version V]     make FILE (default: this binary) the first, committed release
  status                                current, previous and pending releases, the floor, metadata expiry
  check --repo DIR|URL [--channel C]    refresh the metadata and list what could install
  guard [--max-attempts N]              before each start under systemd (ExecStartPre=): settle a crash, count the start, roll back
  install FILE                          install an offline bundle (it goes on probation under edge supervise)
  install --repo DIR|URL --target NAME  refresh, download (resumable, verified) and install a target
                                        assigned to this edge by the cloud (or --without-assignment)
`

// runOTA runs `edge ota ...`.
func runOTA(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(stdout, otaUsage)
		return nil
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, otaUsage)
		return usagef("edge ota needs a subcommand")
	}
	name, rest := args[0], args[1:]
	fs := flag.NewFlagSet("edge ota "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o otaFlags
	o.register(fs)
	root := fs.String("root", "", "init: the release root metadata (root.json) to trust")
	binary := fs.String("binary", "", "adopt: the edge binary to make the first release (default: this one)")
	version := fs.String("version", "", "adopt: its version, semver (default for this binary: the one it was built with)")
	repo := fs.String("repo", "", "check: the release repository, a directory or an http(s) URL")
	channel := fs.String("channel", "stable", "check: the channel to list")
	probation := fs.Duration("probation", 15*time.Minute, "install: the pending deadline: by then the release must have committed, or it is rolled back")
	target := fs.String("target", "", "install: the target to fetch from --repo (instead of a bundle FILE)")
	artifactURL := fs.String("artifact-url", "", "install --target: where the artifact is (default <repo>/targets/<target>)")
	rateBytes := fs.Int("rate-bytes", 0, "install --target: download rate cap in bytes per second (0: none)")
	window := fs.String("window", "", "install --target: download only in this local-time window, HH:MM-HH:MM")
	without := fs.Bool("without-assignment", false, "install --target: install as the local operator, without the cloud's assignment of the target to this edge (recorded in the ota.installed event)")
	attempts := fs.Int("max-attempts", ota.DefaultMaxAttempts, "guard: starts a release on probation gets (reboots count) before it is rolled back")
	asJSON := fs.Bool("json", false, "print JSON")
	usage, maxArgs := "Usage: edge ota "+name+" [flags]", 0
	if name == "install" {
		usage, maxArgs = "Usage: edge ota install [flags] FILE", 1
	}
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", usage)
	if err := flagenv.ParseArgs(fs, rest, "OUTPOST_", "config", maxArgs); err != nil {
		return err
	}
	out := func(v any) error {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	switch name {
	case "init":
		if *root == "" {
			return usagef("edge ota init needs --root FILE (the release signers' root.json)")
		}
		b, err := os.ReadFile(*root)
		if err != nil {
			return err
		}
		if err := ota.InitTrust(o.trustDir(), b); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "trusting the release root from %s in %s\n", *root, o.trustDir())
		return nil
	case "adopt":
		return otaAdopt(&o, *binary, *version, stdout)
	case "status":
		s, err := otaStatus(&o)
		if err != nil {
			return err
		}
		if *asJSON {
			return out(s)
		}
		return s.print(stdout)
	case "check":
		return otaCheck(ctx, &o, *repo, *channel, *asJSON, stdout)
	case "guard":
		return otaGuard(&o, *attempts, stdout)
	case "install":
		if *target != "" {
			if fs.NArg() != 0 || *repo == "" {
				return usagef("edge ota install --target NAME needs --repo DIR|URL and no FILE")
			}
			var win *ota.Window
			if *window != "" {
				w, err := ota.ParseWindow(*window)
				if err != nil {
					return usagef("--window: %w", err)
				}
				win = w
			}
			return otaInstallOnline(ctx, &o, onlineInstall{repo: *repo, target: *target, artifactURL: *artifactURL, rateBytes: *rateBytes, window: win, probation: *probation, withoutAssignment: *without}, stdout)
		}
		if fs.NArg() != 1 {
			return usagef("edge ota install needs one bundle FILE, or --repo and --target")
		}
		return otaInstall(ctx, &o, fs.Arg(0), *probation, stdout)
	default:
		fmt.Fprint(stderr, otaUsage)
		return usagef("edge ota: unknown command %q", name)
	}
}

func otaAdopt(o *otaFlags, binary, version string, stdout io.Writer) error {
	if binary == "" {
		// Adopt this very binary, with the version it was built with.
		self, err := os.Executable()
		if err != nil {
			return err
		}
		binary = self
		if version == "" {
			version = Version
		}
	}
	if version == "" {
		return usagef("edge ota adopt --binary FILE needs --version V")
	}
	if _, err := firmware.ParseVersion(version); err != nil {
		return usagef("--version: %w", err)
	}
	f, err := os.Open(binary)
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	f.Close()
	if err != nil {
		return err
	}
	fi, err := os.Stat(binary)
	if err != nil {
		return err
	}
	// Provisioning, not an update: its commit is not an ota.* event.
	l := &ota.Layout{Dir: o.dir()}
	if cur, err := l.Current(); err != nil {
		return err
	} else if cur != "" {
		return fmt.Errorf("%s already has a current release (%s); later releases come through edge ota install", l.Dir, cur)
	}
	// The first release is the operator's own binary: it is hashed here so
	// that the swap's copy is checked like any other, and it is committed
	// at once (there is nothing to roll back to).
	tg := firmware.Target{Name: filepath.Base(binary), Length: n, Hashes: map[string][]byte{"sha256": h.Sum(nil)}, Custom: firmware.Custom{Version: version}}
	if err := l.Install(binary, tg, ota.InstallOptions{Mode: fi.Mode().Perm() | 0o100}); err != nil {
		return err
	}
	if err := os.MkdirAll(o.trustDir(), 0o755); err != nil {
		return err
	}
	st, err := ota.OpenState(filepath.Join(o.trustDir(), "state.json"))
	if err != nil {
		return err
	}
	// Its release counter is 0, at any floor, so Recover inside Commit may
	// already count it as committed: either way nothing is pending after.
	if _, err := l.Commit(st); err != nil && !errors.Is(err, ota.ErrNothingPending) {
		return err
	}
	fmt.Fprintf(stdout, "adopted %s as release %s: %s\n", binary, version, l.CurrentBinary())
	return nil
}

type otaStatusJSON struct {
	// Committed is the release a rollback would return to now: current,
	// or previous while current is on probation.
	Committed string                   `json:"committed,omitempty"`
	Current   string                   `json:"current"`
	Previous  string                   `json:"previous,omitempty"`
	Pending   *ota.Pending             `json:"pending,omitempty"`
	KnownBad  map[string]string        `json:"known_bad,omitempty"`
	Floor     uint64                   `json:"floor"`
	Verified  time.Time                `json:"verified,omitzero"`
	Metadata  map[string]firmware.Role `json:"metadata,omitempty"`
	Expires   time.Time                `json:"expires,omitzero"`
	Trust     string                   `json:"trust"`
	// LastRefusal is the last install the checks refused, and why.
	LastRefusal *ota.Event `json:"last_refusal,omitempty"`
	// Assignment is the cloud's current assignment to this edge and where
	// its install is (AssignmentError: why it cannot be read).
	Assignment      *ota.Assigned `json:"assignment,omitempty"`
	AssignmentError string        `json:"assignment_error,omitempty"`
	// Commands counts the cloud's commands edge run took (with --ota-repo).
	Commands *ota.GateStats `json:"commands,omitempty"`
}

// otaStatusFor is the updater's part of /v1/status, or nil on an edge
// that has none.
func otaStatusFor(dataDir string) *otaStatusJSON {
	o := &otaFlags{dataDir: dataDir, otaDir: otaDirFor(dataDir)}
	if _, err := os.Stat(o.dir()); err != nil {
		return nil
	}
	s, err := otaStatus(o)
	if err != nil {
		return &otaStatusJSON{Trust: err.Error()}
	}
	return s
}

func (s *otaStatusJSON) printSummary(tw io.Writer) {
	line := "release " + s.Current
	if s.Pending != nil {
		line += fmt.Sprintf(" on probation until %s (committed: %s)", s.Pending.Deadline.Format(time.RFC3339), s.Committed)
	}
	line += fmt.Sprintf(", floor %d", s.Floor)
	if !s.Expires.IsZero() {
		line += ", metadata expires " + s.Expires.Format(time.RFC3339)
	}
	fmt.Fprintf(tw, "ota\t%s\n", line)
	if s.Trust != "ok" {
		fmt.Fprintf(tw, "\t%s\n", s.Trust)
	}
	if r := s.LastRefusal; r != nil {
		fmt.Fprintf(tw, "\tlast refusal %s: %s: %s\n", r.At.Format(time.RFC3339), r.Target, r.Reason)
	}
	if a := s.Assignment; a != nil {
		fmt.Fprintf(tw, "\tassignment %s\n", a.Line())
	}
}

func otaStatus(o *otaFlags) (*otaStatusJSON, error) {
	l := o.layout()
	s := &otaStatusJSON{Trust: "ok"}
	var err error
	if s.Current, err = l.Current(); err != nil {
		return nil, err
	}
	if s.Previous, err = l.Previous(); err != nil {
		return nil, err
	}
	if s.Pending, err = l.Pending(); err != nil {
		return nil, err
	}
	if s.KnownBad, err = l.KnownBad(); err != nil {
		return nil, err
	}
	s.Committed = s.Current
	if s.Pending != nil {
		s.Committed = s.Pending.Previous
	}
	if _, err := os.Stat(filepath.Join(o.dir(), ota.AssignmentFile)); err == nil {
		st, err := o.assignments()
		if err == nil {
			s.Assignment, err = st.Current()
		}
		if err != nil {
			s.AssignmentError = err.Error()
		}
	}
	if b, err := os.ReadFile(filepath.Join(o.dir(), lastRefusalFile)); err == nil {
		var e ota.Event
		if json.Unmarshal(b, &e) == nil {
			s.LastRefusal = &e
		}
	}
	tr, err := o.trust()
	if err != nil {
		// Status reports it rather than failing: an edge without trust
		// still runs, it just cannot install.
		s.Trust = err.Error()
		return s, nil
	}
	s.Floor, s.Verified, s.Metadata = tr.State().Floor(), tr.State().Verified(), tr.Cached()
	for _, r := range s.Metadata {
		if s.Expires.IsZero() || r.Expires.Before(s.Expires) {
			s.Expires = r.Expires
		}
	}
	if len(s.Metadata) == 4 && tr.RefTime().After(s.Expires) {
		s.Trust = fmt.Sprintf("metadata expired at %s: new installs are blocked until a refresh; the running release is not affected", s.Expires.Format(time.RFC3339))
	}
	return s, nil
}

func (s *otaStatusJSON) print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	or := func(v, none string) string {
		if v == "" {
			return none
		}
		return v
	}
	fmt.Fprintf(tw, "current\t%s\n", or(s.Current, "none (edge ota adopt)"))
	fmt.Fprintf(tw, "previous\t%s\n", or(s.Previous, "none"))
	if s.Pending != nil {
		fmt.Fprintf(tw, "pending\t%s (release %d) on probation until %s, %d starts\n", s.Pending.Version, s.Pending.Release, s.Pending.Deadline.Format(time.RFC3339), s.Pending.Attempts)
	} else {
		fmt.Fprintf(tw, "pending\tnone\n")
	}
	fmt.Fprintf(tw, "floor\trelease %d\n", s.Floor)
	for v, why := range s.KnownBad {
		fmt.Fprintf(tw, "known bad\t%s: %s\n", v, why)
	}
	if !s.Expires.IsZero() {
		fmt.Fprintf(tw, "metadata\texpires %s (verified at %s)\n", s.Expires.Format(time.RFC3339), s.Verified.Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "trust\t%s\n", s.Trust)
	if r := s.LastRefusal; r != nil {
		fmt.Fprintf(tw, "last refusal\t%s %s: %s\n", r.At.Format(time.RFC3339), r.Target, r.Reason)
	}
	if a := s.Assignment; a != nil {
		fmt.Fprintf(tw, "assignment\t%s\n", a.Line())
	} else if s.AssignmentError != "" {
		fmt.Fprintf(tw, "assignment\tunreadable: %s\n", s.AssignmentError)
	}
	return tw.Flush()
}

func otaCheck(ctx context.Context, o *otaFlags, repo, channel string, asJSON bool, stdout io.Writer) error {
	if repo == "" {
		return usagef("edge ota check needs --repo DIR or URL")
	}
	tr, err := o.trust()
	if err != nil {
		return err
	}
	var src firmware.Source = firmware.DirSource(repo)
	if isURL(repo) {
		c, err := o.repoClient()
		if err != nil {
			return err
		}
		src = &ota.HTTPSource{Base: repo, Client: c}
	}
	v, err := tr.Refresh(ctx, src)
	if err != nil {
		return err
	}
	type row struct {
		firmware.Target
		Installable string `json:"installable"`
	}
	var rows []row
	running := o.running()
	for _, tg := range v.List() {
		if tg.Custom.Channel != channel {
			continue
		}
		r := row{Target: tg, Installable: "yes"}
		if _, err := tr.Installable(v, tg.Name, running); err != nil {
			r.Installable = err.Error()
		}
		rows = append(rows, r)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"verified": v, "running": running, "targets": rows})
	}
	fmt.Fprintf(stdout, "metadata verified: targets version %d, expires %s; running %s\n", v.Targets.Version, v.Expires().Format(time.RFC3339), running.Version)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tVERSION\tRELEASE\tINSTALLABLE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.Name, r.Custom.Version, r.Custom.Release, r.Installable)
	}
	return tw.Flush()
}

func otaInstall(ctx context.Context, o *otaFlags, bundle string, probation time.Duration, stdout io.Writer) error {
	tr, err := o.trust()
	if err != nil {
		return err
	}
	in, err := os.Open(bundle)
	if err != nil {
		return err
	}
	defer in.Close()
	dl := filepath.Join(o.dir(), "downloads")
	if err := os.MkdirAll(dl, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dl, "bundle-*.part")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	tg, err := tr.ReadBundle(ctx, in, o.running(), tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	spool := otaSpool(o.dir())
	if err != nil {
		err = fmt.Errorf("bundle %s refused: %w", bundle, err)
		o.record(spool, ota.Event{Kind: "ota.refused", Target: filepath.Base(bundle), Reason: err.Error()})
		return err
	}
	o.record(spool, ota.Event{Kind: "ota.verified", Target: tg.Name, Version: tg.Custom.Version, Release: tg.Custom.Release,
		Reason: "offline bundle " + filepath.Base(bundle) + ": metadata fresh and signed, artifact matches the signed length and hashes"})
	l := o.layout()
	if err := l.Install(tmp.Name(), tg, ota.InstallOptions{Probation: probation}); err != nil {
		o.record(spool, ota.Event{Kind: "ota.refused", Target: tg.Name, Version: tg.Custom.Version, Release: tg.Custom.Release, Reason: err.Error()})
		return err
	}
	o.record(spool, ota.Event{Kind: "ota.installed", Target: tg.Name, Version: tg.Custom.Version, Release: tg.Custom.Release, Reason: "offline bundle " + filepath.Base(bundle)})
	fmt.Fprintf(stdout, "installed %s (version %s, release %d); on probation until committed by edge supervise, or rolled back\n",
		tg.Name, tg.Custom.Version, tg.Custom.Release)
	return nil
}

// runSupervise runs `edge supervise [flags] [-- edge run flags]`.
func runSupervise(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var runArgs []string
	for i, a := range args {
		if a == "--" {
			args, runArgs = args[:i], args[i+1:]
			break
		}
	}
	fs := flag.NewFlagSet("edge supervise", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o otaFlags
	o.register(fs)
	status := fs.String("status-listen", "127.0.0.1:8082", "the child's --status-listen, whose /healthz is probed (local only)")
	probation := fs.Duration("probation", ota.DefaultProbation, "how long a new release must stay healthy before it is committed")
	ready := fs.Duration("ready-timeout", ota.DefaultReadyTimeout, "how long a new release may take to become healthy")
	attempts := fs.Int("max-attempts", ota.DefaultMaxAttempts, "starts a release on probation gets (reboots count) before it is rolled back")
	watchdog := fs.Duration("watchdog", ota.DefaultWatchdogTimeout, "a committed release unhealthy at every probe for this long is restarted (never rolled back)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	format := fs.String("log-format", "text", "text or json")
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", "Usage: edge supervise [flags] [-- edge run flags]")
	if err := flagenv.Parse(fs, args, "OUTPOST_", "config"); err != nil {
		return err
	}
	log, err := cli.NewLogger(stderr, *level, *format)
	if err != nil {
		return usagef("%w", err)
	}
	st, err := ota.OpenState(filepath.Join(o.trustDir(), "state.json"))
	if err != nil {
		return err
	}
	if cur, err := o.layout().Current(); err != nil {
		return err
	} else if cur == "" {
		return errors.New("no current release to run: provision one with edge ota adopt --binary FILE --version V")
	}
	runArgs = append([]string{"--data-dir", o.dataDir, "--status-listen", *status}, runArgs...)
	spool := otaSpool(o.dir())
	supLog := log.With("component", "supervise")
	s := &ota.Supervisor{
		// Its commits and rollbacks are recorded through OnEvent.
		Layout: &ota.Layout{Dir: o.dir()}, State: st, Args: runArgs,
		// The supervisor decides probation; the release must not also
		// decide it for itself (that is the systemd path).
		Env:       []string{"OUTPOST_OTA_DIR=" + o.dir(), "OUTPOST_OTA_PROBATION="},
		OnEvent:   spoolEvents(spool, supLog),
		HealthURL: "http://" + *status + "/healthz",
		Probation: *probation, ReadyTimeout: *ready, MaxAttempts: *attempts, WatchdogTimeout: *watchdog,
		Stdout: stdout, Stderr: stderr, Logger: supLog,
	}
	return s.Run(ctx)
}

type onlineInstall struct {
	repo, target, artifactURL string
	rateBytes                 int
	window                    *ota.Window
	probation                 time.Duration

	// assigned is the assignment the install is for (found by the install
	// itself when nil, unless withoutAssignment: the Uptane rule).
	assigned          *ota.Assigned
	withoutAssignment bool
	// background is edge run's Assigner: refusals are returned, not
	// recorded (the Assigner records them once), errors worth retrying
	// wrap ota.ErrRetry, and set marks the assignment's progress.
	background bool
	set        func(state, reason string) error
}

func isURL(s string) bool { return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") }

// otaInstallOnline refreshes the metadata from the repository, checks the
// target like any install and against its assignment (Uptane: the target
// is in the signed targets and in a valid assignment for this edge, with
// its name, version and channel, unless the local operator said
// --without-assignment), downloads it (streamed, resumable, verified; from
// a directory repository the swap's own verifying copy reads it in place)
// and installs it on probation. edge ota install --repo and edge run's
// assignments both install through it.
func otaInstallOnline(ctx context.Context, o *otaFlags, in onlineInstall, stdout io.Writer) error {
	tr, err := o.trust()
	if err != nil {
		return err
	}
	r := &onlineRun{o: o, in: in, spool: otaSpool(o.dir()), l: o.layout(), stdout: stdout}
	if done, err := r.assignment(); done || err != nil {
		return err
	}
	var src firmware.Source = firmware.DirSource(in.repo)
	client, err := o.repoClient()
	if err != nil {
		return err
	}
	if isURL(in.repo) {
		src = &ota.HTTPSource{Base: in.repo, Client: client}
	}
	v, err := tr.Refresh(ctx, src)
	if err != nil {
		return r.retry(err)
	}
	tg, err := tr.Installable(v, in.target, o.running())
	if err != nil {
		return r.refuse(tg, err)
	}
	if r.in.assigned != nil {
		if err := ota.CheckAssigned(tg, r.in.assigned); err != nil {
			return r.refuse(tg, err)
		}
	}
	art := in.artifactURL
	if art == "" {
		if isURL(in.repo) {
			art = strings.TrimSuffix(in.repo, "/") + "/targets/" + in.target
		} else {
			art = filepath.Join(in.repo, "targets", filepath.FromSlash(in.target))
		}
	}
	path := art
	if isURL(art) {
		if path, err = r.download(ctx, client, art, tg); err != nil {
			return err
		}
	}
	return r.install(path, art, tg)
}

// onlineRun is one otaInstallOnline, its steps as methods.
type onlineRun struct {
	o      *otaFlags
	in     onlineInstall
	spool  ota.Spool
	l      *ota.Layout
	stdout io.Writer
	how    string // why it may install: the assignment, or --without-assignment
}

// refuse records the refusal (except for edge run's assigner, which records
// it once) and returns err.
func (r *onlineRun) refuse(tg firmware.Target, err error) error {
	if !r.in.background {
		r.o.record(r.spool, ota.Event{Kind: "ota.refused", Target: r.in.target, Version: tg.Custom.Version, Release: tg.Custom.Release, Reason: err.Error()})
	}
	return err
}

// retry marks err as worth retrying for the assigner; by hand it refuses.
func (r *onlineRun) retry(err error) error {
	if r.in.background {
		return fmt.Errorf("%w (%w)", err, ota.ErrRetry)
	}
	return r.refuse(firmware.Target{}, err)
}

// set marks the assignment's progress (nothing without one).
func (r *onlineRun) set(state, reason string) error {
	if r.in.set == nil {
		return nil
	}
	return r.in.set(state, reason)
}

// assignment applies the Uptane rule: it finds the assignment for the
// target unless one was given or the operator said --without-assignment,
// and settles an assigned release that is already current. done says
// nothing is left to do.
func (r *onlineRun) assignment() (done bool, err error) {
	in := &r.in
	if in.assigned == nil && !in.withoutAssignment {
		st, err := r.o.assignments()
		if err != nil {
			err = fmt.Errorf("%w: %v", ota.ErrNoAssignment, err)
		} else {
			in.assigned, err = st.For(in.target)
		}
		if err != nil {
			return true, r.refuse(firmware.Target{}, fmt.Errorf("install %s refused: %w: an online install needs the cloud's assignment of the target to this edge (give --without-assignment to install it as the local operator)", in.target, err))
		}
		if in.set == nil {
			seq := in.assigned.Seq
			in.set = func(state, reason string) error { return st.Set(seq, state, reason) }
		}
	}
	r.how = "--without-assignment: installed by the local operator, without a cloud assignment"
	if in.assigned == nil {
		return false, nil
	}
	r.how = in.assigned.Describe()
	p, err := r.l.Pending()
	if err != nil {
		return true, r.retry(err)
	}
	if cur, err := r.l.Current(); err == nil && cur == in.assigned.Version {
		if p == nil {
			// Assigned the release it runs, committed: say so, or the
			// rollout would wait for an install that never comes.
			r.o.record(r.spool, ota.Event{ID: fmt.Sprintf("assign-%d-current", in.assigned.Seq), Kind: "ota.committed", Target: in.target,
				Version: cur, Reason: "already the committed release; " + r.how})
			fmt.Fprintf(r.stdout, "%s (version %s) is already the committed release; nothing to install\n", in.target, cur)
			return true, r.set(ota.AssignInstalled, "release "+cur+" is the committed release")
		}
		// Resumed after a crash between the swap and marking it
		// installed: the supervisor decides its probation.
		return true, r.set(ota.AssignInstalled, "release "+cur+" is on probation")
	}
	if p != nil {
		return true, r.retry(fmt.Errorf("release %s is on probation until %s: nothing installs until it is committed or rolled back", p.Version, p.Deadline.Format(time.RFC3339)))
	}
	return false, nil
}

// download fetches the artifact at art with the Downloader and returns the
// verified file.
func (r *onlineRun) download(ctx context.Context, client *http.Client, art string, tg firmware.Target) (string, error) {
	if err := r.set(ota.AssignDownloading, "from "+art); err != nil {
		return "", err
	}
	in := r.in
	d := &ota.Downloader{Dir: filepath.Join(r.o.dir(), "downloads"), Client: client, RateBytes: in.rateBytes, Window: in.window, MaxAttempts: 8}
	if in.background {
		// Until it verifies, or the assignment is cancelled or replaced
		// (ctx), in the assignment's window.
		d.MaxAttempts = 0
		var err error
		if d.Window, d.Now, err = assignmentWindow(in.assigned); err != nil {
			return "", r.refuse(tg, err)
		}
	}
	path, err := d.Fetch(ctx, art, tg)
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", r.refuse(tg, err)
	}
	r.o.record(r.spool, ota.Event{Kind: "ota.downloaded", Target: tg.Name, Version: tg.Custom.Version, Release: tg.Custom.Release, Reason: fmt.Sprintf("%d bytes from %s", tg.Length, art)})
	// Fetch keeps nothing that does not verify.
	r.o.record(r.spool, verified(tg, "the download matches the signed length and hashes"))
	return path, nil
}

// install swaps the verified file at path (art itself for a directory
// repository) in on probation.
func (r *onlineRun) install(path, art string, tg firmware.Target) error {
	// not_after is the latest moment an install may start; the download
	// before may have taken long (ota.CheckNotAfter).
	if a := r.in.assigned; a != nil {
		if err := ota.CheckNotAfter(a, time.Now()); err != nil {
			return r.refuse(tg, err)
		}
	}
	// Past this point a cancel no longer stops the install.
	if err := r.set(ota.AssignInstalling, ""); err != nil {
		return err
	}
	if err := r.l.Install(path, tg, ota.InstallOptions{Probation: r.in.probation}); err != nil {
		// A verified download is kept: a retry (after a probation ends)
		// re-verifies it instead of fetching it again.
		if errors.Is(err, ota.ErrBusy) {
			return r.retry(err)
		}
		return r.refuse(tg, err)
	}
	if path != art {
		_ = os.Remove(path) // the release has its own verified copy now
	} else {
		// From a directory: Install verified it as it copied it.
		r.o.record(r.spool, verified(tg, "the artifact matched the signed length and hashes as it was copied into releases/"))
	}
	r.o.record(r.spool, ota.Event{Kind: "ota.installed", Target: tg.Name, Version: tg.Custom.Version, Release: tg.Custom.Release, Reason: "from " + r.in.repo + ", " + r.how})
	fmt.Fprintf(r.stdout, "installed %s (version %s, release %d, %s); on probation until committed by edge supervise, or rolled back\n",
		tg.Name, tg.Custom.Version, tg.Custom.Release, r.how)
	return r.set(ota.AssignInstalled, fmt.Sprintf("release %s (%d) on probation", tg.Custom.Version, tg.Custom.Release))
}

// verified is the ota.verified event of tg.
func verified(tg firmware.Target, how string) ota.Event {
	return ota.Event{Kind: "ota.verified", Target: tg.Name, Version: tg.Custom.Version, Release: tg.Custom.Release, Reason: how}
}

// otaGuard is the ExecStartPre= of the systemd unit: ota.Guard, the same
// decision edge supervise makes before each start. It fails only when the
// layout cannot be read; a rollback is a success (the unit then starts the
// release current names).
func otaGuard(o *otaFlags, attempts int, stdout io.Writer) error {
	if err := os.MkdirAll(o.trustDir(), 0o755); err != nil {
		return err
	}
	st, err := ota.OpenState(filepath.Join(o.trustDir(), "state.json"))
	if err != nil {
		return err
	}
	d, err := ota.Guard(o.layout(), st, time.Now(), attempts)
	if err != nil {
		return err
	}
	switch {
	case d.RolledBack != nil:
		// The layout recorded ota.rolled_back.
		fmt.Fprintf(stdout, "rolled back %s (%s); starting %s\n", d.RolledBack.Version, d.Reason, d.Version)
	case d.Pending != nil:
		fmt.Fprintf(stdout, "starting %s on probation (start %d, deadline %s)\n", d.Version, d.Pending.Attempts, d.Pending.Deadline.Format(time.RFC3339))
	default:
		fmt.Fprintf(stdout, "starting %s\n", d.Version)
	}
	return nil
}
