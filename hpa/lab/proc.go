package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a sluice OS process the lab started: its output is read line by
// line and the last lines kept, for waitLine and for error messages.
type proc struct {
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

// startProc starts bin with args and env (the whole environment of the
// process: the lab's own is not inherited, so that a SLUICE_ variable of the
// shell cannot change a lab run).
func startProc(name, bin string, env []string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), grew: make(chan struct{})}
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

func (p *proc) addLine(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, line)
	if len(p.lines) > 4*keepLines {
		p.lines = append([]string(nil), p.lines[len(p.lines)-keepLines:]...)
	}
	close(p.grew)
	p.grew = make(chan struct{})
}

// tail returns the last n lines of the process's output.
func (p *proc) tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines[max(len(p.lines)-n, 0):], "\n")
}

// waitLine waits until the process prints a line matching re and returns
// its submatches. It fails when the process exits first, ctx ends, or no
// such line comes within timeout.
func (p *proc) waitLine(ctx context.Context, re *regexp.Regexp, timeout time.Duration) ([]string, error) {
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
			return nil, fmt.Errorf("%s exited (%v) before printing %q; its last lines:\n%s", p.name, p.err, re, p.tail(20))
		}
		select {
		case <-grew:
		case <-p.done:
			exited = true // every line is in: look once more
		case <-t.C:
			return nil, fmt.Errorf("%s printed no line matching %q within %s; its last lines:\n%s", p.name, re, timeout, p.tail(20))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// stop sends SIGTERM and waits up to grace for the process to exit, then
// kills it. It returns whether the process had to be killed and its exit
// error (nil for exit status 0).
func (p *proc) stop(grace time.Duration) (killed bool, err error) {
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

// kill kills the process and waits for it.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}
