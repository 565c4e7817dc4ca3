package web

import (
	"bytes"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// pages are the templates under templates/, each with layout.html.
var pages = []string{"login", "error", "today", "store_day", "reconciliation", "inventory", "movements", "fleet", "events", "event", "quarantine", "quarantine_entry"}

func parseTemplates() map[string]*template.Template {
	out := map[string]*template.Template{}
	for _, p := range pages {
		t := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+p+".html"))
		out[p] = t
	}
	return out
}

// TimeLayout is how pages show a time. Every time is shown in UTC until
// stores, with their time zones, exist.
const TimeLayout = "2006-01-02 15:04:05 MST"

func showTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(TimeLayout)
}

var funcs = template.FuncMap{
	"time": showTime,
	"timep": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return showTime(*t)
	},
	// short shows the first 12 characters of a long hex string; the title
	// attribute carries all of it.
	"short": func(s any) string {
		v := fmt.Sprint(s)
		if len(v) > 12 {
			return v[:12] + "…"
		}
		return v
	},
	"str": func(s any) string { return fmt.Sprint(s) },
	"hexdump": func(b []byte) string {
		return hex.Dump(b)
	},
	"add": func(a, b int) int { return a + b },
	// u joins a path and an encoded query into one URL, which the
	// template then treats as a whole URL (a query written after a literal
	// "?" would be escaped again).
	"u": func(path, query string) string {
		if query == "" {
			return path
		}
		return path + "?" + query
	},
	// query encodes name, value pairs as a URL query, for u.
	"query": func(kv ...string) string {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v.Encode()
	},
	// qty shows a quantity in thousandths (protocol/pos) as a decimal.
	"qty": func(q int64) string {
		sign := ""
		if q < 0 {
			sign, q = "-", -q
		}
		if q%1000 == 0 {
			return fmt.Sprintf("%s%d", sign, q/1000)
		}
		return strings.TrimRight(fmt.Sprintf("%s%d.%03d", sign, q/1000, q%1000), "0")
	},
}

// view is what the layout gets: the page's own data in Data.
type view struct {
	Title   string
	Nav     string // the nav entry to mark as current
	Session *session
	Now     time.Time
	Data    any
}

func (s *server) render(w http.ResponseWriter, r *http.Request, status int, page string, sess *session, title string, data any) {
	var buf bytes.Buffer
	nav, _, _ := strings.Cut(page, "_")
	switch nav {
	case "event":
		nav = "events"
	case "store":
		nav = "today"
	}
	if err := s.tmpl[page].ExecuteTemplate(&buf, "layout", view{Title: title, Nav: nav, Session: sess, Now: s.opts.Now(), Data: data}); err != nil {
		s.log.Error("render page", "page", page, "err", err)
		http.Error(w, "internal error rendering the page; the cloud's log has the details", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

type errorData struct {
	Status     int
	StatusText string
	Message    string
}

func (s *server) renderError(w http.ResponseWriter, r *http.Request, sess *session, status int, msg string) {
	s.render(w, r, status, "error", sess, http.StatusText(status), errorData{Status: status, StatusText: http.StatusText(status), Message: msg})
}

// writeCSV answers with a CSV file: header, then rows.
func writeCSV(w http.ResponseWriter, filename string, header []string, rows [][]string) error {
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	if err := cw.Write(header); err != nil {
		return err
	}
	for _, row := range rows {
		for i, v := range row {
			row[i] = csvSafe(v)
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="`+filename+`"`)
	h.Set("Cache-Control", "no-store")
	_, err := w.Write(buf.Bytes())
	return err
}

// csvSafe keeps a cell that a device or an edge chose (an event id, a
// refusal reason) from being run as a formula by a spreadsheet: one that
// starts with =, +, - or @ gets a leading apostrophe (OWASP's advice).
// Numbers, which may start with -, are left as they are.
func csvSafe(v string) string {
	if v == "" {
		return v
	}
	switch v[0] {
	case '=', '+', '-', '@', '\t', '\r':
		if isNumber(v) {
			return v
		}
		return "'" + v
	}
	return v
}

// isNumber tells a plain decimal number (such as -12 or -3.50, which
// amounts and deltas are) from text: digits with at most one point after
// an optional sign. (strconv.ParseFloat would also take "-Inf", "+0x1p3"
// and "-1e9", which a spreadsheet may read otherwise.)
func isNumber(v string) bool {
	if v != "" && (v[0] == '-' || v[0] == '+') {
		v = v[1:]
	}
	if v == "" {
		return false
	}
	point := false
	for i := 0; i < len(v); i++ {
		switch {
		case v[i] >= '0' && v[i] <= '9':
		case v[i] == '.' && !point && i > 0 && i < len(v)-1:
			point = true
		default:
			return false
		}
	}
	return true
}

func u64(v uint64) string { return strconv.FormatUint(v, 10) }
func i64(v int64) string  { return strconv.FormatInt(v, 10) }

func csvTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func csvTimep(t *time.Time) string {
	if t == nil {
		return ""
	}
	return csvTime(*t)
}
