package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"sluice/shared/devstack/loadgen"
	"sluice/shared/devstack/stacktest"
)

// TestLoadgenDeadAddress: against an address nothing listens on, sluice
// loadgen stops by itself, exits 1 and says why; with --json its stdout is
// still the one result line.
func TestLoadgenDeadAddress(t *testing.T) {
	url := "http://" + stacktest.RefusingAddr(t)
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"Text", nil},
		{"JSON", []string{"--json"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"loadgen", "--url", url, "--users", "2", "--duration", "1h", "--give-up-after", "200ms"}, tt.args...)
			if code := run(context.Background(), args, &out, &errb); code != 1 {
				t.Fatalf("exit code %d, want 1; stderr:\n%s", code, errb.String())
			}
			if !strings.Contains(errb.String(), "gave up") || !strings.Contains(errb.String(), "connection refused") {
				t.Fatalf("stderr does not say why:\n%s", errb.String())
			}
			if tt.name == "Text" {
				if !strings.Contains(out.String(), "connection refused") {
					t.Fatalf("summary does not list the error:\n%s", out.String())
				}
				return
			}
			var res loadgen.Result
			if strings.Count(out.String(), "\n") != 1 || json.Unmarshal(out.Bytes(), &res) != nil || res.Errors == 0 || res.Answered != 0 {
				t.Fatalf("stdout is not one JSON result line with the errors:\n%s", out.String())
			}
		})
	}
}

// TestLoadgenJSON: --json prints exactly one line on stdout, the result.
func TestLoadgenJSON(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"answer":"yes"}`))
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"loadgen", "--url", srv.URL, "--users", "2", "--count", "10", "--json"}, &out, &errb); code != 0 {
		t.Fatalf("exit code %d: %s", code, errb.String())
	}
	var res loadgen.Result
	if strings.Count(out.String(), "\n") != 1 || json.Unmarshal(out.Bytes(), &res) != nil {
		t.Fatalf("stdout is not one JSON line:\n%s", out.String())
	}
	if res.Target != "http" || res.Answered != 10 || res.Sent != 10 {
		t.Fatalf("result %+v, want 10 of 10 answered", res)
	}
}

// TestLoadgenSettingErrors: an invalid setting exits 2 naming it.
func TestLoadgenSettingErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--users", "0"}, "SLUICE_USERS (--users): must be at least 1"},
		{[]string{"--target", "smtp"}, `SLUICE_TARGET (--target): unknown target "smtp"`},
		{[]string{"--mode", "callback"}, `SLUICE_MODE (--mode): "callback" must be wait or async`},
		{[]string{"--target", "kafka", "--kafka-brokers", "localhost", "--dialogs", "0"}, "2 problems"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), append([]string{"loadgen"}, tt.args...), &out, &errb); code != 2 || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("loadgen %v: exit %d, stderr %q; want 2 naming %q", tt.args, code, errb.String(), tt.want)
		}
	}
}
