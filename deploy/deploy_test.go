// Package deploy_test checks the deployment files in deploy/ against the
// programs they deploy: every flag and OUTPOST_* variable a systemd unit,
// the compose files, the Kubernetes manifests and the example config files
// use must be a flag of the binary and command they run (read from the
// binaries' own --help, which prints each flag with its variable), the
// units must pass `systemd-analyze verify` and the alert rules `promtool
// check rules` when those tools are installed, and the units and manifests
// must keep the properties docs/OPERATIONS.md promises (Type=notify with a
// watchdog, hardening, probes, a disruption budget, the key as a Secret).
// Whether the metrics the rules and dashboards name exist is checked by
// internal/e2e TestMetricsMatchRulesAndDashboards against running programs.
package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

var bin = map[string]string{} // "edge", "cloud" -> built binary

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "outpost-deploy-bin-")
	if err != nil {
		panic(err)
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	for _, name := range []string{"edge", "cloud"} {
		out := filepath.Join(dir, name)
		cmd := exec.Command(goTool, "build", "-o", out, "./cmd/"+name)
		cmd.Dir = ".."
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "deploy: build ./cmd/%s: %v\n%s", name, err, b)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		bin[name] = out
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// command is what one program's flags accept: flag names and their
// environment variables.
type command struct {
	name  string // "cloud serve"
	flags map[string]bool
	envs  map[string]bool
}

var (
	helpMu    sync.Mutex
	helpCache = map[string]*command{}
	flagLine  = regexp.MustCompile(`^  --([a-z0-9][a-z0-9.-]*)\b`)
	envRef    = regexp.MustCompile(`\[\$(OUTPOST_[A-Z0-9_]+)\]`)
)

// commandOf reads the flags of the program's command named by the leading
// words of args (one or two, such as "serve" or "key show") from its
// --help, and returns it with the arguments after the command words.
func commandOf(t *testing.T, program string, args []string) (*command, []string) {
	t.Helper()
	path, ok := bin[program]
	if !ok {
		t.Fatalf("no binary %q", program)
	}
	var words []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") || len(words) == 2 {
			break
		}
		words = append(words, a)
	}
	for n := len(words); n >= 1; n-- {
		if c := helpOf(t, program, path, words[:n]); c != nil {
			return c, args[n:]
		}
	}
	t.Fatalf("%s %s: not a command of the binary (its --help lists no flags)", program, strings.Join(words, " "))
	return nil, nil
}

func helpOf(t *testing.T, program, path string, words []string) *command {
	key := program + " " + strings.Join(words, " ")
	helpMu.Lock()
	defer helpMu.Unlock()
	if c, ok := helpCache[key]; ok {
		return c
	}
	var out bytes.Buffer
	cmd := exec.Command(path, append(append([]string{}, words...), "--help")...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no OUTPOST_* of the test's environment
	_ = cmd.Run()                                   // --help exits non-zero on some commands
	c := &command{name: key, flags: map[string]bool{}, envs: map[string]bool{}}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if m := flagLine.FindStringSubmatch(sc.Text()); m != nil {
			c.flags[m[1]] = true
		}
		if m := envRef.FindStringSubmatch(sc.Text()); m != nil {
			c.envs[m[1]] = true
		}
	}
	if len(c.flags) == 0 || len(c.envs) == 0 {
		c = nil
	}
	helpCache[key] = c
	return c
}

// checkArgs reports every --flag in args that c does not have.
func checkArgs(t *testing.T, where string, c *command, args []string) {
	t.Helper()
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		t.Errorf("%s: %s takes flags only, got %q", where, c.name, args[0])
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			continue // a value
		}
		if a == "--" {
			t.Errorf("%s: %s: unexpected --", where, c.name)
			return
		}
		if strings.Contains(a, "=") && !strings.HasPrefix(a, "--") {
			t.Errorf("%s: %s: write %q as --name=value", where, c.name, a)
		}
		name := strings.TrimLeft(a, "-")
		name, _, _ = strings.Cut(name, "=")
		if !c.flags[name] {
			t.Errorf("%s: %s has no flag --%s", where, c.name, name)
		}
	}
}

// readsEnv says whether the source of the programs of cmds reads the
// variable name other than through a flag (os.Getenv of a literal, such
// as OUTPOST_OTA_PROBATION, which edge supervise hands to its child).
func readsEnv(t *testing.T, cmds []*command, name string) bool {
	t.Helper()
	for _, c := range cmds {
		program, _, _ := strings.Cut(c.name, " ")
		files, _ := filepath.Glob(filepath.Join("..", "cmd", program, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte(`os.Getenv("`+name+`")`)) || bytes.Contains(b, []byte(`os.LookupEnv("`+name+`")`)) {
				return true
			}
		}
	}
	return false
}

// checkEnv reports every OUTPOST_* name that is not a flag's variable of c.
func checkEnv(t *testing.T, where string, c *command, names []string) {
	t.Helper()
	for _, n := range names {
		if strings.HasPrefix(n, "OUTPOST_") && !c.envs[n] {
			t.Errorf("%s: %s has no flag read from $%s", where, c.name, n)
		}
	}
}

func TestConfigExamples(t *testing.T) {
	for program, file := range map[string]string{"cloud": "cloud.conf.example", "edge": "edge.conf.example"} {
		c, _ := commandOf(t, program, []string{map[string]string{"cloud": "serve", "edge": "run"}[program]})
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, _, ok := strings.Cut(line, "=")
			if !ok {
				t.Errorf("%s:%d: not a `name = value` line: %q", file, i+1, line)
				continue
			}
			if !c.flags[strings.TrimSpace(k)] {
				t.Errorf("%s:%d: %s has no flag --%s", file, i+1, c.name, strings.TrimSpace(k))
			}
		}
	}
}

func TestPrometheusRules(t *testing.T) {
	files, _ := filepath.Glob("prometheus/*.yaml")
	if len(files) == 0 {
		t.Fatal("no rule files in deploy/prometheus")
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian package prometheus): the alert rules were not checked with `promtool check rules`")
	}
	out, err := exec.Command(promtool, append([]string{"check", "rules"}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

func TestGrafanaDashboards(t *testing.T) {
	files, _ := filepath.Glob("grafana/*.json")
	if len(files) < 2 {
		t.Fatalf("want the edge-fleet and cloud dashboards in deploy/grafana, found %v", files)
	}
	uids := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID, Title string
			Panels     []struct {
				ID      int
				Title   string
				Targets []struct{ Expr string }
			}
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
			t.Errorf("%s: needs a uid, a title and panels", f)
		}
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s and %s share uid %q", f, other, d.UID)
		}
		uids[d.UID] = f
		ids := map[int]bool{}
		for _, p := range d.Panels {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d twice", f, p.ID)
			}
			ids[p.ID] = true
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", f, p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q has an empty query", f, p.Title)
				}
			}
		}
	}
}

// unit is a systemd unit file: its directives in order, by section.
type unit struct {
	path string
	dirs []directive
}

type directive struct{ section, key, value string }

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{path: path}
	section := ""
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a directive: %q", path, i+1, line)
			}
			if strings.HasSuffix(v, "\\") {
				t.Fatalf("%s:%d: continuation lines are not read by this test; keep the directive on one line", path, i+1)
			}
			u.dirs = append(u.dirs, directive{section, strings.TrimSpace(k), strings.TrimSpace(v)})
		}
	}
	return u
}

func (u unit) values(section, key string) []string {
	var out []string
	for _, d := range u.dirs {
		if d.section == section && d.key == key {
			out = append(out, d.value)
		}
	}
	return out
}

func (u unit) last(section, key string) (string, bool) {
	v := u.values(section, key)
	if len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

// TestSystemdUnits checks the edge and cloud units' promises, the flags and
// variables of every unit's commands, and runs `systemd-analyze verify` on
// copies whose binaries are the ones built here.
func TestSystemdUnits(t *testing.T) {
	files, _ := filepath.Glob("systemd/*.service")
	if len(files) == 0 {
		t.Fatal("no units in deploy/systemd")
	}
	for _, f := range files {
		u := readUnit(t, f)
		var cmds []*command
		for _, key := range []string{"ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop"} {
			for _, line := range u.values("Service", key) {
				args := strings.Fields(strings.TrimLeft(line, "-+!@:"))
				program := filepath.Base(args[0])
				if _, ours := bin[program]; !ours {
					t.Errorf("%s: %s=%s runs %q, not edge or cloud", f, key, line, args[0])
					continue
				}
				c, rest := commandOf(t, program, args[1:])
				var after []string
				if i := slices.Index(rest, "--"); i >= 0 {
					// edge supervise [its flags] -- [edge run flags]
					rest, after = rest[:i], rest[i+1:]
					if c.name != "edge supervise" {
						t.Errorf("%s: %s=%s: only edge supervise takes -- and edge run's flags", f, key, line)
					}
					run, _ := commandOf(t, "edge", []string{"run"})
					checkArgs(t, f+" "+key+" (after --)", run, after)
					cmds = append(cmds, run)
				}
				checkArgs(t, f+" "+key, c, rest)
				cmds = append(cmds, c)
			}
		}
		if len(cmds) == 0 {
			t.Errorf("%s: no ExecStart of edge or cloud", f)
			continue
		}
		for _, env := range u.values("Service", "Environment") {
			for _, kv := range strings.Fields(env) {
				name, _, _ := strings.Cut(strings.Trim(kv, `"`), "=")
				// The variable must be read by at least one of the unit's commands.
				known := false
				for _, c := range cmds {
					known = known || c.envs[name]
				}
				if strings.HasPrefix(name, "OUTPOST_") && !known && !readsEnv(t, cmds, name) {
					t.Errorf("%s: Environment=%s: no command of this unit has a flag read from $%s", f, kv, name)
				}
			}
		}
	}
	for _, name := range []string{"outpost-cloud.service", "outpost-edge.service"} {
		u := readUnit(t, filepath.Join("systemd", name))
		want := map[string]string{"Type": "notify", "NotifyAccess": "main", "ProtectSystem": "strict", "NoNewPrivileges": "yes",
			"ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
			"RestrictSUIDSGID": "yes", "SystemCallArchitectures": "native", "Restart": "always"}
		for k, v := range want {
			if got, ok := u.last("Service", k); !ok || got != v {
				t.Errorf("%s: want %s=%s, got %q (set: %v)", name, k, v, got, ok)
			}
		}
		for _, k := range []string{"WatchdogSec", "StateDirectory", "User", "TimeoutStopSec", "SystemCallFilter"} {
			if v, ok := u.last("Service", k); !ok || v == "" {
				t.Errorf("%s: needs %s=", name, k)
			}
		}
		if usr, _ := u.last("Service", "User"); usr == "root" || usr == "0" {
			t.Errorf("%s: runs as root; it needs a dedicated user", name)
		}
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: the units were not checked with `systemd-analyze verify`")
	}
	dir := t.TempDir()
	var copies []string
	exec := regexp.MustCompile(`^(ExecStart(?:Pre|Post)?|ExecReload|ExecStop)=([-+!@:]*)(\S+)`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for i, l := range lines {
			if m := exec.FindStringSubmatchIndex(l); m != nil {
				program := filepath.Base(l[m[6]:m[7]])
				lines[i] = l[:m[6]] + bin[program] + l[m[7]:]
			}
		}
		cp := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(cp, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		copies = append(copies, cp)
	}
	out, err := runAnalyze(sa, append([]string{"verify"}, copies...))
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// verify exits 0 on directives it ignores (an unknown key, a bad
	// value): any line about our files is a finding. Lines about the
	// host's own units, which it reads for the dependencies, are not ours.
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, dir) {
			t.Errorf("systemd-analyze verify: %s", l)
		}
	}
	// The exposure score of `systemd-analyze security` (0 best, 10 worst):
	// the edge and the cloud stay in its "OK" band.
	score := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, name := range []string{"outpost-cloud.service", "outpost-edge.service"} {
		out, err := runAnalyze(sa, []string{"security", "--offline=true", filepath.Join(dir, name)})
		m := score.FindStringSubmatch(out)
		if err != nil || m == nil {
			t.Logf("systemd-analyze security --offline %s did not give a score (%v); not checked:\n%s", name, err, out)
			continue
		}
		t.Logf("%s: exposure %s", name, m[1])
		if v, _ := strconv.ParseFloat(m[1], 64); v > 2.0 {
			t.Errorf("%s: systemd-analyze security exposure %s, want at most 2.0:\n%s", name, m[1], out)
		}
	}
}

func runAnalyze(sa string, args []string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(sa, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// A container: the program it runs (from its build target or image), its
// command line and its environment variable names.
type container struct {
	where, program string
	args, env      []string
}

func programOfImage(image string) string {
	base := filepath.Base(strings.SplitN(image, ":", 2)[0])
	switch base {
	case "outpost-cloud", "cloud":
		return "cloud"
	case "outpost-edge", "edge":
		return "edge"
	}
	return ""
}

// envNames reads a compose environment: a map or a list of NAME=value.
func envNames(n yaml.Node) []string {
	var out []string
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i < len(n.Content); i += 2 {
			out = append(out, n.Content[i].Value)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			k, _, _ := strings.Cut(c.Value, "=")
			out = append(out, k)
		}
	}
	return out
}

func TestCompose(t *testing.T) {
	type service struct {
		Image string
		Build struct{ Target string }
		// Command is a list (the exec form); a string would go through a
		// shell, and is refused here.
		Command     []string
		Environment yaml.Node
		Profiles    []string
	}
	var doc struct {
		Services map[string]service
	}
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	var containers []container
	count := map[string]int{}
	for name, s := range doc.Services {
		program := s.Build.Target
		if program == "" {
			program = programOfImage(s.Image)
		}
		if strings.HasPrefix(s.Image, "nats") {
			count["nats"]++
		}
		if strings.HasPrefix(s.Image, "postgres") {
			count["postgres"]++
		}
		if program == "" {
			continue
		}
		if len(s.Command) == 0 {
			t.Errorf("compose.yaml %s: runs %s with the image's default command; name the command", name, program)
			continue
		}
		if s.Command[0] == "serve" || s.Command[0] == "run" {
			count[program+" "+s.Command[0]]++
		}
		containers = append(containers, container{"compose.yaml " + name, program, s.Command, envNames(s.Environment)})
	}
	for what, n := range map[string]int{"nats": 3, "postgres": 1, "cloud serve": 2, "edge run": 1} {
		if count[what] != n {
			t.Errorf("compose.yaml: %d services of %s, want %d", count[what], what, n)
		}
	}
	for _, c := range containers {
		cmd, rest := commandOf(t, c.program, c.args)
		checkArgs(t, c.where, cmd, rest)
		checkEnv(t, c.where, cmd, c.env)
	}

	// The TimescaleDB variant overrides only the database.
	b, err = os.ReadFile("compose.timescale.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ts struct{ Services map[string]service }
	if err := yaml.Unmarshal(b, &ts); err != nil {
		t.Fatalf("compose.timescale.yaml: %v", err)
	}
	pg, ok := ts.Services["postgres"]
	if len(ts.Services) != 1 || !ok || !strings.Contains(pg.Image, "timescaledb") ||
		!strings.Contains(strings.Join(pg.Command, " "), "shared_preload_libraries=timescaledb") {
		t.Errorf("compose.timescale.yaml: want only the postgres service, a timescaledb image with timescaledb preloaded; got %+v", ts.Services)
	}
}

func TestKubernetes(t *testing.T) {
	files, _ := filepath.Glob("k8s/*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests in deploy/k8s")
	}
	type probe struct {
		HTTPGet struct{ Path string } `yaml:"httpGet"`
	}
	type kcontainer struct {
		Name, Image   string
		Command, Args []string
		Env           []struct{ Name string }
		EnvFrom       []struct {
			SecretRef    *struct{ Name string } `yaml:"secretRef"`
			ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
		} `yaml:"envFrom"`
		ReadinessProbe *probe `yaml:"readinessProbe"`
		LivenessProbe  *probe `yaml:"livenessProbe"`
	}
	type object struct {
		Kind       string
		Metadata   struct{ Name string }
		StringData map[string]string `yaml:"stringData"`
		Data       map[string]string
		Spec       struct {
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			}
			MinAvailable any `yaml:"minAvailable"`
			Template     struct {
				Metadata struct{ Labels map[string]string }
				Spec     struct {
					InitContainers []kcontainer `yaml:"initContainers"`
					Containers     []kcontainer
					Volumes        []struct {
						Name   string
						Secret *struct {
							SecretName string `yaml:"secretName"`
						}
					}
				}
			}
		}
	}
	var objs []object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o object
			if err := dec.Decode(&o); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			objs = append(objs, o)
		}
	}
	secrets := map[string]map[string]string{}
	for _, o := range objs {
		if o.Kind == "Secret" {
			keys := map[string]string{}
			for k := range o.StringData {
				keys[k] = ""
			}
			for k := range o.Data {
				keys[k] = ""
			}
			secrets[o.Metadata.Name] = keys
		}
	}
	var deployment, pdb *object
	for i := range objs {
		switch objs[i].Kind {
		case "Deployment":
			deployment = &objs[i]
		case "PodDisruptionBudget":
			pdb = &objs[i]
		}
	}
	if deployment == nil || pdb == nil {
		t.Fatal("deploy/k8s needs the cloud's Deployment and a PodDisruptionBudget")
	}
	for k, v := range pdb.Spec.Selector.MatchLabels {
		if deployment.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("the PodDisruptionBudget selects %s=%s, which the Deployment's pods do not have", k, v)
		}
	}
	if pdb.Spec.MinAvailable == nil {
		t.Error("the PodDisruptionBudget needs minAvailable")
	}
	keyFromSecret := false
	for _, v := range deployment.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			keyFromSecret = true
			if v.Secret.SecretName == "" {
				t.Errorf("volume %s: no secretName", v.Name)
			}
		}
	}
	if !keyFromSecret {
		t.Error("the cloud's key must come from a Secret volume")
	}
	pod := deployment.Spec.Template.Spec
	var served bool
	for _, c := range append(append([]kcontainer{}, pod.InitContainers...), pod.Containers...) {
		program := programOfImage(c.Image)
		if program == "" {
			continue
		}
		where := "k8s " + c.Name
		if len(c.Command) > 0 {
			t.Errorf("%s: sets command; the image's entrypoint is the binary, give args", where)
		}
		cmd, rest := commandOf(t, program, c.Args)
		checkArgs(t, where, cmd, rest)
		var env []string
		for _, e := range c.Env {
			env = append(env, e.Name)
		}
		for _, ef := range c.EnvFrom {
			if ef.SecretRef == nil {
				t.Errorf("%s: envFrom other than a Secret is not checked here", where)
				continue
			}
			keys, ok := secrets[ef.SecretRef.Name]
			if !ok {
				t.Errorf("%s: envFrom Secret %q is not in deploy/k8s", where, ef.SecretRef.Name)
			}
			for k := range keys {
				env = append(env, k)
			}
		}
		sort.Strings(env)
		checkEnv(t, where, cmd, env)
		if cmd.name == "cloud serve" {
			served = true
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("%s: the readiness probe must be GET /readyz", where)
			}
			if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("%s: the liveness probe must be GET /healthz", where)
			}
		}
	}
	if !served {
		t.Error("the Deployment has no container running cloud serve")
	}
}
