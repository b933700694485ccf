package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"sluice/shared/settings"
)

// checkCompose loads a Compose file as Docker Compose would (compose-go:
// schema, interpolation, anchors) and checks that the services built from
// this repository would start and find each other: every SLUICE_* variable
// is a setting of the subcommand the service runs and has a valid value, the
// subcommand's settings pass its own validation, the Kafka, Redis and LLM
// addresses name services of the file on the ports they listen on, the
// producer publishes its ports, a consumer's stop grace period covers its
// drain, and dependencies wait for health checks that exist.
func checkCompose(path string) ([]string, error) {
	opts, err := cli.NewProjectOptions([]string{path},
		cli.WithName("sluice"), cli.WithWorkingDirectory(filepath.Dir(path)), cli.WithInterpolation(true))
	if err != nil {
		return nil, err
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		return nil, err
	}
	var problems []string
	fail := func(svc, format string, args ...any) {
		problems = append(problems, svc+": "+fmt.Sprintf(format, args...))
	}
	// listens maps "service:port" to true for what each service serves.
	listens := map[string]bool{}
	for _, name := range []string{"kafka", "redis"} {
		if _, ok := p.Services[name]; !ok {
			fail(name, "service missing")
		}
	}
	listens["kafka:9092"], listens["redis:6379"] = true, true

	type sluiceSvc struct {
		svc types.ServiceConfig
		st  *config
	}
	var ours []sluiceSvc
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range p.Services {
			if !yield(n) {
				return
			}
		}
	}) {
		svc := p.Services[name]
		if svc.Build == nil {
			continue
		}
		if len(svc.Command) == 0 {
			fail(name, "no command: the image would run its default")
			continue
		}
		env := map[string]string{}
		for k, v := range svc.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
		st, fs, validate, ok := serviceCommand(svc.Command[0])
		if !ok || svc.Command[0] == "topics" {
			fail(name, "command %q is not a sluice subcommand a service runs", svc.Command[0])
			continue
		}
		for k := range env {
			if strings.HasPrefix(k, "SLUICE_") && fs.Lookup(settings.FlagName(k)) == nil {
				fail(name, "%s is not a setting of sluice %s: it would be ignored", k, svc.Command[0])
			}
		}
		if err := settings.Parse(fs, svc.Command[1:], lookup); err != nil {
			fail(name, "settings: %v", err)
			continue
		}
		if err := validate(); err != nil {
			fail(name, "settings: %v", err)
			continue
		}
		if svc.Command[0] == "mockllm" {
			if _, port, err := net.SplitHostPort(st.mockAddr); err == nil {
				listens[name+":"+port] = true
			}
		} else {
			ours = append(ours, sluiceSvc{svc, st})
		}
	}

	for _, o := range ours {
		name, svc, st := o.svc.Name, o.svc, o.st
		reach := func(setting, hostport string) {
			if !listens[hostport] {
				fail(name, "%s points at %s, which no service of the file listens on", setting, hostport)
			}
		}
		for _, b := range st.bus.Brokers {
			reach("SLUICE_KAFKA_BROKERS", b)
		}
		for _, a := range st.redis.Addrs {
			reach("SLUICE_REDIS_ADDR", a)
		}
		for dep, want := range map[string]string{"kafka": types.ServiceConditionHealthy, "redis": types.ServiceConditionHealthy} {
			d, ok := svc.DependsOn[dep]
			switch {
			case !ok || d.Condition != want:
				fail(name, "does not wait for %s to be healthy", dep)
			case p.Services[dep].HealthCheck == nil || len(p.Services[dep].HealthCheck.Test) == 0:
				fail(name, "waits for %s to be healthy, but %s has no health check", dep, dep)
			}
		}
		switch svc.Command[0] {
		case "producer":
			for setting, addr := range map[string]string{"SLUICE_HTTP_ADDR": st.producer.Addr, "SLUICE_ADMIN_ADDR": st.adminAddr} {
				_, port, _ := net.SplitHostPort(addr)
				if !slices.ContainsFunc(svc.Ports, func(pc types.ServicePortConfig) bool { return strconv.Itoa(int(pc.Target)) == port }) {
					fail(name, "%s listens on port %s, which the service does not publish", setting, port)
				}
			}
		case "consumer":
			u, err := url.Parse(st.llm.BaseURL)
			if err != nil {
				fail(name, "SLUICE_LLM_BASE_URL: %v", err)
			} else {
				reach("SLUICE_LLM_BASE_URL", u.Host)
			}
			grace := 10 * time.Second // Compose's default
			if svc.StopGracePeriod != nil {
				grace = time.Duration(*svc.StopGracePeriod)
			}
			if grace <= st.consumer.DrainTimeout {
				fail(name, "stop_grace_period %v does not cover SLUICE_DRAIN_TIMEOUT %v: a drain would be cut off", grace, st.consumer.DrainTimeout)
			}
		}
	}
	return problems, nil
}

// TestComposeFile: the repository's docker-compose.yml would start a
// pipeline whose parts find each other.
func TestComposeFile(t *testing.T) {
	problems, err := checkCompose(filepath.Join("..", "..", "docker-compose.yml"))
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// TestComposeCheckFindsMistakes: the check names each mistake of a broken
// file.
func TestComposeCheckFindsMistakes(t *testing.T) {
	problems, err := checkCompose(filepath.Join("testdata", "compose-broken.yml"))
	if err != nil {
		t.Fatalf("testdata/compose-broken.yml does not load: %v", err)
	}
	for _, want := range []string{
		"consumer: SLUICE_REDIS_ADRR is not a setting of sluice consumer",
		"producer: SLUICE_LLM_MODEL is not a setting of sluice producer",
		"consumer: SLUICE_LLM_BASE_URL points at mockllm:9999",
		"consumer: stop_grace_period 10s does not cover SLUICE_DRAIN_TIMEOUT 25s",
		"producer: SLUICE_ADMIN_ADDR listens on port 9090, which the service does not publish",
		"producer: does not wait for kafka to be healthy",
		"mockllm: settings: SLUICE_MOCK_ERROR_RATE (--mock-error-rate)",
	} {
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.HasPrefix(p, want) }) {
			t.Errorf("no problem starting %q in\n%s", want, strings.Join(problems, "\n"))
		}
	}
	if _, err := checkCompose(filepath.Join("testdata", "no-such-compose.yml")); err == nil {
		t.Error("a missing file loaded")
	}
}
