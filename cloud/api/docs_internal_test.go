package api

import (
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestDocsCoverRoutes checks that docs/openapi.yaml and docs/API.md
// describe exactly the routes the API serves, and that every $ref in the
// OpenAPI file resolves.
func TestDocsCoverRoutes(t *testing.T) {
	s := &server{opts: Options{Metrics: http.NotFoundHandler()}}
	var routes []string
	for _, ep := range s.endpoints() {
		routes = append(routes, ep.pattern)
	}
	slices.Sort(routes)

	raw, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Errorf("openapi: %q, want 3.1.x", v)
	}
	var documented []string
	paths, _ := doc["paths"].(map[string]any)
	for path, item := range paths {
		for method := range item.(map[string]any) {
			if method == "parameters" {
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(documented)
	// OpenAPI has no rest-of-path parameter: the mux's {file...} is
	// documented as {file}.
	var plain []string
	for _, r := range routes {
		plain = append(plain, strings.ReplaceAll(r, "...}", "}"))
	}
	if !slices.Equal(plain, documented) {
		t.Errorf("openapi.yaml documents\n  %s\nand the API serves\n  %s",
			strings.Join(documented, "\n  "), strings.Join(plain, "\n  "))
	}
	checkRefs(t, doc, doc, "")

	md, err := os.ReadFile("../../docs/API.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if !strings.Contains(string(md), "### `"+r+"`") {
			t.Errorf("API.md has no section \"### `%s`\"", r)
		}
	}
}

// checkRefs fails t for every $ref under v that does not resolve in doc.
func checkRefs(t *testing.T, doc map[string]any, v any, at string) {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if k != "$ref" {
				checkRefs(t, doc, x, at+"/"+k)
				continue
			}
			ref, _ := x.(string)
			var cur any = doc
			for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
				m, ok := cur.(map[string]any)
				if !ok || m[part] == nil {
					t.Errorf("%s: $ref %q does not resolve", at, ref)
					break
				}
				cur = m[part]
			}
		}
	case []any:
		for _, x := range v {
			checkRefs(t, doc, x, at)
		}
	}
}
