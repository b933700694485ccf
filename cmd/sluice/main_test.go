package main

import (
	"bytes"
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"sluice/shared/auth"
)

// TestSettingErrorsNameTheSetting: a missing or malformed setting stops
// start-up with exit code 2 and a message naming it by both spellings.
func TestSettingErrorsNameTheSetting(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"ProducerNoBrokers", nil, []string{"producer"}, "SLUICE_KAFKA_BROKERS (--kafka-brokers): is required"},
		{"ProducerBadBroker", map[string]string{"SLUICE_KAFKA_BROKERS": "localhost"}, []string{"producer"}, "SLUICE_KAFKA_BROKERS (--kafka-brokers)"},
		{"ProducerNoSecret", map[string]string{"SLUICE_KAFKA_BROKERS": "127.0.0.1:1"}, []string{"producer"}, "SLUICE_JWT_SECRET (--jwt-secret): is required"},
		{"ProducerShortSecret", map[string]string{"SLUICE_KAFKA_BROKERS": "127.0.0.1:1", "SLUICE_JWT_SECRET": "short"}, []string{"producer"}, "SLUICE_JWT_SECRET (--jwt-secret): jwt secret must be at least 16 bytes"},
		{"ProducerNoRedis", map[string]string{"SLUICE_KAFKA_BROKERS": "127.0.0.1:1", "SLUICE_JWT_SECRET": "0123456789abcdef0"}, []string{"producer"}, "SLUICE_REDIS_ADDR (--redis-addr): is required"},
		{"ConsumerNoLLM", map[string]string{"SLUICE_KAFKA_BROKERS": "127.0.0.1:1"}, []string{"consumer"}, "SLUICE_LLM_BASE_URL (--llm-base-url): is required"},
		{"ConsumerBadInFlight", map[string]string{"SLUICE_IN_FLIGHT": "lots"}, []string{"consumer"}, `SLUICE_IN_FLIGHT (--in-flight): invalid value "lots"`},
		{"ConsumerBadDuration", nil, []string{"consumer", "--drain-timeout", "soon"}, "drain-timeout"},
		{"DevUnknownRole", nil, []string{"dev", "--roles", "broker,oracle"}, `SLUICE_ROLES (--roles): unknown role "oracle"`},
		{"BadLogLevel", map[string]string{"SLUICE_LOG_LEVEL": "loud"}, []string{"mockllm"}, "SLUICE_LOG_LEVEL (--log-level)"},
		{"MockBadRate", nil, []string{"mockllm", "--mock-error-rate", "2"}, "SLUICE_MOCK_ERROR_RATE (--mock-error-rate): error rate must be within 0..1"},
		// A value out of range names its setting, and only it.
		{"ProducerWaitMax", map[string]string{"SLUICE_KAFKA_BROKERS": "127.0.0.1:1", "SLUICE_JWT_SECRET": "0123456789abcdef0"}, []string{"producer", "--wait-max", "-1s"}, "SLUICE_WAIT_MAX (--wait-max): must be positive"},
		{"ConsumerZeroInFlight", map[string]string{"SLUICE_KAFKA_BROKERS": "127.0.0.1:1", "SLUICE_IN_FLIGHT": "0"}, []string{"consumer", "--llm-base-url", "http://llm", "--llm-model", "m"}, "SLUICE_IN_FLIGHT (--in-flight): in-flight budget must be at least 1"},
		{"ConsumerBadBreakerRatio", map[string]string{"SLUICE_KAFKA_BROKERS": "127.0.0.1:1", "SLUICE_LLM_BASE_URL": "http://llm", "SLUICE_LLM_MODEL": "m"}, []string{"consumer", "--llm-breaker-failure-ratio", "1.5"}, "SLUICE_LLM_BREAKER_FAILURE_RATIO (--llm-breaker-failure-ratio): must be within 0..1"},
		{"ConsumerLLMScheme", map[string]string{"SLUICE_KAFKA_BROKERS": "127.0.0.1:1", "SLUICE_LLM_MODEL": "m"}, []string{"consumer", "--llm-base-url", "ftp://llm"}, `SLUICE_LLM_BASE_URL (--llm-base-url): "ftp://llm" must start with http:// or https://`},
		{"TokenNoSecret", nil, []string{"token", "--sub", "u", "--tenant", "t"}, "SLUICE_JWT_SECRET (--jwt-secret): is required"},
		{"TokenBadLane", map[string]string{"SLUICE_JWT_SECRET": "0123456789abcdef0"}, []string{"token", "--sub", "u", "--tenant", "t", "--lane", "express"}, `SLUICE_LANE (--lane): must be interactive or bulk, got "express"`},
		{"ProducerBulkTTLShort", map[string]string{"SLUICE_KAFKA_BROKERS": "127.0.0.1:1", "SLUICE_JWT_SECRET": "0123456789abcdef0"}, []string{"producer", "--bulk-request-ttl", "10s"}, "SLUICE_BULK_REQUEST_TTL (--bulk-request-ttl): 10s must be at least the request TTL (SLUICE_REQUEST_TTL) 30s"},
		{"ProducerResultTTLShort", map[string]string{"SLUICE_KAFKA_BROKERS": "127.0.0.1:1", "SLUICE_JWT_SECRET": "0123456789abcdef0"}, []string{"producer", "--result-ttl", "5m"}, "SLUICE_RESULT_TTL (--result-ttl): 5m0s must be at least the bulk request TTL (SLUICE_BULK_REQUEST_TTL) 10m0s"},
		{"ConsumerResultTTLShort", map[string]string{"SLUICE_KAFKA_BROKERS": "127.0.0.1:1", "SLUICE_LLM_BASE_URL": "http://127.0.0.1:1/v1", "SLUICE_LLM_MODEL": "m"}, []string{"consumer", "--result-ttl", "5m"}, "SLUICE_RESULT_TTL (--result-ttl): 5m0s must be at least the bulk request TTL (SLUICE_BULK_REQUEST_TTL) 10m0s"},
		{"ConsumerBulkTTLLong", map[string]string{"SLUICE_KAFKA_BROKERS": "127.0.0.1:1", "SLUICE_LLM_BASE_URL": "http://127.0.0.1:1/v1", "SLUICE_LLM_MODEL": "m", "SLUICE_BULK_REQUEST_TTL": "20m"}, []string{"consumer"}, "SLUICE_RESULT_TTL (--result-ttl): 10m0s must be at least the bulk request TTL (SLUICE_BULK_REQUEST_TTL) 20m0s"},
		{"UnknownCommand", nil, []string{"frobnicate"}, `unknown command "frobnicate"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var out, errb bytes.Buffer
			code := run(context.Background(), tt.args, &out, &errb)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, errb.String())
			}
			if !strings.Contains(errb.String(), tt.want) {
				t.Fatalf("stderr does not name the setting %q:\n%s", tt.want, errb.String())
			}
		})
	}
}

func TestTokenMintsVerifiableToken(t *testing.T) {
	const secret = "token-test-secret-0123456789"
	t.Setenv("SLUICE_JWT_SECRET", secret)
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"token", "--sub", "alice", "--tenant", "shop-1", "--ttl", "2h"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	v, err := auth.NewVerifier(auth.Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(strings.TrimSpace(out.String()))
	if err != nil || id.User != "alice" || id.Tenant != "shop-1" || id.Lane != "" {
		t.Fatalf("minted token verifies as %+v, %v", id, err)
	}

	out.Reset()
	if code := run(context.Background(), []string{"token", "--sub", "bot", "--tenant", "shop-1", "--lane", "bulk"}, &out, &errb); code != 0 {
		t.Fatalf("--lane bulk: exit %d: %s", code, errb.String())
	}
	if id, err := v.Verify(strings.TrimSpace(out.String())); err != nil || id.Lane != "bulk" {
		t.Fatalf("token minted with --lane bulk verifies as %+v, %v", id, err)
	}
}

// TestDevBrokerRole starts `sluice dev --roles broker` in-process on a free
// port and checks it prints the broker address and stops on cancel.
func TestDevBrokerRole(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--roles", "broker", "--dev-kafka-addr", "127.0.0.1:0", "--data-dir", t.TempDir()}, &out, &errb)
	}()
	awaitOutput(t, &out, &errb, done, "SLUICE_KAFKA_BROKERS=127.0.0.1:")
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("dev exit code %d after cancel: %s", code, errb.String())
	}
}

// awaitOutput waits until a command run in-process has printed want on
// out. It fails the test when the command exits first (its code arrives on
// done) or 30 s pass.
func awaitOutput(t *testing.T, out, errb *syncBuffer, done <-chan int, want string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for !strings.Contains(out.String(), want) {
		select {
		case code := <-done:
			t.Fatalf("exited %d before printing %q: %s", code, want, errb.String())
		case <-deadline:
			t.Fatalf("no %q printed within 30 s:\n%s", want, out.String())
		case <-time.After(10 * time.Millisecond): // output has no event to await
		}
	}
}

// TestDevStandInsAdmin: the stand-ins alone serve the admin listener (the
// mock LLM's metrics, pprof for a profile of the broker) only when
// --admin-addr asks for it, so that by default its port stays free for a
// producer or consumer started beside them.
func TestDevStandInsAdmin(t *testing.T) {
	adminLine := regexp.MustCompile(`Admin\s+http://(\S+)/metrics`)
	for _, tc := range []struct {
		name  string
		args  []string
		admin bool
	}{
		{"Asked", []string{"--admin-addr", "127.0.0.1:0"}, true},
		{"NotAsked", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			var out, errb syncBuffer
			done := make(chan int, 1)
			go func() {
				done <- run(ctx, append([]string{"dev", "--roles", "llm", "--dev-llm-addr", "127.0.0.1:0"}, tc.args...), &out, &errb)
			}()
			awaitOutput(t, &out, &errb, done, "Press Ctrl-C to stop")
			m := adminLine.FindStringSubmatch(out.String())
			if (m != nil) != tc.admin {
				t.Fatalf("admin listener in the banner: %v, want %v:\n%s", m != nil, tc.admin, out.String())
			}
			if m != nil {
				resp, err := http.Get("http://" + m[1] + "/debug/pprof/")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("GET /debug/pprof/: %d", resp.StatusCode)
				}
			}
			cancel()
			if code := <-done; code != 0 {
				t.Fatalf("dev exit code %d after cancel: %s", code, errb.String())
			}
		})
	}
}

// TestAllProblemsAtOnce: one failed start names every missing or invalid
// setting, not only the first.
func TestAllProblemsAtOnce(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"Producer", nil, []string{"producer", "--wait-max", "0s"}, []string{
			"SLUICE_KAFKA_BROKERS (--kafka-brokers): is required",
			"SLUICE_REDIS_ADDR (--redis-addr): is required",
			"SLUICE_JWT_SECRET (--jwt-secret): is required",
			"SLUICE_WAIT_MAX (--wait-max): must be positive",
		}},
		{"Consumer", map[string]string{"SLUICE_IN_FLIGHT": "0"}, []string{"consumer", "--llm-timeout", "5"}, []string{
			"SLUICE_LLM_TIMEOUT (--llm-timeout): invalid value \"5\": a duration needs a unit, e.g. 5s or 5ms",
		}},
		{"ConsumerValidation", map[string]string{"SLUICE_IN_FLIGHT": "0"}, []string{"consumer"}, []string{
			"SLUICE_KAFKA_BROKERS (--kafka-brokers): is required",
			"SLUICE_REDIS_ADDR (--redis-addr): is required",
			"SLUICE_LLM_BASE_URL (--llm-base-url): is required",
			"SLUICE_LLM_MODEL (--llm-model): is required",
			"SLUICE_IN_FLIGHT (--in-flight): in-flight budget must be at least 1",
		}},
		{"BadValuesBoth", map[string]string{"SLUICE_IN_FLIGHT": "lots"}, []string{"consumer", "--drain-timeout", "soon", "--commit-interval"}, []string{
			`SLUICE_IN_FLIGHT (--in-flight): invalid value "lots"`,
			`SLUICE_DRAIN_TIMEOUT (--drain-timeout): invalid value "soon": not a duration`,
			"SLUICE_COMMIT_INTERVAL (--commit-interval): needs a value",
		}},
		{"Typo", map[string]string{"SLUICE_KAFKA_BROKER": "k:9092"}, []string{"producer"}, []string{
			"SLUICE_KAFKA_BROKERS (--kafka-brokers): is required",
			"SLUICE_KAFKA_BROKER is not a setting of sluice producer (did you mean SLUICE_KAFKA_BROKERS?)",
		}},
		{"UnknownFlag", nil, []string{"consumer", "--in-flite", "3"}, []string{"unknown flag --in-flite (did you mean --in-flight?)"}},
		{"Lab", nil, []string{"lab", "--signal", "cpu", "--time-factor", "0", "--profile", "nowhere.csv"}, []string{
			"SLUICE_PROFILE (--profile): load profile: open nowhere.csv",
		}},
		{"LabSettings", nil, []string{"lab", "--signal", "cpu", "--time-factor", "0", "--max-replicas", "100"}, []string{
			`SLUICE_SIGNAL (--signal): "cpu" is not one of chart, lag, age, inflight`,
			"SLUICE_TIME_FACTOR (--time-factor): must be from 1 to 1000, got 0",
			"SLUICE_MAX_REPLICAS (--max-replicas): at most 64, got 100",
			"SLUICE_OUT (--out): is required",
		}},
		{"TokenShortSecret", nil, []string{"token", "--jwt-secret", "short", "--sub", "u", "--tenant", "t"}, []string{
			"SLUICE_JWT_SECRET (--jwt-secret): must be at least 16 bytes",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var out, errb bytes.Buffer
			if code := run(context.Background(), tt.args, &out, &errb); code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, errb.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr does not say %q:\n%s", w, errb.String())
				}
			}
		})
	}
}

// TestHelpNamesOwnSetting: a subcommand's help shows the environment twin
// of a flag it has.
func TestHelpNamesOwnSetting(t *testing.T) {
	for _, cmd := range []string{"dev", "producer", "consumer", "mockllm", "token", "drain", "lab"} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), []string{cmd, "-h"}, &out, &errb); code != 0 {
			t.Fatalf("%s -h: exit %d", cmd, code)
		}
		help := errb.String()
		i := strings.Index(help, "e.g. --")
		if i < 0 {
			t.Fatalf("%s -h names no environment twin:\n%s", cmd, help)
		}
		flagName, _, _ := strings.Cut(help[i+len("e.g. --"):], " ")
		if !strings.Contains(help, "  -"+flagName+" ") && !strings.Contains(help, "  -"+flagName+"\n") {
			t.Errorf("%s -h shows the twin of --%s, which it does not have:\n%s", cmd, flagName, help)
		}
	}
	var out, errb bytes.Buffer
	run(context.Background(), []string{"token", "-h"}, &out, &errb)
	if !strings.Contains(errb.String(), devSecret) {
		t.Errorf("sluice token -h does not say which secret make run uses:\n%s", errb.String())
	}
}
