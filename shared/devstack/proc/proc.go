// Package proc starts and watches sluice OS processes for the tools that
// run Sluice as a deployment of separate processes on one machine (the
// autoscaling lab, `sluice bench`), and reads what a process used from
// /proc (Usage).
//
// A Process's output (stdout and stderr together) is read line by line;
// WaitLine waits for a line such as the banner of `sluice dev` or the
// "admin listening" log line, whose addresses the patterns below capture.
package proc

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Lines of `sluice dev`'s banner and of the services' logs (at level info),
// each capturing an address.
var (
	// BannerUp is the banner's last line: everything asked for is up.
	BannerUp = regexp.MustCompile(`Press Ctrl-C to stop`)
	// BannerAPI captures the producer's URL.
	BannerAPI = regexp.MustCompile(`API\s+(http://\S+)`)
	// BannerKafka captures the embedded broker's address.
	BannerKafka = regexp.MustCompile(`SLUICE_KAFKA_BROKERS=(\S+)`)
	// BannerRedis captures the embedded Redis's address.
	BannerRedis = regexp.MustCompile(`SLUICE_REDIS_ADDR=(\S+)`)
	// BannerLLM captures the mock LLM's base URL.
	BannerLLM = regexp.MustCompile(`SLUICE_LLM_BASE_URL=(\S+)`)
	// AdminListening captures the admin listener's address.
	AdminListening = regexp.MustCompile(`msg="admin listening" addr=(\S+)`)
	// ProducerListening captures the producer's HTTP listener's address.
	ProducerListening = regexp.MustCompile(`msg="producer listening" addr=(\S+)`)
)

// Process is a sluice OS process a tool started: its output is read line
// by line and the last lines kept, for WaitLine and for error messages.
type Process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process exited and its output is read
	err  error         // what Wait returned, set before done is closed

	mu    sync.Mutex
	lines []string      // every line while start-up lines are awaited, then the last keepLines
	grew  chan struct{} // closed and replaced whenever a line arrives
}

// keepLines is how many lines of a process's output are kept once it is up.
const keepLines = 200

// Start starts bin with args and env, the whole environment of the process:
// the caller's own is not inherited, so that a SLUICE_ variable of the shell
// cannot change a run. name names the process in errors. It fails when the
// binary cannot be started.
func Start(name, bin string, env []string, args ...string) (*Process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	p := &Process{name: name, cmd: cmd, done: make(chan struct{}), grew: make(chan struct{})}
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			p.addLine(sc.Text())
		}
		_, _ = io.Copy(io.Discard, r) // a line too long for the scanner
	}()
	go func() {
		p.err = cmd.Wait()
		_ = w.Close()
		<-read
		close(p.done)
	}()
	return p, nil
}

// Name is the name the process was started under.
func (p *Process) Name() string { return p.name }

// Pid is the process's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process exited and its output was read.
func (p *Process) Done() <-chan struct{} { return p.done }

func (p *Process) addLine(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, line)
	if len(p.lines) > 4*keepLines {
		p.lines = append([]string(nil), p.lines[len(p.lines)-keepLines:]...)
	}
	close(p.grew)
	p.grew = make(chan struct{})
}

// Tail returns the last n lines of the process's output.
func (p *Process) Tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines[max(len(p.lines)-n, 0):], "\n")
}

// WaitLine waits until the process prints a line matching re and returns
// its submatches. It fails when the process exits first, ctx ends, or no
// such line comes within timeout.
func (p *Process) WaitLine(ctx context.Context, re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	exited := false
	for i := 0; ; {
		p.mu.Lock()
		lines, grew := p.lines, p.grew
		p.mu.Unlock()
		for ; i < len(lines); i++ {
			if m := re.FindStringSubmatch(lines[i]); m != nil {
				return m, nil
			}
		}
		if exited {
			return nil, fmt.Errorf("%s exited (%v) before printing %q; its last lines:\n%s", p.name, p.err, re, p.Tail(20))
		}
		select {
		case <-grew:
		case <-p.done:
			exited = true // every line is in: look once more
		case <-t.C:
			return nil, fmt.Errorf("%s printed no line matching %q within %s; its last lines:\n%s", p.name, re, timeout, p.Tail(20))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Addr waits for a line matching re, as WaitLine, and returns its first
// submatch: the address the line names.
func (p *Process) Addr(ctx context.Context, re *regexp.Regexp, timeout time.Duration) (string, error) {
	m, err := p.WaitLine(ctx, re, timeout)
	if err != nil {
		return "", err
	}
	if len(m) < 2 {
		return "", fmt.Errorf("%q captures nothing", re)
	}
	return m[1], nil
}

// AwaitReady polls GET /readyz on the admin listener at addr, as the
// kubelet's readiness probe does, until it answers 200. It fails when the
// process exits, ctx ends or timeout passes first.
func (p *Process) AwaitReady(ctx context.Context, cl *http.Client, addr string, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		resp, err := cl.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return fmt.Errorf("%s exited (%v) before it was ready; its last lines:\n%s", p.name, p.err, p.Tail(20))
		case <-t.C:
			return fmt.Errorf("%s not ready within %s; its last lines:\n%s", p.name, timeout, p.Tail(20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then
// kills it. It returns whether the process had to be killed and its exit
// error (nil for exit status 0).
func (p *Process) Stop(grace time.Duration) (killed bool, err error) {
	select {
	case <-p.done:
		return false, p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return false, p.err
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		return true, fmt.Errorf("%s did not exit within %s of SIGTERM", p.name, grace)
	}
}
