package producer

import (
	"flag"
	"fmt"
	"strconv"
	"strings"

	"sluice/shared/settings"
)

// RegisterFlags registers c's settings on fs, with c's values as defaults.
// The callback policy is the callback package's (callback.Config).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "http-addr", c.Addr, "HTTP listen address of the API")
	fs.DurationVar(&c.WaitDefault, "wait-default", c.WaitDefault, "wait of wait mode when the request names none")
	fs.DurationVar(&c.WaitMax, "wait-max", c.WaitMax, "largest wait_ms accepted")
	fs.DurationVar(&c.RequestTTL, "request-ttl", c.RequestTTL, "how long after acceptance a request is still answered (its deadline)")
	fs.DurationVar(&c.BulkRequestTTL, "bulk-request-ttl", c.BulkRequestTTL, "request TTL of the bulk lane (bots that can wait); at least --request-ttl, at most --result-ttl")
	fs.IntVar(&c.MaxTextChars, "max-text-chars", c.MaxTextChars, "longest question, in characters")
	fs.Int64Var(&c.BodyLimit, "body-limit", c.BodyLimit, "largest request body, in bytes")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", c.ReadTimeout, "bound of reading a request's headers, and its body once the handler starts; a slower client gets 408 or loses the connection")
	fs.DurationVar(&c.StoreTimeout, "store-timeout", c.StoreTimeout, "bound of each Redis call of the ingress: rate limits and the queued marker fail open past it, polls and dialog reads answer 503")
	fs.DurationVar(&c.ProduceTimeout, "produce-timeout", c.ProduceTimeout, "how long putting a request on Kafka may take before 503")
	fs.DurationVar(&c.Linger, "kafka-linger", c.Linger, "Kafka producer linger")
	fs.Var(partitions{&c.ReplyPartitions}, "reply-partitions", "pin the reply partitions this replica reads, comma-separated (default: shared through the reply group)")
	fs.DurationVar(&c.ReplySessionTimeout, "reply-session-timeout", c.ReplySessionTimeout, "how soon a dead replica's reply partitions move to the others")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long a stopping ingress lets waiting requests finish")
	fs.DurationVar(&c.DrainDelay, "drain-delay", c.DrainDelay, "how long a stopping ingress keeps serving after readiness turned false (Kubernetes: e.g. 5s)")
	fs.DurationVar(&c.AdmissionInterval, "admission-interval", c.AdmissionInterval, "how often the queue wait estimate is refreshed from the consumer lag")
	fs.Float64Var(&c.AdmissionMinRate, "admission-min-rate", c.AdmissionMinRate, "floor of the measured completion rate (requests/s) in the queue wait estimate")
	fs.Int64Var(&c.MaxLag, "max-lag", c.MaxLag, "refuse async and callback requests while this many requests are queued")
	fs.StringVar(&c.PollSecret, "poll-secret", c.PollSecret, "secret, the same on every replica, that signs poll URLs so that a poll tells an accepted request whose queued marker Redis lost (202) from an unknown one (404); default: derived from --jwt-secret")
	fs.Var(settings.List{P: &c.CORSOrigins}, "cors-origins", "storefront origins allowed to call the API from a browser, comma-separated; empty disables CORS")
	fs.Int64Var(&c.WSMaxMessageBytes, "ws-max-message-bytes", c.WSMaxMessageBytes, "largest WebSocket message a client may send to GET /v1/ws; a larger one closes the connection (1009)")
	fs.IntVar(&c.WSMaxMessages, "ws-max-messages", c.WSMaxMessages, "messages a client may send on one WebSocket; the next closes it (1008) and the client reconnects")
	fs.DurationVar(&c.WSIdleTimeout, "ws-idle-timeout", c.WSIdleTimeout, "a WebSocket with no frame either way and no answer under way for this long is closed")
	fs.DurationVar(&c.WSPingInterval, "ws-ping-interval", c.WSPingInterval, "how often a WebSocket client is pinged; one that does not answer within the interval is disconnected")
	fs.DurationVar(&c.WSWriteTimeout, "ws-write-timeout", c.WSWriteTimeout, "a WebSocket client that does not take a frame within this long is disconnected")
	fs.IntVar(&c.WSMaxConns, "ws-max-conns", c.WSMaxConns, "WebSocket connections this replica holds at most; more are refused with 503; 0: no bound")
	fs.IntVar(&c.GzipMinBytes, "gzip-min-bytes", c.GzipMinBytes, "gzip responses of at least this many bytes; 0 disables")
	fs.DurationVar(&c.StreamHeartbeat, "stream-heartbeat", c.StreamHeartbeat, "longest silence of a streamed answer (SSE) before a heartbeat comment goes out")
	fs.DurationVar(&c.StreamWriteTimeout, "stream-write-timeout", c.StreamWriteTimeout, "bound of writing one event to a streaming client; a slower reader loses the stream and resumes with Last-Event-ID")
	fs.DurationVar(&c.HotTTL, "hot-ttl", c.HotTTL, "how long a first-turn answer serves the same question opening another dialog of the tenant; 0 disables")
	fs.IntVar(&c.HotSize, "hot-size", c.HotSize, "entries of the local hot-answer cache")
	rateFlag(fs, &c.UserRate, "user-rate", "requests per user across replicas, N/unit[:burst] (e.g. 30/m:10); 0 disables")
	rateFlag(fs, &c.TenantRate, "tenant-rate", "requests per tenant across replicas, N/unit[:burst]; 0 disables")
	rateFlag(fs, &c.GlobalRate, "global-rate", "requests this replica accepts in all, N/unit[:burst]; 0 disables")
}

func rateFlag(fs *flag.FlagSet, r *Rate, name, usage string) {
	fs.Var(rateValue{r}, name, usage)
}

// rateValue is a flag of a Rate, N/unit[:burst].
type rateValue struct{ r *Rate }

func (v rateValue) String() string {
	if v.r == nil {
		return ""
	}
	return v.r.String()
}

func (v rateValue) Set(s string) error {
	r, err := ParseRate(s)
	if err != nil {
		return err
	}
	*v.r = r
	return nil
}

// partitions is a comma-separated list of partition numbers.
type partitions struct{ p *[]int32 }

func (v partitions) String() string {
	if v.p == nil {
		return ""
	}
	s := make([]string, len(*v.p))
	for i, n := range *v.p {
		s[i] = strconv.Itoa(int(n))
	}
	return strings.Join(s, ",")
}

func (v partitions) Set(s string) error {
	*v.p = nil
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		n, err := strconv.ParseInt(part, 10, 32)
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not a partition number", part)
		}
		*v.p = append(*v.p, int32(n))
	}
	return nil
}
