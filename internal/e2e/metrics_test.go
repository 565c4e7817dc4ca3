package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/outpost-edge/outpost/internal/tlsconf"
	"github.com/outpost-edge/outpost/internal/tlstest"
)

// TestMetricsMatchRulesAndDashboards runs a real cloud and edge (the
// binaries, a private Postgres, the embedded broker over TLS so that the
// certificate-expiry series exist), drives a little traffic through them,
// scrapes both /metrics, and checks that every metric the alert rules in
// deploy/prometheus and the dashboards in deploy/grafana name exists, with
// the labels their matchers, groupings, legends and annotations use.
func TestMetricsMatchRulesAndDashboards(t *testing.T) {
	exprs := deployExprs(t)
	pki := tlstest.New(t, "e1")
	// A release repository (keys made by cloud release keys init), so that
	// the release metadata's expiry series exist.
	rel := t.TempDir()
	run(t, bin.cloud, "release", "keys", "init", "--keys", filepath.Join(rel, "offline"),
		"--release-online-keys", filepath.Join(rel, "online"))
	run(t, bin.cloud, "release", "publish", "--keys", filepath.Join(rel, "offline"),
		"--release-online-keys", filepath.Join(rel, "online"), "--release-dir", filepath.Join(rel, "repo"))
	s := newSiteWith(t, siteOptions{cloudArgs: []string{"--mqtt-tls-cert", pki.ServerCert, "--mqtt-tls-key", pki.ServerKey,
		"--release-dir", filepath.Join(rel, "repo"), "--release-online-keys", filepath.Join(rel, "online")}})
	s.o.edgeArgs = []string{"--cloud-mqtt=ssl://" + s.mqtt, "--cloud-mqtt-ca", pki.CAFile,
		"--cloud-mqtt-cert", pki.ClientCert, "--cloud-mqtt-key", pki.ClientKey}
	e := s.addEdge("e1", "till-1")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := httpDevice(ctx, e, "till-1", 30, newOracle(), 0); err != nil {
		t.Fatal(err)
	}
	s.drained(60 * time.Second)

	series := map[string][]map[string]string{}
	for _, url := range []string{"http://" + s.api + "/metrics", "http://" + e.status + "/metrics"} {
		if err := scrape(url, series); err != nil {
			t.Fatal(err)
		}
	}
	// Labels every series gets from the scrape itself.
	scrapeLabels := map[string]bool{"instance": true, "job": true}
	checked := map[string]bool{}
	for _, x := range exprs {
		refs, err := parsePromRefs(x.expr)
		if err != nil {
			t.Errorf("%s: %v", x.where, err)
			continue
		}
		if len(refs.Selectors) == 0 {
			t.Errorf("%s: %q names no metric", x.where, x.expr)
		}
		labels := map[string]bool{}
		for _, sel := range refs.Selectors {
			got, ok := series[sel.Metric]
			if !ok {
				t.Errorf("%s: metric %s is not exported by the edge or the cloud", x.where, sel.Metric)
				continue
			}
			checked[sel.Metric] = true
			for _, l := range got {
				for k := range l {
					if k != "__value__" {
						labels[k] = true
					}
				}
			}
			for _, m := range sel.Matchers {
				if !seriesMatch(got, m) {
					t.Errorf("%s: no series of %s matches %s%s%q", x.where, sel.Metric, m.Label, m.Op, m.Value)
				}
			}
		}
		for _, l := range append(refs.Grouping, x.labels...) {
			if !labels[l] && !scrapeLabels[l] {
				t.Errorf("%s: label %q is on none of the metrics of %q", x.where, l, x.expr)
			}
		}
	}
	// Spot checks that the metrics made for the rules say what they
	// should about this run: one stream, drained, commits timed, the
	// quota and the certificates as configured.
	notAfter, err := tlsconf.NotAfter(pki.ServerCert)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		metric string
		labels map[string]string
		ok     func(v float64) bool
		want   string
	}{
		{"outpost_cloud_streams", nil, func(v float64) bool { return v == 1 }, "1"},
		{"outpost_cloud_stream_lag_records", map[string]string{"edge": "e1"}, func(v float64) bool { return v == 0 }, "0 (drained)"},
		{"outpost_cloud_streams_scrape_error", nil, func(v float64) bool { return v == 0 }, "0"},
		{"outpost_cloud_commit_duration_seconds_count", nil, func(v float64) bool { return v >= 1 }, "at least 1"},
		{"outpost_cloud_stream_last_seen_timestamp_seconds", map[string]string{"edge": "e1"},
			func(v float64) bool { return v > float64(time.Now().Add(-10*time.Minute).Unix()) }, "within the test"},
		{"outpost_edge_outbox_ledger_quota_bytes", nil, func(v float64) bool { return v == 1<<30 }, "the default 1 GiB"},
		{"outpost_cloud_tls_cert_expiry_timestamp_seconds", map[string]string{"flag": "mqtt-tls-cert"},
			func(v float64) bool { return v == float64(notAfter.Unix()) }, "the server certificate's NotAfter"},
		{"outpost_edge_tls_cert_expiry_timestamp_seconds", map[string]string{"flag": "cloud-mqtt-cert"},
			func(v float64) bool { return v > float64(time.Now().Unix()) }, "in the future"},
	} {
		found := false
		for _, l := range series[c.metric] {
			match := true
			for k, v := range c.labels {
				match = match && l[k] == v
			}
			if !match {
				continue
			}
			found = true
			v, err := strconv.ParseFloat(l["__value__"], 64)
			if err != nil || !c.ok(v) {
				t.Errorf("%s%v = %s, want %s", c.metric, c.labels, l["__value__"], c.want)
			}
		}
		if !found {
			t.Errorf("no series %s%v", c.metric, c.labels)
		}
	}

	names := make([]string, 0, len(checked))
	for n := range checked {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("%d expressions, %d metrics checked: %s", len(exprs), len(names), strings.Join(names, " "))
}

// deployExpr is one PromQL expression of deploy/ and the labels its rule's
// annotations or its panel's legend use.
type deployExpr struct {
	where, expr string
	labels      []string
}

var (
	annotationLabel = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
	legendLabel     = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
)

func deployExprs(t *testing.T) []deployExpr {
	t.Helper()
	var out []deployExpr
	rules, _ := filepath.Glob("../../deploy/prometheus/*.yaml")
	dashboards, _ := filepath.Glob("../../deploy/grafana/*.json")
	if len(rules) == 0 || len(dashboards) == 0 {
		t.Fatalf("no rule files (%v) or dashboards (%v) under deploy/", rules, dashboards)
	}
	for _, f := range rules {
		var doc struct {
			Groups []struct {
				Rules []struct {
					Alert, Expr string
					Annotations map[string]string
				}
			}
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, g := range doc.Groups {
			for _, r := range g.Rules {
				where := filepath.Base(f) + " " + r.Alert
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("%s: needs a summary and a description that say what to do", where)
				}
				var labels []string
				for _, a := range r.Annotations {
					for _, m := range annotationLabel.FindAllStringSubmatch(a, -1) {
						labels = append(labels, m[1])
					}
				}
				out = append(out, deployExpr{where, r.Expr, labels})
			}
		}
	}
	for _, f := range dashboards {
		var doc struct {
			Panels []struct {
				Title   string
				Targets []struct{ Expr, LegendFormat string }
			}
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range doc.Panels {
			for _, tg := range p.Targets {
				var labels []string
				for _, m := range legendLabel.FindAllStringSubmatch(tg.LegendFormat, -1) {
					labels = append(labels, m[1])
				}
				out = append(out, deployExpr{filepath.Base(f) + " " + p.Title, tg.Expr, labels})
			}
		}
	}
	return out
}

func seriesMatch(got []map[string]string, m promMatcher) bool {
	for _, l := range got {
		v, ok := l[m.Label]
		switch m.Op {
		case "=":
			if ok && v == m.Value {
				return true
			}
		case "!=":
			if !ok || v != m.Value {
				return true
			}
		default: // =~ and !~: the label must at least exist
			if ok {
				return true
			}
		}
	}
	return false
}

// scrape reads a Prometheus text exposition into series: name -> label
// sets (a histogram shows up as its _bucket, _sum and _count series).
func scrape(url string, series map[string][]map[string]string) error {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("scrape %s: %s: %s", url, resp.Status, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, err := parseSeries(line)
		if err != nil {
			return fmt.Errorf("scrape %s: %q: %w", url, line, err)
		}
		// The value is kept as the label "__value__" (a name no real
		// label may have), for the spot checks of the values.
		labels["__value__"] = line[strings.LastIndexByte(line, ' ')+1:]
		series[name] = append(series[name], labels)
	}
	return sc.Err()
}

func parseSeries(line string) (string, map[string]string, error) {
	labels := map[string]string{}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return "", nil, fmt.Errorf("no metric name")
	}
	name := line[:i]
	if line[i] == ' ' {
		return name, labels, nil
	}
	rest := line[i+1:]
	for {
		if strings.HasPrefix(rest, "}") {
			return name, labels, nil
		}
		eq := strings.Index(rest, `="`)
		if eq <= 0 {
			return "", nil, fmt.Errorf("bad label")
		}
		k := strings.TrimPrefix(rest[:eq], ",")
		rest = rest[eq+2:]
		var v strings.Builder
		j := 0
		for ; j < len(rest) && rest[j] != '"'; j++ {
			if rest[j] == '\\' && j+1 < len(rest) {
				j++
			}
			v.WriteByte(rest[j])
		}
		if j >= len(rest) {
			return "", nil, fmt.Errorf("unterminated label value")
		}
		labels[k] = v.String()
		rest = strings.TrimPrefix(rest[j+1:], ",")
	}
}
