package devstack

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// DeleteKeys deletes the keys that match any of patterns (SCAN patterns,
// e.g. "sluicebench:123:*") from rdb and returns how many it deleted: the
// clean-up of a run that used a shared Redis under a key prefix of its own.
// It stops at the first error, ctx's end included.
func DeleteKeys(ctx context.Context, rdb redis.UniversalClient, patterns ...string) (int, error) {
	const batch = 500
	deleted := 0
	for _, pattern := range patterns {
		var keys []string
		iter := rdb.Scan(ctx, 0, pattern, batch).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return deleted, fmt.Errorf("scan %s: %w", pattern, err)
		}
		// SCAN may return a key twice; DEL counts each once.
		for len(keys) > 0 {
			n := min(len(keys), batch)
			d, err := rdb.Del(ctx, keys[:n]...).Result()
			if err != nil {
				return deleted, fmt.Errorf("delete %s: %w", pattern, err)
			}
			deleted += int(d)
			keys = keys[n:]
		}
	}
	return deleted, nil
}
