package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/bus"
	"sluice/shared/devstack"
	"sluice/shared/devstack/loadgen"
	"sluice/shared/settings"
)

// Parts of the floor's exchanges, each run in a process of its own by
// `sluice bench --floor-part ROLE` (RunPart). The drivers send their
// operations open loop at PartConfig.Rate for the warm-up and the window
// and print the window's edges; the others serve until stopped.
const (
	// PartHTTPServer is a minimal net/http server: it reads a POST's body
	// and writes a small JSON reply, on kept-alive connections.
	PartHTTPServer = "http-server"
	// PartHTTPClient drives keep-alive POSTs of a small JSON body at it.
	PartHTTPClient = "http-client"
	// PartKafkaProducer drives kgo produces of a ~340-byte record with the
	// producer's settings (acks=all, idempotent, linger 0, snappy), each
	// awaited until acknowledged.
	PartKafkaProducer = "kafka-producer"
	// PartKafkaConsumer reads the records in a consumer group, as the
	// consumer and the reply router do.
	PartKafkaConsumer = "kafka-consumer"
	// PartRedisClient drives go-redis round trips: a SET with a TTL.
	PartRedisClient = "redis-client"
	// PartPace drives operations that do nothing: the pacing alone.
	PartPace = "pace"
)

var partRoles = []string{PartHTTPServer, PartHTTPClient, PartKafkaProducer, PartKafkaConsumer, PartRedisClient, PartPace}

// Lines a part prints, read by the floor (proc.Process.WaitLine).
var (
	partListening   = regexp.MustCompile(`floor: listening addr=(\S+)`)
	partReady       = regexp.MustCompile(`floor: ready`)
	partWindowBegin = regexp.MustCompile(`floor: window begin`)
	partWindowEnd   = regexp.MustCompile(`floor: window end (\{.*\})`)
)

// PartConfig is what a part process is told on its command line.
type PartConfig struct {
	// Role is one of the Part* constants.
	Role string
	// Addr is what a part talks to or listens on: the HTTP server's
	// host:port (its listen address, 127.0.0.1:0 by default), Redis's, or
	// the Kafka brokers, comma-separated.
	Addr string
	// Topic and Group are the Kafka parts' topic and consumer group.
	Topic, Group string
	// Prefix namespaces the Redis part's keys; they expire after a minute
	// and the floor deletes them.
	Prefix string
	// Rate is a driver's operations a second, open loop, for Warmup and
	// then Duration, the window it reports.
	Rate             float64
	Warmup, Duration time.Duration
}

// Validate reports every setting out of range, each named by its flag.
func (c PartConfig) Validate() error {
	var p settings.Problems
	p.Check(slices.Contains(partRoles, c.Role), "floor-part", "%q is none of %s", c.Role, strings.Join(partRoles, ", "))
	p.Check(c.Addr != "" || c.Role == PartHTTPServer || c.Role == PartPace, "addr", "is required")
	driver := c.Role == PartHTTPClient || c.Role == PartKafkaProducer || c.Role == PartRedisClient || c.Role == PartPace
	p.Check(!driver || c.Rate > 0 && c.Rate <= 50000, "rate", "must be from 1 to 50000 a second, got %g", c.Rate)
	p.Check(!driver || c.Duration > 0, "duration", "must be positive, got %v", c.Duration)
	p.Check(c.Warmup >= 0, "warmup", "must not be negative, got %v", c.Warmup)
	p.Check(c.Role != PartRedisClient || c.Prefix != "", "prefix", "is required")
	p.Check(c.Role != PartKafkaProducer && c.Role != PartKafkaConsumer || c.Topic != "", "topic", "is required")
	p.Check(c.Role != PartKafkaConsumer || c.Group != "", "group", "is required")
	return p.Err()
}

// windowResult is what a driver prints at its window's end, as JSON.
type windowResult struct {
	// Ops are the operations due in the window that succeeded, Errors
	// those that failed, Missed those not sent: too many under way.
	Ops    int64 `json:"ops"`
	Errors int64 `json:"errors"`
	Missed int64 `json:"missed"`
	// Latencies count from the moment an operation was due.
	P50MS        float64 `json:"p50_ms"`
	P99MS        float64 `json:"p99_ms"`
	MaxSendLagMS float64 `json:"max_send_lag_ms"`
	FirstError   string  `json:"first_error,omitempty"`
}

// RunPart runs one part until ctx ends. A driver runs its load once and
// then waits for ctx, so that its process is still there to be read.
// Lines for the floor go to out.
func RunPart(ctx context.Context, c PartConfig, out io.Writer, log *slog.Logger) error {
	if err := c.Validate(); err != nil {
		return err
	}
	switch c.Role {
	case PartHTTPServer:
		return serveHTTPPart(ctx, c, out)
	case PartKafkaConsumer:
		return consumeKafkaPart(ctx, c, out, log)
	}
	op, closeOp, err := partOp(ctx, c, log)
	if err != nil {
		return err
	}
	defer closeOp()
	fmt.Fprintln(out, "floor: ready")
	res := drive(ctx, c, op, func() { fmt.Fprintln(out, "floor: window begin") })
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "floor: window end %s\n", b)
	<-ctx.Done()
	return nil
}

// floorReply is the HTTP server part's answer, about the size of an LLM's
// short one.
var floorReply = []byte(`{"id":"chatcmpl-floor","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Your order ships today."},"finish_reason":"stop"}]}`)

// floorAsk is the HTTP client part's body, about a storefront question's.
var floorAsk = []byte(`{"text":"Where is my order 1234? It has not arrived yet.","mode":"wait","wait_ms":5000}`)

func serveHTTPPart(ctx context.Context, c PartConfig, out io.Writer) error {
	addr := c.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "floor: listening addr=%s\n", ln.Addr())
	return devstack.ServeUntil(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(floorReply)
	}))
}

func consumeKafkaPart(ctx context.Context, c PartConfig, out io.Writer, log *slog.Logger) error {
	var once sync.Once
	cl, err := bus.NewClient(bus.Config{Brokers: strings.Split(c.Addr, ",")}, "floor-consumer", log, nil,
		kgo.ConsumerGroup(c.Group),
		kgo.ConsumeTopics(c.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
		// The consumer's: an idle fetch returns after this long.
		kgo.FetchMaxWait(fetchMaxWait),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
			once.Do(func() { fmt.Fprintln(out, "floor: ready") })
		}),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) { log.Warn("floor: fetch", "topic", t, "partition", p, "err", err) })
		fs.EachRecord(func(*kgo.Record) {})
	}
}

// fetchMaxWait is the consumer's kgo.FetchMaxWait (consumer.fetchMaxWait).
const fetchMaxWait = 250 * time.Millisecond

// partOp returns a driver's operation and what closes its client.
func partOp(ctx context.Context, c PartConfig, log *slog.Logger) (op func(ctx context.Context, i int64) error, closeOp func(), err error) {
	switch c.Role {
	case PartHTTPClient:
		tr := &http.Transport{MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute}
		cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		url := "http://" + c.Addr + "/v1/chat/completions"
		return func(ctx context.Context, _ int64) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(floorAsk))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := cl.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}, tr.CloseIdleConnections, nil
	case PartKafkaProducer:
		// The producer's settings (producer.New): acks from all in-sync
		// replicas, which makes kgo's producer idempotent, no linger,
		// snappy batches.
		cl, err := bus.NewClient(bus.Config{Brokers: strings.Split(c.Addr, ",")}, "floor-producer", log, nil,
			kgo.DefaultProduceTopic(c.Topic),
			kgo.ProducerBatchCompression(kgo.SnappyCompression()),
			kgo.ProducerLinger(0),
			kgo.RequiredAcks(kgo.AllISRAcks()),
		)
		if err != nil {
			return nil, nil, err
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := cl.Ping(pctx); err != nil {
			cl.Close()
			return nil, nil, fmt.Errorf("kafka: %w", err)
		}
		value := floorRecord()
		return func(ctx context.Context, i int64) error {
			// Keyed, as the requests are by their dialog: the records
			// spread over the partitions.
			rec := &kgo.Record{Key: strconv.AppendInt(nil, i, 36), Value: value}
			return cl.ProduceSync(ctx, rec).FirstErr()
		}, cl.Close, nil
	case PartPace:
		return func(context.Context, int64) error { return nil }, func() {}, nil
	case PartRedisClient:
		rdb := redis.NewClient(&redis.Options{Addr: c.Addr})
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := rdb.Ping(pctx).Err(); err != nil {
			rdb.Close()
			return nil, nil, fmt.Errorf("redis %s: %w", c.Addr, err)
		}
		value := floorRecord()[:100]
		return func(ctx context.Context, i int64) error {
			// A bounded set of keys, each expiring: a long run leaves at
			// most this many behind even when the floor cannot delete
			// them.
			return rdb.Set(ctx, c.Prefix+":"+strconv.FormatInt(i%4096, 10), value, time.Minute).Err()
		}, func() { _ = rdb.Close() }, nil
	}
	return nil, nil, fmt.Errorf("%s is no driver", c.Role)
}

// floorRecord returns a ~340-byte JSON value, about a chat request's
// envelope.
func floorRecord() []byte {
	b, _ := json.Marshal(map[string]any{
		"v": 1, "request_id": "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b", "tenant": "demo-shop", "user": "floor-user",
		"dialog_id": "5f0e3c2b1a0998877665544332211000", "text": "Where is my order 1234? It has not arrived yet.",
		"created_at": "2026-11-30T17:00:00Z", "deadline": "2026-11-30T17:00:05Z",
		"reply": map[string]any{"topic": "chat.replies", "partition": 3}, "lane": "interactive",
	})
	return b
}

// maxPartInFlight bounds a driver's operations under way at once; past it
// the other side has stopped answering and the rest are counted missed.
const maxPartInFlight = 20000

// drive runs op open loop at c.Rate for c.Warmup and c.Duration, as the
// bench's load does (loadgen.Pace): each operation in a goroutine of its
// own when it is due, whatever the others do. begin is called as the
// window's first operation is due, before it is sent. It returns the
// window's operations once all of them ended.
func drive(ctx context.Context, c PartConfig, op func(context.Context, int64) error, begin func()) windowResult {
	var (
		wg       sync.WaitGroup
		inflight atomic.Int64
		mu       sync.Mutex
		lat      []time.Duration
		res      windowResult
		maxLag   time.Duration
		began    bool
		i        int64
	)
	start := time.Now()
	window := start.Add(c.Warmup)
	loadgen.Pace(ctx, start, window.Add(c.Duration), c.Rate, func(due time.Time) {
		counted := !due.Before(window)
		if counted {
			if !began {
				began = true
				begin()
			}
			maxLag = max(maxLag, time.Since(due))
		}
		i++
		if inflight.Load() >= maxPartInFlight {
			if counted {
				res.Missed++
			}
			return
		}
		inflight.Add(1)
		n := i
		wg.Go(func() {
			defer inflight.Add(-1)
			err := op(ctx, n)
			if !counted {
				return
			}
			took := time.Since(due)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Errors++
				if res.FirstError == "" {
					res.FirstError = err.Error()
				}
				return
			}
			lat = append(lat, took)
		})
	})
	wg.Wait()
	if !began {
		begin() // a window with nothing due: still an edge to read
	}
	res.Ops = int64(len(lat))
	res.MaxSendLagMS = ms(maxLag)
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50MS = ms(lat[len(lat)/2])
		res.P99MS = ms(lat[min(len(lat)-1, len(lat)*99/100)])
	}
	if ctx.Err() != nil && res.FirstError == "" {
		res.FirstError = ctx.Err().Error()
	}
	return res
}
