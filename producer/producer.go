// Package producer is Sluice's HTTP ingress. It authenticates and validates
// chat questions, puts them on the requests topic of their lane
// (interactive: chat.requests; bulk: chat.requests.bulk) keyed by
// tenant/user/dialog, and answers the client when the reply comes back on
// this replica's reply partitions: at once (wait mode), or through a
// long-poll of the poll_url that any replica can answer from the result
// store.
//
// The ingress stays thin: no LLM call and no history read on the hot path.
//
// Metrics (on the registerer given to New): see docs/metrics.md, generated
// from the registries by tests/metrics_doc_test.go.
package producer

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/docs"
	"sluice/shared/admin"
	"sluice/shared/auth"
	"sluice/shared/bus"
	"sluice/shared/callback"
	"sluice/shared/envelope"
	"sluice/shared/metric"
	"sluice/shared/settings"
	"sluice/shared/store"
)

// Config holds the ingress's settings.
type Config struct {
	// Addr is the HTTP listen address. Default ":8080".
	Addr string
	// WaitDefault and WaitMax bound wait_ms. Defaults 3 s and 30 s.
	WaitDefault time.Duration
	WaitMax     time.Duration
	// RequestTTL is how long after acceptance a request is still worth
	// answering; it becomes the request's deadline. Default 30 s.
	RequestTTL time.Duration
	// BulkRequestTTL is RequestTTL for requests of the bulk lane: bots
	// that can wait minutes, whose requests may queue behind a backlog.
	// At least RequestTTL; the result store must keep results as long
	// (Settings.Validate). Default 10 min.
	BulkRequestTTL time.Duration
	// MaxTextChars bounds a question, counted in characters. Default 2000.
	MaxTextChars int
	// BodyLimit bounds a request body in bytes. Default 16 KiB.
	BodyLimit int64
	// ReadTimeout bounds reading a request's headers, and its body from
	// the moment the handler starts: a client that sends slowly loses its
	// connection instead of holding a goroutine and a descriptor. Default 5 s.
	ReadTimeout time.Duration
	// StoreTimeout bounds each Redis call on the hot path (rate limits, the
	// queued marker); past it the call fails open. Default 250 ms.
	StoreTimeout time.Duration
	// ProduceTimeout bounds putting a request on Kafka; past it the client
	// gets 503. Default 3 s.
	ProduceTimeout time.Duration
	// Linger is the Kafka producer linger. Default 0: see docs/benchmarks.md.
	Linger time.Duration
	// ReplyPartitions pins the partitions of the replies topic this replica
	// reads. Empty (the default): the replicas share the topic through the
	// reply consumer group.
	ReplyPartitions []int32
	// ReplySessionTimeout is the reply group's session timeout: how soon the
	// partitions of a dead replica move to the others. Default 6 s.
	ReplySessionTimeout time.Duration
	// ReplyFetchMaxWait bounds how long a reply fetch waits on an idle
	// partition. Default 100 ms.
	ReplyFetchMaxWait time.Duration
	// ShutdownTimeout bounds the graceful stop. Default 25 s.
	ShutdownTimeout time.Duration
	// DrainDelay is how long a stopping ingress keeps serving after its
	// readiness turned false, so that load balancers stop sending to it
	// first (on Kubernetes, e.g. 5 s). Default 0.
	DrainDelay time.Duration

	// AdmissionInterval is how often the queue wait estimate is refreshed
	// from the consumer group's lag. Default 1 s.
	AdmissionInterval time.Duration
	// AdmissionMinRate floors the measured completion rate (requests/s) in
	// the estimate, so a burst arriving at idle consumers is not refused
	// before their rate shows. Default 50.
	AdmissionMinRate float64
	// MaxLag refuses async and callback requests while the consumers are
	// this many requests behind. Default 100000.
	MaxLag int64

	// UserRate and TenantRate limit POST /v1/chat per user and per tenant
	// across all replicas (GCRA in Redis). GlobalRate caps what this
	// replica accepts in all. Zero disables. Defaults: 30/m with bursts of
	// 10 per user, no tenant or global limit.
	UserRate   Rate
	TenantRate Rate
	GlobalRate Rate

	// HotTTL is how long a first-turn answer serves the same question
	// opening another dialog of the tenant; 0 disables. Default 60 s.
	HotTTL time.Duration
	// HotSize bounds the local hot-answer LRU. Default 10000.
	HotSize int

	// Callbacks decides which callback URLs mode callback accepts; with no
	// allowed host, mode callback is refused.
	Callbacks callback.Policy

	// PollSecret signs poll URLs, so that a poll can tell an accepted
	// request whose queued marker Redis lost from an unknown one; every
	// replica needs the same. Empty: Open derives it from the HS256 token
	// secret; with public token keys only, poll URLs are unsigned.
	PollSecret string

	// CORSOrigins are the storefront origins browsers may call the API
	// from ("https://shop.example"); empty disables CORS.
	CORSOrigins []string
	// WSMaxMessageBytes bounds a message a client sends on GET /v1/ws.
	// Default 16 KiB.
	WSMaxMessageBytes int64
	// WSMaxMessages bounds the messages a client sends on one WebSocket.
	// Default 1000.
	WSMaxMessages int
	// WSIdleTimeout closes a WebSocket with no frame either way and no
	// answer under way. Default 2 min.
	WSIdleTimeout time.Duration
	// WSPingInterval is how often a WebSocket client is pinged, and how
	// long its pong may take. Default 30 s.
	WSPingInterval time.Duration
	// WSWriteTimeout disconnects a WebSocket client that does not take a
	// frame within it. Default 10 s.
	WSWriteTimeout time.Duration
	// WSMaxConns bounds the WebSockets this replica holds; 0: no bound.
	// Default 20000.
	WSMaxConns int
	// GzipMinBytes compresses responses of at least this size for clients
	// that accept gzip; 0 disables. Default 1024.
	GzipMinBytes int
	// StreamHeartbeat is how long a streaming answer (SSE) may stay
	// silent before a comment line goes out, so that idle proxies keep the
	// connection. Default 15 s.
	StreamHeartbeat time.Duration
	// StreamWriteTimeout bounds writing one event to a streaming client: a
	// client that reads slower than that loses the stream (it resumes
	// with Last-Event-ID), so a slow reader holds no more than one event
	// here. Default 30 s.
	StreamWriteTimeout time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Addr:                ":8080",
		WaitDefault:         3 * time.Second,
		WaitMax:             30 * time.Second,
		RequestTTL:          30 * time.Second,
		BulkRequestTTL:      10 * time.Minute,
		MaxTextChars:        2000,
		BodyLimit:           16 << 10,
		ReadTimeout:         5 * time.Second,
		ProduceTimeout:      3 * time.Second,
		StoreTimeout:        250 * time.Millisecond,
		ReplyFetchMaxWait:   100 * time.Millisecond,
		ReplySessionTimeout: 6 * time.Second,
		ShutdownTimeout:     25 * time.Second,
		AdmissionInterval:   time.Second,
		AdmissionMinRate:    50,
		MaxLag:              100000,
		UserRate:            Rate{N: 30, Per: time.Minute, Burst: 10},
		HotTTL:              time.Minute,
		HotSize:             10000,
		GzipMinBytes:        1024,
		StreamHeartbeat:     15 * time.Second,
		StreamWriteTimeout:  30 * time.Second,
		WSMaxMessageBytes:   16 << 10,
		WSMaxMessages:       1000,
		WSIdleTimeout:       2 * time.Minute,
		WSPingInterval:      30 * time.Second,
		WSWriteTimeout:      10 * time.Second,
		WSMaxConns:          20000,
	}
}

// Validate reports every setting out of range, each named by its flag.
func (c Config) Validate() error {
	var p settings.Problems
	p.Check(c.Addr != "", "http-addr", "must not be empty")
	p.Check(c.WaitMax > 0, "wait-max", "must be positive")
	p.Check(c.WaitDefault >= 0 && c.WaitDefault <= c.WaitMax, "wait-default", "%v must be within 0..wait max %v", c.WaitDefault, c.WaitMax)
	p.Check(c.RequestTTL > 0, "request-ttl", "must be positive")
	p.Check(c.BulkRequestTTL >= c.RequestTTL, "bulk-request-ttl", "%v must be at least the request TTL (SLUICE_REQUEST_TTL) %v", c.BulkRequestTTL, c.RequestTTL)
	p.Check(c.MaxTextChars >= 1, "max-text-chars", "must be at least 1")
	p.Check(c.BodyLimit >= 256, "body-limit", "must be at least 256 bytes")
	p.Check(c.ReadTimeout >= 100*time.Millisecond, "read-timeout", "must be at least 100ms")
	p.Check(c.ProduceTimeout > 0, "produce-timeout", "must be positive")
	p.Check(c.StoreTimeout > 0, "store-timeout", "must be positive")
	p.Check(c.Linger >= 0, "kafka-linger", "must not be negative")
	p.Check(c.ReplyFetchMaxWait > 0, "reply-fetch-max-wait", "must be positive")
	p.Check(c.ReplySessionTimeout >= time.Second, "reply-session-timeout", "must be at least 1s")
	p.Check(c.ShutdownTimeout > 0, "shutdown-timeout", "must be positive")
	p.Check(c.DrainDelay >= 0 && c.DrainDelay < c.ShutdownTimeout, "drain-delay", "must be within 0..shutdown timeout (%v)", c.ShutdownTimeout)
	p.Check(c.AdmissionInterval >= 10*time.Millisecond && c.AdmissionInterval <= 2*time.Second, "admission-interval", "must be within 10ms..2s")
	p.Check(c.AdmissionMinRate >= 0, "admission-min-rate", "must not be negative")
	p.Check(c.MaxLag >= 1, "max-lag", "must be at least 1")
	p.Check(c.HotTTL >= 0, "hot-ttl", "must not be negative")
	p.Check(c.HotTTL == 0 || c.HotSize >= 1, "hot-size", "must be positive while the hot cache is on")
	p.Check(c.GzipMinBytes >= 0, "gzip-min-bytes", "must not be negative")
	p.Check(c.StreamHeartbeat >= 10*time.Millisecond, "stream-heartbeat", "must be at least 10ms, got %v", c.StreamHeartbeat)
	p.Check(c.StreamWriteTimeout >= 10*time.Millisecond, "stream-write-timeout", "must be at least 10ms, got %v", c.StreamWriteTimeout)
	p.Check(c.WSMaxMessageBytes >= 256, "ws-max-message-bytes", "must be at least 256 bytes")
	p.Check(c.WSMaxMessages >= 1, "ws-max-messages", "must be at least 1")
	p.Check(c.WSIdleTimeout >= time.Second, "ws-idle-timeout", "must be at least 1s")
	p.Check(c.WSPingInterval >= 100*time.Millisecond, "ws-ping-interval", "must be at least 100ms")
	p.Check(c.WSWriteTimeout >= 10*time.Millisecond, "ws-write-timeout", "must be at least 10ms")
	p.Check(c.WSMaxConns >= 0, "ws-max-conns", "must not be negative")
	return p.Err()
}

// Server is the HTTP ingress.
type Server struct {
	// streams counts the answers being streamed (SSE) now.
	streams atomic.Int64
	cfg     Config
	bus     bus.Config
	log     *slog.Logger
	reg     prometheus.Registerer
	auth    *auth.Verifier
	store   *store.Redis
	cl      *kgo.Client
	echo    *echo.Echo
	now     func() time.Time
	router  *replyRouter
	notify  *notifier
	admit   *admission // of the interactive lane, chat.requests
	// bulkAdmit estimates the bulk queue's wait, against a bulk
	// request's own deadline (admitRequest).
	bulkAdmit *admission
	limit     *limiter
	hot       *hotAnswers // nil when disabled
	poll      pollKey     // nil: poll URLs are unsigned

	release func() error // closes what Open made for the server; nil after New

	waiters  *waiters
	ws       *wsConns
	events   eventsFunc // follow; tests replace it
	ready    atomic.Bool
	draining atomic.Bool // readiness false
	closing  atomic.Bool // new questions refused

	drainOnce  sync.Once
	drainStart time.Time     // set by drainOnce
	drained    chan struct{} // closed once the drain delay has passed
	drainTook  time.Duration // set before drained is closed

	m metrics
}

// metrics are the ingress's metrics (see the package doc) but for those of
// admission, the limiter and the hot-answer cache.
type metrics struct {
	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	accepted        metric.Children[prometheus.Counter] // by mode
	laneAccepted    metric.Children[prometheus.Counter] // by lane
	answered        metric.Children[prometheus.Counter] // by how
	replies         metric.Children[prometheus.Counter] // by outcome
	storeErrors     *prometheus.CounterVec
	replyPartitions prometheus.Gauge
	rejected        metric.Children[prometheus.Counter] // by reason
	wsOpened        prometheus.Counter
	wsClosed        metric.Children[prometheus.Counter] // by reason
	wsRefused       prometheus.Counter
}

// newMetrics makes the ingress's metrics with f; waiters reads the number
// of handlers waiting for an answer, wsOpen that of open WebSockets.
func newMetrics(f promauto.Factory, waiters, wsOpen func() float64) metrics {
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_producer_waiters", Help: "Handlers waiting for an answer.",
	}, waiters)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_producer_ws_connections", Help: "Open WebSocket connections (GET /v1/ws).",
	}, wsOpen)
	return metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_http_requests_total", Help: "HTTP requests served.",
		}, []string{"route", "method", "code"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_http_request_duration_seconds", Help: "HTTP request latency. Streams (a POST /v1/chat or poll answered as Server-Sent Events, a WebSocket) are counted in sluice_http_requests_total but not timed here: they last as long as their answer or connection.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "method"}),
		accepted: metric.Resolve(f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_producer_accepted_total", Help: "Requests accepted, by mode: wait, async, callback, stream (put on Kafka; stream: answered as Server-Sent Events), cache (answered from the hot-answer cache) or unconfirmed (answered 202 when Kafka had not acknowledged within the produce timeout).",
		}, []string{"mode"}), ModeWait, ModeAsync, ModeCallback, modeStream, "cache", "unconfirmed"),
		laneAccepted: metric.Resolve(f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_producer_lane_accepted_total", Help: "Requests put on Kafka (acknowledged or unconfirmed), by lane: interactive (chat.requests) or bulk (chat.requests.bulk).",
		}, []string{"lane"}), envelope.LaneInteractive, envelope.LaneBulk),
		answered: metric.Resolve(f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_producer_answered_total", Help: "Wait-mode outcomes: answered within the wait, or timed out to 202; streamed requests count answered at their done event.",
		}, []string{"how"}), "answered", "timed_out"),
		replies: metric.Resolve(f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_producer_replies_total", Help: "Reply records read, by outcome.",
		}, []string{"outcome"}), "woke", "no_waiter", "invalid"),
		storeErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_producer_store_errors_total", Help: "Redis failures tolerated on the hot path, by operation.",
		}, []string{"op"}),
		replyPartitions: f.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_producer_reply_partitions", Help: "Partitions of the replies topic this replica reads.",
		}),
		rejected: metric.Resolve(f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_producer_rejected_total", Help: "Requests refused at the door, by reason.",
		}, []string{"reason"}), "rate_user", "rate_tenant", "rate_global", "queue_wait", "backlog", "draining", "kafka"),
		wsOpened: f.NewCounter(prometheus.CounterOpts{
			Name: "sluice_producer_ws_opened_total", Help: "WebSocket connections accepted (GET /v1/ws).",
		}),
		wsClosed: metric.Resolve(f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_producer_ws_closed_total", Help: "WebSocket connections ended, by reason: client (closed or broke it), auth (no or bad auth frame), expired (token), idle, limit (messages per connection), too_big (message size), slow (did not take a frame within the write timeout), dead (no pong), shutdown.",
		}, []string{"reason"}), "client", "auth", "expired", "idle", "limit", "too_big", "slow", "dead", "shutdown"),
		wsRefused: f.NewCounter(prometheus.CounterOpts{
			Name: "sluice_producer_ws_refused_total", Help: "WebSocket handshakes refused with 503 because the replica holds SLUICE_WS_MAX_CONNS connections.",
		}),
	}
}

// New returns an ingress. It creates its Kafka client but contacts neither
// Kafka nor Redis before Run. It returns an error for an invalid configuration
// or when metrics cannot be registered.
func New(cfg Config, cfgBus bus.Config, v *auth.Verifier, st *store.Redis, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfgBus.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, bus: cfgBus, log: log, reg: reg, auth: v, store: st, now: time.Now, waiters: newWaiters(), ws: newWSConns(), poll: newPollKey(cfg.PollSecret),
		drained: make(chan struct{})}
	r := metric.NewRegisterer(reg)
	f := promauto.With(r)
	s.m = newMetrics(f, func() float64 { return float64(s.waiters.len()) }, func() float64 { return float64(s.ws.open()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_producer_streams_open", Help: "Answers being streamed to clients (Server-Sent Events) now.",
	}, func() float64 { return float64(s.streams.Load()) })
	cl, err := bus.NewClient(cfgBus, "producer", log, reg,
		kgo.DefaultProduceTopic(cfgBus.RequestsTopic),
		kgo.ProducerBatchCompression(kgo.SnappyCompression()),
		kgo.ProducerLinger(cfg.Linger),
		kgo.RequiredAcks(kgo.AllISRAcks()),                              // idempotent by default with all acks
		kgo.RecordDeliveryTimeout(max(cfg.ProduceTimeout, time.Second)), // franz-go refuses less than 1 s
	)
	if err != nil {
		return nil, err
	}
	s.cl = cl
	s.admit = newAdmission(f, cl, cfgBus.RequestsTopic, cfgBus.Group, cfg.AdmissionInterval, cfg.AdmissionMinRate)
	// Its gauges are not registered: they would be the interactive lane's
	// names, and a per-lane estimate is the next step.
	s.bulkAdmit = newAdmission(promauto.With(nil), cl, cfgBus.BulkTopic, cfgBus.Group, cfg.AdmissionInterval, cfg.AdmissionMinRate)
	s.limit = newLimiter(f, st.Pipe(), st.Prefix()+":rl", cfg.UserRate, cfg.TenantRate, cfg.GlobalRate, log.Warn)
	if cfg.HotTTL > 0 {
		s.hot = newHotAnswers(f, st.Client(), st.Prefix(), cfg.HotSize, cfg.HotTTL)
	}
	if err := r.Err(); err != nil {
		cl.Close()
		return nil, fmt.Errorf("register producer metrics: %w", err)
	}
	s.events = s.follow
	s.echo = s.routes()
	return s, nil
}

// OpenStreams returns how many answers are being streamed (SSE) now.
func (s *Server) OpenStreams() int64 { return s.streams.Load() }

// Handler returns the HTTP handler, for tests.
func (s *Server) Handler() http.Handler { return s.echo }

// Ready reports whether the ingress takes traffic: running, not draining.
func (s *Server) Ready() bool { return s.ready.Load() && !s.draining.Load() }

// ReplyPartitions returns the partitions of the replies topic this replica
// reads now.
func (s *Server) ReplyPartitions() []int32 {
	if s.router == nil {
		return nil
	}
	return s.router.partitions()
}

// WSConns returns how many WebSocket connections are open.
func (s *Server) WSConns() int { return s.ws.open() }

// Client returns the Kafka client, for readiness checks.
func (s *Server) Client() *kgo.Client { return s.cl }

func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.observe)
	e.Use(s.bodyDeadline)
	if len(s.cfg.CORSOrigins) > 0 {
		e.Use(middleware.CORSWithConfig(middleware.CORSConfig{
			AllowOrigins:  s.cfg.CORSOrigins,
			AllowMethods:  []string{http.MethodGet, http.MethodPost, http.MethodDelete},
			AllowHeaders:  []string{echo.HeaderAuthorization, echo.HeaderContentType, envelope.HeaderTraceparent},
			ExposeHeaders: []string{echo.HeaderLocation, "Retry-After"},
			MaxAge:        600,
		}))
	}
	if s.cfg.GzipMinBytes > 0 {
		e.Use(middleware.GzipWithConfig(middleware.GzipConfig{
			MinLength: s.cfg.GzipMinBytes,
			// Only routes whose answers can be large: readying a gzip
			// writer costs more than the small chat answers it would
			// compress (it was an eighth of the CPU under load).
			Skipper: func(c echo.Context) bool {
				return c.Path() != "/v1/dialogs/:dialog_id" && c.Path() != "/openapi.yaml" && c.Path() != "/widget/*"
			},
		}))
	}
	e.Use(middleware.BodyLimit(strconv.FormatInt(s.cfg.BodyLimit, 10) + "B"))
	// Middleware per route, not per group: an Echo group with middleware
	// answers every unknown method under it with 404 instead of 405.
	e.POST("/v1/chat", s.postChat, s.authenticate)
	e.GET("/v1/chat/:dialog_id/:request_id", s.pollChat, s.authenticate)
	e.GET("/v1/dialogs/:dialog_id", s.getDialog, s.authenticate)
	e.DELETE("/v1/dialogs/:dialog_id", s.deleteDialog, s.authenticate)
	e.GET("/v1/ws", s.serveWS)
	e.GET("/widget/*", s.serveWidget)
	e.GET("/openapi.yaml", func(c echo.Context) error { return c.Blob(http.StatusOK, "application/yaml", docs.OpenAPI) })
	return e
}

// observe counts and times requests by route pattern (bounded labels).
// A stream (Server-Sent Events, a WebSocket) is counted but not timed: it
// lasts as long as its answer or its connection, and would make the
// latency of POST /v1/chat, and the alert on it, that of the slowest
// model.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		method := c.Request().Method
		s.m.requests.WithLabelValues(route, method, strconv.Itoa(c.Response().Status)).Inc()
		if !isStream(c) {
			s.m.duration.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
		}
		return nil
	}
}

// isStream tells whether c was answered as a stream: Server-Sent Events,
// or a WebSocket (101 Switching Protocols).
func isStream(c echo.Context) bool {
	r := c.Response()
	return r.Status == http.StatusSwitchingProtocols ||
		strings.HasPrefix(r.Header().Get(echo.HeaderContentType), "text/event-stream")
}

// Run checks Kafka, starts reading replies and serves HTTP on ln (or on the
// configured address when ln is nil) until ctx ends, then shuts down
// gracefully: readiness turns false, new connections are refused, waiting
// handlers get their answer or their wait's end, and the Kafka producer is
// flushed. It returns an error when Kafka or Redis cannot be reached at start
// or the address cannot be listened on.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	if err := s.cl.Ping(ctx); err != nil {
		return fmt.Errorf("kafka ping: %w", err)
	}
	if err := s.store.Client().Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	router, err := newReplyRouter(ctx, s, s.cfg.ReplyPartitions)
	if err != nil {
		return err
	}
	s.router = router
	defer router.close()
	nt, err := newNotifier(ctx, s.store.Client(), s.store.ResultsChannel(), s.waiters)
	if err != nil {
		return fmt.Errorf("subscribe to results: %w", err)
	}
	s.notify = nt
	defer nt.close()

	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	go router.run(bg)
	go nt.run(bg)
	go s.admit.run(bg)
	go s.bulkAdmit.run(bg)
	if len(s.cfg.ReplyPartitions) == 0 {
		// Serve once the reply group gave this replica its share; until then
		// answers would arrive through the store's notification only.
		s.awaitAssignment(ctx, router)
	}

	if ln == nil {
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("listen %s: %w", s.cfg.Addr, err)
		}
	}
	// No ReadTimeout: it would also end the long waits of wait mode and
	// polls (net/http cancels a request whose connection read times out).
	// A body is bounded per request instead (bodyDeadline).
	srv := &http.Server{Handler: s.echo, ReadHeaderTimeout: s.cfg.ReadTimeout, IdleTimeout: 120 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.ready.Store(true)
	s.log.Info("producer listening", "addr", ln.Addr().String(), "reply_partitions", router.partitions())

	select {
	case err := <-errc:
		return fmt.Errorf("http serve: %w", err)
	case <-ctx.Done():
	}
	// Unready but still serving for the drain delay, while load balancers
	// and Kubernetes endpoints stop sending new requests here; after a
	// Drain (the preStop hook), only what is left of it.
	left := s.startDrain()
	s.log.Info("producer shutting down", "drain_delay", left)
	select {
	case <-s.drained:
	case err := <-errc:
		return fmt.Errorf("http serve: %w", err)
	}
	s.closing.Store(true)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.log.Warn("http shutdown", "err", err)
	}
	// Shutdown does not wait for hijacked connections: WebSocket clients
	// are told to go elsewhere, and resume their answers there.
	s.ws.closeAll(sctx)
	if err := s.cl.Flush(sctx); err != nil {
		s.log.Warn("kafka flush", "err", err)
	}
	return nil
}

// Drain turns readiness false and returns once the drain delay has passed
// (Kubernetes' preStop hook calls it through GET /drain, before SIGTERM):
// meanwhile the ingress keeps serving everything, while Endpoints and load
// balancers stop sending here. The end of Run's context then shuts down
// without waiting the delay again. Every call waits for the same delay; a
// call whose ctx ends first returns Drained false.
func (s *Server) Drain(ctx context.Context) admin.DrainReport {
	s.startDrain()
	select {
	case <-s.drained:
		return admin.DrainReport{Drained: true, TookMS: s.drainTook.Milliseconds()}
	case <-ctx.Done():
		return admin.DrainReport{}
	}
}

// startDrain turns readiness false and starts the drain delay, once, and
// returns how much of it is left.
func (s *Server) startDrain() time.Duration {
	s.drainOnce.Do(func() {
		s.draining.Store(true)
		s.drainStart = time.Now()
		time.AfterFunc(s.cfg.DrainDelay, func() {
			s.drainTook = time.Since(s.drainStart)
			close(s.drained)
		})
	})
	return max(s.cfg.DrainDelay-time.Since(s.drainStart), 0)
}

// awaitAssignment waits, up to twice the reply session timeout, until the
// reply group assigned this replica partitions.
func (s *Server) awaitAssignment(ctx context.Context, r *replyRouter) {
	limit := time.Now().Add(2 * s.cfg.ReplySessionTimeout)
	for len(r.partitions()) == 0 && time.Now().Before(limit) && ctx.Err() == nil {
		t := time.NewTimer(20 * time.Millisecond) // assignment has no event to await here
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	if len(r.partitions()) == 0 {
		s.log.Warn("no reply partitions assigned yet; answers arrive through store notifications until then")
	}
}

// bodyDeadline bounds reading a request's body by the read timeout, from
// now: the handler clears it once the body is read (readBody), and a
// handler that refuses the request unread (a bad token) leaves it to bound
// the server's discarding of the body. A request without a body gets no
// deadline: its connection is watched for a close at once, and a deadline
// would cut its wait short.
func (s *Server) bodyDeadline(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if r := c.Request(); r.ContentLength != 0 && r.Body != http.NoBody {
			_ = http.NewResponseController(c.Response()).SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
		}
		return next(c)
	}
}

// Close releases the Kafka client, and the Redis client when Open made
// it. Call it after Run returned.
func (s *Server) Close() {
	s.cl.Close()
	if s.release != nil {
		_ = s.release()
	}
}
