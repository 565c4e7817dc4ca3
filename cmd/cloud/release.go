package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/outpost-edge/outpost/cloud/release"
	"github.com/outpost-edge/outpost/internal/flagenv"
)

const releaseUsage = `Usage: cloud release <command> [flags]

Commands:
  keys init     make the offline root and targets keys and the online snapshot/timestamp keys
  keys rotate   --role ROLE   replace a role's keys and sign the next root version
  sign ARTIFACT --version V --channel C   sign a target offline (no database, no network)
  publish [ARTIFACT...]   check and add the signed roots, targets and artifacts to the repository
  status        print each role's version and expiry in the repository

See docs/OTA.md, "Operating releases".
`

// runRelease is `cloud release ...`.
func runRelease(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, releaseUsage)
		return nil
	}
	switch {
	case args[0] == "keys" && len(args) > 1 && args[1] == "init":
		return releaseKeysInit(args[2:], stdout, stderr)
	case args[0] == "keys" && len(args) > 1 && args[1] == "rotate":
		return releaseKeysRotate(args[2:], stdout, stderr)
	case args[0] == "sign":
		return releaseSign(args[1:], stdout, stderr)
	case args[0] == "publish":
		return releasePublish(ctx, args[1:], stdout, stderr)
	case args[0] == "status":
		return releaseStatus(ctx, args[1:], stdout, stderr)
	}
	return usagef("cloud release: unknown command %q\n\n%s", strings.Join(args, " "), releaseUsage)
}

func keysDirFlag(fs *flag.FlagSet) *string {
	return fs.String("keys", "release-keys", "the offline key directory (root and targets keys, the signed roots and targets.json); keep it off the cloud")
}

func onlineKeysFlag(fs *flag.FlagSet) *string {
	return fs.String("release-online-keys", "release-online-keys", "the online key directory (snapshot and timestamp keys), which the cloud holds")
}

func printFingerprints(w io.Writer, fps []release.Fingerprint) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tKEY ID (sha256)\tFILE")
	for _, fp := range fps {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", fp.Role, fp.KeyID, fp.File)
	}
	tw.Flush()
}

func releaseKeysInit(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cloud release keys init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	offline, online := keysDirFlag(fs), onlineKeysFlag(fs)
	roles := map[string]*release.RoleKeys{}
	for _, role := range []string{"root", "targets", "snapshot", "timestamp"} {
		rk := &release.RoleKeys{}
		roles[role] = rk
		def := 1
		flagenv.IntVar(fs, &rk.Keys, role+"-keys", def, flagenv.Range{Min: 1, Max: 16}, "how many "+role+" keys to make")
		flagenv.IntVar(fs, &rk.Threshold, role+"-threshold", def, flagenv.Range{Min: 1, Max: 16}, "how many "+role+" keys must sign (production: at least 2 for root)")
	}
	var life time.Duration
	flagenv.DurationVar(fs, &life, "root-expires", release.DefaultLifetime[metadata.ROOT], flagenv.Durations(time.Hour, 10*365*24*time.Hour, ""), "lifetime of the first root")
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", "Usage: cloud release keys init [--keys DIR] [--release-online-keys DIR] [--root-keys N --root-threshold T] [flags]")
	if err := flagenv.Parse(fs, args, "OUTPOST_", ""); err != nil {
		return err
	}
	o := release.InitOptions{Roles: map[string]release.RoleKeys{}, RootLifetime: life}
	for role, rk := range roles {
		o.Roles[role] = *rk
	}
	fps, err := release.KeysInit(*offline, *online, o)
	if err != nil {
		return err
	}
	printFingerprints(stdout, fps)
	fmt.Fprintf(stdout, "\nroot version 1: %s (give it to every edge: edge ota init --root FILE)\n", filepath.Join(*offline, "1.root.json"))
	fmt.Fprintf(stdout, "keep %s offline; copy %s to the cloud (--release-online-keys)\n", *offline, *online)
	return nil
}

func releaseKeysRotate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cloud release keys rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	offline, online := keysDirFlag(fs), onlineKeysFlag(fs)
	var o release.RotateOptions
	fs.StringVar(&o.Role, "role", "", "the role whose keys are replaced: root, targets, snapshot or timestamp")
	flagenv.IntVar(fs, &o.Keys, "new-keys", 1, flagenv.Range{Min: 1, Max: 16}, "how many new keys")
	flagenv.IntVar(fs, &o.Threshold, "threshold", 1, flagenv.Range{Min: 1, Max: 16}, "the role's new threshold")
	flagenv.DurationVar(fs, &o.Lifetime, "root-expires", release.DefaultLifetime[metadata.ROOT], flagenv.Durations(time.Hour, 10*365*24*time.Hour, ""), "lifetime of the new root")
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", "Usage: cloud release keys rotate --role ROLE [--new-keys N --threshold T] [flags]")
	if err := flagenv.Parse(fs, args, "OUTPOST_", ""); err != nil {
		return err
	}
	if o.Role == "" {
		return usagef("cloud release keys rotate needs --role root|targets|snapshot|timestamp")
	}
	fps, err := release.Rotate(*offline, *online, o)
	if err != nil {
		return err
	}
	root, _, err := release.LoadRoot(*offline)
	if err != nil {
		return err
	}
	printFingerprints(stdout, fps)
	fmt.Fprintf(stdout, "\nroot version %d signed by the old and the new root threshold: publish it ('cloud release publish'); edges follow it on their next check\n", root.Signed.Version)
	if o.Role == metadata.TARGETS {
		fmt.Fprintln(stdout, "the published targets are signed by the retired key: sign a release (or re-sign) before publishing")
	}
	return nil
}

// moveLeadingArg lets `cmd ARG --flag v` parse like `cmd --flag v ARG`.
func moveLeadingArg(args []string) []string {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return append(append([]string{}, args[1:]...), args[0])
	}
	return args
}

func releaseSign(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cloud release sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	offline := keysDirFlag(fs)
	var o release.SignOptions
	fs.StringVar(&o.Custom.Version, "version", "", "the release's semantic version, such as 1.4.2 (required)")
	fs.StringVar(&o.Custom.Channel, "channel", "", "the channel, such as stable (required)")
	fs.StringVar(&o.Custom.Arch, "arch", "", "the artifact's GOOS/GOARCH[/variant], such as linux/arm/v7 (default: from the file name edge-linux-arm-v7, else none)")
	fs.StringVar(&o.Custom.MinVersion, "min-version", "", "the oldest running version this release may be installed over")
	fs.Uint64Var(&o.Custom.Release, "release", 0, "the anti-rollback release counter (default one above the highest signed)")
	fs.StringVar(&o.Name, "name", "", "the target name (default edge-VERSION-ARCH)")
	flagenv.DurationVar(fs, &o.Lifetime, "expires", release.DefaultLifetime[metadata.TARGETS], flagenv.Durations(time.Hour, 5*365*24*time.Hour, ""), "lifetime of the signed targets metadata")
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", "Usage: cloud release sign ARTIFACT --version V --channel C [flags]")
	if err := flagenv.ParseArgs(fs, moveLeadingArg(args), "OUTPOST_", "", 1); err != nil {
		return err
	}
	if fs.NArg() != 1 || o.Custom.Version == "" || o.Custom.Channel == "" {
		return usagef("cloud release sign needs ARTIFACT, --version and --channel")
	}
	art := fs.Arg(0)
	if o.Custom.Arch == "" {
		o.Custom.Arch = archFromName(filepath.Base(art))
	}
	s, err := release.Sign(*offline, art, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "signed %s: version %s, release %d, channel %s, arch %s, %d bytes, sha256 %s\ntargets version %d in %s; publish with: cloud release publish --keys %s %s\n",
		s.Name, s.Custom.Version, s.Custom.Release, s.Custom.Channel, orNone(s.Custom.Arch), s.Target.Length,
		hex.EncodeToString(s.Target.Hashes["sha256"]), s.Version, s.File, *offline, art)
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(any)"
	}
	return s
}

// archFromName reads the arch from a `make release` file name
// (edge-linux-arm64, edge-linux-arm-v7).
func archFromName(name string) string {
	for _, a := range []string{"linux/amd64", "linux/arm64", "linux/arm/v7"} {
		if strings.HasSuffix(name, "-"+strings.ReplaceAll(a, "/", "-")) {
			return a
		}
	}
	return ""
}

func releasePublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cloud release publish", flag.ContinueOnError)
	fs.SetOutput(stderr)
	offline, online := keysDirFlag(fs), onlineKeysFlag(fs)
	dir := fs.String("release-dir", "", "the repository directory the cloud serves (the same as cloud serve --release-dir; required)")
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", "Usage: cloud release publish --release-dir DIR [--keys DIR] [ARTIFACT...]")
	if err := flagenv.ParseArgs(fs, args, "OUTPOST_", "", 1<<16); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("cloud release publish needs --release-dir (the directory cloud serve --release-dir serves)")
	}
	p, err := release.PublicationFrom(*offline, nil)
	if err != nil {
		return err
	}
	p.Artifacts, err = matchArtifacts(p.Targets, fs.Args())
	if err != nil {
		return err
	}
	r := &release.Repo{Dir: *dir, Online: *online}
	if err := r.Open(); err != nil {
		return err
	}
	out, err := r.Publish(ctx, p)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "published: root version %d, targets version %d, snapshot version %d, timestamp version %d\n",
		out.RootVersion, out.TargetsVersion, out.SnapshotVersion, out.TimestampVersion)
	for _, v := range out.NewRoots {
		fmt.Fprintf(stdout, "new root version %d\n", v)
	}
	for _, n := range out.NewArtifacts {
		fmt.Fprintf(stdout, "new artifact %s\n", n)
	}
	for _, w := range r.Warnings() {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	return nil
}

// matchArtifacts names each file by the signed target with its length and
// sha256; a file that matches none is refused.
func matchArtifacts(targets []byte, files []string) (map[string]string, error) {
	out := map[string]string{}
	if len(files) == 0 {
		return out, nil
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("no targets.json to match the artifacts against: sign them first ('cloud release sign')")
	}
	t, err := metadata.Targets().FromBytes(targets)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		sum, n, err := sha256File(f)
		if err != nil {
			return nil, err
		}
		found := false
		for name, tf := range t.Signed.Targets {
			if tf.Length == n && hex.EncodeToString(tf.Hashes["sha256"]) == sum {
				out[name], found = f, true
			}
		}
		if !found {
			return nil, fmt.Errorf("%s (sha256 %s) is not a signed target: sign it first, or give the file that was signed", f, sum)
		}
	}
	return out, nil
}

func sha256File(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func releaseStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cloud release status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	online := onlineKeysFlag(fs)
	dir := fs.String("release-dir", "", "the repository directory (required)")
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", "Usage: cloud release status --release-dir DIR")
	if err := flagenv.Parse(fs, args, "OUTPOST_", ""); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("cloud release status needs --release-dir")
	}
	r := &release.Repo{Dir: *dir, Online: *online}
	if err := r.Open(); err != nil {
		return err
	}
	st, err := r.Status()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tVERSION\tEXPIRES")
	for _, role := range []string{"root", "targets", "snapshot", "timestamp"} {
		if rs, ok := st.Roles[role]; ok {
			fmt.Fprintf(tw, "%s\t%d\t%s\n", role, rs.Version, rs.Expires.UTC().Format(time.RFC3339))
		}
	}
	tw.Flush()
	names := make([]string, 0, len(st.Targets))
	for n := range st.Targets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := st.Targets[n]
		fmt.Fprintf(stdout, "target %s: version %s, release %d, channel %s, arch %s\n", n, c.Version, c.Release, c.Channel, orNone(c.Arch))
	}
	for _, w := range r.Warnings() {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	return nil
}
