package lab

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// Sample is the state of the pipeline over one interval (normally 1 s).
// A float figure that does not exist is NaN: the queue wait of an interval
// in which no consumer started a request.
type Sample struct {
	T             float64 // seconds since the start of the profile (end of the interval)
	Offered       float64 // questions/s sent in the interval
	Completed     float64 // answers/s completed in the interval
	Refused       float64 // refusals/s (HTTP 503/429) in the interval
	Lag           float64 // group lag at T (records not committed)
	OldestAge     float64 // seconds, age of the oldest unfinished record at T
	InFlightRatio float64 // average over pods at T, 0..1
	QueueWaitP50  float64 // ms, of requests started by a consumer in the interval (NaN if none)
	QueueWaitP99  float64 // ms
	Replicas      int     // consumer pods running (ready) at T
	Desired       int     // replicas the autoscaler asks for at T
}

// column is one CSV column: its header and how a Sample's field is written
// and read. One table for both directions, so they cannot drift apart.
type column struct {
	name  string
	float func(*Sample) *float64
	int   func(*Sample) *int
	// required: a float that cannot be missing (empty) in a row.
	required bool
}

var columns = []column{
	{name: "t_s", float: func(s *Sample) *float64 { return &s.T }, required: true},
	{name: "offered_per_s", float: func(s *Sample) *float64 { return &s.Offered }},
	{name: "completed_per_s", float: func(s *Sample) *float64 { return &s.Completed }},
	{name: "refused_per_s", float: func(s *Sample) *float64 { return &s.Refused }},
	{name: "lag", float: func(s *Sample) *float64 { return &s.Lag }},
	{name: "oldest_age_s", float: func(s *Sample) *float64 { return &s.OldestAge }},
	{name: "in_flight_ratio", float: func(s *Sample) *float64 { return &s.InFlightRatio }},
	{name: "queue_wait_p50_ms", float: func(s *Sample) *float64 { return &s.QueueWaitP50 }},
	{name: "queue_wait_p99_ms", float: func(s *Sample) *float64 { return &s.QueueWaitP99 }},
	{name: "replicas", int: func(s *Sample) *int { return &s.Replicas }},
	{name: "desired", int: func(s *Sample) *int { return &s.Desired }},
}

// WriteCSV writes the samples as CSV with a header row of the column names
// (t_s, offered_per_s, completed_per_s, refused_per_s, lag, oldest_age_s,
// in_flight_ratio, queue_wait_p50_ms, queue_wait_p99_ms, replicas,
// desired). A NaN is written as an empty cell; numbers are written in the
// shortest form that reads back to the same value. It returns the first
// error of w.
func WriteCSV(w io.Writer, s []Sample) error {
	cw := csv.NewWriter(w)
	row := make([]string, len(columns))
	for i, c := range columns {
		row[i] = c.name
	}
	if err := cw.Write(row); err != nil {
		return fmt.Errorf("write samples: %w", err)
	}
	for i := range s {
		for j, c := range columns {
			if c.int != nil {
				row[j] = strconv.Itoa(*c.int(&s[i]))
				continue
			}
			v := *c.float(&s[i])
			if math.IsNaN(v) {
				row[j] = ""
				continue
			}
			row[j] = strconv.FormatFloat(v, 'f', -1, 64)
		}
		if err := cw.Write(row); err != nil {
			return fmt.Errorf("write samples: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write samples: %w", err)
	}
	return nil
}

// ReadCSV reads samples written by [WriteCSV]. The columns are found by
// their header names, so their order does not matter and columns it does
// not know are ignored; an empty cell reads as NaN. It returns an error
// naming the line when the header lacks a column, a row has a different
// number of cells, the time or a replica count is empty, or a cell is not
// a number.
func ReadCSV(r io.Reader) ([]Sample, error) {
	cr := csv.NewReader(r)
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("read samples: no header row")
	}
	if err != nil {
		return nil, fmt.Errorf("read samples: %w", err)
	}
	at := make(map[string]int, len(header))
	for i, name := range header {
		at[name] = i
	}
	index := make([]int, len(columns))
	for i, c := range columns {
		j, ok := at[c.name]
		if !ok {
			return nil, fmt.Errorf("read samples: line 1: no column %s", c.name)
		}
		index[i] = j
	}
	var out []Sample
	for {
		row, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			// csv.ParseError names the line itself.
			return nil, fmt.Errorf("read samples: %w", err)
		}
		line, _ := cr.FieldPos(0)
		var s Sample
		for i, c := range columns {
			cell := row[index[i]]
			if c.int != nil {
				v, err := strconv.Atoi(cell)
				if err != nil {
					return nil, fmt.Errorf("read samples: line %d: %s %q is not a whole number", line, c.name, cell)
				}
				*c.int(&s) = v
				continue
			}
			if cell == "" {
				if c.required {
					return nil, fmt.Errorf("read samples: line %d: %s is empty", line, c.name)
				}
				*c.float(&s) = math.NaN()
				continue
			}
			v, err := strconv.ParseFloat(cell, 64)
			if err != nil {
				return nil, fmt.Errorf("read samples: line %d: %s %q is not a number", line, c.name, cell)
			}
			*c.float(&s) = v
		}
		out = append(out, s)
	}
}
