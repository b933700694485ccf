package producer_test

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"sluice/docs"
	"sluice/producer"
)

// observed collects, from every server the tests start, each (method, route,
// status) it answered; routes collects the routes each server registered.
// After the tests, TestMain fails when docs/openapi.yaml lacks any of them.
var (
	observed = &statusSet{m: map[string]bool{}}
	routes   = &statusSet{m: map[string]bool{}}
)

type statusSet struct {
	mu sync.Mutex
	m  map[string]bool
}

func (s *statusSet) collect(g prometheus.Gatherer) {
	mfs, err := g.Gather()
	if err != nil {
		return
	}
	for _, mf := range mfs {
		if mf.GetName() != "sluice_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			s.mu.Lock()
			s.m[l["method"]+" "+l["route"]+" "+l["code"]] = true
			s.mu.Unlock()
		}
	}
}

func (s *statusSet) add(p *producer.Server) {
	e, ok := p.Handler().(*echo.Echo)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range e.Routes() {
		if strings.HasPrefix(r.Path, "/v1/") || r.Path == "/openapi.yaml" {
			s.m[r.Method+" "+r.Path] = true
		}
	}
}

func (s *statusSet) sorted() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.m))
	for k := range s.m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

var echoParam = regexp.MustCompile(`:([a-z_]+)`)

type spec struct {
	Paths map[string]map[string]struct {
		Responses map[string]any `yaml:"responses"`
	} `yaml:"paths"`
	AnyRoute struct {
		Responses map[string]any `yaml:"responses"`
	} `yaml:"x-sluice-any-route"`
	Preflight struct {
		Enabled bool `yaml:"enabled"`
	} `yaml:"x-sluice-cors-preflight"`
}

// checkSpec returns what the server produced that the spec does not describe.
func checkSpec() []string {
	var sp spec
	if err := yaml.Unmarshal(docs.OpenAPI, &sp); err != nil {
		return []string{"docs/openapi.yaml: " + err.Error()}
	}
	var missing []string
	for _, r := range routes.sorted() {
		method, path, _ := strings.Cut(r, " ")
		p := echoParam.ReplaceAllString(path, "{$1}")
		if _, ok := sp.Paths[p][strings.ToLower(method)]; !ok {
			missing = append(missing, "route "+method+" "+p)
		}
	}
	for _, o := range observed.sorted() {
		parts := strings.Fields(o)
		method, path, code := parts[0], parts[1], parts[2]
		if _, ok := sp.AnyRoute.Responses[code]; ok {
			continue
		}
		if method == "OPTIONS" && code == "204" && sp.Preflight.Enabled {
			continue
		}
		p := echoParam.ReplaceAllString(path, "{$1}")
		op, ok := sp.Paths[p][strings.ToLower(method)]
		if !ok {
			missing = append(missing, fmt.Sprintf("status %s of %s %s (no such operation)", code, method, p))
			continue
		}
		if _, ok := op.Responses[code]; !ok {
			missing = append(missing, fmt.Sprintf("status %s of %s %s", code, method, p))
		}
	}
	return missing
}

func TestMain(m *testing.M) {
	if os.Getenv(envAllocsBackend) != "" {
		if err := runAllocsBackend(); err != nil {
			fmt.Fprintln(os.Stderr, "allocs backend:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if code == 0 && len(observed.sorted()) > 0 {
		if missing := checkSpec(); len(missing) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: docs/openapi.yaml does not describe what the server produced:\n  %s\n", strings.Join(missing, "\n  "))
			code = 1
		}
	}
	os.Exit(code)
}

func TestOpenAPIServed(t *testing.T) {
	h := mustStart(t, nil)
	r := h.send(t, "GET", "/openapi.yaml", "", "", "")
	if r.code != 200 || !strings.HasPrefix(string(r.body), "openapi: 3.1") {
		t.Fatalf("GET /openapi.yaml: %d %.40q", r.code, r.body)
	}
}
