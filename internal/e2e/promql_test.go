package e2e_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// A small reader of PromQL expressions, enough to find which metrics and
// labels the alert rules and dashboards in deploy/ use (the full parser,
// prometheus/promql/parser, would pull in most of Prometheus). It reads
// only our own files, so it need not survive hostile input; it refuses
// what it does not understand rather than skipping it.

// promRef is one metric selector: a name and its label matchers.
type promRef struct {
	Metric   string
	Matchers []promMatcher
}

type promMatcher struct{ Label, Op, Value string }

// promRefs are the selectors and the grouping labels (by, without, on,
// ignoring, group_left/right) of one expression.
type promRefs struct {
	Selectors []promRef
	Grouping  []string
}

// PromQL words that are not metric names when they are not followed by a
// parenthesis (functions and aggregations are, and are skipped by that).
var promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true}

var promAggregations = map[string]bool{"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true,
	"stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true}

var promGrouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

type promTok struct {
	kind byte // 'i' identifier, 's' string, 'n' number, 'p' punctuation
	text string
}

func promLex(expr string) ([]promTok, error) {
	var out []promTok
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (!first && c >= '0' && c <= '9')
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(expr) && expr[j] != c {
				if expr[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(expr) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			out = append(out, promTok{'s', expr[i+1 : j]})
			i = j + 1
		case c == '[': // a range or subquery: [5m], [1h:1m]
			j := strings.IndexByte(expr[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unterminated [ at %d", i)
			}
			i += j + 1
		case c >= '0' && c <= '9' || c == '.':
			j := i
			for j < len(expr) && (isIdent(expr[j], false) || expr[j] == '.') {
				j++ // 0.99, 1e3, 5m (after offset)
			}
			out = append(out, promTok{'n', expr[i:j]})
			i = j
		case isIdent(c, true):
			j := i
			for j < len(expr) && isIdent(expr[j], false) {
				j++
			}
			out = append(out, promTok{'i', expr[i:j]})
			i = j
		case strings.ContainsRune("(){},+-*/%^", rune(c)):
			out = append(out, promTok{'p', string(c)})
			i++
		case strings.ContainsRune("=!<>~", rune(c)):
			j := i + 1
			for j < len(expr) && strings.ContainsRune("=~", rune(expr[j])) {
				j++
			}
			out = append(out, promTok{'p', expr[i:j]})
			i = j
		default:
			return nil, fmt.Errorf("unexpected %q at %d", c, i)
		}
	}
	return out, nil
}

// parsePromRefs extracts the selectors and grouping labels of expr.
func parsePromRefs(expr string) (promRefs, error) {
	toks, err := promLex(expr)
	if err != nil {
		return promRefs{}, fmt.Errorf("%s: %w", expr, err)
	}
	var r promRefs
	next := func(i int) promTok {
		if i < len(toks) {
			return toks[i]
		}
		return promTok{}
	}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		if t.kind == 'p' && t.text == "{" {
			return r, fmt.Errorf("%s: a selector without a metric name is not supported here", expr)
		}
		if t.kind != 'i' {
			continue
		}
		switch {
		case promGrouping[t.text]:
			if next(i+1).text != "(" {
				continue // group_left without labels
			}
			i += 2
			for ; i < len(toks) && toks[i].text != ")"; i++ {
				if toks[i].kind == 'i' {
					r.Grouping = append(r.Grouping, toks[i].text)
				} else if toks[i].text != "," {
					return r, fmt.Errorf("%s: unexpected %q in a label list", expr, toks[i].text)
				}
			}
		case next(i+1).text == "(" || promAggregations[t.text] && promGrouping[next(i+1).text]:
			// a function or aggregation (sum by (x) (...)); its arguments
			// are read in turn
		case promKeywords[t.text]:
		default:
			ref := promRef{Metric: t.text}
			if next(i+1).text == "{" {
				i += 2
				for ; i < len(toks) && toks[i].text != "}"; i++ {
					if toks[i].text == "," {
						continue
					}
					if toks[i].kind != 'i' || next(i+1).kind != 'p' || next(i+2).kind != 's' {
						return r, fmt.Errorf("%s: cannot read the matchers of %s", expr, t.text)
					}
					ref.Matchers = append(ref.Matchers, promMatcher{toks[i].text, toks[i+1].text, toks[i+2].text})
					i += 2
				}
				if i >= len(toks) {
					return r, fmt.Errorf("%s: unterminated matchers of %s", expr, t.text)
				}
			}
			r.Selectors = append(r.Selectors, ref)
		}
	}
	return r, nil
}

func TestPromRefs(t *testing.T) {
	for _, c := range []struct {
		expr string
		want promRefs
	}{
		{"up", promRefs{Selectors: []promRef{{Metric: "up"}}}},
		{`increase(a_total{reason="too_large", x!~"y.*"}[15m]) > 0 or b == bool 1`, promRefs{Selectors: []promRef{
			{Metric: "a_total", Matchers: []promMatcher{{"reason", "=", "too_large"}, {"x", "!~", "y.*"}}}, {Metric: "b"}}}},
		{"histogram_quantile(0.99, sum by (instance, le) (rate(h_bucket[5m]))) > 2", promRefs{
			Selectors: []promRef{{Metric: "h_bucket"}}, Grouping: []string{"instance", "le"}}},
		{"time() - max by (edge) (seen) > 6 * 3600", promRefs{Selectors: []promRef{{Metric: "seen"}}, Grouping: []string{"edge"}}},
		{"a / on (edge) group_left b offset 5m", promRefs{Selectors: []promRef{{Metric: "a"}, {Metric: "b"}}, Grouping: []string{"edge"}}},
		{"topk(20, x - 1e3)", promRefs{Selectors: []promRef{{Metric: "x"}}}},
	} {
		got, err := parsePromRefs(c.expr)
		if err != nil {
			t.Fatalf("%s: %v", c.expr, err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.expr, got, c.want)
		}
	}
	for _, bad := range []string{`{__name__="x"}`, `x{a="b"`, `"open`, `x{a}`} {
		if _, err := parsePromRefs(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
