//go:build race

package producer_test

// raceAllocs is what the race detector adds to an allocation budget: it
// changes what allocates (sync.Pool drops items at random), 20 – 23 more
// allocations per wait-mode request measured.
const raceAllocs = 25
