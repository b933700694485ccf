package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"sluice/shared/auth"
)

// TargetWS streams answers over GET /v1/ws: Users closed-loop users, each
// on a WebSocket of its own, ask and read the answer's pieces; the run
// measures the time to the first piece beside the time to the whole
// answer. With Hold, it only opens that many idle WebSockets instead and
// measures what they cost the producer (MetricsURL).
const TargetWS = "ws"

// maxHold bounds Config.Hold: the load generator's own sockets.
const maxHold = 50000

// wsFrame is the part of a server frame of GET /v1/ws a user reads.
type wsFrame struct {
	Type       string `json:"type"`
	RequestID  string `json:"request_id"`
	DialogID   string `json:"dialog_id"`
	Detail     string `json:"detail"`
	Status     any    `json:"status"`
	RetryAfter int    `json:"retry_after"`
}

// wsURL is the WebSocket URL of the API at base.
func wsURL(base string) string {
	return "ws" + strings.TrimPrefix(strings.TrimSuffix(base, "/"), "http") + "/v1/ws"
}

// dialWS opens an authenticated WebSocket with tok and reads its ready
// frame.
func dialWS(ctx context.Context, hc *http.Client, url, tok string) (*websocket.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{HTTPClient: hc, Subprotocols: []string{"sluice.v1", "bearer." + tok}})
	if err != nil {
		return nil, err
	}
	var f wsFrame
	if err := readWS(dctx, c, &f); err != nil || f.Type != "ready" {
		_ = c.CloseNow()
		return nil, fmt.Errorf("no ready frame: %v %+v", err, f)
	}
	return c, nil
}

func readWS(ctx context.Context, c *websocket.Conn, f *wsFrame) error {
	_, b, err := c.Read(ctx)
	if err != nil {
		return err
	}
	*f = wsFrame{}
	return json.Unmarshal(b, f)
}

// wsRun is the state the users of one ws run share.
type wsRun struct {
	c                         Config
	hc                        *http.Client
	url                       string
	answered, refused, failed atomic.Int64
	first, whole              latencies
	fails                     *failures
}

// runWS runs c.Users users, each asking on its own WebSocket and reading
// the answer to its end, until c.Duration or c.Count, or opens c.Hold
// idle connections (runHold).
func runWS(ctx context.Context, c Config) (Result, error) {
	if c.Hold > 0 {
		return runHold(ctx, c)
	}
	runCtx, cancel := context.WithTimeout(ctx, c.Duration)
	defer cancel()
	tr := newTransport(0, 0)
	defer tr.CloseIdleConnections()
	r := &wsRun{c: c, hc: &http.Client{Transport: tr}, url: wsURL(c.URL), fails: newFailures()}
	var begun atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for u := range c.Users {
		wg.Go(func() { r.user(runCtx, u, &begun) })
	}
	wg.Wait()
	res := Result{Target: TargetWS, Users: c.Users, Seconds: time.Since(start).Seconds(),
		Answered: r.answered.Load(), Refused: r.refused.Load(), Errors: r.failed.Load()}
	res.Sent = res.Answered + res.Refused + res.Errors
	res.PerSecond = perSecond(res.Answered, res.Seconds)
	r.whole.fill(&res)
	var f Result
	r.first.fill(&f)
	res.FirstP50MS, res.FirstP90MS, res.FirstP99MS, res.FirstMaxMS = f.P50MS, f.P90MS, f.P99MS, f.MaxMS
	r.fails.fill(&res)
	if res.Answered == 0 {
		return res, fmt.Errorf("%w%s", ErrNothingAnswered, res.why())
	}
	return res, nil
}

// user asks, on one WebSocket, question after question, a new dialog every
// Turns, until ctx ends or the run's Count is reached.
func (r *wsRun) user(ctx context.Context, u int, begun *atomic.Int64) {
	tok, err := auth.Mint(r.c.Secret, r.c.Tenant, "ws-user-"+strconv.Itoa(u), 24*time.Hour, time.Now())
	if err != nil {
		r.fail("token", err.Error())
		return
	}
	var c *websocket.Conn
	defer func() {
		if c != nil {
			_ = c.CloseNow()
		}
	}()
	dialog, turn := "", 0
	for ctx.Err() == nil {
		if r.c.Count > 0 && begun.Add(1) > int64(r.c.Count) {
			return
		}
		if c == nil {
			if c, err = dialWS(ctx, r.hc, r.url, tok); err != nil {
				if ctx.Err() == nil {
					r.fail("transport", err.Error())
					pause(ctx, r.c.Backoff)
				}
				c = nil
				continue
			}
		}
		if turn == r.c.Turns {
			dialog, turn = "", 0
		}
		d, ok := r.ask(ctx, c, dialog)
		switch {
		case ok:
			dialog = d
			turn++
		case ctx.Err() == nil:
			_ = c.CloseNow()
			c = nil
		}
	}
}

// ask asks one question in dialog ("" for a new one) and reads its answer
// to the done frame; it returns the dialog, and false when the connection
// is to be dropped.
func (r *wsRun) ask(ctx context.Context, c *websocket.Conn, dialog string) (string, bool) {
	ask, _ := json.Marshal(map[string]string{"type": "ask", "text": r.c.Text, "dialog_id": dialog})
	sent := time.Now()
	if err := c.Write(ctx, websocket.MessageText, ask); err != nil {
		if ctx.Err() == nil {
			r.fail("transport", err.Error())
		}
		return "", false
	}
	rctx, cancel := context.WithTimeout(ctx, r.c.Timeout)
	defer cancel()
	var f wsFrame
	first := time.Duration(0)
	for {
		if err := readWS(rctx, c, &f); err != nil {
			if ctx.Err() == nil {
				r.fail("transport", err.Error())
			}
			return "", false
		}
		switch f.Type {
		case "accepted":
			dialog = f.DialogID
		case "delta":
			if first == 0 {
				first = time.Since(sent)
			}
		case "done":
			whole := time.Since(sent)
			if first == 0 {
				first = whole
			}
			r.first.add(first)
			r.whole.add(whole)
			r.answered.Add(1)
			r.fails.succeeded()
			return dialog, true
		case "error":
			code, _ := f.Status.(float64)
			if code == 429 || code == 503 {
				r.refused.Add(1)
				r.fails.add("ws_"+strconv.Itoa(int(code)), fmt.Sprintf("%d %s", int(code), f.Detail), time.Now())
				pause(ctx, min(time.Duration(f.RetryAfter)*time.Second, r.c.RetryAfterMax))
				return dialog, true
			}
			r.fail("ws_"+strconv.Itoa(int(code)), fmt.Sprintf("%d %s", int(code), f.Detail))
			return dialog, true
		}
	}
}

func (r *wsRun) fail(kind, text string) {
	r.failed.Add(1)
	r.fails.add(kind, text, time.Now())
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// runHold opens c.Hold authenticated, idle WebSockets (64 handshakes at a
// time), reads the producer's resident and heap memory from c.MetricsURL
// before and once all are open, holds them for c.Duration, and closes
// them.
func runHold(ctx context.Context, c Config) (Result, error) {
	res := Result{Target: TargetWS, Conns: c.Hold}
	before, err := scrapeMemory(ctx, c.MetricsURL)
	if err != nil {
		return res, err
	}
	tr := newTransport(0, 0)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	url := wsURL(c.URL)
	conns := make([]*websocket.Conn, c.Hold)
	defer func() {
		for _, cn := range conns {
			if cn != nil {
				_ = cn.CloseNow()
			}
		}
	}()
	start := time.Now()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			tok, err := auth.Mint(c.Secret, c.Tenant, "ws-hold-"+strconv.Itoa(i), 24*time.Hour, time.Now())
			if err == nil {
				conns[i], err = dialWS(ctx, hc, url, tok)
			}
			if err != nil {
				mu.Lock()
				firstErr = cmpErr(firstErr, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	if firstErr != nil {
		return res, fmt.Errorf("open %d WebSockets: %w", c.Hold, firstErr)
	}
	// Idle connections cost the producer only once its collector ran.
	after, err := scrapeMemory(ctx, c.MetricsURL, true)
	if err != nil {
		return res, err
	}
	res.RSSBeforeMB, res.RSSAfterMB = mb(before.rss), mb(after.rss)
	res.HeapBeforeMB, res.HeapAfterMB = mb(before.heap), mb(after.heap)
	res.RSSPerConnKB = (after.rss - before.rss) / float64(c.Hold) / 1024
	res.HeapPerConnKB = (after.heap - before.heap) / float64(c.Hold) / 1024
	res.GoroutinesPerConn = (after.goroutines - before.goroutines) / float64(c.Hold)
	pause(ctx, c.Duration)
	return res, nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func mb(b float64) float64 { return b / (1 << 20) }

// memory is what the producer's /metrics says of its memory.
type memory struct{ rss, heap, goroutines float64 }

// scrapeMemory reads process_resident_memory_bytes, go_memstats_heap_inuse_bytes
// and go_goroutines from the Prometheus text at url. With settle, it reads
// until the heap figure stops falling (three reads a second apart at most
// ten), so that garbage of the handshakes is not counted.
func scrapeMemory(ctx context.Context, url string, settle ...bool) (memory, error) {
	read := func() (memory, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return memory{}, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return memory{}, fmt.Errorf("scrape %s: %w", url, err)
		}
		defer resp.Body.Close()
		var m memory
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			name, val, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				continue
			}
			v, _ := strconv.ParseFloat(strings.TrimSpace(val), 64)
			switch name {
			case "process_resident_memory_bytes":
				m.rss = v
			case "go_memstats_heap_inuse_bytes":
				m.heap = v
			case "go_goroutines":
				m.goroutines = v
			}
		}
		if m.rss == 0 || m.heap == 0 {
			return m, errors.New("metrics at " + url + " lack process_resident_memory_bytes or go_memstats_heap_inuse_bytes")
		}
		return m, sc.Err()
	}
	m, err := read()
	if err != nil || len(settle) == 0 || !settle[0] {
		return m, err
	}
	for range 10 {
		pause(ctx, time.Second)
		n, err := read()
		if err != nil {
			return m, err
		}
		if n.heap >= m.heap {
			return n, nil
		}
		m = n
	}
	return m, nil
}
