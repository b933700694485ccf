package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// WriteJSON writes r as one line of JSON.
func (r Result) WriteJSON(w io.Writer) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteText writes r for a person: the counts, the rates and latencies,
// the failures by kind and the first distinct ones.
func (r Result) WriteText(w io.Writer) error {
	var b strings.Builder
	switch {
	case r.Target == TargetWS && r.Conns > 0:
		fmt.Fprintf(&b, "target ws, %d idle WebSockets opened in %.1f s; producer RSS %.1f -> %.1f MB, heap in use %.1f -> %.1f MB\n",
			r.Conns, r.Seconds, r.RSSBeforeMB, r.RSSAfterMB, r.HeapBeforeMB, r.HeapAfterMB)
		fmt.Fprintf(&b, "per connection: RSS %.1f KB, heap %.1f KB, goroutines %.2f\n", r.RSSPerConnKB, r.HeapPerConnKB, r.GoroutinesPerConn)
		_, err := io.WriteString(w, b.String())
		return err
	case r.Target == TargetWS:
		fmt.Fprintf(&b, "target ws, %d users: %.1f s, answered %d, refused %d (429/503), errors %d\n", r.Users, r.Seconds, r.Answered, r.Refused, r.Errors)
		fmt.Fprintf(&b, "first piece ms p50 %.1f p90 %.1f p99 %.1f max %.1f\n", r.FirstP50MS, r.FirstP90MS, r.FirstP99MS, r.FirstMaxMS)
	case r.Target == TargetHTTP && r.Rate > 0:
		fmt.Fprintf(&b, "target http, open loop %g/s, mode %s, %d users: %.1f s counted, sent %d, answered %d (200), queued %d (202), refused %d (429/503), errors %d",
			r.Rate, r.Mode, r.Users, r.Seconds, r.Sent, r.Answered, r.Queued, r.Refused, r.Errors)
		if r.Missed > 0 {
			fmt.Fprintf(&b, ", missed %d (too many under way)", r.Missed)
		}
		fmt.Fprintf(&b, "; sent up to %.1f ms late\n", r.MaxSendLagMS)
	case r.Target == TargetHTTP:
		fmt.Fprintf(&b, "target http, mode %s, %d users: %.1f s, sent %d, answered %d (200), queued %d (202), refused %d (429/503), errors %d\n",
			r.Mode, r.Users, r.Seconds, r.Sent, r.Answered, r.Queued, r.Refused, r.Errors)
	default:
		fmt.Fprintf(&b, "target %s: %.1f s, sent %d, answered %d, errors %d\n", r.Target, r.Seconds, r.Sent, r.Answered, r.Errors)
	}
	fmt.Fprintf(&b, "answered/s %.0f", r.PerSecond)
	if r.AcceptedPS > 0 {
		fmt.Fprintf(&b, "  accepted/s %.0f", r.AcceptedPS)
	}
	fmt.Fprintf(&b, "  latency ms p50 %.1f p90 %.1f p99 %.1f max %.1f\n", r.P50MS, r.P90MS, r.P99MS, r.MaxMS)
	if len(r.ErrorKinds) > 0 {
		kinds := make([]string, 0, len(r.ErrorKinds))
		for k := range r.ErrorKinds {
			kinds = append(kinds, k)
		}
		slices.Sort(kinds)
		for i, k := range kinds {
			kinds[i] = fmt.Sprintf("%s %d", k, r.ErrorKinds[k])
		}
		fmt.Fprintf(&b, "failures by kind: %s\n", strings.Join(kinds, ", "))
	}
	if len(r.Failures) > 0 {
		if len(r.Failures) == maxFailures {
			b.WriteString("first distinct failures:\n")
		} else {
			b.WriteString("failures:\n")
		}
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "  %6d × %s\n", f.Count, f.Text)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
