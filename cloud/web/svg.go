package web

import (
	"fmt"
	"html/template"
	"strings"
	"time"
)

// Charts are SVG drawn here, on the server, so that they show with scripts
// off and load nothing. Every number is an integer: a bar's length is its
// value scaled to the largest one in per-mille, never a float of money.

// bar is one inline bar, for a table cell.
type bar struct {
	Value    uint64
	PerMille int // of the largest value on the page
}

func barOf(v, maxV uint64) bar {
	if maxV == 0 {
		return bar{Value: v}
	}
	return bar{Value: v, PerMille: int(v * 1000 / maxV)}
}

// Width is the bar's length in SVG units of a 100-unit-wide cell.
func (b bar) Width() string { return fmt.Sprintf("%d.%d", b.PerMille/10, b.PerMille%10) }

type chartBar struct {
	Label   string
	Value   int64
	Text    string // the value as shown; default the value and the unit
	Link    string // a page of this page's site the bar leads to, or ""
	Current bool   // the bar of the page's own day, drawn apart
}

// chart is a rendered SVG, safe to put in a page as it is.
type chart struct {
	SVG   template.HTML
	Empty bool
}

// hbars draws horizontal bars, one row per value, labelled on the left and
// valued on the right.
func hbars(bars []chartBar, unit string) chart {
	if len(bars) == 0 {
		return chart{Empty: true}
	}
	const rowH, labelW, barW, valueW = 22, 220, 360, 140
	var maxV int64
	for _, b := range bars {
		maxV = max(maxV, b.Value)
	}
	h := rowH*len(bars) + 4
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg class="chart" role="img" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d">`,
		labelW+barW+valueW, h, labelW+barW+valueW, h)
	fmt.Fprintf(&sb, `<title>%s</title>`, template.HTMLEscapeString(unit))
	for i, b := range bars {
		y := i*rowH + 2
		w := 0
		if maxV > 0 {
			w = int(b.Value * barW / maxV)
		}
		if b.Value > 0 && w == 0 {
			w = 1
		}
		if b.Link != "" {
			fmt.Fprintf(&sb, `<a href="%s">`, template.HTMLEscapeString(b.Link))
		}
		fmt.Fprintf(&sb, `<text x="%d" y="%d" text-anchor="end" class="label">%s</text>`, labelW-8, y+15, template.HTMLEscapeString(b.Label))
		text := b.Text
		if text == "" {
			text = fmt.Sprintf("%d %s", b.Value, unit)
		}
		text = template.HTMLEscapeString(text)
		class := "bar"
		if b.Current {
			class = "bar current"
		}
		fmt.Fprintf(&sb, `<rect x="%d" y="%d" width="%d" height="%d" class="%s"><title>%s: %s</title></rect>`,
			labelW, y+3, max(w, 0), rowH-6, class, template.HTMLEscapeString(b.Label), text)
		fmt.Fprintf(&sb, `<text x="%d" y="%d" class="value">%s</text>`, labelW+max(w, 0)+6, y+15, text)
		if b.Link != "" {
			sb.WriteString(`</a>`)
		}
	}
	sb.WriteString(`</svg>`)
	return chart{SVG: template.HTML(sb.String())} //nolint:gosec // every outside string above is escaped
}

// lagSample is one point of a stream's lag history (GET /v1/streams).
type lagSample struct {
	At  time.Time `json:"at"`
	Lag uint64    `json:"lag"`
}

// sparkline draws a stream's lag history as a polyline, oldest on the
// left, scaled to its own largest value (zero is the bottom line); empty
// with fewer than two samples. Only numbers go into the SVG.
func sparkline(h []lagSample) template.HTML {
	if len(h) < 2 {
		return ""
	}
	// Integer coordinates in a 1000 × 160 box, drawn at 100 × 16.
	var maxV uint64
	for _, s := range h {
		maxV = max(maxV, s.Lag)
	}
	var pts strings.Builder
	for i, s := range h {
		x, y := 1000*i/(len(h)-1), 150
		if maxV > 0 {
			y = 150 - int(140*float64(s.Lag)/float64(maxV)) // no overflow for any lag
		}
		fmt.Fprintf(&pts, "%d,%d ", x, y)
	}
	return template.HTML(fmt.Sprintf(`<svg class="sparkline" role="img" viewBox="0 0 1000 160" width="100" height="16" xmlns="http://www.w3.org/2000/svg">`+
		`<title>lag over the last %d samples, %s to %s: at most %d</title><polyline fill="none" points="%s"/></svg>`,
		len(h), h[0].At.UTC().Format("2006-01-02 15:04"), h[len(h)-1].At.UTC().Format("2006-01-02 15:04"), maxV, strings.TrimSpace(pts.String())))
}
