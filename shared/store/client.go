package store

import (
	"flag"
	"net"

	"github.com/redis/go-redis/v9"

	"sluice/shared/settings"
)

// ClientConfig selects the Redis deployment: one server, Sentinels with a
// master name, or a Redis Cluster.
type ClientConfig struct {
	// Addrs are host:port; more than one means Redis Cluster, or Sentinels
	// when MasterName is set.
	Addrs      []string
	MasterName string
	Username   string
	Password   string
	// DB is the database number (single server and Sentinel only).
	DB int
	// PoolSize is the connections per Redis node. Default 256. A blocked
	// answer-stream read holds one (store.Config.StreamBlockingReads).
	PoolSize int
}

// Validate reports every missing or malformed setting, each named by its flag.
func (c ClientConfig) Validate() error {
	var p settings.Problems
	p.Check(len(c.Addrs) > 0, "redis-addr", "is required")
	for _, a := range c.Addrs {
		_, port, err := net.SplitHostPort(a)
		p.Check(err == nil && port != "", "redis-addr", "%q is not host:port", a)
	}
	p.Check(c.DB >= 0, "redis-db", "must not be negative")
	p.Check(c.PoolSize >= 0, "redis-pool-size", "must not be negative")
	return p.Err()
}

// RegisterFlags registers c's settings on fs, with c's values as defaults.
func (c *ClientConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.Var(settings.List{P: &c.Addrs}, "redis-addr", "Redis host:port; a comma list means Redis Cluster (or Sentinels with --redis-master)")
	fs.StringVar(&c.MasterName, "redis-master", c.MasterName, "Sentinel master name (addresses are then Sentinels)")
	fs.StringVar(&c.Username, "redis-username", c.Username, "Redis ACL user name")
	fs.StringVar(&c.Password, "redis-password", c.Password, "Redis password")
	fs.IntVar(&c.DB, "redis-db", c.DB, "Redis database number (single and Sentinel only)")
	fs.IntVar(&c.PoolSize, "redis-pool-size", c.PoolSize, "Redis connections per node (0: 256); keep above --stream-blocking-reads")
}

// NewClient returns a client of the deployment c names, set up for Sluice's
// request path. It does not contact Redis. It returns an error when c is
// invalid.
func NewClient(c ClientConfig) (redis.UniversalClient, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	// The request path's commands go through go-redis's automatic
	// pipeliner (Pipe); while Redis hangs, the commands it holds are
	// bounded, and a command beyond that fails at once.
	ap := redis.DefaultAutoPipelineOptions()
	ap.MaxQueuedCommands = 100_000
	pool := c.PoolSize
	if pool == 0 {
		pool = 256
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:        c.Addrs,
		MasterName:   c.MasterName,
		Username:     c.Username,
		Password:     c.Password,
		DB:           c.DB,
		PoolSize:     pool,
		MinIdleConns: 8,
		// A command's context deadline is its socket deadline: a Redis that
		// hangs costs a request its store timeout.
		ContextTimeoutEnabled: true,
		AutoPipelineOptions:   ap,
	}), nil
}

// Dial returns a store on a new client of the deployment c names; closing
// the store closes the client. It returns an error when c or cfg is
// invalid; it does not contact Redis.
func Dial(c ClientConfig, cfg Config) (*Redis, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rdb, err := NewClient(c)
	if err != nil {
		return nil, err
	}
	s, _ := New(rdb, cfg)
	s.owned = true
	return s, nil
}

// Close closes the client when the store made it (Dial); a store on a
// client of the caller's (New) leaves it open.
func (s *Redis) Close() error {
	if !s.owned {
		return nil
	}
	return s.rdb.Close()
}
