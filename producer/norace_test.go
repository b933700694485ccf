//go:build !race

package producer_test

const raceAllocs = 0
