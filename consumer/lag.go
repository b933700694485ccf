package consumer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/time/rate"

	"sluice/shared/bus"
)

// groupLag exports the lag of the consumer group on one requests topic (a
// lane's: chat.requests, chat.requests.bulk; one groupLag each, see
// lagReaders), so that an autoscaler has a signal even where no producer
// runs (a deployment only bots write to):
//
//	sluice_consumer_group_lag{topic}                    records not yet committed by the group
//	sluice_consumer_oldest_unfinished_age_seconds{topic} now - timestamp of the oldest of them
//
// Every consumer process exports the figures of the whole group, so
// queries take max, not sum. They are read on an interval (Config.LagInterval),
// and only one process reads Kafka per interval: each interval, every
// process tries `SET <prefix>:lag:{<group>}:<topic>:lock NX PX <interval>`
// in Redis; the winner reads Kafka and writes the figures to the hash
// <prefix>:lag:{<group>}:<topic> (fields at_ms, lag, oldest_ms), and the
// others read that hash. The lock expires after an interval, so reads are
// at least an interval apart, whichever process makes them. When Redis
// cannot be reached, each process reads Kafka itself, once per interval.
//
// The lag is, summed over the partitions, end offset - committed offset; a
// partition without a commit counts from its start offset. It includes
// the records finished but not yet committed (up to the commit interval).
//
// The age needs the timestamp of the record at each lagging partition's
// committed offset. Records this process fetched do not tell it: another
// process owns the other partitions, and the record at a committed offset
// may not be fetched by anyone yet (fetching pauses while the in-flight
// budget is full). So the reading process fetches it: a consumer client
// outside any group, made for the read and closed after it, fetches one
// record at the committed offset of at most maxAgeProbes lagging
// partitions (those with the most lag first) within the read's timeout (the
// interval). A timestamp is remembered while its partition's commit does
// not move, so a stuck partition costs no fetch after the first. The age is
// computed at scrape time from the timestamp (the record's CreateTime, set
// by whoever produced it: the producer's clock), so it grows between reads
// while the record waits. It is 0 when nothing is uncommitted, and before
// the first read.
type groupLag struct {
	adm      *kadm.Client
	bus      bus.Config
	topic    string
	interval time.Duration
	log      *slog.Logger
	warned   rate.Sometimes

	rdb     redis.UniversalClient // nil: read Kafka every interval
	lockKey string
	figKey  string
	owner   string // this process, as the lock's value

	stamps map[int32]stamp // used by the refresh goroutine only

	mu  sync.Mutex
	fig lagFigures
}

// lagFigures are the group's lag as read from Kafka at At.
type lagFigures struct {
	At     time.Time
	Lag    int64
	Oldest time.Time // timestamp of the oldest uncommitted record; zero when none
}

// stamp is the timestamp of the record at a partition's committed offset.
type stamp struct {
	offset int64
	at     time.Time
}

// maxAgeProbes bounds the partitions whose record a read fetches.
const maxAgeProbes = 32

var (
	lagDesc = prometheus.NewDesc("sluice_consumer_group_lag",
		"Records of the topic not yet committed by the consumer group (the whole group's, as last read: every consumer exports the same figure; take max).",
		[]string{"topic"}, nil)
	ageDesc = prometheus.NewDesc("sluice_consumer_oldest_unfinished_age_seconds",
		"Age of the oldest record of the topic the consumer group has not committed (now - its timestamp; 0 when none; the whole group's: take max).",
		[]string{"topic"}, nil)
)

// newGroupLag returns the lag of cfgBus's group on topic, read every
// interval once run. Set adm before run.
func newGroupLag(cfgBus bus.Config, topic string, interval time.Duration, log *slog.Logger) *groupLag {
	return &groupLag{
		bus: cfgBus, topic: topic, interval: interval, log: log,
		warned: rate.Sometimes{Interval: time.Minute},
		stamps: map[int32]stamp{},
	}
}

// share makes the processes of the group share one Kafka read per interval
// through rdb, under keys starting with prefix.
func (g *groupLag) share(rdb redis.UniversalClient, prefix string) {
	base := fmt.Sprintf("%s:lag:{%s}:%s", prefix, g.bus.Group, g.topic)
	g.rdb, g.figKey, g.lockKey = rdb, base, base+":lock"
	host, _ := os.Hostname()
	g.owner = fmt.Sprintf("%s/%d", host, os.Getpid())
}

// lagReaders are the groupLags of the lanes' topics, exported as one
// collector.
type lagReaders []*groupLag

// Describe implements prometheus.Collector.
func (ls lagReaders) Describe(ch chan<- *prometheus.Desc) {
	ch <- lagDesc
	ch <- ageDesc
}

// Collect implements prometheus.Collector.
func (ls lagReaders) Collect(ch chan<- prometheus.Metric) {
	for _, g := range ls {
		g.collect(ch)
	}
}

// run runs every reader until ctx ends.
func (ls lagReaders) run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, g := range ls {
		wg.Go(func() { g.run(ctx) })
	}
	wg.Wait()
}

// share shares every reader's figures (see groupLag.share).
func (ls lagReaders) share(rdb redis.UniversalClient, prefix string) {
	for _, g := range ls {
		g.share(rdb, prefix)
	}
}

// collect sends the figures.
func (g *groupLag) collect(ch chan<- prometheus.Metric) {
	f := g.figures()
	var age float64
	if !f.Oldest.IsZero() {
		age = max(time.Since(f.Oldest).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(f.Lag), g.topic)
	ch <- prometheus.MustNewConstMetric(ageDesc, prometheus.GaugeValue, age, g.topic)
}

func (g *groupLag) figures() lagFigures {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fig
}

// set keeps f unless the figures kept are newer.
func (g *groupLag) set(f lagFigures) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !f.At.Before(g.fig.At) {
		g.fig = f
	}
}

// run refreshes the figures every interval until ctx ends.
func (g *groupLag) run(ctx context.Context) {
	t := time.NewTicker(g.interval)
	defer t.Stop()
	for {
		g.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refresh takes the figures from Redis, or reads them from Kafka when this
// process won the interval's lock or Redis cannot be reached.
func (g *groupLag) refresh(ctx context.Context) {
	won := false
	if g.rdb != nil {
		var err error
		won, err = g.fromRedis(ctx)
		if err == nil && !won {
			return
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			g.warned.Do(func() { g.log.Warn("consumer lag: Redis unavailable, reading Kafka from this process", "err", err) })
		}
	}
	ctx, cancel := context.WithTimeout(ctx, g.interval)
	defer cancel()
	f, err := g.read(ctx)
	if err != nil {
		if !errors.Is(ctx.Err(), context.Canceled) {
			g.warned.Do(func() { g.log.Warn("consumer lag: read from Kafka failed", "err", err) })
		}
		return
	}
	g.set(f)
	if won {
		if err := g.publish(ctx, f); err != nil {
			g.warned.Do(func() { g.log.Warn("consumer lag: could not share the figures in Redis", "err", err) })
		}
	}
}

// fromRedis tries to take the interval's lock and, when another process
// holds it, takes the figures from Redis. It returns whether this process
// won the lock, and an error when Redis did not answer within half an
// interval.
func (g *groupLag) fromRedis(ctx context.Context) (won bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, g.interval/2)
	defer cancel()
	won, err = g.rdb.SetNX(ctx, g.lockKey, g.owner, g.interval).Result()
	if err != nil || won {
		return won, err
	}
	f, err := g.cached(ctx)
	switch {
	case err == nil:
		g.set(f)
	case errors.Is(err, redis.Nil):
		err = nil // the winner has not written yet: keep ours
	}
	return false, err
}

// publish writes f for the other processes. The hash outlives a few
// intervals, so that it goes away with the deployment.
func (g *groupLag) publish(ctx context.Context, f lagFigures) error {
	var oldest int64
	if !f.Oldest.IsZero() {
		oldest = f.Oldest.UnixMilli()
	}
	_, err := g.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, g.figKey, "at_ms", f.At.UnixMilli(), "lag", f.Lag, "oldest_ms", oldest)
		p.PExpire(ctx, g.figKey, max(10*g.interval, time.Minute))
		return nil
	})
	return err
}

// cached returns the figures in Redis; redis.Nil when there are none.
func (g *groupLag) cached(ctx context.Context) (lagFigures, error) {
	h, err := g.rdb.HGetAll(ctx, g.figKey).Result()
	if err != nil {
		return lagFigures{}, err
	}
	if len(h) == 0 {
		return lagFigures{}, redis.Nil
	}
	at, err1 := strconv.ParseInt(h["at_ms"], 10, 64)
	lag, err2 := strconv.ParseInt(h["lag"], 10, 64)
	oldest, err3 := strconv.ParseInt(h["oldest_ms"], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return lagFigures{}, fmt.Errorf("lag figures in %s: %w", g.figKey, err)
	}
	f := lagFigures{At: time.UnixMilli(at), Lag: lag}
	if oldest > 0 {
		f.Oldest = time.UnixMilli(oldest)
	}
	return f, nil
}

// read reads the figures from Kafka.
func (g *groupLag) read(ctx context.Context) (lagFigures, error) {
	progress, err := bus.GroupProgress(ctx, g.adm, g.bus.Group, g.topic)
	if err != nil {
		return lagFigures{}, err
	}
	f := lagFigures{At: time.Now()}
	var lagging []int32
	for p, pr := range progress {
		f.Lag += pr.Lag()
		if pr.Lag() > 0 {
			lagging = append(lagging, p)
		}
	}
	// Forget the stamps of partitions whose commit moved or that caught up.
	for p, s := range g.stamps {
		if pr, ok := progress[p]; !ok || pr.Lag() == 0 || pr.Committed != s.offset {
			delete(g.stamps, p)
		}
	}
	probe := map[int32]int64{}
	slices.SortFunc(lagging, func(a, b int32) int { return cmp.Compare(progress[b].Lag(), progress[a].Lag()) })
	for _, p := range lagging {
		if _, ok := g.stamps[p]; !ok && len(probe) < maxAgeProbes {
			probe[p] = progress[p].Committed
		}
	}
	if len(probe) > 0 {
		for p, at := range g.fetchStamps(ctx, probe) {
			g.stamps[p] = stamp{offset: probe[p], at: at}
		}
	}
	for _, s := range g.stamps {
		if f.Oldest.IsZero() || s.at.Before(f.Oldest) {
			f.Oldest = s.at
		}
	}
	return f, nil
}

// fetchStamps fetches the record at each offset of the topic's
// partitions and returns their timestamps, by partition: those it got
// before ctx ended. A partition whose record at the offset is gone
// (compacted, or a transaction marker) gives the next record's.
func (g *groupLag) fetchStamps(ctx context.Context, offsets map[int32]int64) map[int32]time.Time {
	at := make(map[int32]kgo.Offset, len(offsets))
	for p, o := range offsets {
		at[p] = kgo.NewOffset().At(o)
	}
	// No metrics: a client of one fetch would register and unregister
	// them on every read.
	cl, err := bus.NewClient(g.bus, "lag", g.log, nil,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{g.topic: at}),
		kgo.FetchMaxPartitionBytes(64<<10),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	if err != nil {
		return nil
	}
	defer cl.Close()
	got := make(map[int32]time.Time, len(offsets))
	for len(got) < len(offsets) && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			if _, done := got[r.Partition]; !done && r.Offset >= offsets[r.Partition] {
				got[r.Partition] = r.Timestamp
			}
		})
	}
	if len(got) < len(offsets) {
		g.log.Debug("consumer lag: records of some lagging partitions not fetched in time",
			"partitions", slices.Sorted(maps.Keys(offsets)), "got", len(got))
	}
	return got
}
